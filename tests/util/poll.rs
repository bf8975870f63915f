//! Waiting for a fact instead of sleeping for a guess.

use std::time::{Duration, Instant};

/// Waits up to `timeout` for `check` to hold.
pub fn eventually(timeout: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}
