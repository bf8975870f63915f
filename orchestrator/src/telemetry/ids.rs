//! A run's trace, derived from its id alone: whichever process records a
//! span of the run (the one that created it, each worker that drove it, the
//! one that ended it), the span lands in the same trace under the same
//! root, with nothing stored and nothing to look up.
//!
//! trace id = the first 16 bytes of SHA-256(`lifeboat.trace\0` ‖ run id);
//! the root span's id = the next 8. Both are non-zero (W3C trace context
//! forbids zero ids; a digest of zeros is not going to happen, but it is
//! mapped away anyway).

use sha2::{Digest, Sha256};

/// The trace of one run: its id and the id of the run's root span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTrace {
    pub trace_id: [u8; 16],
    pub root_span_id: [u8; 8],
}

impl RunTrace {
    pub fn of(run_id: &str) -> RunTrace {
        let digest = Sha256::new()
            .chain_update(b"lifeboat.trace\0")
            .chain_update(run_id.as_bytes())
            .finalize();
        let mut trace_id = [0u8; 16];
        let mut root_span_id = [0u8; 8];
        trace_id.copy_from_slice(&digest[..16]);
        root_span_id.copy_from_slice(&digest[16..24]);
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        if root_span_id == [0; 8] {
            root_span_id[7] = 1;
        }
        RunTrace { trace_id, root_span_id }
    }

    /// The trace id as W3C trace context and OTLP backends print it:
    /// 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

/// The trace id of a run, as shown by `show`, the API and the web UI.
pub fn trace_id(run_id: &str) -> String {
    RunTrace::of(run_id).trace_id_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_always_has_the_same_trace_and_root_span() {
        let run = "0190f0c2-7d7e-7c3a-9a41-0d6f3c1e2b10";
        assert_eq!(RunTrace::of(run), RunTrace::of(run));
        assert_eq!(trace_id(run).len(), 32);
        assert!(trace_id(run).chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // A golden value: changing the derivation would split the traces of
        // runs that were in flight across an upgrade.
        assert_eq!(
            trace_id(run),
            hex::encode(&Sha256::digest(format!("lifeboat.trace\0{run}"))[..16])
        );
    }

    #[test]
    fn different_runs_have_different_traces_and_roots() {
        let a = RunTrace::of("0190f0c2-7d7e-7c3a-9a41-0d6f3c1e2b10");
        let b = RunTrace::of("0190f0c2-7d7e-7c3a-9a41-0d6f3c1e2b11");
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.root_span_id, b.root_span_id);
        assert_ne!(a.trace_id, [0; 16]);
        assert_ne!(a.root_span_id, [0; 8]);
    }
}
