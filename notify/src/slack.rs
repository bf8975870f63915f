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

/// The Block Kit payload for `msg`. A drill's says so three times: the
/// header and fallback text start with `[DRILL]`, a context line under the
/// header, and `"drill": true` for anything reading the JSON.
pub fn payload(msg: &Message) -> Value {
    let msg = &msg.marked();
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
    ];
    if msg.drill {
        let note = match &msg.live_channel {
            Some(live) => format!("{DRILL_NOTE} Live, this would go to `{}`.", escape(live)),
            None => DRILL_NOTE.to_string(),
        };
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}));
    }
    blocks.push(json!({"type": "section", "fields": fields}));
    blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&escape(&msg.text), 3000)}}));
    if let Some(link) = &msg.link {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button",
            "text": {"type": "plain_text", "text": "Open run"},
            "url": link,
            "action_id": "open_run",
        }]}));
    }
    // `text` is the notification fallback (phones, screen readers).
    let mut body = json!({"text": msg.subject, "blocks": blocks});
    if msg.drill {
        body["drill"] = json!(true);
    }
    body
}

/// The line under a drill's header.
const DRILL_NOTE: &str = "*DRILL*: a rehearsal of this runbook, not a live incident.";

#[async_trait]
impl Channel for Slack {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "slack"
    }

    async fn probe(&self) -> Result<String, String> {
        crate::http::probe_origin(&self.client, &self.url).await
    }

    async fn send(&self, msg: &Message) -> Result<Delivered, SendError> {
        crate::http::deliver(self.client.post(self.url.clone()).json(&payload(msg))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Context, Mode};
    use crate::templates::Rendered;

    fn message(mode: Mode) -> Message {
        let mut ctx = Context::sample("failed");
        ctx.run.mode = mode;
        let rendered = Rendered { subject: "Recovery FAILED".into(), text: "t".into(), html: None };
        Message::new(&ctx, rendered)
    }

    #[test]
    fn a_drill_payload_is_marked_in_text_header_and_json() {
        let body = payload(&message(Mode::Drill));
        assert_eq!(body["drill"], true);
        assert_eq!(body["text"], "[DRILL] Recovery FAILED");
        assert_eq!(body["blocks"][0]["text"]["text"], "[DRILL] Recovery FAILED");
        assert_eq!(body["blocks"][1]["elements"][0]["text"], DRILL_NOTE);
    }

    #[test]
    fn a_rerouted_drill_says_where_it_would_have_gone() {
        let mut msg = message(Mode::Drill);
        msg.live_channel = Some("oncall-pager".into());
        let body = payload(&msg);
        let note = body["blocks"][1]["elements"][0]["text"].as_str().unwrap();
        assert!(note.ends_with("Live, this would go to `oncall-pager`."), "{note}");
    }

    #[test]
    fn a_live_payload_carries_no_drill_marks() {
        let body = payload(&message(Mode::Live));
        assert!(body.get("drill").is_none(), "{body}");
        assert_eq!(body["text"], "Recovery FAILED");
        assert_eq!(body["blocks"][1]["type"], "section");
    }
}
