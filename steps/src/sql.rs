//! `sql`: one query against a named connection or a URL, with bound params.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::ConfigProblem;

/// Runs one SQL statement; rows come back as JSON objects.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A connection named under `[connections]` in lifeboat.toml.
    pub connection: Option<String>,
    /// A `sqlite://` or `postgres://` URL (template); exclusive with `connection`.
    pub url: Option<String>,
    /// The statement; use `?`/`$1` placeholders, never templates, for values.
    pub query: String,
    /// Values bound to the placeholders (templates).
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

impl Config {
    pub fn compile(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        match (&self.connection, &self.url) {
            (None, None) => problems.push(ConfigProblem::new(
                &[],
                "a sql step needs `connection` (a name from lifeboat.toml) or `url`",
            )),
            (Some(_), Some(_)) => {
                problems.push(ConfigProblem::new(&["url"], "`connection` and `url` are exclusive"))
            }
            _ => {}
        }
        if let Some(url) = &self.url
            && !crate::is_templated(url)
            && !["sqlite:", "postgres://", "postgresql://"].iter().any(|p| url.starts_with(p))
        {
            problems.push(ConfigProblem::new(
                &["url"],
                "only sqlite: and postgres:// URLs are supported",
            ));
        }
        if crate::is_templated(&self.query) {
            problems.push(
                ConfigProblem::new(&["query"], "templates in `query` would allow SQL injection")
                    .with_help("bind values with placeholders and `params: [\"{{inputs.x}}\"]`"),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templated_query_is_rejected() {
        let c: Config =
            serde_saphyr::from_str("url: sqlite://x.db\nquery: select {{inputs.x}}\n").unwrap();
        assert_eq!(c.compile()[0].path, vec!["query"]);
    }

    #[test]
    fn needs_a_target() {
        let c: Config = serde_saphyr::from_str("query: select 1\n").unwrap();
        assert_eq!(c.compile().len(), 1);
    }
}
