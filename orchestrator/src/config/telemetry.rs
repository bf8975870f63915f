//! `[telemetry]`: where traces are exported over OTLP (`crate::telemetry`).
//! Unset, with no `OTEL_EXPORTER_OTLP_ENDPOINT` either, nothing is exported
//! and no tracing layer is installed.

use serde::{Deserialize, Serialize};

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
/// fragment, checked while the file is read so the error names the key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct OtlpEndpoint(String);

impl OtlpEndpoint {
    /// The URL traces are POSTed to: the base plus `/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.0.trim_end_matches('/'))
    }
}

impl TryFrom<String> for OtlpEndpoint {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let expected = "expected an OTLP/HTTP base URL like http://collector:4318";
        let url = url::Url::parse(&text)
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
        Ok(OtlpEndpoint(text))
    }
}

impl From<OtlpEndpoint> for String {
    fn from(e: OtlpEndpoint) -> String {
        e.0
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
}
