//! Who this replica is, and the colour that tells replicas apart on the page.

/// The identity a replica reports with every response.
#[derive(Debug)]
pub struct Replica {
    /// Docker sets the hostname to the short container id.
    pub hostname: String,
    /// Swarm task slot (1..=replicas) when the stack passes it in.
    pub slot: Option<String>,
    /// Swarm node the task runs on, when the stack passes it in.
    pub node: Option<String>,
    /// `#rrggbb`, worked out once: every answer shows it.
    pub colour: String,
}

impl Replica {
    pub fn new(hostname: String, slot: Option<String>, node: Option<String>) -> Self {
        let colour = Colour::for_name(&hostname).css();
        Self {
            hostname,
            slot,
            node,
            colour,
        }
    }

    /// A swarm task (the stack passes its slot in), rather than a Compose container.
    pub fn on_swarm(&self) -> bool {
        self.slot.is_some()
    }

    /// The hostname of this machine or container, as Docker set it.
    pub fn local_hostname() -> String {
        gethostname::gethostname().to_string_lossy().into_owned()
    }
}

/// A hue derived from a name, so one replica keeps its colour across refreshes and restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colour {
    pub hue: u16,
}

/// WCAG AA for normal text: white on the colour must reach 4.5:1.
const MIN_CONTRAST_WITH_WHITE: f64 = 4.5;

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

    /// `#rrggbb` for the hue, as light as it can be while white text on it stays readable
    /// (yellows and greens need to be darker than blues).
    pub fn css(self) -> String {
        let (r, g, b) = (0..=50)
            .rev()
            .map(|lightness| hsl_to_rgb(self.hue, 0.7, f64::from(lightness) / 100.0))
            .find(|&rgb| contrast_with_white(rgb) >= MIN_CONTRAST_WITH_WHITE)
            .unwrap_or((0, 0, 0));
        format!("#{r:02x}{g:02x}{b:02x}")
    }
}

fn hsl_to_rgb(hue: u16, saturation: f64, lightness: f64) -> (u8, u8, u8) {
    let chroma = (1.0 - (2.0 * lightness - 1.0).abs()) * saturation;
    let x = chroma * (1.0 - ((f64::from(hue) / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match hue / 60 {
        0 => (chroma, x, 0.0),
        1 => (x, chroma, 0.0),
        2 => (0.0, chroma, x),
        3 => (0.0, x, chroma),
        4 => (x, 0.0, chroma),
        _ => (chroma, 0.0, x),
    };
    let m = lightness - chroma / 2.0;
    (channel(r + m), channel(g + m), channel(b + m))
}

/// 0.0..=1.0 as 0..=255.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "rounded and clamped to 0..=255 first"
)]
fn channel(v: f64) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

/// WCAG 2 contrast ratio between white and an sRGB colour.
fn contrast_with_white((r, g, b): (u8, u8, u8)) -> f64 {
    let linear = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.039_28 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
    1.05 / (luminance + 0.05)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUE_3F2A: u16 = 263;
    const CSS_3F2A: &str = "#6b26d9";

    #[test]
    fn colour_is_stable_per_name() {
        // Pinned: a replica keeps its colour across builds, restarts and platforms.
        assert_eq!(Colour::for_name("3f2a9c1b7d40").hue, HUE_3F2A);
        assert_eq!(Colour::for_name("3f2a9c1b7d40").css(), CSS_3F2A);
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
    fn white_text_is_readable_on_every_hue() {
        for hue in 0..360 {
            let css = Colour { hue }.css();
            let channel = |i: usize| u8::from_str_radix(&css[i..i + 2], 16).unwrap();
            let rgb = (channel(1), channel(3), channel(5));
            let ratio = contrast_with_white(rgb);
            assert!(ratio >= 4.5, "hue {hue}: {css} gives {ratio:.2}:1");
            // Not simply black: the hue must still show.
            assert!(
                rgb.0.max(rgb.1).max(rgb.2) >= 90,
                "hue {hue}: {css} is too dark"
            );
        }
    }

    #[test]
    fn known_colours_convert_exactly() {
        assert_eq!(hsl_to_rgb(0, 1.0, 0.5), (255, 0, 0));
        assert_eq!(hsl_to_rgb(120, 1.0, 0.25), (0, 128, 0));
        assert_eq!(hsl_to_rgb(240, 1.0, 0.5), (0, 0, 255));
        assert!((contrast_with_white((0, 0, 0)) - 21.0).abs() < 0.01);
    }
}
