//! Predicted RTO from history (issue #14): the measured recovery times of
//! a workflow's last successful runs — live runs and drills apart — per run
//! and per step (p50, p95), and the steps whose p95 alone eats more than
//! half the RTO. `lifeboat plan` shows them beside the worst case.

use serde::Serialize;

use crate::compile::CompiledWorkflow;
use crate::store::{RecoverySample, RunMode, Store, StoreError};

/// How many of the last successful runs (of each mode) are measured.
pub const SAMPLES: u32 = 20;

/// p50 and p95 of one series (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Spread {
    pub samples: usize,
    pub p50_ms: i64,
    pub p95_ms: i64,
}

/// The nearest-rank percentile `p` (0..=100) of `values`; `None` if empty.
pub fn percentile(values: &[i64], p: f64) -> Option<i64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(n) - 1])
}

fn spread(values: &[i64]) -> Option<Spread> {
    Some(Spread {
        samples: values.len(),
        p50_ms: percentile(values, 50.0)?,
        p95_ms: percentile(values, 95.0)?,
    })
}

/// The measured times of one mode's runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    pub mode: RunMode,
    /// Whole runs, start to end (as a drill's recovery time).
    pub run: Option<Spread>,
    /// Each step that ran to success in some sample, in file order.
    pub steps: Vec<StepSpread>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSpread {
    pub step: String,
    #[serde(flatten)]
    pub spread: Spread,
    /// Its p95 alone is more than half of `objectives.rto`.
    pub over_half_rto: bool,
}

/// The spreads of `samples` (one mode's runs) for `wf`.
pub fn measure(wf: &CompiledWorkflow, mode: RunMode, samples: &[RecoverySample]) -> Measured {
    let rto = wf
        .definition
        .objectives
        .as_ref()
        .and_then(|o| o.rto)
        .map(|r| i64::try_from(r.as_millis()).unwrap_or(i64::MAX));
    let runs: Vec<i64> = samples
        .iter()
        .filter_map(|s| Some(s.finished_at? - s.started_at?))
        .map(|ms| ms.max(0))
        .collect();
    let steps = wf
        .steps
        .iter()
        .filter_map(|step| {
            let times: Vec<i64> = samples
                .iter()
                .flat_map(|s| s.steps.iter())
                .filter(|(id, _, _)| *id == step.id)
                .map(|(_, from, to)| (to - from).max(0))
                .collect();
            let spread = spread(&times)?;
            let over_half_rto = rto.is_some_and(|r| spread.p95_ms.saturating_mul(2) > r);
            Some(StepSpread { step: step.id.clone(), spread, over_half_rto })
        })
        .collect();
    Measured { mode, run: spread(&runs), steps }
}

/// Reads the last [`SAMPLES`] successful runs of each mode and measures them.
pub async fn read(store: &dyn Store, wf: &CompiledWorkflow) -> Result<[Measured; 2], StoreError> {
    let live = store.recovery_samples(&wf.name, RunMode::Live, SAMPLES).await?;
    let drill = store.recovery_samples(&wf.name, RunMode::Drill, SAMPLES).await?;
    Ok([measure(wf, RunMode::Live, &live), measure(wf, RunMode::Drill, &drill)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), Some(10));
        assert_eq!(percentile(&v, 95.0), Some(19));
        assert_eq!(percentile(&[7], 95.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3, 1, 2], 50.0), Some(2), "unsorted input");
    }

    #[test]
    fn a_step_whose_p95_is_over_half_the_rto_is_flagged() {
        let wf = crate::compile::compile(
            "wf.yaml",
            "name: wf\nobjectives: { rto: 10s }\nsteps:\n  a: { uses: set }\n  b: { uses: set, needs: [a] }\n  c: { uses: set, needs: [b] }\n",
            Default::default(),
        )
        .unwrap();
        let sample = |id: &str, a: i64, b: i64| RecoverySample {
            run_id: id.into(),
            started_at: Some(0),
            finished_at: Some(a + b),
            steps: vec![("a".into(), 0, a), ("b".into(), a, a + b)],
        };
        let samples =
            [sample("r1", 1_000, 6_000), sample("r2", 2_000, 4_000), sample("r3", 500, 5_000)];
        let m = measure(&wf, RunMode::Live, &samples);
        assert_eq!(m.run, Some(Spread { samples: 3, p50_ms: 6_000, p95_ms: 7_000 }));
        let got: Vec<(&str, i64, bool)> =
            m.steps.iter().map(|s| (s.step.as_str(), s.spread.p95_ms, s.over_half_rto)).collect();
        assert_eq!(got, [("a", 2_000, false), ("b", 6_000, true)], "c never ran: no row");
    }
}
