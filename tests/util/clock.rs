//! A fast schedule clock (`LIFEBOAT_SCHEDULE_CLOCK`) and its ticks.

use std::time::Duration;

use super::sandbox::Sandbox;

impl Sandbox {
    /// Makes schedule time run `speed` times faster than the wall clock for
    /// every `lifeboat` process of this sandbox (`LIFEBOAT_SCHEDULE_CLOCK`),
    /// from an anchor on a whole minute: a minute tick then falls on real
    /// times `anchor + k * 60/speed` seconds. Returns the clock.
    pub fn fast_schedule_clock(self, speed: i64) -> (Sandbox, FastClock) {
        let now = chrono::Utc::now().timestamp_millis();
        let clock = FastClock { anchor_ms: now - now.rem_euclid(60_000), speed };
        let value = format!("{speed}x@{}", clock.anchor_ms);
        (self.env("LIFEBOAT_SCHEDULE_CLOCK", &value), clock)
    }
}

/// The schedule clock of `Sandbox::fast_schedule_clock`, as the test sees it.
#[derive(Debug, Clone, Copy)]
pub struct FastClock {
    pub anchor_ms: i64,
    pub speed: i64,
}

impl FastClock {
    /// Schedule time now, ms.
    pub fn now(&self) -> i64 {
        let real = chrono::Utc::now().timestamp_millis();
        self.anchor_ms + (real - self.anchor_ms) * self.speed
    }

    /// Real ms between two minute ticks.
    pub fn tick_real_ms(&self) -> i64 {
        60_000 / self.speed
    }

    /// Sleeps until `fraction` (0..1) of the way between two minute ticks,
    /// `ticks_later` ticks from now (0: the next such instant).
    pub fn sleep_to_phase(&self, fraction: f64, ticks_later: i64) {
        let real = chrono::Utc::now().timestamp_millis();
        let period = self.tick_real_ms();
        let into = (real - self.anchor_ms).rem_euclid(period);
        let target = (fraction * period as f64) as i64;
        let mut wait = (target - into).rem_euclid(period);
        if wait == 0 {
            wait = period;
        }
        std::thread::sleep(Duration::from_millis((wait + ticks_later * period) as u64));
    }
}

/// A schedule tick (RFC 3339) in ms.
pub fn tick_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("tick `{text}` is not RFC 3339: {e}"))
        .timestamp_millis()
}
