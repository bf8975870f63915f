//! Slack, Teams, PagerDuty, Opsgenie and webhook channels against a local
//! recording server.

use std::time::Duration;

use lifeboat_notify::signature;
use lifeboat_notify::{Action, ChannelConfig, Event, SendError, build};
use serde_json::json;

use crate::util::{Recorder, message, refused_url};

fn slack(url: &str) -> Box<dyn lifeboat_notify::Channel> {
    let config = ChannelConfig::Slack { webhook_url_env: "SLACK_WEBHOOK_URL".into() };
    let url = url.to_string();
    build("incidents-slack", &config, &move |k| (k == "SLACK_WEBHOOK_URL").then(|| url.clone()))
        .unwrap()
}

fn pagerduty(url: &str) -> Box<dyn lifeboat_notify::Channel> {
    let config =
        ChannelConfig::Pagerduty { routing_key_env: "PD_KEY".into(), url: Some(url.to_string()) };
    build("oncall-pager", &config, &|k| (k == "PD_KEY").then(|| "R0UT1NG".to_string())).unwrap()
}

fn teams(url: &str) -> Box<dyn lifeboat_notify::Channel> {
    let config = ChannelConfig::Teams { webhook_url_env: "TEAMS_WEBHOOK_URL".into() };
    let url = url.to_string();
    build("incidents-teams", &config, &move |k| (k == "TEAMS_WEBHOOK_URL").then(|| url.clone()))
        .unwrap()
}

/// `url` is the recorder's `…/hook`: the channel's `api_url`.
fn opsgenie(url: &str) -> Box<dyn lifeboat_notify::Channel> {
    let config = ChannelConfig::Opsgenie {
        api_key_env: "OPSGENIE_API_KEY".into(),
        api_url: Some(url.to_string()),
    };
    build("oncall-opsgenie", &config, &|k| (k == "OPSGENIE_API_KEY").then(|| "G3N1E".to_string()))
        .unwrap()
}

/// What Opsgenie answers every accepted request with.
const OPSGENIE_ACCEPTED: &str = r#"{"result":"Request will be processed","took":0.302,"requestId":"43a29c5c-3dbf-4fa4-9c26-f4f71023e120"}"#;

fn webhook(url: &str, secret: Option<&str>) -> Box<dyn lifeboat_notify::Channel> {
    let config = ChannelConfig::Webhook {
        url: url.to_string(),
        hmac_secret_env: secret.map(|_| "HOOK_SECRET".to_string()),
    };
    let secret = secret.map(str::to_string);
    build("status-webhook", &config, &move |k| {
        (k == "HOOK_SECRET").then(|| secret.clone()).flatten()
    })
    .unwrap()
}

#[tokio::test]
async fn slack_posts_block_kit_with_header_fields_text_and_run_button() {
    let server = Recorder::ok().await;
    let msg = message(Event::Failed);

    let delivered = slack(&server.url).send(&msg).await.unwrap();

    assert_eq!(delivered.detail, "HTTP 200: ok");
    let body = server.only_request().json();
    let link = msg.link.clone().unwrap();
    assert_eq!(body["text"], msg.subject.as_str());
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], msg.subject.as_str());
    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "*Severity*\nP0",
            "*Workflow*\nfailover",
            &format!("*Run*\n<{link}|{}>", msg.run_id),
            "*Event*\nfailed",
        ]
    );
    assert!(blocks[2]["text"]["text"].as_str().unwrap().contains("Recovery FAILED"));
    assert_eq!(blocks[3]["elements"][0]["type"], "button");
    assert_eq!(blocks[3]["elements"][0]["url"], link.as_str());
}

