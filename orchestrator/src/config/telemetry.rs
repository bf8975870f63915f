//! `[telemetry]`: where traces are exported over OTLP (`crate::telemetry`).
//! Unset, with no `OTEL_EXPORTER_OTLP_ENDPOINT` either, nothing is exported
//! and no tracing layer is installed. A bad endpoint is refused after
//! loading, at its `file:line:column` (read again with `toml::Spanned`,
//! as `notify.rs` does), or naming `LIFEBOAT_TELEMETRY__OTLP_ENDPOINT`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// `[telemetry]` in `lifeboat.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP base URL of a collector, e.g. `http://otel:4318`;
    /// traces are POSTed to `<endpoint>/v1/traces` as protobuf. Unset:
    /// the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL), else no export.
    #[serde(default)]
    pub otlp_endpoint: Option<OtlpEndpoint>,
    /// `service.name` of every span (`OTEL_SERVICE_NAME` overrides it).
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { otlp_endpoint: None, service_name: default_service_name() }
    }
}

fn default_service_name() -> String {
    "lifeboat".into()
}

/// An `http://` or `https://` base URL with a host and no query or
/// fragment: checked by [`check`] once the configuration is loaded, and by
/// `TryFrom` for the `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct OtlpEndpoint(String);

/// Where `telemetry.otlp_endpoint` is in the file.
#[derive(Deserialize, Default)]
struct Spans {
    #[serde(default)]
    telemetry: Option<TelemetrySpans>,
}

#[derive(Deserialize, Default)]
struct TelemetrySpans {
    #[serde(default)]
    otlp_endpoint: Option<toml::Spanned<String>>,
}

/// Refuses an `otlp_endpoint` that is not an OTLP/HTTP base URL, naming
/// where it was written.
pub(super) fn check(config: &Config, path: Option<&Path>) -> Result<(), ConfigError> {
    let Some(endpoint) = &config.telemetry.otlp_endpoint else {
        return Ok(());
    };
    let Err(message) = OtlpEndpoint::parse(&endpoint.0) else {
        return Ok(());
    };
    let text = path.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    let spans: Spans = toml::from_str(&text).unwrap_or_default();
    let written = spans.telemetry.and_then(|t| t.otlp_endpoint);
    let at = match (path, written) {
        (Some(path), Some(w)) if *w.get_ref() == endpoint.0 => {
            let (line, column) = super::notify::position(&text, w.span().start);
            format!("{}:{line}:{column}", path.display())
        }
        _ => "LIFEBOAT_TELEMETRY__OTLP_ENDPOINT".into(),
    };
    Err(ConfigError::Invalid(format!(
        "{at}: invalid configuration: telemetry.otlp_endpoint: {message}"
    )))
}

impl OtlpEndpoint {
    /// The URL traces are POSTed to: the base plus `/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.0.trim_end_matches('/'))
    }
}

impl TryFrom<String> for OtlpEndpoint {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        OtlpEndpoint::parse(&text)?;
        Ok(OtlpEndpoint(text))
    }
}

impl OtlpEndpoint {
    fn parse(text: &str) -> Result<(), String> {
        let expected = "expected an OTLP/HTTP base URL like http://collector:4318";
        let url = url::Url::parse(text)
            .map_err(|e| format!("`{text}` is not a URL ({e}); {expected}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "`{text}`: scheme `{}` is not http or https (lifeboat speaks OTLP over HTTP, not gRPC); {expected}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("`{text}` has no host; {expected}"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("`{text}` has a query or fragment; {expected}"));
        }
        Ok(())
    }
}

impl std::fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(toml: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("lifeboat.toml");
        std::fs::write(&path, toml).expect("writing the config");
        Config::load(Some(&path)).map(|(c, _)| c).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn telemetry_is_off_by_default_and_named_lifeboat() {
        let config = load("").unwrap();
        assert_eq!(config.telemetry.otlp_endpoint, None);
        assert_eq!(config.telemetry.service_name, "lifeboat");
    }

    #[test]
    fn an_endpoint_is_a_base_url_traces_go_below() {
        let config =
            load("[telemetry]\notlp_endpoint = \"http://otel:4318/\"\nservice_name = \"dr\"\n")
                .unwrap();
        let endpoint = config.telemetry.otlp_endpoint.unwrap();
        assert_eq!(endpoint.traces_url(), "http://otel:4318/v1/traces");
        assert_eq!(config.telemetry.service_name, "dr");
    }

    #[test]
    fn a_bad_endpoint_is_refused_naming_the_key_and_the_fix() {
        for (bad, says) in [
            ("otel:4318", "scheme `otel` is not http or https"),
            ("grpc://otel:4317", "not http or https"),
            ("not a url", "is not a URL"),
            ("http://otel:4318/?x=1", "query or fragment"),
        ] {
            let e = load(&format!("[telemetry]\notlp_endpoint = \"{bad}\"\n")).unwrap_err();
            assert!(e.contains("telemetry.otlp_endpoint"), "{bad}: {e}");
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("http://collector:4318"), "{bad}: {e}");
        }
        let e = load("[telemetry]\nendpoint = \"http://otel:4318\"\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_bad_endpoint_from_the_environment_names_the_variable() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("lifeboat.toml");
        std::fs::write(&path, "[telemetry]\notlp_endpoint = \"http://otel:4318\"\n").unwrap();
        let mut config = Config::load(Some(&path)).unwrap().0;
        config.telemetry.otlp_endpoint = Some(super::OtlpEndpoint("otel:4317".into()));
        let e = super::check(&config, Some(&path)).unwrap_err().to_string();
        assert!(e.starts_with("LIFEBOAT_TELEMETRY__OTLP_ENDPOINT: invalid configuration"), "{e}");
    }

    #[test]
    fn a_bad_endpoint_is_placed_at_its_line_and_column() {
        let e = load("[executor]\nmax_runs = 2\n\n[telemetry]\notlp_endpoint = \"otel:4317\"\n")
            .unwrap_err();
        assert!(
            e.contains("lifeboat.toml:5:17: invalid configuration: telemetry.otlp_endpoint:"),
            "{e}"
        );
    }
}
