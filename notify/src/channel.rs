//! Channel configuration, one variant per kind, as written under
//! `[channels.<name>]` in lifeboat.toml. Secrets are named by env variable,
//! never written in the file.

use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// SMTP email (plain on loopback, STARTTLS or implicit TLS).
    Email {
        smtp_url: String,
        from: String,
        to: Vec<String>,
        username_env: Option<String>,
        password_env: Option<String>,
    },
    /// Slack incoming webhook.
    Slack { webhook_url_env: String },
    /// PagerDuty Events API v2.
    Pagerduty { routing_key_env: String },
    /// JSON POST signed with HMAC-SHA256.
    Webhook { url: String, hmac_secret_env: Option<String> },
}

impl ChannelConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Email { .. } => "email",
            ChannelConfig::Slack { .. } => "slack",
            ChannelConfig::Pagerduty { .. } => "pagerduty",
            ChannelConfig::Webhook { .. } => "webhook",
        }
    }
}
