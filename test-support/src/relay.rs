//! TCP relays for tests that stand between a client and a server: a balancer in front of
//! replicas, a proxy in front of Redis that loses replies on purpose.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

/// Relays one connection both ways, each on its own thread, until each side has closed.
pub fn relay(client: TcpStream, server: TcpStream) {
    let (Ok(client_in), Ok(server_in)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    pump(client_in, server, |_| true);
    pump(server_in, client, |_| true);
}

/// Copies `from` into `to` on a thread while `pass` accepts each chunk. At the end of
/// `from`, `to` is told so (its write side shut); a chunk `pass` refuses is not sent and
/// both connections are cut instead, as a network that fails mid-reply would.
pub fn pump(mut from: TcpStream, mut to: TcpStream, pass: impl Fn(&[u8]) -> bool + Send + 'static) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !pass(&buf[..n]) {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Read);
        let _ = to.shutdown(Shutdown::Write);
    });
}
