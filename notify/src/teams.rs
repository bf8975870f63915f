//! Microsoft Teams incoming webhook (a Workflows / Power Automate "when a
//! Teams webhook request is received" flow, or a legacy connector): a
//! message whose one attachment is an Adaptive Card — the subject as a
//! heading, the key facts, the text, and a button to the run.
//!
//! Outside text (the subject and text can quote alert labels and step
//! output) goes into `RichTextBlock` `TextRun`s, which Teams shows as typed:
//! no Markdown in them can make a link or hide a line.

use async_trait::async_trait;
use reqwest::Url;
use serde_json::{Value, json};

use crate::channel::{Channel, ConfigError};
use crate::incident::Action;
use crate::message::{Delivered, Message, SendError, truncate};

/// The Adaptive Card schema version sent: 1.4 is what Teams renders on
/// every client (desktop, web, mobile).
pub const CARD_VERSION: &str = "1.4";
/// The attachment's content type Teams looks for.
pub const CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";

/// Teams refuses messages over about 28 KB: the text is cut well below.
const MAX_TEXT: usize = 10_000;
const MAX_SUBJECT: usize = 250;

pub struct Teams {
    name: String,
    /// Secret (the URL carries its signature): never logged or put in an error.
    url: Url,
    client: reqwest::Client,
}

impl Teams {
    pub fn new(name: &str, webhook_url: &str) -> Result<Teams, ConfigError> {
        Ok(Teams {
            name: name.to_string(),
            url: crate::http::parse_url(name, "the Teams webhook URL", webhook_url)?,
            client: crate::http::client(name)?,
        })
    }
}

/// Plain text in a card: a `RichTextBlock` of one `TextRun` (never Markdown).
fn plain(text: &str, run: Value) -> Value {
    let mut run = run;
    run["type"] = json!("TextRun");
    run["text"] = json!(text);
    json!({"type": "RichTextBlock", "inlines": [run]})
}

/// The message with its Adaptive Card for `msg`. A drill's says so three
/// times: the heading starts with `[DRILL]`, a warning line under it says
/// it is a rehearsal (and which channel a live run would notify), and a
/// `Mode: drill` fact.
pub fn payload(msg: &Message) -> Value {
    let msg = &msg.marked();
    let (color, status) = match msg.action {
        Action::Trigger => ("Attention", None),
        Action::Acknowledge => ("Warning", Some("acknowledged")),
        Action::Resolve => ("Good", Some("resolved")),
    };
    let mut body = vec![plain(
        &truncate(&msg.subject, MAX_SUBJECT),
        json!({"size": "Large", "weight": "Bolder", "color": color}),
    )];
    if msg.drill {
        let note = match &msg.live_channel {
            Some(live) => format!("{DRILL_NOTE} Live, this would go to `{live}`."),
            None => DRILL_NOTE.to_string(),
        };
        body.push(plain(&note, json!({"weight": "Bolder", "color": "Warning"})));
    }
    let mut facts = vec![
        json!({"title": "Severity", "value": msg.severity.as_str()}),
        json!({"title": "Workflow", "value": msg.workflow}),
        json!({"title": "Run", "value": msg.run_id}),
        json!({"title": "Event", "value": msg.event}),
    ];
    if let Some(status) = status {
        facts.push(json!({"title": "Status", "value": status}));
    }
    if msg.drill {
        facts.push(json!({"title": "Mode", "value": "drill"}));
    }
    body.push(json!({"type": "FactSet", "facts": facts}));
    if !msg.text.trim().is_empty() {
        let mut text = plain(&truncate(&msg.text, MAX_TEXT), json!({}));
        text["separator"] = json!(true);
        body.push(text);
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    });
    if let Some(link) = &msg.link {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open run", "url": link}]);
    }
    json!({
        "type": "message",
        "attachments": [{"contentType": CONTENT_TYPE, "contentUrl": null, "content": card}],
    })
}

