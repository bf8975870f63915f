//! Opsgenie Alert API: one alert per run, its `alias` the run's incident key
//! (`Message::dedup_key`: the run id, `drill-<run id>` for a drill), so it
//! follows the run as PagerDuty's incident does — created (`POST
//! /v2/alerts`, which Opsgenie deduplicates by alias while the alert is
//! open), acknowledged (`POST /v2/alerts/{alias}/acknowledge`) and closed
//! (`POST /v2/alerts/{alias}/close`, both `?identifierType=alias`). The API
//! key goes in `Authorization: GenieKey <key>`.

use async_trait::async_trait;
use reqwest::Url;
use serde_json::{Value, json};

use crate::channel::{Channel, ConfigError};
use crate::incident::Action;
use crate::message::{Delivered, Message, SendError, truncate};

/// Opsgenie's API in the US; EU accounts use `https://api.eu.opsgenie.com`.
pub const DEFAULT_API_URL: &str = "https://api.opsgenie.com";

/// Field limits of the Alert API (longer values are refused or cut by
/// Opsgenie; cutting here keeps the request valid).
const MAX_MESSAGE: usize = 130;
const MAX_ALIAS: usize = 512;
const MAX_DESCRIPTION: usize = 15_000;
const MAX_ENTITY: usize = 512;
const MAX_TAG: usize = 50;
const MAX_NOTE: usize = 25_000;

/// `source` and `user` of every request.
const SOURCE: &str = "lifeboat";

pub struct Opsgenie {
    name: String,
    /// Secret: never logged or put in an error.
    api_key: String,
    api_url: Url,
    client: reqwest::Client,
}

impl Opsgenie {
    pub fn new(
        name: &str,
        api_key: String,
        api_url: Option<&str>,
    ) -> Result<Opsgenie, ConfigError> {
        Ok(Opsgenie {
            name: name.to_string(),
            api_key,
            api_url: api_url_of(name, api_url)?,
            client: crate::http::client(name)?,
        })
    }
}

/// `api_url` (or the default) checked: an http(s) URL with no query or
/// fragment, since request paths are appended to it.
pub(crate) fn api_url_of(channel: &str, api_url: Option<&str>) -> Result<Url, ConfigError> {
    let url = crate::http::parse_url(channel, "`api_url`", api_url.unwrap_or(DEFAULT_API_URL))?;
    if url.query().is_some() || url.fragment().is_some() || url.cannot_be_a_base() {
        return Err(ConfigError::invalid(
            channel,
            "`api_url` must be the API's base URL with no query or fragment, e.g. https://api.eu.opsgenie.com",
        ));
    }
    Ok(url)
}

/// Where `msg` goes: `<api_url>/v2/alerts` to create,
/// `<api_url>/v2/alerts/<alias>/acknowledge|close?identifierType=alias`
/// otherwise (the alias percent-encoded as one path segment).
pub fn endpoint(api_url: &Url, msg: &Message) -> Url {
    let msg = &msg.marked();
    let mut url = api_url.clone();
    {
        let Ok(mut path) = url.path_segments_mut() else { return url };
        path.pop_if_empty().extend(["v2", "alerts"]);
        match msg.action {
            Action::Trigger => {}
            Action::Acknowledge => {
                path.extend([alias(msg).as_str(), "acknowledge"]);
            }
            Action::Resolve => {
                path.extend([alias(msg).as_str(), "close"]);
            }
        }
    }
    if msg.action != Action::Trigger {
        url.set_query(Some("identifierType=alias"));
    }
    url
}

fn alias(msg: &Message) -> String {
    truncate(&msg.dedup_key, MAX_ALIAS)
}

/// The request body for `msg`: the alert to create, or the note of an
/// acknowledge or close.
pub fn payload(msg: &Message) -> Value {
    let msg = &msg.marked();
    if msg.action != Action::Trigger {
        let note = if msg.summary.is_empty() { &msg.subject } else { &msg.summary };
        return json!({"source": SOURCE, "user": SOURCE, "note": truncate(note, MAX_NOTE)});
    }
    let message = if msg.summary.is_empty() { &msg.subject } else { &msg.summary };
    let mut description = msg.text.clone();
    if let Some(link) = &msg.link {
        description = format!("{}\n\nRun: {link}", description.trim_end());
    }
    let mut tags = vec![SOURCE.to_string(), truncate(&msg.workflow, MAX_TAG), msg.event.clone()];
    if msg.drill {
        tags.push("drill".to_string());
    }
    let mut details = json!({
        "run_id": msg.run_id,
        "workflow": msg.workflow,
        "event": msg.event,
        "severity": msg.severity.as_str(),
        "drill": msg.drill.to_string(),
    });
    if let Some(link) = &msg.link {
        details["link"] = json!(link);
    }
    if let Some(live) = &msg.live_channel {
        details["live_channel"] = json!(live);
    }
    let entity = if msg.source.is_empty() { &msg.workflow } else { &msg.source };
    json!({
        "message": truncate(message, MAX_MESSAGE),
        "alias": alias(msg),
        "description": truncate(&description, MAX_DESCRIPTION),
        "priority": msg.severity.opsgenie(),
        "source": SOURCE,
        "entity": truncate(entity, MAX_ENTITY),
        "tags": tags,
        "details": details,
    })
}

