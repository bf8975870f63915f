//! Database-free domain types: what the store hands out and takes in.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A closed set of states stored as text: the enum, its text both ways, and
/// optionally a predicate naming the variants for which it holds
/// (`fn is_terminal: Succeeded | Failed`).
macro_rules! string_enum {
    (
        $(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }
        $($(#[$pm:meta])* fn $predicate:ident: $($holds:ident)|+)?
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant,)* }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)* _ => None }
            }

            $(
                $(#[$pm])*
                pub fn $predicate(self) -> bool {
                    matches!(self, $($name::$holds)|+)
                }
            )?
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// The run states of docs/guarantees.md.
    RunStatus {
        Queued = "queued",
        Running = "running",
        Waiting = "waiting",
        Succeeded = "succeeded",
        Failed = "failed",
        RollingBack = "rolling_back",
        RolledBack = "rolled_back",
        RollbackFailed = "rollback_failed",
        Cancelled = "cancelled",
    }
    fn is_terminal: Succeeded | Failed | RolledBack | RollbackFailed | Cancelled
);

impl RunStatus {
    pub const ACTIVE: [RunStatus; 4] =
        [RunStatus::Queued, RunStatus::Running, RunStatus::Waiting, RunStatus::RollingBack];
}

string_enum!(
    /// The step states of docs/guarantees.md.
    StepStatus {
        Pending = "pending",
        Running = "running",
        RetryWait = "retry_wait",
        Waiting = "waiting",
        NeedsHuman = "needs_human",
        Succeeded = "succeeded",
        Failed = "failed",
        Skipped = "skipped",
        Cancelled = "cancelled",
        RolledBack = "rolled_back",
    }
    /// The step will not change again on its own.
    fn is_settled: Succeeded | Failed | Skipped | Cancelled | RolledBack
);

/// A step starts `pending`.
impl Default for StepStatus {
    fn default() -> Self {
        StepStatus::Pending
    }
}

string_enum!(
    Phase { Forward = "forward", Rollback = "rollback" }
);

string_enum!(
    /// A run is for real (`live`) or a rehearsal (`drill`: faults may be
    /// injected, steps skipped or substituted, and a verdict is recorded).
    RunMode { Live = "live", Drill = "drill" }
);

// `string_enum!` cannot mark a `#[default]` variant.
#[allow(clippy::derivable_impls)]
impl Default for RunMode {
    fn default() -> Self {
        RunMode::Live
    }
}

string_enum!(
    AttemptStatus {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Interrupted = "interrupted",
    }
);

string_enum!(
    /// What an operator asks of a run.
    RequestKind {
        Cancel = "cancel",
        CancelNoRollback = "cancel_no_rollback",
        Pause = "pause",
        Resume = "resume",
        Skip = "skip",
        MarkSucceeded = "mark_succeeded",
        MarkFailed = "mark_failed",
        Retry = "retry",
        Approve = "approve",
        Reject = "reject",
        Ack = "ack",
    }
);

#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub hash: String,
    pub workflow: String,
    pub file: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub id: String,
    pub workflow: String,
    pub definition_hash: String,
    pub inputs: Value,
    pub trigger: Value,
    pub concurrency_key: Option<String>,
    /// `true`: do not create the run while another with the key is active.
    pub skip_on_conflict: bool,
    pub parent: Option<(String, String)>,
    /// The top of the run tree (`None`: this run is the top).
    pub root: Option<String>,
    pub step_ids: Vec<String>,
    /// Webhook dedupe: at most one active run of this workflow per key.
    pub dedupe_key: Option<String>,
    /// A schedule tick `(schedule, tick ms)`: at most one run ever, created with the run.
    pub schedule_tick: Option<(String, i64)>,
    /// Appended to the audit log in the same transaction, naming the run
    /// (created or existing) and the outcome (see `NewAudit::about`).
    pub audit: Option<NewAudit>,
    /// Create it already leased to this worker (`run --wait` drives it at once).
    pub lease_to: Option<(String, Lease)>,
    /// The child workflows the run tree may start: name -> definition hash
    /// (`None`: the workflow starts none).
    pub pins: Option<Pins>,
    pub mode: RunMode,
    /// A drill's scenario name (`None`: faults given by hand, or live).
    pub scenario: Option<String>,
    /// A drill's faults and expectations, opaque to the store (`exec::drill`).
    pub drill: Option<Value>,
}

