//! Parsing and compile checks of `postgres`'s `with`, and the failures that
//! need no server. Runs against a real primary and standby are in the e2e
//! suite (tests/postgres_kind.rs, on lab/pg.sh).

use super::*;

fn parse(yaml: &str) -> Result<Config, String> {
    serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
}

fn problems(yaml: &str) -> Vec<(Vec<String>, String)> {
    parse(yaml).unwrap().compile().into_iter().map(|p| (p.path, p.message)).collect()
}

#[test]
fn every_action_parses_with_its_fields() {
    for yaml in [
        "action: status\nconnection: app\n",
        "action: fence\nconnection: app\n",
        "action: unfence\nurl: postgres://u@h/db\n",
        "action: promote\nconnection: standby\n",
        "action: wait_for_catchup\nconnection: s\nmax_lag_bytes: 0\n",
        "action: wait_for_catchup\nconnection: s\nmax_lag_seconds: 1.5\nwithin_seconds: 5\ninterval_ms: 100\n",
        "action: query_one\nconnection: s\nquery: SELECT $1::int AS n\nparams: [1]\n",
    ] {
        let c = parse(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(c.compile(), vec![], "{yaml}");
    }
    let c = parse("action: wait_for_catchup\nconnection: s\nmax_lag_bytes: 1024\n").unwrap();
    assert_eq!(c.action, Action::WaitForCatchup);
    assert_eq!(c.max_lag_bytes, Some(1024));
}

#[test]
fn an_unknown_action_or_field_is_a_parse_error() {
    let e = parse("action: failover\nconnection: app\n").unwrap_err();
    assert!(e.contains("unknown variant `failover`"), "{e}");
    assert!(e.contains("wait_for_catchup"), "{e}");
    let e = parse("action: status\nconnection: app\nlag: 3\n").unwrap_err();
    assert!(e.contains("unknown field `lag`"), "{e}");
    let e = parse("connection: app\n").unwrap_err();
    assert!(e.contains("missing field `action`"), "{e}");
    let e = parse("action: wait_for_catchup\nconnection: s\nmax_lag_bytes: -1\n").unwrap_err();
    assert!(!e.is_empty());
}

#[test]
fn fields_of_another_action_are_pointed_at() {
    let p = problems("action: fence\nconnection: app\nmax_lag_bytes: 10\nquery: SELECT 1\n");
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0].0, ["max_lag_bytes"]);
    assert_eq!(p[0].1, "`max_lag_bytes` does not apply to action `fence`");
    assert_eq!(p[1].0, ["query"]);
    let help = parse("action: status\nconnection: a\nparams: []\n").unwrap().compile()[0]
        .help
        .clone()
        .unwrap();
    assert_eq!(help, "`status` takes only `connection` or `url`");
}

#[test]
fn missing_fields_are_reported_at_action() {
    let p = problems("action: wait_for_catchup\nconnection: s\n");
    assert_eq!(
        p,
        [(
            vec!["action".to_string()],
            "`wait_for_catchup` needs `max_lag_bytes` or `max_lag_seconds` (or both)".to_string()
        )]
    );
    let p = problems("action: query_one\nconnection: s\n");
    assert_eq!(p, [(vec!["action".to_string()], "`query_one` needs `query`".to_string())]);
    let p = problems("action: status\n");
    assert_eq!(p[0].0, Vec::<String>::new());
    assert!(p[0].1.contains("needs `connection`"));
}

#[test]
fn bad_values_are_pointed_at() {
    let p = problems("action: status\nconnection: a\nurl: postgres://x/y\n");
    assert_eq!(p[0].0, ["url"]);
    let p = problems("action: status\nurl: mysql://x/y\n");
    assert_eq!(p[0], (vec!["url".to_string()], "a postgres step needs a postgres:// URL".into()));
    let p = problems(
        "action: wait_for_catchup\nconnection: s\nmax_lag_seconds: -2\nwithin_seconds: 0\ninterval_ms: 0\n",
    );
    let paths: Vec<_> = p.iter().map(|(path, _)| path.join(".")).collect();
    assert_eq!(paths, ["max_lag_seconds", "within_seconds", "interval_ms"]);
    let c = parse("action: query_one\nconnection: s\nquery: SELECT {{inputs.x}}\n").unwrap();
    let p = c.compile();
    assert_eq!(p[0].path, ["query"]);
    assert!(p[0].about_template);
}

