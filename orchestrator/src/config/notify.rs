//! `[drill]` (where a drill's notifications go) and the checks of
//! `[channels]` that need more than their types: a channel `[drill]` names
//! must exist, a `file` channel's `dir` may not climb out with `..`, a URL
//! written in the file (`url`, an Opsgenie `api_url`) must be one. Errors
//! name the file, line, column and key; the file is read again with spans
//! for that (figment keeps no positions). A relative `file` channel `dir`
//! is resolved here against the configuration file's directory, like every
//! other path in it, and made absolute.

use std::path::Path;

use lifeboat_notify::ChannelConfig;
use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// `[drill]`: how a drill (a run in mode `drill`) notifies, and how often
/// `serve` looks for overdue drills.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// The channels every drill notification goes to, *instead of* the
    /// channels its workflow's rule or notify step names (each notification
    /// once per channel listed here). Unset: a drill notifies the
    /// workflow's own channels, every message marked `[DRILL]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// How often each `serve` looks for workflows whose drills are overdue
    /// (`objectives.drill_every`, the `drill_overdue` notice). Default `1m`.
    #[serde(default = "check_every")]
    pub check_every: crate::model::Duration,
}

fn check_every() -> crate::model::Duration {
    crate::model::Duration::from_millis(60_000)
}

impl Default for DrillConfig {
    fn default() -> Self {
        DrillConfig { channels: None, check_every: check_every() }
    }
}

/// Where the values checked here are in the file (only what is needed).
#[derive(Deserialize, Default)]
struct Spans {
    #[serde(default)]
    drill: Option<DrillSpans>,
    #[serde(default)]
    channels: std::collections::BTreeMap<String, ChannelSpans>,
}

#[derive(Deserialize, Default)]
struct DrillSpans {
    #[serde(default)]
    channels: Option<toml::Spanned<Vec<toml::Spanned<String>>>>,
}

#[derive(Deserialize, Default)]
struct ChannelSpans {
    #[serde(default)]
    dir: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    url: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    api_url: Option<toml::Spanned<toml::Value>>,
}

impl ChannelSpans {
    /// Where key `field` of the channel is written.
    fn of(&self, field: &str) -> Option<std::ops::Range<usize>> {
        let value = match field {
            "dir" => self.dir.as_ref(),
            "url" => self.url.as_ref(),
            "api_url" => self.api_url.as_ref(),
            _ => None,
        };
        value.map(toml::Spanned::span)
    }
}

/// `line:column` (1-based) of byte `offset` in `text`.
pub(super) fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The first `[channels.NAME]` of the file at `path` that does not read as
/// a channel (an unknown `type` or key, a missing one), placed at its line:
/// figment, which reads the whole file, names the key but no position.
/// `None` when every channel reads (the error is elsewhere).
pub(super) fn channel_error(path: &Path) -> Option<ConfigError> {
    #[derive(Deserialize)]
    struct Channels {
        #[serde(default)]
        #[allow(dead_code)] // read only for its errors
        channels: std::collections::BTreeMap<String, ChannelConfig>,
    }
    let text = std::fs::read_to_string(path).ok()?;
    // Not TOML at all: figment's error says where.
    toml::from_str::<toml::Table>(&text).ok()?;
    let e = toml::from_str::<Channels>(&text).err()?;
    let span = e.span()?;
    let (line, column) = position(&text, span.start);
    // The table the error is in: the last `[channels.NAME]` header up to
    // the end of the error's line.
    let start = span.start.min(text.len());
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let key = text[..line_end]
        .rsplit("[channels.")
        .next()
        .and_then(|rest| rest.split(']').next())
        .filter(|name| !name.contains('\n'))
        .map(|name| format!("channels.{}", name.trim()))
        .unwrap_or_else(|| "channels".to_string());
    Some(ConfigError::Invalid(format!(
        "{}:{line}:{column}: invalid configuration: {key}: {}",
        path.display(),
        e.message().trim()
    )))
}

