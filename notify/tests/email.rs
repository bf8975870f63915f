//! Email against a real SMTP server (aiosmtpd, tests/smtp_sink.py).

use lifeboat_notify::{ChannelConfig, Event, SendError, build};

use crate::util::{SmtpSink, message};

fn config(port: u16) -> ChannelConfig {
    ChannelConfig::Email {
        smtp_url: format!("smtp://127.0.0.1:{port}"),
        from: "Lifeboat <lifeboat@example.com>".into(),
        to: vec!["sre@example.com".into(), "dba@example.com".into()],
        username_env: None,
        password_env: None,
    }
}

#[tokio::test]
async fn email_arrives_with_recipients_subject_text_html_and_run_link() {
    let sink = SmtpSink::start(None).await;
    let channel = build("oncall-email", &config(sink.port), &|_| None).unwrap();
    let msg = message(Event::Failed);

    let delivered = channel.send(&msg).await.unwrap();

    assert!(
        delivered.detail.starts_with("to sre@example.com, dba@example.com: 250"),
        "{delivered:?}"
    );
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m["mail_from"], "lifeboat@example.com");
    assert_eq!(m["rcpt_tos"], serde_json::json!(["sre@example.com", "dba@example.com"]));
    assert_eq!(m["subject"], msg.subject.as_str());
    assert_eq!(m["content_type"], "multipart/alternative");
    let link = msg.link.as_deref().unwrap();
    let text = m["text"].as_str().unwrap();
    assert!(text.contains("Recovery FAILED: failover"), "{text}");
    assert!(text.contains(link), "{text}");
    let html = m["html"].as_str().unwrap();
    assert!(html.contains(&format!("<a href=\"{link}\">")), "{html}");
    assert!(
        html.contains("<th align=\"left\" style=\"padding: 2px 12px 2px 0;\">Incident ID</th>")
    );
}

#[tokio::test]
async fn email_without_html_is_plain_text() {
    let sink = SmtpSink::start(None).await;
    let channel = build("oncall-email", &config(sink.port), &|_| None).unwrap();
    let mut msg = message(Event::Started);
    msg.html = None;

    channel.send(&msg).await.unwrap();

    let m = &sink.messages()[0];
    assert_eq!(m["content_type"], "text/plain");
    assert!(m["html"].is_null());
}

#[tokio::test]
async fn smtp_4xx_is_retryable() {
    let sink = SmtpSink::start(Some("450")).await;
    let channel = build("oncall-email", &config(sink.port), &|_| None).unwrap();

    let err = channel.send(&message(Event::Failed)).await.unwrap_err();

    assert!(err.is_retryable(), "{err:?}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn smtp_5xx_is_permanent() {
    let sink = SmtpSink::start(Some("550")).await;
    let channel = build("oncall-email", &config(sink.port), &|_| None).unwrap();

    let err = channel.send(&message(Event::Failed)).await.unwrap_err();

    assert!(matches!(err, SendError::Permanent(ref m) if m.contains("550")), "{err:?}");
}

#[tokio::test]
async fn smtp_connection_refused_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let channel = build("oncall-email", &config(port), &|_| None).unwrap();

    let err = channel.send(&message(Event::Failed)).await.unwrap_err();

    assert!(err.is_retryable(), "{err:?}");
}
