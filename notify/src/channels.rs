//! The closed family of channels: their configuration, one variant per
//! kind, as written under `[channels.<name>]` in lifeboat.toml, and
//! [`build`], which turns one into a [`Channel`]. The only module that knows
//! every kind. Secrets are named by env variable, never written in the file.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::channel::{Channel, ConfigError, env_var};

#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// SMTP email. `smtp://host:port` is plain on a loopback host and
    /// requires STARTTLS elsewhere; `?tls=starttls` requires STARTTLS,
    /// `?tls=none` forces plain text; `smtps://` is implicit TLS.
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
    Pagerduty {
        routing_key_env: String,
        /// Events API endpoint; defaults to PagerDuty's.
        #[serde(default)]
        url: Option<String>,
    },
    /// Microsoft Teams incoming webhook (Workflows or a connector): an
    /// Adaptive Card.
    Teams { webhook_url_env: String },
    /// Opsgenie Alert API: an alert per run, acknowledged and closed with it.
    Opsgenie {
        /// Env variable holding the API key of an Opsgenie API integration.
        api_key_env: String,
        /// The API's base URL; defaults to `https://api.opsgenie.com`
        /// (EU accounts: `https://api.eu.opsgenie.com`).
        #[serde(default)]
        api_url: Option<String>,
    },
    /// JSON POST signed with HMAC-SHA256.
    Webhook { url: String, hmac_secret_env: Option<String> },
    /// Each message written to `dir` as one `.json` (default) or `.eml`
    /// file (see [`crate::file`]). `dir` may not contain `..`; it is created
    /// when missing.
    File {
        dir: std::path::PathBuf,
        #[serde(default)]
        format: crate::file::Format,
    },
}

impl ChannelConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Email { .. } => "email",
            ChannelConfig::Slack { .. } => "slack",
            ChannelConfig::Pagerduty { .. } => "pagerduty",
            ChannelConfig::Teams { .. } => "teams",
            ChannelConfig::Opsgenie { .. } => "opsgenie",
            ChannelConfig::Webhook { .. } => "webhook",
            ChannelConfig::File { .. } => "file",
        }
    }

    /// Whether the channel keeps an incident per run that a person's
    /// acknowledgement and the run's end act on (PagerDuty, Opsgenie): the
    /// engine sends those channels an escalation's acknowledge and resolve.
    pub fn follows_incidents(&self) -> bool {
        matches!(self, ChannelConfig::Pagerduty { .. } | ChannelConfig::Opsgenie { .. })
    }

    /// What can be checked without the environment or any IO (a `file`
    /// channel's `dir`, the URLs written in the file), for when the
    /// configuration is read: the same checks [`build`] makes, earlier.
    /// An error comes with the key it is about (`dir`, `url`, `api_url`).
    pub fn check(&self, name: &str) -> Result<(), (&'static str, ConfigError)> {
        match self {
            ChannelConfig::File { dir, .. } => {
                crate::file::check_dir(name, dir).map_err(|e| ("dir", e))
            }
            ChannelConfig::Pagerduty { url: Some(url), .. } => {
                crate::http::parse_url(name, "`url`", url).map(drop).map_err(|e| ("url", e))
            }
            ChannelConfig::Webhook { url, .. } => {
                crate::http::parse_url(name, "`url`", url).map(drop).map_err(|e| ("url", e))
            }
            ChannelConfig::Opsgenie { api_url, .. } => {
                crate::opsgenie::api_url_of(name, api_url.as_deref())
                    .map(drop)
                    .map_err(|e| ("api_url", e))
            }
            _ => Ok(()),
        }
    }
}

