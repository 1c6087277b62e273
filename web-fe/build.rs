//! Checks the build-time look of the image: `COUNTER_VERSION` and `COUNTER_ACCENT` let a
//! second image for the rolling-update demo look visibly different. A bad value fails the
//! build here, with its name, rather than producing a broken page.

fn main() {
    println!("cargo:rerun-if-env-changed=COUNTER_VERSION");
    println!("cargo:rerun-if-env-changed=COUNTER_ACCENT");
    if let Ok(version) = std::env::var("COUNTER_VERSION") {
        let ok = !version.is_empty()
            && version.len() <= 40
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
        assert!(
            ok,
            "COUNTER_VERSION={version:?}: expected up to 40 of [A-Za-z0-9._+-], e.g. 2.0.0"
        );
    }
    if let Ok(accent) = std::env::var("COUNTER_ACCENT") {
        let hex = accent.strip_prefix('#').unwrap_or("");
        assert!(
            hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "COUNTER_ACCENT={accent:?}: expected a colour like #7c3aed"
        );
    }
}
