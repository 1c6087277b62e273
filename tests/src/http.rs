//! Requests from the test process to published ports on 127.0.0.1, and reading pages.

use std::sync::OnceLock;
use std::time::Duration;

/// A client that opens a new connection for every request (as a browser refresh does
/// with keep-alive off, and so that load spreads), and reads any status as an answer.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(0)
            .timeout_connect(Some(Duration::from_secs(2)))
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent()
    })
}

/// A GET to 127.0.0.1:`port`: status and body, or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_at(([127, 0, 0, 1], port).into(), path)
}

/// A GET to any address: loopback, or a container on the project's own networks.
pub fn http_get_at(address: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut response = agent().get(format!("http://{address}{path}")).call().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// The text between `start` and the next `end` in `text`.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// The count and hostname shown on the HTML page.
pub fn page_count_and_host(html: &str) -> (u64, String) {
    let count = between(html, r#"aria-labelledby="count-label">"#, "<")
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no count on the page:\n{html}"));
    let host = between(html, r#"<span class="badge" id="hostname">"#, "<")
        .unwrap_or_else(|| panic!("no hostname on the page:\n{html}"));
    (count, host.to_owned())
}

/// One GET: the status, or the kind of transport failure.
pub(crate) fn request_status(port: u16, path: &str) -> Result<u16, String> {
    let mut response = agent()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .map_err(|e| match e {
            ureq::Error::Io(e) => format!("io: {:?}", e.kind()),
            ureq::Error::Timeout(t) => format!("timeout: {t}"),
            other => other.to_string(),
        })?;
    // Read the whole answer, so a body cut short is a failure too.
    response
        .body_mut()
        .read_to_vec()
        .map_err(|e| format!("body: {e}"))?;
    Ok(response.status().as_u16())
}
