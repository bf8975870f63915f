//! Schedule triggers end to end: `lifeboat serve` fires cron ticks on a fast
//! schedule clock (`LIFEBOAT_SCHEDULE_CLOCK`), each tick exactly once across
//! replicas and restarts, and catches up after downtime as `catch_up` says.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// A workflow fired every minute, its run's input `at` being the tick.
fn every_minute(name: &str, catch_up: &str) -> String {
    r#"name: NAME
inputs:
  at: { type: string, required: true }
triggers:
  - schedule: { cron: "* * * * *", timezone: Europe/Paris, catch_up: CATCH_UP }
    inputs: { at: "{{event.tick}}" }
steps:
  a: { uses: set, with: { at: "{{inputs.at}}" } }
"#
    .replace("NAME", name)
    .replace("CATCH_UP", catch_up)
}

fn add_workflow(sb: &Sandbox, name: &str, text: &str) {
    std::fs::create_dir_all(sb.path("workflows")).expect("workflows dir");
    sb.write(&format!("workflows/{name}.yaml"), text);
}

/// Runs of `workflow` per tick (ms), from each run's trigger.
fn fired(sb: &Sandbox, workflow: &str) -> BTreeMap<i64, usize> {
    let mut out = BTreeMap::new();
    for run in sb.runs().iter().filter(|r| r["workflow"] == workflow) {
        assert_eq!(run["trigger"]["kind"], "schedule", "{run:#}");
        let tick = tick_ms(run["trigger"]["tick"].as_str().expect("trigger.tick"));
        assert_eq!(
            run["inputs"]["at"], run["trigger"]["tick"],
            "the trigger input renders the tick"
        );
        *out.entry(tick).or_insert(0) += 1;
    }
    out
}

fn schedules(sb: &Sandbox) -> Vec<Value> {
    let out = sb.ok(&["schedules", "--json"]);
    serde_json::from_slice(&out.stdout).expect("schedules --json prints JSON")
}

#[test]
fn schedules_lists_cron_zone_catch_up_and_next_ticks() {
    let sb = Sandbox::new("sched-list");
    add_workflow(
        &sb,
        "backup",
        "name: backup\ntriggers:\n  - schedule: { cron: \"0 2 * * *\", timezone: Europe/Paris, catch_up: none }\nsteps:\n  a: { uses: set }\n",
    );
    let list = schedules(&sb);
    assert_eq!(list.len(), 1, "{list:#?}");
    let s = &list[0];
    assert_eq!((&s["id"], &s["workflow"]), (&Value::from("backup#0"), &Value::from("backup")));
    assert_eq!(
        (&s["cron"], &s["timezone"]),
        (&Value::from("0 2 * * *"), &Value::from("Europe/Paris"))
    );
    assert_eq!((&s["catch_up"], &s["last_tick"]), (&Value::from("none"), &Value::Null));
    let next: Vec<&str> =
        s["next"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|t| t.contains("T02:00:00+0")), "02:00 Paris time: {next:?}");
    let text = stdout(&sb.ok(&["schedules"]));
    assert!(text.contains("backup#0") && text.contains("never"), "{text}");
}

#[test]
fn every_tick_fires_exactly_once_across_two_replicas() {
    let (sb, _clock) = Sandbox::new("sched-replicas").fast_schedule_clock(60);
    add_workflow(&sb, "tick", &every_minute("tick", "all"));
    // Migrated first: processes migrating a fresh SQLite file at once can
    // collide ("duplicate column name"), and the test reads while both start.
    sb.ok(&["migrate"]);
    let (mut a, mut b) = (sb.serve(), sb.serve());
    // 60x: a minute tick every real second.
    assert!(
        eventually(Duration::from_secs(60), || fired(&sb, "tick").len() >= 6),
        "too few ticks fired: {:?}",
        fired(&sb, "tick")
    );
    a.kill9();
    b.kill9();
    let fired = fired(&sb, "tick");
    assert!(fired.len() >= 5, "too few ticks fired in 8 minutes of schedule time: {fired:?}");
    assert!(fired.values().all(|&n| n == 1), "a tick fired more than once: {fired:?}");
    let ticks: Vec<i64> = fired.keys().copied().collect();
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 60_000), "a tick was skipped: {ticks:?}");

    // Each fire is audited by its schedule, and `schedules` shows the last tick.
    let audit = sb.ok(&["audit", "list", "--json", "--limit", "1000"]);
    let audit: Vec<Value> = serde_json::from_slice(&audit.stdout).expect("audit list --json");
    let by_schedule = audit.iter().filter(|e| e["actor"] == "schedule:tick#0").count();
    assert_eq!(by_schedule, fired.len(), "{audit:#?}");
    let list = schedules(&sb);
    assert_eq!(tick_ms(list[0]["last_tick"].as_str().unwrap()), *ticks.last().unwrap());
}

#[test]
fn after_downtime_catch_up_fires_no_missed_tick_the_latest_or_all() {
    // 10x: a minute tick every 6 real seconds; stops and starts happen
    // half-way between ticks, so which ticks were missed is certain as long
    // as a restarted serve is scheduling within 3 s (a loaded CI machine
    // took over 2 s at 15x).
    let (sb, clock) = Sandbox::new("sched-catchup").fast_schedule_clock(10);
    let modes = ["none", "latest", "all"];
    for mode in modes {
        add_workflow(&sb, mode, &every_minute(&format!("catch-{mode}"), mode));
    }
    let all_fired = |after: i64| {
        modes.iter().all(|m| fired(&sb, &format!("catch-{m}")).keys().any(|&t| t > after))
    };
    sb.ok(&["migrate"]); // see every_tick_fires_exactly_once_across_two_replicas
    let mut serve = sb.serve();
    assert!(eventually(Duration::from_secs(20), || all_fired(0)), "no first tick fired");
    clock.sleep_to_phase(0.5, 0);
    serve.kill9();
    let stopped = clock.now();
    clock.sleep_to_phase(0.5, 2); // three ticks pass with no scheduler running
    let restarted = clock.now();
    let mut serve = sb.serve();
    assert!(eventually(Duration::from_secs(20), || all_fired(restarted)), "no tick after restart");
    serve.kill9();

    let missed: Vec<i64> =
        (stopped / 60_000 + 1..=restarted / 60_000).map(|minute| minute * 60_000).collect();
    assert_eq!(missed.len(), 3);
    for mode in modes {
        let fired = fired(&sb, &format!("catch-{mode}"));
        assert!(fired.values().all(|&n| n == 1), "catch_up {mode}: a tick fired twice: {fired:?}");
        let caught: Vec<i64> =
            fired.keys().copied().filter(|t| (stopped..=restarted).contains(t)).collect();
        let expected = match mode {
            "none" => vec![],
            "latest" => vec![missed[2]],
            _ => missed.clone(),
        };
        assert_eq!(caught, expected, "catch_up {mode}: missed ticks {missed:?}, fired {fired:?}");
    }
}
