//! The largest workflow the compiler accepts (LB027, `docs/errors/LB027.md`).
//!
//! The YAML caps (`yaml.rs`: 2 MiB, depth 64, 200,000 nodes) bound the
//! text; these bound the work a valid-looking file can ask of the compiler
//! and of every worker that later recompiles a stored run. Real runbooks are
//! tens to hundreds of steps; the caps leave an order of magnitude of room.

/// Steps in one workflow.
pub const MAX_STEPS: usize = 2_000;
/// `needs` entries across all steps (edges of the graph).
pub const MAX_NEEDS: usize = 20_000;
/// Templated strings across the file.
pub const MAX_TEMPLATES: usize = 20_000;
/// Diagnostics reported for one file; the rest are counted in a last one.
pub const MAX_DIAGNOSTICS: usize = 500;
