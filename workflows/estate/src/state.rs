//! The estate's control-plane state: sites, roles, fences, traffic weights
//! and injected faults, with the rules a real estate enforces (no two
//! writable primaries, no unfencing a stale primary). Pure: no IO here; the
//! daemon persists it as `state.json` after every change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The sites of a fresh estate, in order: primary, active secondary, standby.
pub const SITES: [&str; 3] = ["dc01", "dc02", "dc03"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
    Standby,
}

/// Error-rate injection: when the site takes at least `at_weight` % of the
/// traffic, users see `rate` of their requests fail there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorFault {
    pub rate: f64,
    pub at_weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub role: Role,
    /// The site answers (servers, network, database process).
    pub up: bool,
    /// Cut off from clients, storage and replication by the control plane.
    pub fenced: bool,
    /// Injected replication delay: rows are replayed only once this old.
    pub delay_ms: u64,
    pub errors: Option<ErrorFault>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estate {
    pub sites: BTreeMap<String, Site>,
    pub weights: BTreeMap<String, u32>,
    /// The head of the timeline: the site most recently promoted. Its data is
    /// the newest; every replica replays from it (also what it shipped before
    /// it died), and application writes go to it while it is a writable primary.
    pub source: String,
    /// Incremented by every promotion.
    pub timeline: u64,
    /// Injected "the next VERB on SITE fails", as `"VERB SITE"`.
    pub fail_next: BTreeSet<String>,
}

/// Why the estate refused an action; said so an operator can act on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No such site, bad weight...: HTTP 400 / 404.
    Invalid(String),
    /// The estate's rules forbid it now: HTTP 409.
    Conflict(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::Invalid(m) | Refusal::Conflict(m) => m,
        }
    }
}

pub type Result<T> = std::result::Result<T, Refusal>;

/// Verbs that `fail-next` can make fail.
pub const FAULTABLE: [&str; 5] = ["promote", "demote", "fence", "unfence", "traffic"];

impl Estate {
    /// dc01 primary with all traffic, dc02 replica, dc03 standby; all healthy.
    pub fn fresh() -> Estate {
        let site = |role| Site { role, up: true, fenced: false, delay_ms: 0, errors: None };
        let sites = BTreeMap::from([
            (SITES[0].to_string(), site(Role::Primary)),
            (SITES[1].to_string(), site(Role::Replica)),
            (SITES[2].to_string(), site(Role::Standby)),
        ]);
        let weights = BTreeMap::from([
            (SITES[0].to_string(), 100),
            (SITES[1].to_string(), 0),
            (SITES[2].to_string(), 0),
        ]);
        Estate { sites, weights, source: SITES[0].into(), timeline: 1, fail_next: BTreeSet::new() }
    }

    pub fn site(&self, name: &str) -> Result<&Site> {
        self.sites.get(name).ok_or_else(|| self.unknown(name))
    }

    fn site_mut(&mut self, name: &str) -> Result<&mut Site> {
        if !self.sites.contains_key(name) {
            return Err(self.unknown(name));
        }
        Ok(self.sites.get_mut(name).expect("checked above"))
    }

    fn unknown(&self, name: &str) -> Refusal {
        let known: Vec<&str> = self.sites.keys().map(String::as_str).collect();
        Refusal::Invalid(format!("no site `{name}` (sites: {})", known.join(", ")))
    }

    /// The site application writes go to: the timeline head, if it is a
    /// primary that is up and not fenced.
    pub fn writer(&self) -> Option<&str> {
        let s = self.sites.get(&self.source)?;
        (s.role == Role::Primary && s.up && !s.fenced).then_some(self.source.as_str())
    }

    /// Whether `name` replays from the timeline head right now.
    pub fn replays(&self, name: &str) -> bool {
        name != self.source
            && self.sites.get(name).is_some_and(|s| s.role != Role::Primary && s.up && !s.fenced)
    }

    /// Consumes an injected failure of `verb` on `site`, if there is one.
    fn injected(&mut self, verb: &str, site: &str) -> Result<()> {
        if self.fail_next.remove(&format!("{verb} {site}")) {
            return Err(Refusal::Conflict(format!(
                "{verb} {site} failed: injected fault (estate fail-next {verb} {site})"
            )));
        }
        Ok(())
    }

    pub fn fence(&mut self, name: &str) -> Result<()> {
        self.site(name)?;
        self.injected("fence", name)?;
        self.site_mut(name)?.fenced = true;
        Ok(())
    }

