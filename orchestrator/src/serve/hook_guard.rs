//! What a hook refuses before it starts anything:
//!
//! - more requests than its rate: `[hooks.NAME] rate_per_minute` sustained,
//!   `burst` at once (a token bucket per hook, per replica) → 429 with
//!   `Retry-After`;
//! - more alerts in one payload than `[hooks.NAME] max_alerts` → 413;
//! - a signed request accepted before (same timestamp and body) → 409; the
//!   store remembers accepted signatures for their window, so this holds
//!   across replicas.
//!
//! Every refusal is counted in the `webhook_requests` metric and audited —
//! but a flood must not flood the audit log: per hook and reason, a replica
//! writes at most one `hook_refused` entry per [`AUDIT_EVERY`]; the refusals
//! not written individually are counted in the next entry
//! (`unaudited_since_last`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::auth::Hook;
use crate::store::{NewAudit, Store};

/// At most one audit entry per hook, reason and replica in this period.
pub const AUDIT_EVERY: Duration = Duration::from_secs(60);

/// Why a hook refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    RateLimited,
    TooManyAlerts,
    Replayed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::TooManyAlerts => "too_many_alerts",
            Refusal::Replayed => "replayed",
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct AuditWindow {
    written_at: Instant,
    unaudited: u64,
}

/// Per-hook token buckets and audit windows (keys: configured hooks only).
#[derive(Default)]
pub struct HookGuard {
    buckets: Mutex<HashMap<String, Bucket>>,
    audits: Mutex<HashMap<(String, Refusal), AuditWindow>>,
}

impl std::fmt::Debug for HookGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookGuard").finish_non_exhaustive()
    }
}

impl HookGuard {
    /// Takes one request from `hook`'s bucket, or says how long until one is there.
    pub fn take(&self, hook: &Hook, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(hook.burst.max(1));
        let per_sec = f64::from(hook.rate_per_minute.max(1)) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(hook.name.clone()).or_insert(Bucket { tokens: capacity, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }

    /// Whether a refusal is audited now: `Some(n)` with the refusals not
    /// audited since the last entry, `None` inside the window (counted).
    fn audit_due(&self, hook: &str, why: Refusal, now: Instant) -> Option<u64> {
        let mut audits = self.audits.lock().unwrap_or_else(|e| e.into_inner());
        match audits.get_mut(&(hook.to_string(), why)) {
            Some(w) if now.saturating_duration_since(w.written_at) < AUDIT_EVERY => {
                w.unaudited += 1;
                None
            }
            Some(w) => {
                let n = w.unaudited;
                *w = AuditWindow { written_at: now, unaudited: 0 };
                Some(n)
            }
            None => {
                audits
                    .insert((hook.to_string(), why), AuditWindow { written_at: now, unaudited: 0 });
                Some(0)
            }
        }
    }

    /// Records a refusal: a log line and an audit entry (`hook_refused`,
    /// actor `hook:NAME`) at most once per window (`hooks::receive` counts
    /// every one in the metric).
    pub async fn refused(&self, store: &dyn Store, hook: &str, why: Refusal, detail: Value) {
        let Some(unaudited) = self.audit_due(hook, why, Instant::now()) else { return };
        tracing::warn!(hook, reason = why.as_str(), %detail, "Webhook request refused.");
        let mut payload = json!({
            "hook": hook,
            "reason": why.as_str(),
            "unaudited_since_last": unaudited,
        });
        if let (Some(map), Value::Object(extra)) = (payload.as_object_mut(), detail) {
            map.extend(extra);
        }
        let entry = NewAudit {
            actor: format!("hook:{hook}"),
            action: "hook_refused".into(),
            run_id: None,
            step_id: None,
            payload,
        };
        if let Err(e) = store.audit_append(entry).await {
            tracing::error!(hook, error = %e, "Cannot audit a webhook refusal.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HookFormat;
    use crate::serve::auth::HookAuth;

    fn hook(rate_per_minute: u32, burst: u32) -> Hook {
        Hook {
            name: "am".into(),
            format: HookFormat::Alertmanager,
            auth: HookAuth::Bearer([0; 32]),
            max_alerts: 50,
            rate_per_minute,
            burst,
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_sustained_rate() {
        let guard = HookGuard::default();
        let h = hook(60, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(guard.take(&h, t0), Ok(()));
        }
        let wait = guard.take(&h, t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1), "{wait:?}");
        // One a second comes back; never more than the burst.
        assert_eq!(guard.take(&h, t0 + Duration::from_secs(1)), Ok(()));
        assert!(guard.take(&h, t0 + Duration::from_secs(1)).is_err());
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(guard.take(&h, later), Ok(()));
        }
        assert!(guard.take(&h, later).is_err());
    }

    #[test]
    fn refusals_are_audited_once_per_window_with_the_count_of_the_others() {
        let guard = HookGuard::default();
        let t0 = Instant::now();
        assert_eq!(guard.audit_due("am", Refusal::RateLimited, t0), Some(0));
        for i in 1..=500 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(guard.audit_due("am", Refusal::RateLimited, at), None);
        }
        assert_eq!(guard.audit_due("am", Refusal::Replayed, t0), Some(0), "per reason");
        assert_eq!(guard.audit_due("other", Refusal::RateLimited, t0), Some(0), "per hook");
        assert_eq!(guard.audit_due("am", Refusal::RateLimited, t0 + AUDIT_EVERY), Some(500));
        assert_eq!(guard.audit_due("am", Refusal::RateLimited, t0 + AUDIT_EVERY), None);
    }
}
