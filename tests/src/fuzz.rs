//! A bounded, seeded fuzz run against a live web-fe: random methods, paths, headers and
//! versions, oversized and malformed requests, raw garbage, and many slow or half-open
//! connections held open meanwhile. Well-formed probes between the cases must succeed.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A well-formed probe is sent after every this many fuzzed requests.
const PROBE_EVERY: u64 = 25;

pub struct Outcome {
    pub requests: u64,
    pub slow_connections: u64,
    pub probes: u64,
    pub probe_failures: u64,
    /// 200 answers that showed a count (fuzzed or probes): each one is a counted view.
    pub views_answered: u64,
    /// How the server answered the fuzzed requests: status codes, or `closed`.
    pub answers: BTreeMap<String, u64>,
    /// How many requests of each kind were sent.
    pub kinds: BTreeMap<&'static str, u64>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests {:?}; answers {:?}; {} slow connections; {}/{} probes failed",
            self.requests,
            self.kinds,
            self.answers,
            self.slow_connections,
            self.probe_failures,
            self.probes
        )
    }
}

/// Sends `requests` fuzzed requests to 127.0.0.1:`port` while `slow` connections trickle.
pub fn run(port: u16, seed: u64, requests: u64, slow: u64) -> Outcome {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || slow_connections(address, slow, &stop)
    });
    let mut rng = Rng(fastrand::Rng::with_seed(seed));
    let mut outcome = Outcome {
        requests,
        slow_connections: slow,
        probes: 0,
        probe_failures: 0,
        views_answered: 0,
        answers: BTreeMap::new(),
        kinds: BTreeMap::new(),
    };
    for i in 0..requests {
        let (kind, bytes) = fuzz_case(&mut rng);
        *outcome.kinds.entry(kind).or_default() += 1;
        let (status, counted) = answer(address, &bytes);
        *outcome.answers.entry(status).or_default() += 1;
        outcome.views_answered += u64::from(counted);
        if i % PROBE_EVERY == 0 {
            for path in ["/healthz", "/api"] {
                outcome.probes += 1;
                let probe = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let (status, counted) = answer(address, probe.as_bytes());
                outcome.views_answered += u64::from(counted);
                if status != "200" {
                    outcome.probe_failures += 1;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    trickle.join().expect("slow connections thread");
    outcome
}

/// The status code of the answer (or `closed` when the server hung up without one), and
/// whether it was a 200 showing a count, as the page and the JSON do for a counted view.
fn answer(address: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2)) else {
        return ("connect failed".into(), false);
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut reply);
    let status = match reply.get(9..12).and_then(|s| std::str::from_utf8(s).ok()) {
        Some(code) if reply.starts_with(b"HTTP/1.") => code.to_owned(),
        _ => "closed".into(),
    };
    let text = String::from_utf8_lossy(&reply);
    let counted = status == "200" && (text.contains("\"count\":") || text.contains("id=\"count\""));
    (status, counted)
}

/// Holds `count` connections open: half send nothing, half send a header a byte at a time.
fn slow_connections(address: SocketAddr, count: u64, stop: &AtomicBool) {
    let mut open: Vec<TcpStream> = (0..count)
        .filter_map(|_| TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok())
        .collect();
    let header = b"GET /api HTTP/1.1\r\nHost: slow\r\nX-Slow: ";
    // Bounded: at most 60 s of trickling even if never told to stop.
    for sent in 0..600 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        for stream in open.iter_mut().skip(1).step_by(2) {
            let _ = stream.write_all(&[header[sent % header.len()]]);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    open.clear();
}

fn fuzz_case(rng: &mut Rng) -> (&'static str, Vec<u8>) {
    match rng.below(10) {
        0 => ("random bytes", rng.bytes(4096)),
        1 => {
            let path = format!("/{}", "a".repeat(8 * 1024 + rng.below(64 * 1024) as usize));
            ("oversized path", request("GET", &path, "HTTP/1.1", &[]))
        }
        2 => {
            let value = "v".repeat(16 * 1024 + rng.below(128 * 1024) as usize);
            (
                "oversized header",
                request("GET", "/", "HTTP/1.1", &[("X-Big", value)]),
            )
        }
        3 => ("bad framing", bad_framing(rng)),
        _ => {
            let method = rng.pick(&[
                "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT",
                "G3T", "get", "\u{7f}",
            ]);
            let version = rng.pick(&["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", "FOO", ""]);
            let headers: Vec<(&str, String)> = (0..rng.below(12))
                .map(|_| {
                    let name = rng.pick(&[
                        "Host",
                        "Accept",
                        "Content-Length",
                        "Transfer-Encoding",
                        "Connection",
                        "X-\u{1}",
                        "Cookie",
                        "Range",
                        "Expect",
                    ]);
                    (name, rng.text(64))
                })
                .collect();
            (
                "random request",
                request(method, &random_path(rng), version, &headers),
            )
        }
    }
}

fn random_path(rng: &mut Rng) -> String {
    let base = rng.pick(&[
        "/",
        "/api",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/x",
        "/../etc/passwd",
        "//",
        "/%00",
        "/%zz",
        "*",
    ]);
    let query = rng.pick(&[
        "",
        "?refresh=2",
        "?refresh=-1",
        "?refresh=99999999999",
        "?refresh=%ff",
        "?a=1&a=2&refresh=",
        "?&&&===",
    ]);
    format!("{base}{}{query}", rng.text(40))
}

fn bad_framing(rng: &mut Rng) -> Vec<u8> {
    let cases: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n",
        b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nshort",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.1\r\n Folded: header\r\n\r\n",
    ];
    cases[rng.below(cases.len() as u64) as usize].to_vec()
}

fn request(method: &str, path: &str, version: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut text = format!("{method} {path} {version}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// fastrand's generator, reproducible from the seed, and the shapes of input it makes.
struct Rng(fastrand::Rng);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n.max(1))
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.0.usize(..items.len())]
    }

    /// Up to `max` random bytes.
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        (0..self.below(max)).map(|_| self.0.u8(..)).collect()
    }

    /// Up to `max` characters, mostly printable, with control characters, quotes and
    /// non-ASCII mixed in.
    fn text(&mut self, max: u64) -> String {
        const ALPHABET: &[char] = &[
            'a', 'Z', '0', '/', '%', '?', '&', '=', ' ', '"', '<', '>', '\t', '\u{0}', '\u{1b}',
            'é', '漢', '\u{202e}', ';', ':',
        ];
        (0..self.below(max))
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize])
            .collect()
    }
}
