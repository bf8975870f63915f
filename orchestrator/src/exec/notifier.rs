//! What the engine needs to turn a run event into notifications: the
//! templates, the configured channels, and where runs are linked. Messages
//! are rendered when they are queued (the outbox holds the finished text),
//! so a later template edit or restart never changes what was sent.
//! A drill's notifications go to `[drill] channels` when it is set
//! ([`Notifier::channels_for`]).

use std::collections::HashMap;
use std::path::Path;

use lifeboat_notify::{ChannelConfig, Mode, Templates};

use super::links::LinkSigner;

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.channel_kinds)
            .field("public_url", &self.public_url)
            .field("links", &self.links.is_some())
            .field("drill_channels", &self.drill_channels)
            .finish_non_exhaustive()
    }
}

pub struct Notifier {
    pub templates: Templates,
    /// Channel name -> kind (`email`, `pagerduty`, …).
    pub channel_kinds: HashMap<String, &'static str>,
    /// `server.public_url`, for run links.
    pub public_url: Option<String>,
    /// Signs one-click approve/reject/ack links; `None`: no links.
    pub links: Option<LinkSigner>,
    /// `[drill] channels`: where every drill notification goes instead of
    /// the channels its rule or step names; `None`: those channels.
    pub drill_channels: Option<Vec<String>>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            templates: Templates::load(None).expect("built-in templates compile"),
            channel_kinds: HashMap::new(),
            public_url: None,
            links: None,
            drill_channels: None,
        }
    }
}

impl Notifier {
    /// From the configuration: templates from `templates_dir` (if it
    /// exists) over the built-ins.
    pub fn from_config(
        config: &crate::config::Config,
        base: &Path,
    ) -> Result<Self, lifeboat_notify::TemplateError> {
        let dir = base.join(&config.templates_dir);
        let templates = Templates::load(dir.is_dir().then_some(dir.as_path()))?;
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
            drill_channels: config.drill.channels.clone(),
        })
    }

    /// The channels a notification of a run in `mode` goes to, when its rule
    /// or step names `channels`: those, live or without `[drill] channels`;
    /// else, for a drill that notifies anyone at all, the drill channels
    /// (once each, however many channels they replace).
    pub fn channels_for(&self, mode: Mode, channels: &[String]) -> Vec<String> {
        match (&self.drill_channels, mode) {
            (Some(drill), Mode::Drill) if !channels.is_empty() => {
                let mut out: Vec<String> = Vec::with_capacity(drill.len());
                for c in drill {
                    if !out.contains(c) {
                        out.push(c.clone());
                    }
                }
                out
            }
            _ => channels.to_vec(),
        }
    }

    pub fn run_link(&self, run_id: &str) -> Option<String> {
        self.public_url.as_ref().map(|u| format!("{u}/runs/{run_id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn notifier(drill: Option<&[&str]>) -> Notifier {
        Notifier { drill_channels: drill.map(names), ..Notifier::default() }
    }

    #[test]
    fn a_live_run_always_notifies_the_channels_it_names() {
        let n = notifier(Some(&["drills-file"]));
        let named = names(&["oncall-pager", "incidents-slack"]);
        assert_eq!(n.channels_for(Mode::Live, &named), named);
    }

    #[test]
    fn drill_channels_replace_every_named_channel_once() {
        let n = notifier(Some(&["drills-file", "drills-slack", "drills-file"]));
        let named = names(&["oncall-pager", "incidents-slack", "oncall-email"]);
        assert_eq!(n.channels_for(Mode::Drill, &named), names(&["drills-file", "drills-slack"]));
    }

    #[test]
    fn a_drill_rule_naming_no_channel_still_notifies_nobody() {
        let n = notifier(Some(&["drills-file"]));
        assert!(n.channels_for(Mode::Drill, &[]).is_empty());
    }

    #[test]
    fn without_drill_channels_a_drill_uses_the_named_channels() {
        let named = names(&["oncall-pager"]);
        assert_eq!(notifier(None).channels_for(Mode::Drill, &named), named);
    }
}