#[tokio::test]
async fn teams_posts_a_message_with_one_adaptive_card() {
    let server = Recorder::start(202, &[], "").await;
    let msg = message(Event::Failed);

    let delivered = teams(&server.url).send(&msg).await.unwrap();

    assert_eq!(delivered.detail, "HTTP 202");
    let req = server.only_request();
    assert_eq!(req.path, "/hook");
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body = req.json();
    assert_eq!(body["type"], "message");
    let attachments = body["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0]["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &attachments[0]["content"];
    assert_eq!(
        (card["type"].as_str(), card["version"].as_str()),
        (Some("AdaptiveCard"), Some("1.4"))
    );
    assert_eq!(card["body"][0]["inlines"][0]["text"], msg.subject.as_str());
    assert_eq!(
        card["body"][1]["facts"],
        json!([
            {"title": "Severity", "value": "P0"},
            {"title": "Workflow", "value": "failover"},
            {"title": "Run", "value": msg.run_id},
            {"title": "Event", "value": "failed"},
        ])
    );
    assert_eq!(card["body"][2]["inlines"][0]["text"], msg.text.as_str());
    assert_eq!(
        card["actions"],
        json!([{"type": "Action.OpenUrl", "title": "Open run", "url": msg.link.clone().unwrap()}])
    );
}

#[tokio::test]
async fn opsgenie_creates_an_alert_with_the_genie_key_and_the_run_as_alias() {
    let server = Recorder::start(202, &[], OPSGENIE_ACCEPTED).await;
    let msg = message(Event::Failed);

    let delivered = opsgenie(&server.url).send(&msg).await.unwrap();

    assert!(delivered.detail.starts_with("HTTP 202: {\"result\""), "{delivered:?}");
    let req = server.only_request();
    assert_eq!((req.path.as_str(), req.query.as_deref()), ("/hook/v2/alerts", None));
    assert_eq!(req.header("authorization"), Some("GenieKey G3N1E"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body = req.json();
    assert_eq!(body["alias"], msg.run_id.as_str());
    assert_eq!(body["message"], msg.subject.as_str());
    assert_eq!(body["priority"], "P1", "P0 is Opsgenie's P1");
    assert_eq!(body["source"], "lifeboat");
    assert_eq!(body["entity"], "dc01");
    assert_eq!(body["tags"], json!(["lifeboat", "failover", "failed"]));
    assert_eq!(body["details"]["run_id"], msg.run_id.as_str());
    assert!(body["description"].as_str().unwrap().starts_with(msg.text.trim_end()));
}

#[tokio::test]
async fn opsgenie_acknowledges_and_closes_the_alert_by_alias() {
    let server = Recorder::start(202, &[], OPSGENIE_ACCEPTED).await;
    let channel = opsgenie(&server.url);
    let mut ack = message(Event::Failed);
    ack.action = Action::Acknowledge;
    let close = message(Event::Succeeded);
    assert_eq!(close.action, Action::Resolve);

    channel.send(&ack).await.unwrap();
    channel.send(&close).await.unwrap();

    let got = server.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path, format!("/hook/v2/alerts/{}/acknowledge", ack.run_id));
    assert_eq!(got[1].path, format!("/hook/v2/alerts/{}/close", close.run_id));
    for r in &got {
        assert_eq!(r.query.as_deref(), Some("identifierType=alias"));
        assert_eq!(r.header("authorization"), Some("GenieKey G3N1E"));
        let body = r.json();
        assert_eq!((&body["source"], &body["user"]), (&json!("lifeboat"), &json!("lifeboat")));
    }
}

#[tokio::test]
async fn opsgenie_rate_limit_is_retryable_and_a_bad_key_permanent() {
    let limited =
        Recorder::start(429, &[("retry-after", "3")], r#"{"message":"rate limited"}"#).await;
    let err = opsgenie(&limited.url).send(&message(Event::Failed)).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)), "{err:?}");

    let refused = Recorder::start(401, &[], r#"{"message":"Key format is not valid!"}"#).await;
    let err = opsgenie(&refused.url).send(&message(Event::Failed)).await.unwrap_err();
    assert_eq!(
        err,
        SendError::Permanent(
            r#"HTTP 401 Unauthorized: {"message":"Key format is not valid!"}"#.into()
        )
    );
    assert!(!err.to_string().contains("G3N1E"), "the key never appears in an error");
}

#[tokio::test]
async fn teams_server_error_is_retryable() {
    let server = Recorder::start(503, &[], "").await;

    let err = teams(&server.url).send(&message(Event::Failed)).await.unwrap_err();

    assert!(matches!(err, SendError::Retryable { retry_after: None, .. }), "{err:?}");
}

#[tokio::test]
async fn pagerduty_trigger_carries_key_action_dedup_and_payload() {
    let server = Recorder::start(202, &[], r#"{"status":"success","dedup_key":"x"}"#).await;
    let msg = message(Event::Failed);

    let delivered = pagerduty(&server.url).send(&msg).await.unwrap();

    assert!(delivered.detail.starts_with("HTTP 202"), "{delivered:?}");
    let req = server.only_request();
    assert_eq!(req.path, "/hook");
    let body = req.json();
    assert_eq!(body["routing_key"], "R0UT1NG");
    assert_eq!(body["event_action"], "trigger");
    assert_eq!(body["dedup_key"], msg.run_id.as_str());
    assert_eq!(body["payload"]["summary"], msg.subject.as_str());
    assert_eq!(body["payload"]["severity"], "critical");
    assert_eq!(body["payload"]["source"], "dc01");
    assert_eq!(body["payload"]["custom_details"]["event"], "failed");
    assert_eq!(body["payload"]["custom_details"]["workflow"], "failover");
    let link = msg.link.clone().unwrap();
    assert_eq!(
        body["links"],
        json!([{"href": link, "text": format!("lifeboat run {}", msg.run_id)}])
    );
}

#[tokio::test]
async fn pagerduty_resolve_sends_only_the_incident_key() {
    let server = Recorder::start(202, &[], "{}").await;
    let msg = message(Event::Succeeded);
    assert_eq!(msg.action, Action::Resolve);

    pagerduty(&server.url).send(&msg).await.unwrap();

    assert_eq!(
        server.only_request().json(),
        json!({"routing_key": "R0UT1NG", "event_action": "resolve", "dedup_key": msg.run_id})
    );
}

#[tokio::test]
async fn webhook_body_is_the_message_and_its_signature_verifies() {
    let server = Recorder::ok().await;
    let msg = message(Event::RolledBack);

    webhook(&server.url, Some("shh")).send(&msg).await.unwrap();

    let req = server.only_request();
    let header = req.header("x-lifeboat-signature").expect("signed");
    let now = chrono::Utc::now().timestamp();
    assert_eq!(signature::verify(b"shh", header, &req.body, now, 300), Ok(()));
    assert_eq!(
        signature::verify(b"wrong", header, &req.body, now, 300),
        Err(signature::SignatureError::Mismatch)
    );
    assert_eq!(req.header("idempotency-key"), Some(msg.idempotency_key.as_str()));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("x-lifeboat-event"), Some("rolled_back"));
    let sent: lifeboat_notify::Message = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(sent, msg);
}

#[tokio::test]
async fn webhook_marks_a_drill_even_when_the_caller_edited_the_subject() {
    let server = Recorder::ok().await;
    let mut msg = message(Event::Failed);
    msg.drill = true;
    msg.subject = "custom subject".into();

    webhook(&server.url, None).send(&msg).await.unwrap();

    let req = server.only_request();
    let body = req.json();
    assert_eq!(body["drill"], true);
    assert_eq!(body["subject"], "[DRILL] custom subject");
    assert_eq!(body["dedup_key"], format!("drill-{}", msg.run_id));
    assert_eq!(req.header("x-lifeboat-drill"), Some("true"));
}

#[tokio::test]
async fn webhook_without_secret_is_unsigned() {
    let server = Recorder::ok().await;

    webhook(&server.url, None).send(&message(Event::Started)).await.unwrap();

    assert_eq!(server.only_request().header("x-lifeboat-signature"), None);
}

#[tokio::test]
async fn http_429_with_retry_after_is_retryable_after_that_delay() {
    let server = Recorder::start(429, &[("retry-after", "7")], "slow down").await;

    let err = webhook(&server.url, None).send(&message(Event::Failed)).await.unwrap_err();

    assert_eq!(
        err,
        SendError::Retryable {
            message: "HTTP 429 Too Many Requests: slow down".into(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
}

#[tokio::test]
async fn http_500_is_retryable() {
    let server = Recorder::start(500, &[], "").await;

    let err = pagerduty(&server.url).send(&message(Event::Failed)).await.unwrap_err();

    assert!(matches!(err, SendError::Retryable { retry_after: None, .. }), "{err:?}");
}

#[tokio::test]
async fn http_400_is_permanent() {
    let server = Recorder::start(400, &[], "invalid_payload").await;

    let err = slack(&server.url).send(&message(Event::Failed)).await.unwrap_err();

    assert_eq!(err, SendError::Permanent("HTTP 400 Bad Request: invalid_payload".into()));
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    let url = refused_url().await;

    for channel in
        [slack(&url), teams(&url), pagerduty(&url), opsgenie(&url), webhook(&url, Some("s"))]
    {
        let err = channel.send(&message(Event::Failed)).await.unwrap_err();
        assert!(err.is_retryable(), "{}: {err:?}", channel.kind());
        assert!(err.to_string().contains("could not connect"), "{err}");
    }
}

#[tokio::test]
async fn missing_routing_key_env_names_channel_and_variable() {
    let config = ChannelConfig::Pagerduty { routing_key_env: "PD_KEY".into(), url: None };

    let err = build("oncall-pager", &config, &|_| None).err().unwrap().to_string();

    assert!(err.contains("`oncall-pager`") && err.contains("PD_KEY"), "{err}");
}
