//! Slack incoming webhook: a Block Kit message with a header, the key facts
//! as fields, the text and a button to the run.

use async_trait::async_trait;
use reqwest::Url;
use serde_json::{Value, json};

use crate::channel::{Channel, ConfigError};
use crate::incident::Action;
use crate::message::{Delivered, Message, SendError, truncate};

pub struct Slack {
    name: String,
    /// Secret: never logged or put in an error.
    url: Url,
    client: reqwest::Client,
}

impl Slack {
    pub fn new(name: &str, webhook_url: &str) -> Result<Slack, ConfigError> {
        Ok(Slack {
            name: name.to_string(),
            url: crate::http::parse_url(name, "the Slack webhook URL", webhook_url)?,
            client: crate::http::client(name)?,
        })
    }
}

/// Slack's mrkdwn needs only these three escaped.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The Block Kit payload for `msg`.
pub fn payload(msg: &Message) -> Value {
    let run = match &msg.link {
        Some(link) => format!("<{}|{}>", escape(link), escape(&msg.run_id)),
        None => format!("`{}`", escape(&msg.run_id)),
    };
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Severity*\n{}", msg.severity)}),
        json!({"type": "mrkdwn", "text": format!("*Workflow*\n{}", escape(&msg.workflow))}),
        json!({"type": "mrkdwn", "text": format!("*Run*\n{run}")}),
        json!({"type": "mrkdwn", "text": format!("*Event*\n{}", msg.event.as_str())}),
    ];
    match msg.action {
        Action::Trigger => {}
        Action::Acknowledge => {
            fields.push(json!({"type": "mrkdwn", "text": "*Status*\nacknowledged"}))
        }
        Action::Resolve => fields.push(json!({"type": "mrkdwn", "text": "*Status*\nresolved"})),
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&msg.subject, 150), "emoji": true}}),
        json!({"type": "section", "fields": fields}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&escape(&msg.text), 3000)}}),
    ];
    if let Some(link) = &msg.link {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button",
            "text": {"type": "plain_text", "text": "Open run"},
            "url": link,
            "action_id": "open_run",
        }]}));
    }
    // `text` is the notification fallback (phones, screen readers).
    json!({"text": msg.subject, "blocks": blocks})
}

#[async_trait]
impl Channel for Slack {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "slack"
    }

    async fn send(&self, msg: &Message) -> Result<Delivered, SendError> {
        let response = self
            .client
            .post(self.url.clone())
            .json(&payload(msg))
            .send()
            .await
            .map_err(crate::http::transport_error)?;
        crate::http::outcome(response).await
    }
}
