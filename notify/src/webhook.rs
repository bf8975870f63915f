//! Generic webhook: the [`Message`] as JSON, with an `Idempotency-Key` and,
//! when a secret is configured, an `X-Lifeboat-Signature`.

use async_trait::async_trait;
use reqwest::Url;

use crate::channel::{Channel, ConfigError};
use crate::message::{Delivered, Message, SendError};
use crate::signature;

pub struct Webhook {
    name: String,
    url: Url,
    /// Secret: never logged or put in an error.
    secret: Option<String>,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(name: &str, url: &str, secret: Option<String>) -> Result<Webhook, ConfigError> {
        Ok(Webhook {
            name: name.to_string(),
            url: crate::http::parse_url(name, "url", url)?,
            secret,
            client: crate::http::client(name)?,
        })
    }
}

#[async_trait]
impl Channel for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn probe(&self) -> Result<String, String> {
        crate::http::probe_origin(&self.client, &self.url).await
    }

    /// Body: `serde_json::to_vec(msg.marked())`, exactly the bytes signed
    /// (a drill's has `"drill": true` and a `[DRILL]` subject).
    async fn send(&self, msg: &Message) -> Result<Delivered, SendError> {
        let msg = &msg.marked();
        let body = serde_json::to_vec(msg)
            .map_err(|e| SendError::Permanent(format!("cannot encode message: {e}")))?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", &msg.idempotency_key)
            .header("X-Lifeboat-Event", msg.event.as_str());
        if msg.drill {
            request = request.header("X-Lifeboat-Drill", "true");
        }
        if let Some(secret) = &self.secret {
            let now = chrono::Utc::now().timestamp();
            request =
                request.header(signature::HEADER, signature::sign(secret.as_bytes(), now, &body));
        }
        crate::http::deliver(request.body(body)).await
    }
}
