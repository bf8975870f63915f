//! PagerDuty Events API v2: one incident per run (`dedup_key` = run id),
//! triggered, acknowledged and resolved by the run's messages. A drill's
//! incident key is `drill-<run id>` (so it never merges with a live
//! incident), its summary starts with `[DRILL]` and its
//! `custom_details.drill` is true.

use async_trait::async_trait;
use reqwest::Url;
use serde_json::{Value, json};

use crate::channel::{Channel, ConfigError};
use crate::incident::Action;
use crate::message::{Delivered, Message, SendError, truncate};

pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

pub struct Pagerduty {
    name: String,
    /// Secret: never logged or put in an error.
    routing_key: String,
    url: Url,
    client: reqwest::Client,
}

impl Pagerduty {
    pub fn new(
        name: &str,
        routing_key: String,
        url: Option<&str>,
    ) -> Result<Pagerduty, ConfigError> {
        Ok(Pagerduty {
            name: name.to_string(),
            routing_key,
            url: crate::http::parse_url(name, "url", url.unwrap_or(DEFAULT_URL))?,
            client: crate::http::client(name)?,
        })
    }
}

/// The Events API v2 body for `msg`. Acknowledge and resolve carry only the
/// incident key, as the API expects.
pub fn payload(routing_key: &str, msg: &Message) -> Value {
    let msg = &msg.marked();
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": msg.action.as_str(),
        "dedup_key": msg.dedup_key,
    });
    if msg.action == Action::Trigger {
        let summary = if msg.summary.is_empty() { &msg.subject } else { &msg.summary };
        let source = if msg.source.is_empty() { "lifeboat" } else { &msg.source };
        body["payload"] = json!({
            "summary": truncate(summary, 1024),
            "severity": msg.severity.pagerduty(),
            "source": source,
            "component": msg.workflow,
            "class": msg.event.as_str(),
            "custom_details": {
                "event": msg.event.as_str(),
                "run_id": msg.run_id,
                "workflow": msg.workflow,
                "severity": msg.severity.as_str(),
                "details": msg.text,
                "drill": msg.drill,
            },
        });
        if let Some(live) = &msg.live_channel {
            body["payload"]["custom_details"]["live_channel"] = json!(live);
        }
        body["client"] = json!("lifeboat");
        if let Some(link) = &msg.link {
            body["client_url"] = json!(link);
            body["links"] = json!([{"href": link, "text": format!("lifeboat run {}", msg.run_id)}]);
        }
    }
    body
}

#[async_trait]
impl Channel for Pagerduty {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    async fn probe(&self) -> Result<String, String> {
        crate::http::probe_origin(&self.client, &self.url).await
    }

    async fn send(&self, msg: &Message) -> Result<Delivered, SendError> {
        crate::http::deliver(
            self.client.post(self.url.clone()).json(&payload(&self.routing_key, msg)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Context, Mode};
    use crate::templates::Rendered;

    fn message(mode: Mode, event: &str) -> Message {
        let mut ctx = Context::sample(event);
        ctx.run.mode = mode;
        let rendered = Rendered { subject: "Recovery FAILED".into(), text: "t".into(), html: None };
        Message::new(&ctx, rendered)
    }

    #[test]
    fn a_drill_event_has_its_own_incident_key_summary_and_flag() {
        let live = payload("key", &message(Mode::Live, "failed"));
        let drill = payload("key", &message(Mode::Drill, "failed"));
        assert_ne!(live["dedup_key"], drill["dedup_key"]);
        assert_eq!(drill["dedup_key"], format!("drill-{}", live["dedup_key"].as_str().unwrap()));
        assert_eq!(drill["payload"]["summary"], "[DRILL] Recovery FAILED");
        assert_eq!(drill["payload"]["custom_details"]["drill"], true);
        assert_eq!(live["payload"]["summary"], "Recovery FAILED");
        assert_eq!(live["payload"]["custom_details"]["drill"], false);
    }

    #[test]
    fn a_drill_resolve_names_the_drill_incident() {
        let trigger = payload("key", &message(Mode::Drill, "failed"));
        let resolve = payload("key", &message(Mode::Drill, "resolved"));
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);
    }
}
