//! Waiting for a condition that nothing notifies about (a file the daemon
//! watches, a listing that changes) with a deadline, so a condition that
//! never holds fails its test instead of hanging it.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Call `check` until it returns `Ok`, at most for `within`. `Err` says what
/// was seen instead; the last one is in the panic message when time runs
/// out. Returns the value and how long it took.
pub fn eventually<T, E: Display>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, E>,
) -> (T, Duration) {
    let began = Instant::now();
    loop {
        match check() {
            Ok(value) => return (value, began.elapsed()),
            Err(seen) => assert!(
                began.elapsed() < within,
                "{what}: not within {within:?}; last seen: {seen}"
            ),
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