#[test]
fn only_fence_unfence_and_promote_mutate() {
    let mutating: Vec<_> = [
        Action::Status,
        Action::WaitForCatchup,
        Action::Fence,
        Action::Unfence,
        Action::Promote,
        Action::QueryOne,
    ]
    .into_iter()
    .filter(|a| a.mutates())
    .map(Action::name)
    .collect();
    assert_eq!(mutating, ["fence", "unfence", "promote"]);
}

#[test]
fn urls_are_shown_without_their_password() {
    let c = parse("action: status\nurl: postgres://lifeboat:s3cret@127.0.0.1:5/db\n").unwrap();
    let label = c.label(c.url.as_deref().unwrap());
    assert_eq!(label, "`postgres://lifeboat@127.0.0.1:5/db`");
    assert_eq!(without_password("not a url"), "a malformed postgres URL");
}

#[tokio::test]
async fn connection_refused_names_the_connection_and_what_to_do() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut c = parse("action: status\nconnection: old_primary\n").unwrap();
    c.url = Some(format!("postgres://lifeboat:s3cret@127.0.0.1:{port}/postgres"));
    let outcome = c.run(&AttemptContext::new("r", "s", 1)).await;
    let Outcome::Failed { error, retryable, .. } = outcome else { panic!("{outcome:?}") };
    assert!(error.starts_with("connection `old_primary`: cannot connect: "), "{error}");
    assert!(error.contains("check that the server is up"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    assert!(retryable);
}

#[tokio::test]
async fn an_unresolved_connection_fails_clearly() {
    let c = parse("action: promote\nconnection: standby\n").unwrap();
    let Outcome::Failed { error, retryable, .. } = c.run(&AttemptContext::new("r", "s", 1)).await
    else {
        panic!()
    };
    assert!(error.starts_with("connection `standby` was not resolved to a URL"), "{error}");
    assert!(!retryable);
}

#[test]
fn the_url_password_is_hidden_from_what_a_step_returns() {
    let url = "postgres://lifeboat:p%40ss-word@127.0.0.1:5432/db";
    let outcome = Outcome::Failed {
        error: "server said p@ss-word and p%40ss-word".into(),
        retryable: false,
        outputs: json!({"row": {"echo": "p@ss-word"}}),
    };
    assert_eq!(
        crate::failure::hide_url_password(url, outcome),
        Outcome::Failed {
            error: "server said *** and ***".into(),
            retryable: false,
            outputs: json!({"row": {"echo": "***"}}),
        }
    );
    let plain = Outcome::succeeded(json!({"role": "primary"}));
    assert_eq!(crate::failure::hide_url_password("postgres://u@h/db", plain.clone()), plain);
}

#[test]
fn fence_is_undone_by_unfence_unless_it_changed_nothing() {
    use crate::{ActionConfig, Step};
    let fence = parse("action: fence\nurl: postgres://u@h/db\n").unwrap();
    assert!(fence.reversible());
    assert!(!parse("action: promote\nurl: postgres://u@h/db\n").unwrap().reversible());
    match fence.inverse(&json!({"changed": true, "was_read_only": false})).unwrap() {
        ActionConfig::Postgres(c) => {
            assert_eq!(c.action, Action::Unfence);
            assert_eq!(c.url.as_deref(), Some("postgres://u@h/db"));
        }
        other => panic!("{other:?}"),
    }
    match fence.inverse(&json!({"changed": false, "was_read_only": true})).unwrap() {
        ActionConfig::Set(c) => {
            assert!(c.0["nothing_to_undo"].as_str().unwrap().contains("already"))
        }
        other => panic!("{other:?}"),
    }
    let e = fence.inverse(&json!({})).unwrap_err();
    assert!(e.contains("`changed`"), "{e}");
}
