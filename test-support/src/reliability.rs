//! Rows of the RELIABILITY.md fault table, from the service tests and the end-to-end tests
//! alike.

use std::io::Write;
use std::path::Path;

/// Records one row of the RELIABILITY.md fault table (cells separated by ` | `): printed,
/// and appended to `target/reliability.md`, where a whole run's rows can be collected.
pub fn reliability_row(cells: &str) {
    let row = format!("| {cells} |");
    println!("RELIABILITY {row}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::create_dir_all(&dir);
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("reliability.md"))
        .and_then(|mut file| writeln!(file, "{row}"));
    if let Err(e) = appended {
        eprintln!("could not record the reliability row: {e}");
    }
}

/// Says that `check` did not run on this machine, and why: straight to the terminal (not
/// through the test harness's capture, which shows a passing test's output to nobody)
/// and as a row of the run's table, so that a pass is never read as covering it.
pub fn not_checked_here(check: &str, why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "NOT CHECKED on this machine: {check} ({why})"
    );
    reliability_row(&format!("{check} | not checked here | - | - | - | {why}"));
}
