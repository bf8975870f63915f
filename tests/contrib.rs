//! What ships in `contrib/` for the tools SRE teams already run: the
//! Prometheus alerting rules pass the real `promtool` (checked and
//! unit-tested). That the dashboard and the rules name only exported
//! metrics is a unit test beside the registry (`metrics.rs`): a scrape shows
//! a labelled family only once it has a sample.

use std::process::Command;

use crate::util::root;

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(root().join("contrib/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool could not run ({e}): `bash scripts/deps.sh` installs it (Debian package prometheus)")
        })
}

#[test]
fn promtool_checks_and_unit_tests_the_alerting_rules() {
    for args in [
        &["check", "rules", "lifeboat-rules.yml"][..],
        &["test", "rules", "lifeboat-rules.test.yml"][..],
    ] {
        let out = promtool(args);
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
