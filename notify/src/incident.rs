//! What a notification says about the incident behind it: how severe it is
//! ([`Severity`]) and what the message does to it ([`Action`]: trigger,
//! acknowledge, resolve). Below the context, the templates and the message,
//! which all speak of both.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// What the message does to the incident (PagerDuty `event_action`;
/// Opsgenie create, acknowledge, close).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Open (or update) the incident.
    #[default]
    Trigger,
    /// Someone is on it: stop escalating.
    Acknowledge,
    /// The incident is over.
    Resolve,
}

impl Action {
    /// `resolve` when the run reached a state that needs nobody
    /// (`succeeded`, `cancelled`), `trigger` otherwise. Acknowledgement is
    /// a human act, so the orchestrator sets [`Action::Acknowledge`] itself.
    pub fn default_for(event: Event) -> Action {
        Action::for_event(event.name())
    }

    /// [`Action::default_for`] by event name; `acknowledged` acknowledges
    /// and `resolved` resolves.
    pub fn for_event(event: &str) -> Action {
        match event {
            "succeeded" | "cancelled" | "resolved" => Action::Resolve,
            "acknowledged" => Action::Acknowledge,
            _ => Action::Trigger,
        }
    }

    /// The PagerDuty `event_action` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Trigger => "trigger",
            Action::Acknowledge => "acknowledge",
            Action::Resolve => "resolve",
        }
    }
}

/// Incident severity as workflows write it (`inputs.severity`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Severity {
    P0,
    #[default]
    P1,
    P2,
    P3,
}

impl Severity {
    /// PagerDuty `payload.severity`: P0 critical, P1 error, P2 warning, P3 info.
    pub fn pagerduty(self) -> &'static str {
        match self {
            Severity::P0 => "critical",
            Severity::P1 => "error",
            Severity::P2 => "warning",
            Severity::P3 => "info",
        }
    }

    /// Opsgenie `priority`: P0 P1 (critical), P1 P2, P2 P3, P3 P4 (P5,
    /// informational, is left to alerts that need nobody).
    pub fn opsgenie(self) -> &'static str {
        match self {
            Severity::P0 => "P1",
            Severity::P1 => "P2",
            Severity::P2 => "P3",
            Severity::P3 => "P4",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P0 => "P0",
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    /// Accepts `P0`..`P3` in either case.
    fn from_str(s: &str) -> Result<Severity, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "P0" => Ok(Severity::P0),
            "P1" => Ok(Severity::P1),
            "P2" => Ok(Severity::P2),
            "P3" => Ok(Severity::P3),
            _ => Err(format!("severity `{s}` is not one of P0, P1, P2, P3")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_map_to_pagerduty() {
        let got: Vec<_> = [Severity::P0, Severity::P1, Severity::P2, Severity::P3]
            .iter()
            .map(|s| s.pagerduty())
            .collect();
        assert_eq!(got, ["critical", "error", "warning", "info"]);
    }

    #[test]
    fn severities_map_to_opsgenie_priorities_one_step_down() {
        let got: Vec<_> = [Severity::P0, Severity::P1, Severity::P2, Severity::P3]
            .iter()
            .map(|s| s.opsgenie())
            .collect();
        assert_eq!(got, ["P1", "P2", "P3", "P4"]);
    }

    #[test]
    fn severity_parses_either_case_and_rejects_others() {
        assert_eq!("p0".parse::<Severity>(), Ok(Severity::P0));
        assert!("P9".parse::<Severity>().unwrap_err().contains("P0, P1, P2, P3"));
    }

    #[test]
    fn success_and_cancel_resolve_the_incident() {
        assert_eq!(Action::default_for(Event::Succeeded), Action::Resolve);
        assert_eq!(Action::default_for(Event::Cancelled), Action::Resolve);
        assert_eq!(Action::default_for(Event::Failed), Action::Trigger);
    }
}