    pub fn unfence(&mut self, name: &str) -> Result<()> {
        let site = self.site(name)?;
        if site.fenced && site.role == Role::Primary && self.source != name {
            return Err(Refusal::Conflict(format!(
                "refusing to unfence {name}: it still holds the primary role while {} is primary \
                 (split-brain guard); demote {name} first",
                self.source
            )));
        }
        self.injected("unfence", name)?;
        self.site_mut(name)?.fenced = false;
        Ok(())
    }

    /// Makes `name` the primary and the head of a new timeline.
    pub fn promote(&mut self, name: &str) -> Result<()> {
        let site = self.site(name)?;
        if site.role == Role::Primary && self.source == name {
            return Ok(()); // already done: idempotent
        }
        if !site.up {
            return Err(Refusal::Conflict(format!("cannot promote {name}: it is down")));
        }
        if site.fenced {
            return Err(Refusal::Conflict(format!("cannot promote {name}: it is fenced")));
        }
        if let Some((other, _)) =
            self.sites.iter().find(|(n, s)| *n != name && s.role == Role::Primary && !s.fenced)
        {
            return Err(Refusal::Conflict(format!(
                "refusing to promote {name}: {other} is primary and not fenced \
                 (split-brain guard); fence {other} first"
            )));
        }
        self.injected("promote", name)?;
        self.timeline += 1;
        self.source = name.to_string();
        self.site_mut(name)?.role = Role::Primary;
        Ok(())
    }

    /// Makes `name` a replica (of the timeline head). Returns whether its
    /// data must be rebased on the head (writes that never replicated are
    /// discarded): true unless `name` is the head itself.
    pub fn demote(&mut self, name: &str) -> Result<bool> {
        let site = self.site(name)?;
        if site.role == Role::Replica {
            return Ok(false); // already done: idempotent
        }
        self.injected("demote", name)?;
        self.site_mut(name)?.role = Role::Replica;
        Ok(self.source != name)
    }

    pub fn set_up(&mut self, name: &str, up: bool) -> Result<()> {
        self.site_mut(name)?.up = up;
        Ok(())
    }

    pub fn set_delay(&mut self, name: &str, delay_ms: u64) -> Result<()> {
        self.site_mut(name)?.delay_ms = delay_ms;
        Ok(())
    }

    pub fn set_errors(&mut self, name: &str, fault: Option<ErrorFault>) -> Result<()> {
        if let Some(f) = fault
            && (!(0.0..=1.0).contains(&f.rate) || f.at_weight > 100)
        {
            return Err(Refusal::Invalid(format!(
                "error rate must be 0..1 and the weight 0..100 (got {} at {}%)",
                f.rate, f.at_weight
            )));
        }
        self.site_mut(name)?.errors = fault;
        Ok(())
    }

    pub fn fail_next(&mut self, verb: &str, name: &str) -> Result<()> {
        self.site(name)?;
        if !FAULTABLE.contains(&verb) {
            return Err(Refusal::Invalid(format!(
                "cannot inject a failure into `{verb}` (one of: {})",
                FAULTABLE.join(", ")
            )));
        }
        self.fail_next.insert(format!("{verb} {name}"));
        Ok(())
    }

    /// Sets the weights named (others keep theirs); they must add up to 100.
    pub fn set_weights(&mut self, changes: &BTreeMap<String, u32>) -> Result<()> {
        let mut weights = self.weights.clone();
        for (name, weight) in changes {
            self.site(name)?;
            if *weight > 100 {
                return Err(Refusal::Invalid(format!("weight of {name} is {weight}; 0..100")));
            }
            weights.insert(name.clone(), *weight);
        }
        let total: u32 = weights.values().sum();
        if total != 100 {
            return Err(Refusal::Invalid(format!(
                "weights must add up to 100, these add up to {total}: {}",
                weights_line(&weights)
            )));
        }
        for name in changes.keys() {
            self.injected("traffic", name)?;
        }
        self.weights = weights;
        Ok(())
    }

    /// What users of `name` see: every request fails on a site that is down,
    /// or fenced while still given traffic; else the injected rate once its
    /// weight reaches the threshold; else a normal 0.1 %.
    pub fn error_rate(&self, name: &str) -> Result<f64> {
        let site = self.site(name)?;
        let weight = self.weights.get(name).copied().unwrap_or(0);
        Ok(if !site.up || (site.fenced && weight > 0) {
            1.0
        } else {
            match site.errors {
                Some(f) if weight >= f.at_weight => f.rate,
                _ => 0.001,
            }
        })
    }

