//! Load from inside a Docker network: a client container runs curl loops that resolve
//! `tasks.web-fe` for every connection (no routing mesh or VIP needed), and its log is
//! tallied into the same [`LoadReport`] as load from the host. Used on the single-node stack and on the lab alike.

use crate::load::LoadReport;

/// A shell script for a client container: `loops` curl loops, each bounded to 20,000
/// requests and 5 minutes, until `/tmp/stop` exists. One line per request: the status
/// (`000`: no answer) and the replica's address (empty when none was reached).
pub fn request_loops(loops: u32) -> String {
    format!(
        "end=$(( $(date +%s) + 300 )); \
         for w in $(seq {loops}); do ( n=0; \
           while [ ! -e /tmp/stop ] && [ $(date +%s) -lt $end ] && [ $n -lt 20000 ]; do \
             curl -s -o /dev/null -w '%{{http_code}} %{{remote_ip}}\\n' --connect-timeout 2 \
               --max-time 5 http://tasks.web-fe:8080/api; n=$((n+1)); \
           done ) & \
         done; wait"
    )
}

/// Reads the log of [`request_loops`].
pub fn tally(log: &str) -> LoadReport {
    let mut report = LoadReport::default();
    for line in log.lines() {
        let mut parts = line.split_whitespace();
        let Some(code) = parts.next() else {
            continue;
        };
        if code == "200" {
            report.ok += 1;
        } else {
            *report.failures.entry(code.to_owned()).or_default() += 1;
            let address = parts.next().unwrap_or("none").to_owned();
            *report.failed_addresses.entry(address).or_default() += 1;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_tallied_by_status_and_failing_address() {
        let report = tally("200 10.0.1.3\n200 10.0.1.4\n000 \n502 10.0.1.9\n\n");
        assert_eq!(report.ok, 2);
        assert_eq!(report.failed(), 2);
        assert_eq!(report.failures["000"], 1);
        assert_eq!(report.failed_addresses["none"], 1);
        assert_eq!(report.failed_addresses["10.0.1.9"], 1);
    }
}
