//! Delay before the next attempt: fixed or exponential, capped, jittered.

use std::time::Duration;

use crate::compile::EffectiveRetry;
use crate::model::Backoff;

/// Delay after attempt `n` (1-based) failed. `unit` in [0, 1) drives the
/// jitter (±20%), so tests can pin it.
pub fn delay_after(policy: &EffectiveRetry, n: u32, unit: f64) -> Duration {
    let base = policy.delay.as_millis() as f64;
    let raw = match policy.backoff {
        Backoff::Fixed => base,
        Backoff::Exponential => base * 2f64.powi(n.saturating_sub(1).min(30) as i32),
    };
    let capped = raw.min(policy.max_delay.as_millis().max(policy.delay.as_millis()) as f64);
    let jittered = if policy.jitter { capped * (0.8 + 0.4 * unit.clamp(0.0, 1.0)) } else { capped };
    Duration::from_millis(jittered.max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Duration as D;

    fn policy(backoff: Backoff, jitter: bool) -> EffectiveRetry {
        EffectiveRetry {
            attempts: 5,
            backoff,
            delay: D::from_millis(1000),
            max_delay: D::from_millis(5000),
            jitter,
        }
    }

    #[test]
    fn exponential_doubles_and_caps() {
        let p = policy(Backoff::Exponential, false);
        let ms: Vec<u128> = (1..=5).map(|n| delay_after(&p, n, 0.5).as_millis()).collect();
        assert_eq!(ms, vec![1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn fixed_stays_and_jitter_stays_within_20_percent() {
        let p = policy(Backoff::Fixed, true);
        assert_eq!(delay_after(&p, 3, 0.0).as_millis(), 800);
        assert_eq!(delay_after(&p, 3, 1.0).as_millis(), 1200);
    }
}
