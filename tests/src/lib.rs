//! Harness for the end-to-end tests: they drive a real Docker engine with the repository's
//! own Dockerfile, compose and stack files. Everything a test creates is registered with a
//! [`Cleanup`] guard and removed when the test ends, passed or failed.
//!
//! One module per concern; the tests import through the names re-exported here.

pub mod board;
pub mod browser;
pub mod client;
mod compose;
mod exclusive;
pub mod fuzz;
mod hardening;
mod http;
mod images;
pub mod lab;
mod load;
mod runner;
mod swarm;

pub use compose::*;
pub use exclusive::exclusive;
pub use hardening::*;
pub use http::*;
pub use images::*;
pub use load::*;
pub use runner::*;
pub use swarm::*;
pub use test_support::{not_checked_here, reliability_row, rss_kib, wait_for, wait_for_count};
