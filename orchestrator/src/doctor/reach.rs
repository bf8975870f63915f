//! Doctor's checks of what lifeboat reaches over the network: every
//! notification channel (an SMTP login, an HTTPS handshake, a writable
//! directory; a real message only with `--send-test`) and every
//! `[connections.X]` database. Probes run concurrently, each bounded.

use std::time::Duration;

use futures_util::future::join_all;
use lifeboat_notify::{Action, Channel, Message};

use super::{Finding, Probe, Setup};

/// Longest a probe may take: a channel's own attempt timeout, plus a margin.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) async fn channels(setup: &Setup, probe: Probe, findings: &mut Vec<Finding>) {
    let env = |k: &str| std::env::var(k).ok();
    let host = hostname();
    let checks = setup.config.channels.iter().map(|(name, config)| {
        let built = lifeboat_notify::channels::build(name, config, &env);
        let host = host.clone();
        let incidents = config.follows_incidents();
        async move {
            let channel = match built {
                Ok(channel) => channel,
                Err(e) => {
                    let fix = match &e {
                        lifeboat_notify::ConfigError::MissingEnv { var, .. } => {
                            format!("export {var}=… in the service's environment")
                        }
                        _ => "fix the channel in lifeboat.toml (docs/config.md#channels)".into(),
                    };
                    return vec![Finding::fail("channel", name, e.to_string(), fix)];
                }
            };
            let mut out = vec![reach(channel.as_ref()).await];
            if probe.send_test && out[0].status != super::Status::Fail {
                out.push(send_test(channel.as_ref(), &host, incidents).await);
            }
            out
        }
    });
    findings.extend(join_all(checks).await.into_iter().flatten());
}

async fn reach(channel: &dyn Channel) -> Finding {
    let name = channel.name();
    match tokio::time::timeout(PROBE_TIMEOUT, channel.probe()).await {
        Ok(Ok(detail)) => Finding::pass("channel", name, format!("{}: {detail}", channel.kind())),
        Ok(Err(e)) => {
            Finding::fail("channel", name, format!("{}: {e}", channel.kind()), fix(channel))
        }
        Err(_) => Finding::fail(
            "channel",
            name,
            format!("{}: no answer within {} s", channel.kind(), PROBE_TIMEOUT.as_secs()),
            fix(channel),
        ),
    }
}

fn fix(channel: &dyn Channel) -> &'static str {
    match channel.kind() {
        "email" => {
            "check smtp_url, and the user and password its username_env and password_env name"
        }
        "file" => "create the directory and let lifeboat's user write to it",
        _ => "check the URL (DNS, firewall, proxy) and that this host may reach it",
    }
}

/// One real message; an incident it opens (PagerDuty, Opsgenie) is
/// resolved at once.
async fn send_test(channel: &dyn Channel, host: &str, incidents: bool) -> Finding {
    let name = channel.name();
    let mut msg = Message::test(name, host);
    let sent = match channel.send(&msg).await {
        Ok(delivered) => delivered,
        Err(e) => {
            return Finding::fail("send-test", name, e.to_string(), fix(channel));
        }
    };
    if incidents {
        msg.action = Action::Resolve;
        if let Err(e) = channel.send(&msg).await {
            return Finding::warn(
                "send-test",
                name,
                format!("sent ({}), but resolving it failed: {e}", sent.detail),
                "resolve the test incident by hand",
            );
        }
    }
    Finding::pass("send-test", name, format!("test message delivered: {}", sent.detail))
}

pub(super) async fn connections(setup: &Setup, findings: &mut Vec<Finding>) {
    let checks = setup.config.connections.iter().map(|(name, conn)| async move {
        let Some(url) = std::env::var(&conn.url_env).ok().filter(|u| !u.is_empty()) else {
            return Finding::fail(
                "connection",
                name,
                format!("{} (its url_env) is not set", conn.url_env),
                format!(
                    "export {}=… with the connection URL (a database, dns:// or HAProxy socket)",
                    conn.url_env
                ),
            );
        };
        match lifeboat_steps::probe(&url, PROBE_TIMEOUT).await {
            Ok(detail) => Finding::pass("connection", name, detail),
            Err(e) => Finding::fail(
                "connection",
                name,
                e,
                format!("check the URL in {} and that its server runs", conn.url_env),
            ),
        }
    });
    findings.extend(join_all(checks).await);
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".into())
}
