//! `http`: one HTTP request; 5xx and connection errors are retryable, 4xx not.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::ConfigProblem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

/// Sends one HTTP request and checks its status.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP method (default GET).
    #[serde(default)]
    pub method: Method,
    /// Absolute `http://` or `https://` URL (template).
    pub url: String,
    /// Request headers (values are templates).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Query parameters appended to the URL (values are templates).
    #[serde(default)]
    pub query: IndexMap<String, String>,
    /// JSON request body; exclusive with `body`.
    pub json: Option<serde_json::Value>,
    /// Raw request body (template); exclusive with `json`.
    pub body: Option<String>,
    /// Accepted status codes (default: any 2xx).
    pub expect_status: Option<Vec<u16>>,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.json.is_some() && self.body.is_some() {
            problems
                .push(ConfigProblem::new(&["body"], "`json` and `body` are exclusive; keep one"));
        }
        let url = self.url.trim();
        if !crate::is_templated(url) && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(
                ConfigProblem::new(&["url"], format!("`{url}` is not an http:// or https:// URL"))
                    .with_help("write the full URL, e.g. http://127.0.0.1:9100/health"),
            );
        }
        if let Some(codes) = &self.expect_status {
            for (i, code) in codes.iter().enumerate() {
                // 0 stands for a templated code, checked when the step starts.
                if *code != 0 && !(100..=599).contains(code) {
                    problems.push(ConfigProblem::new(
                        &["expect_status", &i.to_string()],
                        format!("{code} is not an HTTP status code (100-599)"),
                    ));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Config {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn relative_url_is_rejected() {
        assert_eq!(parse("url: /health\n").compile()[0].path, vec!["url"]);
    }

    #[test]
    fn templated_url_is_checked_at_run_time() {
        assert!(parse("url: \"{{inputs.base}}/health\"\n").compile().is_empty());
    }

    #[test]
    fn status_out_of_range_names_the_index() {
        let p = parse("url: http://x\nexpect_status: [200, 999]\n").compile();
        assert_eq!(p[0].path, vec!["expect_status", "1"]);
    }

    #[test]
    fn method_is_upper_case() {
        assert_eq!(parse("url: http://x\nmethod: POST\n").method, Method::Post);
    }
}
