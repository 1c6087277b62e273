//! What this build is: its version and accent colour, both fixed at compile time.

/// `COUNTER_VERSION` at build time, else the crate version.
pub const VERSION: &str = match option_env!("COUNTER_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// `COUNTER_ACCENT` at build time (checked by build.rs), else the default blue.
pub const ACCENT: &str = match option_env!("COUNTER_ACCENT") {
    Some(a) => a,
    None => "#2563eb",
};
