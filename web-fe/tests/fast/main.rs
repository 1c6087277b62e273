//! The fast tier: the application in this process, on a port it picks itself, against a
//! real redis-server. It covers every route, the shapes of errors, the headers, and the two
//! behaviours that rest on actix-http internals (see the pin in Cargo.toml). Signals, exit
//! codes and slow sockets stay in the service tests, which run the binary.
//!
//! `cargo test -p web-fe --lib --test fast` runs this and the unit tests in seconds.

mod routes;
mod sockets;
mod support;
