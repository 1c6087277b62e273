//! Load from inside a Docker network: a client container runs curl loops that resolve
//! `tasks.web-fe` for every connection (no routing mesh or VIP needed), and its log is
//! tallied into the same [`LoadReport`] as load from the host. Used on the single-node stack and on the lab alike.

use crate::load::{LoadReport, RunningLoad};

/// Runs `docker` with these arguments on some engine (this machine's, or a lab node's):
/// whether it succeeded, and what it printed.
pub type Engine<'a> = Box<dyn Fn(&[&str]) -> (bool, String) + 'a>;

/// This machine's engine.
pub fn this_machine() -> Engine<'static> {
    Box::new(|args: &[&str]| {
        let out = crate::runner::docker(args);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success(), stdout)
    })
}

/// A client container running [`request_loops`] on `engine`; removed when dropped.
pub struct ClientLoad<'a> {
    engine: Engine<'a>,
    name: String,
}

impl<'a> ClientLoad<'a> {
    /// `loops` request loops from a container named `name` on `network`.
    pub fn start(engine: Engine<'a>, name: &str, network: &str, image: &str, loops: u32) -> Self {
        let _ = engine(&["rm", "-f", name]);
        let script = request_loops(loops);
        let (ok, out) = engine(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            image,
            "sh",
            "-c",
            &script,
        ]);
        assert!(ok, "the client container {name} did not start: {out}");
        Self {
            engine,
            name: name.to_owned(),
        }
    }
}

impl RunningLoad for ClientLoad<'_> {
    /// Stops the loops and tallies what they saw.
    fn finish(self) -> LoadReport {
        let _ = (self.engine)(&["exec", &self.name, "touch", "/tmp/stop"]);
        let (waited, out) = (self.engine)(&["wait", &self.name]);
        assert!(
            waited,
            "the client container {} did not end: {out}",
            self.name
        );
        let (_, log) = (self.engine)(&["logs", &self.name]);
        tally(&log)
    }
}

impl Drop for ClientLoad<'_> {
    fn drop(&mut self) {
        let _ = (self.engine)(&["rm", "-f", &self.name]);
    }
}

/// One request to `/api` from a client container, printing one line: the status (`000`:
/// no answer) and the replica's address (empty when none was reached), as [`tally`] reads.
pub const ONE_REQUEST: &str = "curl -s -o /dev/null -w '%{http_code} %{remote_ip}\\n' \
     --connect-timeout 2 --max-time 5 http://tasks.web-fe:8080/api";

/// A shell script for a client container: `loops` loops of [`ONE_REQUEST`], each bounded
/// to 20,000 requests and 5 minutes, until `/tmp/stop` exists.
pub fn request_loops(loops: u32) -> String {
    format!(
        "end=$(( $(date +%s) + 300 )); \
         for w in $(seq {loops}); do ( n=0; \
           while [ ! -e /tmp/stop ] && [ $(date +%s) -lt $end ] && [ $n -lt 20000 ]; do \
             {ONE_REQUEST}; n=$((n+1)); \
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
