//! What the engine needs to turn a run event into notifications: the
//! templates, the configured channels, and where runs are linked. Messages
//! are rendered when they are queued (the outbox holds the finished text),
//! so a later template edit or restart never changes what was sent.

use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;

use lifeboat_notify::{ChannelConfig, Templates};

use super::links::LinkSigner;

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.channel_kinds)
            .field("public_url", &self.public_url)
            .field("links", &self.links.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
pub struct Notifier {
    /// A `templates_dir`'s templates over the built-ins, compiled (and
    /// checked) at start; `None`: the built-ins alone, compiled on first use
    /// (a `lifeboat run` that sends nothing never pays for them).
    templates: Option<Templates>,
    /// Channel name -> kind (`email`, `pagerduty`, …).
    pub channel_kinds: HashMap<String, &'static str>,
    /// `server.public_url`, for run links.
    pub public_url: Option<String>,
    /// Signs one-click approve/reject/ack links; `None`: no links.
    pub links: Option<LinkSigner>,
}

impl Notifier {
    /// From the configuration: templates from `templates_dir` (if it
    /// exists) over the built-ins.
    pub fn from_config(
        config: &crate::config::Config,
        base: &Path,
    ) -> Result<Self, lifeboat_notify::TemplateError> {
        let dir = base.join(&config.templates_dir);
        let templates = if dir.is_dir() { Some(Templates::load(Some(&dir))?) } else { None };
        let channel_kinds = config
            .channels
            .iter()
            .map(|(name, c)| (name.clone(), ChannelConfig::kind(c)))
            .collect();
        let links = LinkSigner::from_env(&config.server.link_secret_env);
        Ok(Notifier {
            templates,
            channel_kinds,
            public_url: Some(config.server.public_url.trim_end_matches('/').to_string()),
            links,
        })
    }

    pub fn templates(&self) -> &Templates {
        static BUILTIN: LazyLock<Templates> =
            LazyLock::new(|| Templates::load(None).expect("built-in templates compile"));
        self.templates.as_ref().unwrap_or(&BUILTIN)
    }

    pub fn run_link(&self, run_id: &str) -> Option<String> {
        self.public_url.as_ref().map(|u| format!("{u}/runs/{run_id}"))
    }
}
