//! `web-fe healthcheck`: asks the local `/healthz` and exits 0 or 1, so a Docker
//! HEALTHCHECK works in an image without a shell or curl.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::configuration::ServerSettings;

const TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(settings: &ServerSettings) -> ExitCode {
    if settings.health_port == 0 {
        eprintln!(
            "web-fe healthcheck: HEALTH_PORT=0 names no port to ask: set the port the replica listens on"
        );
        return ExitCode::FAILURE;
    }
    let result = probe(local_address(settings));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web-fe healthcheck: unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The health listener, which only listens on loopback (see `startup::health_server`).
fn local_address(settings: &ServerSettings) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), settings.health_port)
}

fn probe(address: SocketAddr) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("{what} {address}: {e}");
    let mut stream =
        TcpStream::connect_timeout(&address, TIMEOUT).map_err(|e| fail("cannot connect to", e))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .and_then(|()| {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        })
        .map_err(|e| fail("cannot send to", e))?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .map_err(|e| fail("no answer from", e))?;
    match &head {
        b"HTTP/1.1 200" => Ok(()),
        other => Err(format!(
            "{address}/healthz answered {:?}",
            String::from_utf8_lossy(other)
        )),
    }
}
