//! Drills as written in a workflow file: a step's `drill:` entry (run, skip
//! or a substitute body), the faults a drill injects, and the `drills:`
//! scenarios with what they expect.

use std::fmt;
use std::str::FromStr;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{Duration, Event, Located, StepBody};

/// What a step does in a drill (`drill:`); in a live run it is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StepDrill {
    /// `run` (the default) or `skip` (recorded as skipped).
    Mode(DrillMode),
    /// A body (`uses`/`with`, like `rollback`) that runs instead.
    Substitute(StepBody),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrillMode {
    Run,
    Skip,
}

impl<'de> Deserialize<'de> for StepDrill {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepDrillVisitor;

        impl<'de> Visitor<'de> for StepDrillVisitor {
            type Value = StepDrill;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`run`, `skip`, or a substitute body (`uses`, `with`)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<StepDrill, E> {
                match v {
                    "run" => Ok(StepDrill::Mode(DrillMode::Run)),
                    "skip" => Ok(StepDrill::Mode(DrillMode::Skip)),
                    other => Err(E::custom(format!(
                        "`drill: {other}` is not `run`, `skip`, or a substitute body (`uses`, `with`)"
                    ))),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StepDrill, A::Error> {
                StepBody::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(StepDrill::Substitute)
            }
        }

        deserializer.deserialize_any(StepDrillVisitor)
    }
}

/// A fault a drill injects into a step's attempts: `fail`, `timeout`,
/// `delay:DURATION` or `crash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every attempt fails (retryable), as if the action had.
    Fail,
    /// Every attempt runs out its `timeout` (at once if it has none) and fails.
    Timeout,
    /// Every attempt waits this long, then runs for real.
    Delay(Duration),
    /// The first attempt is abandoned as if its worker died (kill -9).
    Crash,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "fail" => Ok(Fault::Fail),
            "timeout" => Ok(Fault::Timeout),
            "crash" => Ok(Fault::Crash),
            other => match other.strip_prefix("delay:") {
                Some(d) => d
                    .parse::<Duration>()
                    .map(Fault::Delay)
                    .map_err(|e| format!("fault `{other}`: {e}")),
                None => {
                    let hint =
                        crate::suggest::did_you_mean(other, ["fail", "timeout", "crash", "delay:"])
                            .map(|h| format!(" ({h})"))
                            .unwrap_or_default();
                    Err(format!(
                        "unknown fault `{other}`{hint}: write fail, timeout, delay:DURATION (e.g. delay:30s) or crash"
                    ))
                }
            },
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Fail => f.write_str("fail"),
            Fault::Timeout => f.write_str("timeout"),
            Fault::Delay(d) => write!(f, "delay:{d}"),
            Fault::Crash => f.write_str("crash"),
        }
    }
}

impl Serialize for Fault {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Fault {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Fault".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(fail|timeout|crash|delay:[0-9a-z]+)$",
            "description": "fail, timeout, delay:DURATION or crash"
        })
    }
}

/// A drill scenario (`drills: {NAME: …}`): inputs, faults, expectations.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub description: Option<String>,
    /// The run's inputs (checked against the declarations).
    #[serde(default)]
    pub inputs: IndexMap<String, Located<serde_json::Value>>,
    /// Step id -> the fault injected into it.
    #[serde(default)]
    pub inject: IndexMap<String, Located<Fault>>,
    /// Step id -> the person who answers its `approval` or `escalate` in
    /// the drill (the scenario's people), as soon as it waits.
    #[serde(default)]
    pub people: IndexMap<String, Answer>,
    #[serde(default)]
    pub expect: Expect,
}

/// A scenario's person answering a waiting step (`people: {STEP: …}`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// Who answers: a user of lifeboat.toml, checked like anyone's decision
    /// (one of the approvers, not the requester when they are excluded).
    pub by: Located<String>,
    /// `approve` or `reject` for an `approval`, `ack` for an `escalate`;
    /// default: the step's own (`approve`, `ack`).
    pub decision: Option<Located<AnswerDecision>>,
    pub comment: Option<String>,
}

/// What a scenario's person decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerDecision {
    Approve,
    Reject,
    Ack,
}

/// What a drill must end with; each entry is one line of the verdict.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The run's final status (`succeeded`, `rolled_back`, …).
    pub status: Option<Located<String>>,
    /// Step id -> its final status.
    #[serde(default)]
    pub steps: IndexMap<String, Located<String>>,
    /// Output name -> its value; a string starting with `~` is a regex.
    #[serde(default)]
    pub outputs: IndexMap<String, Located<serde_json::Value>>,
    /// Step id -> its error (the text, or `~regex`): what a failed step
    /// said, e.g. where a canary stopped.
    #[serde(default)]
    pub errors: IndexMap<String, Located<String>>,
    /// The measured recovery time (run start to end) is at most this.
    pub recovery_within: Option<Duration>,
    /// Events a notification was queued for.
    #[serde(default)]
    pub notified: Vec<Event>,
}

/// The run statuses a drill may end with (`RunStatus`'s terminal ones; a
/// store test keeps them in step).
pub const FINAL_RUN_STATUSES: &[&str] =
    &["succeeded", "failed", "rolled_back", "rollback_failed", "cancelled"];

/// Every step status (`StepStatus`; a store test keeps them in step).
pub const STEP_STATUSES: &[&str] = &[
    "pending",
    "running",
    "retry_wait",
    "waiting",
    "needs_human",
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
    "rolled_back",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print_the_same() {
        for text in ["fail", "timeout", "crash", "delay:30s", "delay:1m30s"] {
            assert_eq!(text.parse::<Fault>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn an_unknown_fault_suggests_the_nearest() {
        let err = "crsh".parse::<Fault>().unwrap_err();
        assert!(err.contains("did you mean `crash`"), "{err}");
        assert!("delay:soon".parse::<Fault>().unwrap_err().contains("delay:soon"));
    }

    #[test]
    fn a_step_drill_is_run_skip_or_a_body() {
        let run: StepDrill = serde_json::from_value(serde_json::json!("skip")).unwrap();
        assert_eq!(run, StepDrill::Mode(DrillMode::Skip));
        let body: StepDrill =
            serde_json::from_value(serde_json::json!({"uses": "set", "with": {"a": 1}})).unwrap();
        assert!(matches!(body, StepDrill::Substitute(b) if b.uses.value == "set"));
        assert!(serde_json::from_value::<StepDrill>(serde_json::json!("maybe")).is_err());
    }

    #[test]
    fn a_scenarios_person_names_who_and_optionally_what() {
        let s: Scenario = serde_json::from_value(serde_json::json!({
            "people": {"approve": {"by": "bob", "comment": "dc01 is gone"},
                       "page": {"by": "carol", "decision": "ack"}}
        }))
        .unwrap();
        assert_eq!(s.people["approve"].by.value, "bob");
        assert_eq!(s.people["approve"].decision, None);
        assert_eq!(s.people["page"].decision.as_ref().map(|d| d.value), Some(AnswerDecision::Ack));
        let bad = serde_json::json!({"people": {"approve": {"by": "bob", "decision": "maybe"}}});
        assert!(serde_json::from_value::<Scenario>(bad).is_err());
    }
}
