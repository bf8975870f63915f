//! YAML workflow file -> `CompiledWorkflow` (graph + everything the executor
//! needs pre-computed), or every problem in the file with its position.
//!
//! Compiling does no IO: names from the configuration come in through
//! `KnownNames`, read by the caller.

pub mod de;
pub mod diagnostic;
pub mod graph;
pub mod limits;
pub mod pass;
pub mod templates;
pub mod untrusted;
pub mod yaml;

use indexmap::IndexMap;

pub use diagnostic::{Code, Diagnostic, FileReport, Severity};
pub use graph::StepGraph;
pub use pass::compile;

use crate::kinds::{KindConfig, StepKind};
use crate::model::{Backoff, Duration, Span, Step, Workflow};
use crate::suggest;

/// Names defined by `lifeboat.toml` (and the templates directory).
#[derive(Debug, Clone, Default)]
pub struct KnownNames {
    pub channels: Vec<String>,
    pub hooks: Vec<String>,
    pub templates: Vec<String>,
    pub connections: Vec<String>,
    /// Users and groups, for approvers.
    pub principals: Vec<String>,
}

/// What the compiler may check beyond the file itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompileEnv<'a> {
    /// `None`: no config given, so names of channels, hooks, templates,
    /// connections and approvers are not checked.
    pub known: Option<&'a KnownNames>,
}

/// A workflow ready to run.
#[derive(Debug, Clone)]
pub struct CompiledWorkflow {
    pub file: String,
    pub name: String,
    /// SHA-256 of the source: runs are pinned to it.
    pub hash: String,
    pub source: String,
    pub definition: Workflow,
    /// In file order; a step's index is its node in `graph`.
    pub steps: Vec<CompiledStep>,
    pub graph: StepGraph,
    pub topological_order: Vec<usize>,
    pub waves: Vec<Vec<usize>>,
    /// `ancestors.contains(i, j)`: step j always finishes before step i starts.
    pub ancestors: graph::Ancestors,
    /// Templates outside steps, keyed by field path (`outputs.promoted`, `concurrency.key`).
    pub templates: IndexMap<String, templates::Parsed>,
    /// `workflow` steps' targets, checked against the other files of a directory.
    pub child_workflows: Vec<(String, Span)>,
    /// What compiled but deserves a look (`lifeboat validate` shows them).
    pub warnings: Vec<Diagnostic>,
}

impl CompiledWorkflow {
    pub fn step(&self, id: &str) -> Option<&CompiledStep> {
        self.steps.iter().find(|s| s.id == id)
    }
}

#[derive(Debug, Clone)]
pub struct CompiledStep {
    pub id: String,
    pub index: usize,
    pub definition: Step,
    pub body: CompiledBody,
    /// Indexes of the steps this one needs.
    pub needs: Vec<usize>,
    /// `when`, `for_each`, `poll.until`.
    pub templates: IndexMap<String, templates::Parsed>,
    pub rollback: Option<CompiledBody>,
    /// What the step does in a drill.
    pub drill: DrillAction,
    /// Where its id is written (`lifeboat drill` names an unprotected
    /// irreversible step by file:line).
    pub span: Span,
}

/// A step in a drill: as in a live run, skipped, or replaced by a body.
#[derive(Debug, Clone)]
pub enum DrillAction {
    Run,
    Skip,
    Substitute(Box<CompiledBody>),
}

/// What runs: a kind, its parameters and its policies.
#[derive(Debug, Clone)]
pub struct CompiledBody {
    pub kind: StepKind,
    pub config: KindConfig,
    /// The raw `with` block (templates unrendered).
    pub with: serde_json::Value,
    /// Parsed templates inside `with`, keyed by their path (`command.1`).
    pub templates: IndexMap<String, templates::Parsed>,
    pub retry: EffectiveRetry,
    pub timeout: Option<Duration>,
    /// A step's automatic rollback: this is the step's own body, and the
    /// executor runs the inverse of its rendered action (see
    /// `lifeboat_steps::Step::inverse`) built from the step's outputs.
    pub inverse_of_step: bool,
}

/// A retry policy with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EffectiveRetry {
    pub attempts: u32,
    pub backoff: Backoff,
    pub delay: Duration,
    pub max_delay: Duration,
    pub jitter: bool,
}

impl Default for EffectiveRetry {
    fn default() -> Self {
        EffectiveRetry {
            attempts: 1,
            backoff: Backoff::Fixed,
            delay: Duration::from_millis(1_000),
            max_delay: Duration::from_millis(60_000),
            jitter: true,
        }
    }
}

/// Stack for [`isolated`]: far more than any accepted file needs (every
/// graph algorithm is iterative and YAML nesting is capped at 64), so a
/// recursion we missed costs a failed compile, not the process.
const ISOLATED_STACK: usize = 64 * 1024 * 1024;

/// Runs `f` (a compile) on a thread of its own with a large stack, and turns
/// a panic into an error naming it. Blocks the caller: from async code, call
/// it inside `spawn_blocking`. `serve` compiles files and stored runs only
/// through here, so no workflow can take the process down.
pub fn isolated<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("lifeboat-compile".into())
            .stack_size(ISOLATED_STACK)
            .spawn_scoped(scope, f)
            .map_err(|e| format!("cannot start a compile thread: {e}"))?;
        handle.join().map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            format!("the compiler panicked: {what}")
        })
    })
}

/// Checks that `workflow` steps name workflows that exist among `all`.
pub fn check_child_workflows(all: &[CompiledWorkflow]) -> Vec<(usize, Diagnostic)> {
    let names: Vec<&str> = all.iter().map(|w| w.name.as_str()).collect();
    let mut out = Vec::new();
    for (i, wf) in all.iter().enumerate() {
        for (child, span) in &wf.child_workflows {
            if !names.contains(&child.as_str()) {
                out.push((
                    i,
                    Diagnostic::error(
                        Code::UnknownReference,
                        format!("workflow `{child}` is not defined in this directory"),
                        Some(*span),
                    )
                    .maybe_help(suggest::did_you_mean(child, names.iter().copied())),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod fuzz {
    //! The compiler never panics, whatever it is fed.

    use proptest::prelude::*;

    use super::{CompileEnv, compile};

    fn compile_anything(text: &str) {
        let _ = compile("fuzz.yaml", text, CompileEnv::default());
    }

    /// Fragments that build YAML-shaped, workflow-shaped text.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("name: x\n".to_string()),
            Just("steps:\n".to_string()),
            Just("  a: { uses: set }\n".to_string()),
            Just("  b:\n    uses: shell\n    needs: [a]\n".to_string()),
            Just("    with: { command: [\"{{inputs.x}}\"] }\n".to_string()),
            Just("    when: \"{{eq steps.a.status 'ok'}}\"\n".to_string()),
            Just("inputs: { x: { type: string, default: 1 } }\n".to_string()),
            Just("triggers: [{ schedule: { cron: \"* * * * *\" } }]\n".to_string()),
            Just("&a [*a]\n".to_string()),
            Just("- ".to_string()),
            Just("{{".to_string()),
            Just("}}".to_string()),
            Just(": ".to_string()),
            Just("\t".to_string()),
            "[ -~]{0,12}",
            "[\\[\\]{}:,&*!|>'\"#%@`-]{1,4}",
            "\n {0,6}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            compile_anything(&text);
        }

        #[test]
        fn workflow_shaped_text_never_panics(parts in proptest::collection::vec(fragment(), 0..40)) {
            compile_anything(&parts.concat());
        }
    }
}
