//! What the engine needs to turn a run event into notifications: the
//! templates, the configured channels, and where runs are linked. Messages
//! are rendered when they are queued (the outbox holds the finished text),
//! so a later template edit or restart never changes what was sent.
//! A drill's notifications go to `[drill] channels` when it is set
//! ([`Notifier::routes`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;

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

#[derive(Default)]
pub struct Notifier {
    /// A `templates_dir`'s templates over the built-ins, compiled (and
    /// checked) at start; `None`: the built-ins alone, compiled on first use
    /// (a `lifeboat run` that sends nothing never pays for them).
    templates: Option<Templates>,
    /// Channel name -> kind (`email`, `pagerduty`, …).
    pub channel_kinds: HashMap<String, &'static str>,
    /// The channels that keep an incident per run (PagerDuty, Opsgenie:
    /// `ChannelConfig::follows_incidents`), which an escalation's
    /// acknowledgement and the run's end are sent to.
    pub incident_channels: std::collections::HashSet<String>,
    /// `server.public_url`, for run links.
    pub public_url: Option<String>,
    /// Signs one-click approve/reject/ack links; `None`: no links.
    pub links: Option<LinkSigner>,
    /// `[drill] channels`: where every drill notification goes instead of
    /// the channels its rule or step names; `None`: those channels.
    pub drill_channels: Option<Vec<String>>,
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
        let incident_channels = config
            .channels
            .iter()
            .filter(|(_, c)| c.follows_incidents())
            .map(|(name, _)| name.clone())
            .collect();
        let links = LinkSigner::from_env(&config.server.link_secret_env);
        Ok(Notifier {
            templates,
            channel_kinds,
            incident_channels,
            public_url: Some(config.server.public_base()),
            links,
            drill_channels: config.drill.channels.clone(),
        })
    }

    pub fn templates(&self) -> &Templates {
        static BUILTIN: LazyLock<Templates> =
            LazyLock::new(|| Templates::load(None).expect("built-in templates compile"));
        self.templates.as_ref().unwrap_or(&BUILTIN)
    }

    /// Where a notification of a run in `mode` goes when its rule or step
    /// names `channels`: to those, live or without `[drill] channels`. A
    /// drill with `[drill] channels` sends, for each channel named, one
    /// message to each drill channel, saying which channel it stands in
    /// for: the drill shows every message a live run would send, and sends
    /// none of them where a live run would.
    pub fn routes(&self, mode: Mode, channels: &[String]) -> Vec<Route> {
        let unique = |list: &[String]| {
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for c in list {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
            out
        };
        match (&self.drill_channels, mode) {
            (Some(drill), Mode::Drill) => {
                let drill = unique(drill);
                unique(channels)
                    .into_iter()
                    .flat_map(|live| {
                        drill.iter().map(move |d| Route {
                            channel: d.clone(),
                            live_channel: Some(live.clone()),
                        })
                    })
                    .collect()
            }
            _ => {
                channels.iter().map(|c| Route { channel: c.clone(), live_channel: None }).collect()
            }
        }
    }

    pub fn run_link(&self, run_id: &str) -> Option<String> {
        self.public_url.as_ref().map(|u| format!("{u}/runs/{run_id}"))
    }
}

/// One outbox row's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub channel: String,
    /// A rerouted drill's: the channel a live run would have notified.
    pub live_channel: Option<String>,
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

    /// (channel, live channel) of each route.
    fn routes(n: &Notifier, mode: Mode, named: &[&str]) -> Vec<(String, Option<String>)> {
        n.routes(mode, &names(named)).into_iter().map(|r| (r.channel, r.live_channel)).collect()
    }

    fn plain(list: &[&str]) -> Vec<(String, Option<String>)> {
        list.iter().map(|c| (c.to_string(), None)).collect()
    }

    #[test]
    fn a_live_run_always_notifies_the_channels_it_names() {
        let n = notifier(Some(&["drills-file"]));
        let named = ["oncall-pager", "incidents-slack"];
        assert_eq!(routes(&n, Mode::Live, &named), plain(&named));
    }

    #[test]
    fn drill_channels_replace_every_named_channel_saying_which() {
        let n = notifier(Some(&["drills-file", "drills-slack", "drills-file"]));
        let got = routes(&n, Mode::Drill, &["oncall-pager", "incidents-slack", "oncall-pager"]);
        let to = |d: &str, live: &str| (d.to_string(), Some(live.to_string()));
        assert_eq!(
            got,
            [
                to("drills-file", "oncall-pager"),
                to("drills-slack", "oncall-pager"),
                to("drills-file", "incidents-slack"),
                to("drills-slack", "incidents-slack"),
            ]
        );
    }

    #[test]
    fn a_drill_rule_naming_no_channel_still_notifies_nobody() {
        let n = notifier(Some(&["drills-file"]));
        assert!(routes(&n, Mode::Drill, &[]).is_empty());
    }

    #[test]
    fn without_drill_channels_a_drill_uses_the_named_channels() {
        assert_eq!(
            routes(&notifier(None), Mode::Drill, &["oncall-pager"]),
            plain(&["oncall-pager"])
        );
    }
}
