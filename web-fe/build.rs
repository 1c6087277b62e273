//! Checks the build-time look of the image: `COUNTER_VERSION` and `COUNTER_ACCENT` let a
//! second image for the rolling-update demo look visibly different. A bad value fails the
//! build here, with its name, rather than producing a broken page. It also names each of
//! the page's assets by a hash of its content, so a browser may keep one for good.

fn main() {
    for (file, var) in [
        ("assets/style.css", "STYLE_CSS_HASH"),
        ("assets/live.js", "LIVE_JS_HASH"),
    ] {
        println!("cargo:rerun-if-changed={file}");
        let content = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        println!("cargo:rustc-env={var}={:016x}", fnv1a(&content));
    }
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

/// FNV-1a, 64 bits: stable across builds and toolchains, so replicas built apart from the
/// same files name their assets alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