/// Builds channel `name` from its configuration, reading secrets through
/// `env` (pass `&|k| std::env::var(k).ok()` in production).
pub fn build(
    name: &str,
    config: &ChannelConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Box<dyn Channel>, ConfigError> {
    Ok(match config {
        ChannelConfig::Email { smtp_url, from, to, username_env, password_env } => {
            Box::new(crate::email::Email::new(
                name,
                smtp_url,
                from,
                to,
                username_env.as_deref(),
                password_env.as_deref(),
                env,
            )?)
        }
        ChannelConfig::Slack { webhook_url_env } => {
            let url = env_var(env, name, "webhook_url_env", webhook_url_env)?;
            Box::new(crate::slack::Slack::new(name, &url)?)
        }
        ChannelConfig::Pagerduty { routing_key_env, url } => {
            let key = env_var(env, name, "routing_key_env", routing_key_env)?;
            Box::new(crate::pagerduty::Pagerduty::new(name, key, url.as_deref())?)
        }
        ChannelConfig::Teams { webhook_url_env } => {
            let url = env_var(env, name, "webhook_url_env", webhook_url_env)?;
            Box::new(crate::teams::Teams::new(name, &url)?)
        }
        ChannelConfig::Opsgenie { api_key_env, api_url } => {
            let key = env_var(env, name, "api_key_env", api_key_env)?;
            Box::new(crate::opsgenie::Opsgenie::new(name, key, api_url.as_deref())?)
        }
        ChannelConfig::Webhook { url, hmac_secret_env } => {
            let secret = hmac_secret_env
                .as_deref()
                .map(|var| env_var(env, name, "hmac_secret_env", var))
                .transpose()?;
            Box::new(crate::webhook::Webhook::new(name, url, secret)?)
        }
        ChannelConfig::File { dir, format } => {
            Box::new(crate::file::File::new(name, dir, *format)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_like_yaml: &str) -> ChannelConfig {
        serde_saphyr::from_str(toml_like_yaml).unwrap()
    }

    #[test]
    fn pagerduty_url_is_optional() {
        let c = parse("type: pagerduty\nrouting_key_env: PD_KEY\n");
        assert_eq!(c, ChannelConfig::Pagerduty { routing_key_env: "PD_KEY".into(), url: None });
    }

    #[test]
    fn missing_env_names_channel_and_variable() {
        let c = parse("type: slack\nwebhook_url_env: SLACK_URL\n");
        let err = build("incidents-slack", &c, &|_| None).err().unwrap().to_string();
        assert!(err.contains("`incidents-slack`") && err.contains("SLACK_URL"), "{err}");
    }

    #[test]
    fn webhook_secret_env_must_be_set_when_named() {
        let c = parse("type: webhook\nurl: http://127.0.0.1:1/x\nhmac_secret_env: HOOK_SECRET\n");
        let err = build("status", &c, &|_| None).err().unwrap();
        assert!(matches!(err, ConfigError::MissingEnv { ref var, .. } if var == "HOOK_SECRET"));
    }

    #[test]
    fn file_format_defaults_to_json_and_unknown_formats_are_refused() {
        let c = parse("type: file\ndir: out\n");
        assert_eq!(c, ChannelConfig::File { dir: "out".into(), format: crate::file::Format::Json });
        assert_eq!(c.kind(), "file");
        let eml = parse("type: file\ndir: out\nformat: eml\n");
        assert!(matches!(eml, ChannelConfig::File { format: crate::file::Format::Eml, .. }));
        assert!(
            serde_saphyr::from_str::<ChannelConfig>("type: file\ndir: out\nformat: pdf\n").is_err()
        );
        assert!(parse("type: file\ndir: a/../b\n").check("drops").is_err());
    }

    #[test]
    fn teams_and_opsgenie_read_their_keys_and_secrets_from_env() {
        let teams = parse("type: teams\nwebhook_url_env: TEAMS_URL\n");
        assert_eq!(teams.kind(), "teams");
        assert!(!teams.follows_incidents());
        let err = build("chat", &teams, &|_| None).err().unwrap();
        assert!(
            matches!(err, ConfigError::MissingEnv { ref var, field: "webhook_url_env", .. } if var == "TEAMS_URL")
        );
        let url =
            |k: &str| (k == "TEAMS_URL").then(|| "https://example.invalid/workflows/x".to_string());
        assert_eq!(build("chat", &teams, &url).unwrap().kind(), "teams");

        let ops = parse("type: opsgenie\napi_key_env: OPSGENIE_KEY\n");
        assert_eq!(
            ops,
            ChannelConfig::Opsgenie { api_key_env: "OPSGENIE_KEY".into(), api_url: None }
        );
        assert!(ops.follows_incidents());
        let err = build("ops", &ops, &|_| None).err().unwrap();
        assert!(
            matches!(err, ConfigError::MissingEnv { ref var, field: "api_key_env", .. } if var == "OPSGENIE_KEY")
        );
        let key = |k: &str| (k == "OPSGENIE_KEY").then(|| "k".to_string());
        assert_eq!(build("ops", &ops, &key).unwrap().kind(), "opsgenie");
        assert!(serde_saphyr::from_str::<ChannelConfig>("type: opsgenie\napi_key: k\n").is_err());
    }

    #[test]
    fn urls_written_in_the_file_are_checked_early_naming_their_key() {
        let ops = parse("type: opsgenie\napi_key_env: K\napi_url: \"https://x/?q=1\"\n");
        assert!(matches!(ops.check("ops"), Err(("api_url", _))));
        let pd = parse("type: pagerduty\nrouting_key_env: K\nurl: nope\n");
        assert!(matches!(pd.check("pd"), Err(("url", _))));
        let hook = parse("type: webhook\nurl: \"ftp://x/\"\n");
        assert!(matches!(hook.check("h"), Err(("url", _))));
        assert!(parse("type: opsgenie\napi_key_env: K\n").check("ops").is_ok());
    }

    #[test]
    fn bad_url_is_a_config_error() {
        let c = parse("type: webhook\nurl: not a url\n");
        assert!(matches!(build("status", &c, &|_| None), Err(ConfigError::Invalid { .. })));
    }
}