/// Checks `[drill]` and `[channels]` of `config`, read from `path`, and
/// resolves relative `file` channel directories against `path`'s directory.
pub(super) fn check(config: &mut Config, path: Option<&Path>) -> Result<(), ConfigError> {
    let text = path.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    let spans: Spans = toml::from_str(&text).unwrap_or_default();
    let error = |span: Option<std::ops::Range<usize>>, key: &str, message: String| {
        let file = path.map(|p| p.display().to_string()).unwrap_or_else(|| "configuration".into());
        let at = span
            .map(|s| position(&text, s.start))
            .map_or(String::new(), |(l, c)| format!(":{l}:{c}"));
        ConfigError::Invalid(format!("{file}{at}: invalid configuration: {key}: {message}"))
    };
    for (name, channel) in &config.channels {
        if let Err((field, e)) = channel.check(name) {
            let span = spans.channels.get(name).and_then(|c| c.of(field));
            return Err(error(span, &format!("channels.{name}.{field}"), e.to_string()));
        }
    }
    if let Some(names) = &config.drill.channels {
        let listed = spans.drill.as_ref().and_then(|d| d.channels.as_ref());
        if names.is_empty() {
            return Err(error(
                listed.map(|l| l.span()),
                "drill.channels",
                "lists no channel, so drills would notify nobody; name the channels drills \
                 notify (a `file` channel keeps every message), or remove `channels` to send \
                 drills to the workflows' own channels, marked [DRILL]"
                    .into(),
            ));
        }
        for (i, name) in names.iter().enumerate() {
            if config.channels.contains_key(name) {
                continue;
            }
            let declared = config.channels.keys().map(String::as_str);
            let hint = crate::suggest::did_you_mean(name, declared)
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            let known = config.channels.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            let span = listed.and_then(|l| l.get_ref().get(i)).map(|s| s.span());
            return Err(error(
                span,
                "drill.channels",
                format!(
                    "unknown channel `{name}`{hint} (declared with [channels.<name>]: {known})"
                ),
            ));
        }
    }
    let base = path.and_then(Path::parent).unwrap_or(Path::new(""));
    for channel in config.channels.values_mut() {
        if let ChannelConfig::File { dir, .. } = channel
            && dir.is_relative()
        {
            // Absolute, so a delivery's record (`wrote <path>`) reads the
            // same from any directory.
            let joined = base.join(&*dir);
            *dir = std::path::absolute(&joined).unwrap_or(joined);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const FILE: &str = "[channels.drills-file]\ntype = \"file\"\ndir = \"notifications\"\n\n\
                        [channels.oncall-email]\ntype = \"email\"\nsmtp_url = \"smtp://127.0.0.1:2525\"\n\
                        from = \"lifeboat@example.com\"\nto = [\"sre@example.com\"]\n";

    fn load(toml: &str) -> (Result<Config, ConfigError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("lifeboat.toml");
        std::fs::write(&path, toml).expect("writing the config");
        (Config::load(Some(&path)).map(|(config, _)| config), dir)
    }

    fn error(toml: &str) -> String {
        let (result, dir) = load(toml);
        let text = format!("{:#}", result.expect_err("the configuration is refused"));
        text.replace(&dir.path().display().to_string(), "DIR")
    }

    #[test]
    fn drill_channels_are_read_and_file_dirs_resolved_against_the_config() {
        let (config, dir) = load(&format!("{FILE}\n[drill]\nchannels = [\"drills-file\"]\n"));
        let config = config.unwrap();
        assert_eq!(config.drill.channels, Some(vec!["drills-file".to_string()]));
        let ChannelConfig::File { dir: out, .. } = &config.channels["drills-file"] else {
            panic!("a file channel")
        };
        assert_eq!(out, &dir.path().join("notifications"));
    }

    #[test]
    fn without_a_drill_section_drills_use_the_workflows_channels() {
        assert_eq!(load(FILE).0.unwrap().drill, DrillConfig::default());
    }

    #[test]
    fn an_unknown_drill_channel_is_named_with_file_line_column_and_a_suggestion() {
        let e =
            error(&format!("{FILE}\n[drill]\nchannels = [\"oncall-email\",\n  \"drills-fil\"]\n"));
        assert_eq!(
            e,
            "DIR/lifeboat.toml:13:3: invalid configuration: drill.channels: unknown channel \
             `drills-fil`; did you mean `drills-file`? (declared with [channels.<name>]: \
             `drills-file`, `oncall-email`)"
        );
    }

    #[test]
    fn an_empty_drill_channel_list_is_refused() {
        let e = error(&format!("{FILE}\n[drill]\nchannels = []\n"));
        assert!(
            e.starts_with(
                "DIR/lifeboat.toml:12:12: invalid configuration: drill.channels: lists no channel"
            ),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_in_drill_is_refused_naming_it() {
        let e = error("[drill]\nchanels = [\"x\"]\n");
        assert!(e.contains("chanels"), "{e}");
    }

    #[test]
    fn a_file_channel_dir_with_dot_dot_is_refused_at_its_line() {
        let e = error("[channels.drops]\ntype = \"file\"\ndir = \"out/../../etc\"\n");
        assert!(e.starts_with("DIR/lifeboat.toml:3:7: invalid configuration: channels.drops.dir: channel `drops`: `dir` = `out/../../etc` contains `..`"), "{e}");
    }

    #[test]
    fn an_opsgenie_api_url_that_is_not_a_base_url_is_refused_at_its_line() {
        let e = error(
            "[channels.ops]\ntype = \"opsgenie\"\napi_key_env = \"OPSGENIE_API_KEY\"\n\
             api_url = \"https://api.eu.opsgenie.com/?region=eu\"\n",
        );
        assert!(
            e.starts_with(
                "DIR/lifeboat.toml:4:11: invalid configuration: channels.ops.api_url: channel `ops`: `api_url` must be the API's base URL"
            ),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_of_a_channel_is_refused_at_its_line() {
        let e = error(
            "[server]\nlisten = \"127.0.0.1:8080\"\n\n[channels.chat]\ntype = \"teams\"\nwebhook_url = \"https://x\"\n",
        );
        assert!(
            e.starts_with("DIR/lifeboat.toml:4:1: invalid configuration: channels.chat: "),
            "{e}"
        );
        assert!(e.contains("webhook_url"), "{e}");
    }

    #[test]
    fn a_syntax_error_is_not_blamed_on_a_channel() {
        let e = error("[channels.chat]\ntype = \"teams\"\nwebhook_url_env = \n");
        assert!(!e.contains("channels.chat"), "{e}");
        assert!(e.contains("invalid configuration"), "{e}");
    }

    #[test]
    fn a_channel_missing_its_secret_variable_key_is_refused_naming_it() {
        let e = error("[channels.ops]\ntype = \"opsgenie\"\n");
        assert!(
            e.starts_with("DIR/lifeboat.toml:1:1: invalid configuration: channels.ops: "),
            "{e}"
        );
        assert!(e.contains("api_key_env"), "{e}");
    }

    #[test]
    fn a_webhook_url_that_is_not_a_url_is_refused_at_its_line() {
        let e = error("[channels.hook]\ntype = \"webhook\"\nurl = \"hooks.example/x\"\n");
        assert!(
            e.starts_with("DIR/lifeboat.toml:3:7: invalid configuration: channels.hook.url: channel `hook`: `url` is not a URL"),
            "{e}"
        );
    }

    #[test]
    fn positions_count_lines_and_characters() {
        assert_eq!(position("a\nbé c", 5), (2, 3));
        assert_eq!(position("x", 0), (1, 1));
    }
}
