//! Processes the tests start: signals by PID (never by name), and what `/proc` says of them.

use std::process::Command;

/// Sends a signal by PID.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill(1) is available");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Resident memory of a process, in KiB, from `/proc`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc status")
}

/// File descriptors a process holds open (sockets included), from `/proc`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("process runs")
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let me = std::process::id();
        assert!(rss_kib(me) > 0);
        assert!(open_fds(me) >= 3, "stdin, stdout and stderr at least");
    }
}
