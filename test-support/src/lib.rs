//! What both test suites share: the service tests (`web-fe/tests`) and the end-to-end
//! harness (`tests/`). Each module holds one concern.

mod poll;
mod process;
mod redis_server;
mod relay;
mod reliability;

pub use poll::{poll, wait_for, wait_for_count};
pub use process::{open_fds, rss_kib, signal};
pub use redis_server::{Redis, free_port, query_at};
pub use relay::{pump, relay};
pub use reliability::{not_checked_here, reliability_row};