/// The line under a drill's heading.
const DRILL_NOTE: &str = "DRILL: a rehearsal of this runbook, not a live incident.";

#[async_trait]
impl Channel for Teams {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "teams"
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

    fn message(mode: Mode, event: &str, text: &str) -> Message {
        let mut ctx = Context::sample(event);
        ctx.run.mode = mode;
        let rendered =
            Rendered { subject: "Recovery FAILED".into(), text: text.into(), html: None };
        Message::new(&ctx, rendered)
    }

    fn card(body: &Value) -> &Value {
        &body["attachments"][0]["content"]
    }

    #[test]
    fn a_live_payload_is_one_adaptive_card_with_heading_facts_text_and_button() {
        let msg = message(Mode::Live, "failed", "the primary is down");
        let body = payload(&msg);
        let link = msg.link.clone().unwrap();
        assert_eq!(
            body,
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "msteams": {"width": "Full"},
                        "body": [
                            {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": "Recovery FAILED", "size": "Large", "weight": "Bolder", "color": "Attention"}]},
                            {"type": "FactSet", "facts": [
                                {"title": "Severity", "value": "P0"},
                                {"title": "Workflow", "value": "failover"},
                                {"title": "Run", "value": msg.run_id},
                                {"title": "Event", "value": "failed"},
                            ]},
                            {"type": "RichTextBlock", "separator": true, "inlines": [{"type": "TextRun", "text": "the primary is down"}]},
                        ],
                        "actions": [{"type": "Action.OpenUrl", "title": "Open run", "url": link}],
                    },
                }],
            })
        );
    }

    #[test]
    fn a_drill_card_is_marked_in_heading_note_and_facts() {
        let mut msg = message(Mode::Drill, "failed", "t");
        msg.subject = "edited after new".into();
        msg.live_channel = Some("oncall-pager".into());
        let body = payload(&msg);
        let blocks = card(&body)["body"].as_array().unwrap();
        assert_eq!(blocks[0]["inlines"][0]["text"], "[DRILL] edited after new");
        assert_eq!(
            blocks[1]["inlines"][0]["text"],
            format!("{DRILL_NOTE} Live, this would go to `oncall-pager`.")
        );
        let facts = blocks[2]["facts"].as_array().unwrap();
        assert_eq!(facts.last().unwrap(), &json!({"title": "Mode", "value": "drill"}));
    }

    #[test]
    fn a_live_card_carries_no_drill_marks() {
        let body = payload(&message(Mode::Live, "failed", "t"));
        let text = body.to_string();
        assert!(!text.contains("DRILL") && !text.contains("\"Mode\""), "{text}");
    }

    #[test]
    fn resolve_and_acknowledge_say_so_in_colour_and_status() {
        let resolved = payload(&message(Mode::Live, "succeeded", "t"));
        let blocks = &card(&resolved)["body"];
        assert_eq!(blocks[0]["inlines"][0]["color"], "Good");
        assert_eq!(blocks[1]["facts"][4], json!({"title": "Status", "value": "resolved"}));
        let acked = payload(&message(Mode::Live, "acknowledged", "t"));
        assert_eq!(card(&acked)["body"][1]["facts"][4]["value"], "acknowledged");
    }

    #[test]
    fn outside_text_is_a_text_run_never_markdown_and_long_text_is_cut() {
        let msg =
            message(Mode::Live, "failed", &format!("[click](http://evil) {}", "x".repeat(20_000)));
        let body = payload(&msg);
        let text = &card(&body)["body"][2];
        assert_eq!(text["type"], "RichTextBlock");
        let run = text["inlines"][0]["text"].as_str().unwrap();
        assert!(run.starts_with("[click](http://evil) "), "{run}");
        assert_eq!(run.chars().count(), MAX_TEXT);
    }

    #[test]
    fn no_link_no_button() {
        let mut msg = message(Mode::Live, "failed", "t");
        msg.link = None;
        assert!(card(&payload(&msg)).get("actions").is_none());
    }
}