/// Child workflows pinned when a run tree starts: name -> definition hash.
/// A `workflow` step starts exactly this definition, whatever the
/// workflows directory holds by then.
pub type Pins = std::collections::BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    Run(String),
    /// Concurrency key busy with `on_conflict: skip`: the active run's id.
    Skipped {
        active: String,
    },
    /// The dedupe key has an active run, or the schedule tick already fired.
    Duplicate {
        existing: String,
    },
}

/// A lease: held until `now + duration_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lease {
    pub now: i64,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub workflow: String,
    pub definition_hash: String,
    pub status: RunStatus,
    pub inputs: Value,
    pub outputs: Option<Value>,
    pub trigger: Value,
    pub concurrency_key: Option<String>,
    pub parent_run_id: Option<String>,
    pub parent_step_id: Option<String>,
    pub root_run_id: String,
    pub cancelled_by: Option<String>,
    pub paused: bool,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub wake_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    /// `None` for runs created before pinning existed.
    pub pins: Option<Pins>,
    pub mode: RunMode,
    pub scenario: Option<String>,
    /// A drill's faults and expectations (`exec::drill::DrillSpec`).
    pub drill: Option<Value>,
    /// A drill's verdict, written in the commit that ended it.
    pub verdict: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepRecord {
    pub run_id: String,
    pub step_id: String,
    pub status: StepStatus,
    pub attempts: u32,
    pub outputs: Option<Value>,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub wake_at: Option<i64>,
    pub state: Option<Value>,
    pub rollback: Option<String>,
}

impl StepRecord {
    pub fn pending(run_id: &str, step_id: &str) -> Self {
        StepRecord { run_id: run_id.into(), step_id: step_id.into(), ..StepRecord::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    pub run_id: String,
    pub step_id: String,
    pub phase: Phase,
    pub n: u32,
    pub status: AttemptStatus,
    pub worker: String,
    pub pgid: Option<u32>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub run_id: String,
    pub at: i64,
    pub kind: String,
    pub step_id: Option<String>,
    pub data: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct NewRequest {
    pub run_id: String,
    pub kind: RequestKind,
    pub step_id: Option<String>,
    pub data: Option<Value>,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub id: i64,
    pub run_id: String,
    pub kind: RequestKind,
    pub step_id: Option<String>,
    pub data: Option<Value>,
    pub actor: String,
    pub at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub workflow: Option<String>,
    pub limit: Option<u32>,
    /// Pagination cursor: only runs older than this id.
    pub before: Option<String>,
    /// `live` or `drill` runs only.
    pub mode: Option<RunMode>,
    /// A substring of the run's id or workflow name, any case.
    pub search: Option<String>,
}

/// A worker as `lifeboat workers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// Runs it holds a lease on, with the lease's expiry.
    pub leases: Vec<(String, i64)>,
}

#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: i64,
}

/// Fields of a run to update; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunUpdate {
    pub status: Option<RunStatus>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub outputs: Option<Value>,
    pub error: Option<String>,
    pub paused: Option<bool>,
    pub cancelled_by: Option<String>,
    /// Clears `finished_at`, `error` and a drill's `verdict` (a retried run
    /// is active again, and its next end gets a verdict of its own).
    pub reopen: bool,
    pub inputs: Option<Value>,
    /// A drill's verdict (`exec::drill::Verdict`).
    pub verdict: Option<Value>,
}

/// One part of an atomic transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Creates another run (a child) in this transition's commit, so the
    /// child exists exactly when the step that started it says so. It must
    /// be created: a busy key or a duplicate fails the whole commit.
    CreateRun(Box<NewRun>),
    Run(RunUpdate),
    /// Insert or replace a step's row.
    Step(StepRecord),
    AttemptStarted(AttemptRecord),
    AttemptPgid {
        step_id: String,
        phase: Phase,
        n: u32,
        pgid: u32,
    },
    AttemptFinished {
        step_id: String,
        phase: Phase,
        n: u32,
        status: AttemptStatus,
        finished_at: i64,
        error: Option<String>,
        stdout: Option<String>,
        stderr: Option<String>,
    },
    Event {
        at: i64,
        kind: crate::events::RunEvent,
        step_id: Option<String>,
        data: Option<Value>,
    },
    RequestDone {
        id: i64,
        at: i64,
    },
    /// Makes another run due now (a child run finished: its parent goes on).
    WakeRun {
        run_id: String,
    },
    /// Gives the run back: claimable again at `wake_at` (`None`: now).
    Release {
        wake_at: Option<i64>,
    },
    /// Queues a notification in the outbox (ignored if its dedupe key exists).
    Notify(NewNotification),
    /// Appends an audit entry with the transition that it records (applied
    /// after every other change of the commit).
    Audit(NewAudit),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    pub actor: String,
    pub action: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub payload: Value,
}

