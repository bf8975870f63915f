//! What every channel kind shares: the [`Channel`] trait, [`ConfigError`],
//! the attempt [`TIMEOUT`] and [`env_var`] for secrets. The kinds (`email`,
//! `slack`, `teams`, `pagerduty`, `opsgenie`, `webhook`, `file`) sit above this module and never import
//! each other; `channels` (above them all) builds one from its config.

use std::time::Duration;

use async_trait::async_trait;

use crate::message::{Delivered, Message, SendError};

/// How long one delivery attempt may take (connect + send + response).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A configured channel. Cheap to share (`Send + Sync`); `send` makes
/// exactly one delivery attempt and never retries: retries, backoff and
/// `retry_after` belong to the outbox dispatcher.
#[async_trait]
pub trait Channel: Send + Sync {
    /// The channel's name in the config (`oncall-email`).
    fn name(&self) -> &str;
    /// `email`, `slack`, `teams`, `pagerduty`, `opsgenie`, `webhook` or `file`.
    fn kind(&self) -> &'static str;
    async fn send(&self, msg: &Message) -> Result<Delivered, SendError>;
    /// Whether the far end can be reached, without sending a message
    /// (`lifeboat doctor`): what was checked, or why it failed. Never
    /// reveals a secret URL or key.
    async fn probe(&self) -> Result<String, String>;
}

/// A channel that cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "channel `{channel}`: environment variable {var} (its {field}) is not set; export it or change `{field}`"
    )]
    MissingEnv { channel: String, field: &'static str, var: String },
    #[error("channel `{channel}`: {message}")]
    Invalid { channel: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(channel: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { channel: channel.to_string(), message: message.into() }
    }
}

/// Reads a required secret from the environment.
pub(crate) fn env_var(
    env: &dyn Fn(&str) -> Option<String>,
    channel: &str,
    field: &'static str,
    var: &str,
) -> Result<String, ConfigError> {
    env(var).filter(|v| !v.is_empty()).ok_or_else(|| ConfigError::MissingEnv {
        channel: channel.to_string(),
        field,
        var: var.to_string(),
    })
}
