//! PagerDuty Events API v2: one incident per run (`dedup_key` = run id),
//! triggered, acknowledged and resolved by the run's messages.

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
            },
        });
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

    async fn send(&self, msg: &Message) -> Result<Delivered, SendError> {
        let response = self
            .client
            .post(self.url.clone())
            .json(&payload(&self.routing_key, msg))
            .send()
            .await
            .map_err(crate::http::transport_error)?;
        crate::http::outcome(response).await
    }
}