impl NewAudit {
    /// The entry for a run creation that ended as `created`: its run id,
    /// and `outcome` (`started`, `deduplicated`, `skipped`) in the payload.
    pub fn about(mut self, created: &Created) -> NewAudit {
        let (outcome, run) = match created {
            Created::Run(id) => ("started", id),
            Created::Duplicate { existing } => ("deduplicated", existing),
            Created::Skipped { active } => ("skipped", active),
        };
        self.run_id = Some(run.clone());
        if let Some(map) = self.payload.as_object_mut() {
            map.insert("outcome".into(), Value::String(outcome.into()));
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub payload: Value,
    pub payload_sha256: String,
    pub prev_hash: String,
    pub hash: String,
}

string_enum!(
    OutboxStatus { Pending = "pending", Delivered = "delivered", Failed = "failed" }
);

#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// Stable per (run, event, channel, recipient): a restart never sends twice.
    pub dedupe_key: String,
    pub step_id: Option<String>,
    pub event: String,
    pub channel: String,
    /// A `lifeboat_notify::Message`, rendered when queued.
    pub message: Value,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRecord {
    pub id: i64,
    pub dedupe_key: String,
    pub run_id: String,
    pub step_id: Option<String>,
    pub event: String,
    pub channel: String,
    pub message: Value,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub next_at: i64,
    pub last_error: Option<String>,
    pub detail: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// How one delivery attempt of an outbox row ended.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxOutcome {
    Delivered { detail: String },
    Retry { error: String, at: i64 },
    Failed { error: String },
}

/// What `Store::remember_signature` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    /// The signature was already remembered: the request is a replay.
    pub replay: bool,
    /// Expired signatures removed on the way.
    pub pruned: u64,
}

impl RunUpdate {
    /// Whether the verdict this update records passed (`passed` in
    /// `exec::drill::Verdict`, the one field of it the store reads: it keys
    /// `drill_freshness`).
    pub fn verdict_passed(&self) -> Option<bool> {
        self.verdict.as_ref().map(|v| v.get("passed").and_then(Value::as_bool).unwrap_or(false))
    }
}

/// The newest drill with a verdict of one (workflow, scenario, outcome):
/// a row of `drill_freshness`, written with the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillMark {
    pub workflow: String,
    /// `None`: a drill run with no scenario.
    pub scenario: Option<String>,
    pub passed: bool,
    pub run_id: String,
    /// When it ended (unix ms).
    pub at: i64,
}

/// The overdue periods of a workflow's drill scenarios to claim, once
/// across replicas, with the notifications that announce them: queued only
/// if this claim took at least one period that nobody had taken.
#[derive(Debug, Clone, PartialEq)]
pub struct OverdueClaim {
    pub workflow: String,
    /// (scenario, or "" for drills without one; when its freshness ran
    /// out, unix ms, 0 when it never passed).
    pub periods: Vec<(String, i64)>,
    pub now: i64,
    /// Keyed in the outbox under [`OverdueClaim::subject`].
    pub notifications: Vec<NewNotification>,
    pub audit: NewAudit,
}

impl OverdueClaim {
    /// What the outbox rows of a workflow's overdue notices are keyed by in
    /// place of a run (they are about no run): one incident per workflow,
    /// so its notices reach each channel in order.
    pub fn subject(workflow: &str) -> String {
        format!("drill_overdue:{workflow}")
    }
}

/// A successful run's timing, for the measured recovery times of `plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySample {
    pub run_id: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Each step that ran to success: (step id, started_at, finished_at).
    pub steps: Vec<(String, i64, i64)>,
}
