//! Who this replica is, and the colour that tells replicas apart on the page.

use serde::Serialize;

/// The identity a replica reports with every response.
#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    /// Docker sets the hostname to the short container id.
    pub hostname: String,
    /// Swarm task slot (1..=replicas) when the stack passes it in.
    pub slot: Option<String>,
    /// Swarm node the task runs on, when the stack passes it in.
    pub node: Option<String>,
    pub colour: Colour,
}

impl Replica {
    pub fn new(hostname: String, slot: Option<String>, node: Option<String>) -> Self {
        let colour = Colour::for_name(&hostname);
        Self {
            hostname,
            slot,
            node,
            colour,
        }
    }

    /// The hostname of this machine or container, as Docker set it.
    pub fn local_hostname() -> String {
        gethostname::gethostname().to_string_lossy().into_owned()
    }
}

/// A hue derived from a name, so one replica keeps its colour across refreshes and restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Colour {
    pub hue: u16,
}

impl Colour {
    pub fn for_name(name: &str) -> Self {
        // FNV-1a: stable across builds and platforms, unlike std's randomised hasher.
        let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        // 360 hues, scrambled so hostnames differing in one character still land far apart.
        let hue = (hash.wrapping_mul(2_654_435_761) >> 16) % 360;
        Self { hue: hue as u16 }
    }

    /// A CSS colour with enough contrast for white text in both light and dark themes.
    pub fn css(self) -> String {
        format!("hsl({} 70% 36%)", self.hue)
    }
}

impl From<Colour> for String {
    fn from(c: Colour) -> Self {
        c.css()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_is_stable_per_name() {
        assert_eq!(
            Colour::for_name("3f2a9c1b7d40"),
            Colour::for_name("3f2a9c1b7d40")
        );
    }

    #[test]
    fn container_ids_get_spread_out_hues() {
        let ids = [
            "a1b2c3d4e5f6",
            "a1b2c3d4e5f7",
            "0f9e8d7c6b5a",
            "77aa77aa77aa",
        ];
        let hues: Vec<u16> = ids.iter().map(|id| Colour::for_name(id).hue).collect();
        for (i, a) in hues.iter().enumerate() {
            for b in &hues[i + 1..] {
                let gap = a.abs_diff(*b).min(360 - a.abs_diff(*b));
                assert!(gap >= 10, "hues too close: {hues:?}");
            }
        }
    }

    #[test]
    fn css_is_an_hsl_colour() {
        let css = Colour { hue: 200 }.css();
        assert_eq!(css, "hsl(200 70% 36%)");
    }
}