    pub fn health(&self, name: &str) -> Result<Value> {
        let s = self.site(name)?;
        Ok(json!({"site": name, "healthy": s.up, "fenced": s.fenced, "role": s.role}))
    }

    pub fn role(&self, name: &str) -> Result<Value> {
        let s = self.site(name)?;
        Ok(json!({
            "site": name, "role": s.role, "fenced": s.fenced, "healthy": s.up,
            "writable": self.writer() == Some(name), "timeline_head": self.source == name,
        }))
    }
}

/// `dc01=0 dc02=100 dc03=0`: the weights as `estate traffic` arguments.
pub fn weights_line(weights: &BTreeMap<String, u32>) -> String {
    weights.iter().map(|(s, w)| format!("{s}={w}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(s, w)| (s.to_string(), *w)).collect()
    }

    #[test]
    fn a_fresh_estate_writes_to_dc01() {
        let e = Estate::fresh();
        assert_eq!(e.writer(), Some("dc01"));
        assert!(e.replays("dc02") && e.replays("dc03") && !e.replays("dc01"));
        assert_eq!(weights_line(&e.weights), "dc01=100 dc02=0 dc03=0");
    }

    #[test]
    fn promote_refuses_while_the_old_primary_is_unfenced_even_if_down() {
        let mut e = Estate::fresh();
        e.set_up("dc01", false).unwrap();
        let Err(Refusal::Conflict(m)) = e.promote("dc02") else { panic!() };
        assert!(m.contains("fence dc01 first"), "{m}");
        e.fence("dc01").unwrap();
        e.promote("dc02").unwrap();
        assert_eq!((e.source.as_str(), e.timeline), ("dc02", 2));
        assert_eq!(e.writer(), Some("dc02"));
        e.promote("dc02").unwrap();
        assert_eq!(e.timeline, 2, "promoting the primary again is a no-op");
    }

    #[test]
    fn a_stale_primary_cannot_be_unfenced_until_demoted() {
        let mut e = Estate::fresh();
        e.fence("dc01").unwrap();
        e.promote("dc02").unwrap();
        assert!(matches!(e.unfence("dc01"), Err(Refusal::Conflict(_))));
        assert!(e.demote("dc01").unwrap(), "dc01 must be rebased on dc02");
        e.unfence("dc01").unwrap();
        assert!(e.replays("dc01"));
    }

    #[test]
    fn unfencing_before_promotion_is_allowed_so_rollback_works() {
        let mut e = Estate::fresh();
        e.fence("dc01").unwrap();
        e.unfence("dc01").unwrap();
        assert_eq!(e.writer(), Some("dc01"));
    }

    #[test]
    fn fail_next_fails_exactly_once() {
        let mut e = Estate::fresh();
        e.fence("dc01").unwrap();
        e.fail_next("promote", "dc02").unwrap();
        let Err(Refusal::Conflict(m)) = e.promote("dc02") else { panic!() };
        assert!(m.contains("injected fault"), "{m}");
        assert_eq!(e.source, "dc01", "a failed promote changes nothing");
        e.promote("dc02").unwrap();
        assert!(matches!(e.fail_next("reboot", "dc02"), Err(Refusal::Invalid(_))));
    }

    #[test]
    fn weights_must_add_up_to_100() {
        let mut e = Estate::fresh();
        assert!(e.set_weights(&weights(&[("dc02", 10)])).is_err());
        e.set_weights(&weights(&[("dc01", 90), ("dc02", 10)])).unwrap();
        assert_eq!(weights_line(&e.weights), "dc01=90 dc02=10 dc03=0");
        assert!(e.set_weights(&weights(&[("dc09", 0)])).is_err());
    }

    #[test]
    fn error_rate_follows_health_fence_and_injection() {
        let mut e = Estate::fresh();
        assert_eq!(e.error_rate("dc01").unwrap(), 0.001);
        e.set_errors("dc02", Some(ErrorFault { rate: 0.3, at_weight: 50 })).unwrap();
        e.set_weights(&weights(&[("dc01", 75), ("dc02", 25)])).unwrap();
        assert_eq!(e.error_rate("dc02").unwrap(), 0.001);
        e.set_weights(&weights(&[("dc01", 50), ("dc02", 50)])).unwrap();
        assert_eq!(e.error_rate("dc02").unwrap(), 0.3);
        e.set_up("dc01", false).unwrap();
        assert_eq!(e.error_rate("dc01").unwrap(), 1.0);
    }
}
