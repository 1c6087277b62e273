//! Waiting for a state by polling for it, never by sleeping a guessed time.

use std::time::{Duration, Instant};

/// First pause between polls; it doubles up to [`LONGEST_PAUSE`], so a quick check is seen
/// at once and a slow one (a docker command) is not run fifty times a second.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const LONGEST_PAUSE: Duration = Duration::from_millis(250);

/// Polls `ready` until it returns Some, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, ready: impl FnMut() -> Option<T>) -> T {
    poll(timeout, ready).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `ready` until it returns Some, or gives up with None after `timeout`: for a caller
/// that has more to say about a wait that failed.
pub fn poll<T>(timeout: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Polls a count (`None` while it cannot be read) until it stands `by` past `mark`: the
/// load is reaching it. Returns the count then; panics after `timeout` naming `what`.
pub fn wait_for_count(
    what: &str,
    timeout: Duration,
    count: impl Fn() -> Option<u64>,
    mark: u64,
    by: u64,
) -> u64 {
    wait_for(what, timeout, || count().filter(|&n| n >= mark + by))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_was_awaited() {
        let mut polls = 0;
        let found = wait_for("the third poll", Duration::from_secs(5), || {
            polls += 1;
            (polls == 3).then_some(polls)
        });
        assert_eq!(found, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for nothing")]
    fn gives_up_after_the_timeout() {
        wait_for::<()>("nothing", Duration::from_millis(50), || None);
    }
}
