//! The systemd service protocol (`Type=notify`, `WatchdogSec=`): `READY=1`
//! once `serve` answers HTTP, `WATCHDOG=1` while its runtime is responsive,
//! `STOPPING=1` when it drains. Each is one datagram to `NOTIFY_SOCKET`;
//! without that variable (not under systemd) all of it does nothing.
//!
//! The watchdog is kept by a task on the same runtime as the workers and
//! the HTTP server: a runtime wedged by a blocking call stops it, and
//! systemd restarts the service. It does not depend on the database: a
//! restart would not bring a database back, and `/readyz` says that.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// `READY=1` with a status line for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`: draining (steps in flight finish or are handed back).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Pets the watchdog at half its interval until `shutdown`, when systemd
/// asked for one (`WATCHDOG_USEC`, for this process if `WATCHDOG_PID` is set).
pub fn spawn_watchdog(shutdown: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    }))
}

/// The watchdog interval systemd set for process `pid`, as sd_watchdog_enabled(3) reads it.
fn watchdog_interval(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    match for_pid.map(|p| p.trim().parse::<u32>()) {
        Some(Ok(p)) if p != pid => None,
        Some(Err(_)) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "Could not notify systemd (NOTIFY_SOCKET).");
    }
}

#[cfg(test)]
mod tests {
    use super::watchdog_interval;
    use std::time::Duration;

    #[test]
    fn the_watchdog_is_on_only_for_this_process_with_a_positive_interval() {
        let on = Some(Duration::from_secs(30));
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), on);
        assert_eq!(watchdog_interval(Some("30000000"), Some("7"), 7), on);
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None, "another process's");
        assert_eq!(watchdog_interval(Some("30000000"), Some("x"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }
}