#[async_trait]
impl Channel for Opsgenie {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "opsgenie"
    }

    async fn probe(&self) -> Result<String, String> {
        crate::http::probe_origin(&self.client, &self.api_url).await
    }

    async fn send(&self, msg: &Message) -> Result<Delivered, SendError> {
        crate::http::deliver(
            self.client
                .post(endpoint(&self.api_url, msg))
                .header(reqwest::header::AUTHORIZATION, format!("GenieKey {}", self.api_key))
                .json(&payload(msg)),
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
        let rendered = Rendered {
            subject: "Recovery FAILED".into(),
            text: "the primary is down".into(),
            html: None,
        };
        Message::new(&ctx, rendered)
    }

    fn base() -> Url {
        Url::parse("http://127.0.0.1:9/opsgenie").unwrap()
    }

    #[test]
    fn a_trigger_creates_an_alert_aliased_by_the_run() {
        let msg = message(Mode::Live, "failed");
        let link = msg.link.clone().unwrap();
        assert_eq!(endpoint(&base(), &msg).as_str(), "http://127.0.0.1:9/opsgenie/v2/alerts");
        assert_eq!(
            payload(&msg),
            json!({
                "message": "Recovery FAILED",
                "alias": msg.run_id,
                "description": format!("the primary is down\n\nRun: {link}"),
                "priority": "P1",
                "source": "lifeboat",
                "entity": "dc01",
                "tags": ["lifeboat", "failover", "failed"],
                "details": {
                    "run_id": msg.run_id,
                    "workflow": "failover",
                    "event": "failed",
                    "severity": "P0",
                    "drill": "false",
                    "link": link,
                },
            })
        );
    }

    #[test]
    fn acknowledge_and_close_name_the_alert_by_alias() {
        let ack = message(Mode::Live, "acknowledged");
        let url = endpoint(&base(), &ack);
        assert_eq!(
            url.as_str(),
            format!(
                "http://127.0.0.1:9/opsgenie/v2/alerts/{}/acknowledge?identifierType=alias",
                ack.run_id
            )
        );
        assert_eq!(
            payload(&ack),
            json!({"source": "lifeboat", "user": "lifeboat", "note": "Recovery FAILED"})
        );
        let close = message(Mode::Live, "succeeded");
        assert_eq!(
            endpoint(&Url::parse(DEFAULT_API_URL).unwrap(), &close).as_str(),
            format!(
                "https://api.opsgenie.com/v2/alerts/{}/close?identifierType=alias",
                close.run_id
            )
        );
    }

    #[test]
    fn a_drill_alert_has_its_own_alias_and_says_so() {
        let live = message(Mode::Live, "failed");
        let drill = message(Mode::Drill, "failed");
        let body = payload(&drill);
        assert_eq!(body["alias"], format!("drill-{}", live.run_id));
        assert_eq!(body["message"], "[DRILL] Recovery FAILED");
        assert_eq!(body["details"]["drill"], "true");
        assert_eq!(body["tags"][3], "drill");
        let close = message(Mode::Drill, "succeeded");
        assert!(
            endpoint(&base(), &close).path().ends_with(&format!("/drill-{}/close", live.run_id)),
            "{}",
            endpoint(&base(), &close)
        );
    }

    #[test]
    fn a_rerouted_drill_names_the_channel_it_stands_in_for() {
        let mut msg = message(Mode::Drill, "failed");
        msg.live_channel = Some("oncall-opsgenie".into());
        assert_eq!(payload(&msg)["details"]["live_channel"], "oncall-opsgenie");
        assert!(payload(&message(Mode::Live, "failed"))["details"].get("live_channel").is_none());
    }

    #[test]
    fn an_alias_is_one_path_segment_whatever_it_holds() {
        let mut msg = message(Mode::Live, "succeeded");
        msg.dedup_key = "a/../b?c#d".into();
        assert_eq!(
            endpoint(&base(), &msg).as_str(),
            "http://127.0.0.1:9/opsgenie/v2/alerts/a%2F..%2Fb%3Fc%23d/close?identifierType=alias"
        );
    }

    #[test]
    fn long_values_are_cut_to_the_api_limits() {
        let mut msg = message(Mode::Live, "failed");
        msg.summary = "s".repeat(500);
        msg.workflow = "w".repeat(80);
        let body = payload(&msg);
        assert_eq!(body["message"].as_str().unwrap().chars().count(), MAX_MESSAGE);
        assert_eq!(body["tags"][1].as_str().unwrap().chars().count(), MAX_TAG);
    }

    #[test]
    fn api_url_must_be_a_base_url() {
        assert!(api_url_of("c", None).is_ok());
        assert!(api_url_of("c", Some("https://api.eu.opsgenie.com")).is_ok());
        for bad in ["ftp://x", "https://api.opsgenie.com/?x=1", "not a url"] {
            let e = api_url_of("ops", Some(bad)).unwrap_err().to_string();
            assert!(e.contains("`ops`") && e.contains("api_url"), "{bad}: {e}");
        }
    }
}
