//! The catalog: every valid workflow of the workflows directory, compiled
//! and indexed by name with its triggers, reloaded when the files change.
//!
//! `lifeboat serve` asks it which workflows a webhook starts, the API lists
//! it, the scheduler reads its cron triggers and `workflow` steps find their
//! children in it. Compiling goes through `files::compile_files`, the same
//! code `lifeboat validate` uses, so a file the catalog refuses is one
//! `validate` reports. A file that stops compiling drops out of the catalog
//! (with a warning) until it is fixed; runs already started are pinned to
//! their stored definitions and go on.
//!
//! Asking is never blocked by compiling: `snapshot` hands out the current
//! view, and a reload compiles the new one on a thread of its own (see
//! `compile::isolated`) before swapping it in. `serve` reloads from
//! [`Catalog::watch`], off the async runtime.

pub mod files;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::compile::{CompiledWorkflow, KnownNames};
use crate::model::{Schedule, Trigger};

/// How often, at most, the directory is looked at for changes.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(1);

/// One consistent view of the directory.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Valid workflows by name.
    pub workflows: BTreeMap<String, Arc<CompiledWorkflow>>,
    /// Files that did not compile: (file, every diagnostic rendered without colour).
    pub invalid: Vec<(String, String)>,
}

/// A trigger of a workflow, with where it sits in the file.
#[derive(Debug, Clone)]
pub struct TriggerRef {
    pub workflow: Arc<CompiledWorkflow>,
    /// Index in `workflow.definition.triggers`; stable while the file is unchanged.
    pub index: usize,
}

impl TriggerRef {
    pub fn trigger(&self) -> &Trigger {
        &self.workflow.definition.triggers[self.index]
    }

    /// A stable id: `<workflow>#<index>` (schedule ticks and audit entries use it).
    pub fn id(&self) -> String {
        format!("{}#{}", self.workflow.name, self.index)
    }
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<&Arc<CompiledWorkflow>> {
        self.workflows.get(name)
    }

    /// Every `webhook: <hook>` trigger, in workflow-name then file order.
    pub fn webhook_triggers(&self, hook: &str) -> Vec<TriggerRef> {
        self.triggers(|t| t.webhook.as_ref().is_some_and(|w| w.value == hook))
    }

    /// Every `schedule:` trigger, in workflow-name then file order.
    pub fn schedules(&self) -> Vec<(TriggerRef, Schedule)> {
        self.triggers(|t| t.schedule.is_some())
            .into_iter()
            .map(|r| {
                let schedule = r.trigger().schedule.clone().expect("filtered on schedule");
                (r, schedule)
            })
            .collect()
    }

    fn triggers(&self, keep: impl Fn(&Trigger) -> bool) -> Vec<TriggerRef> {
        let mut out = Vec::new();
        for wf in self.workflows.values() {
            for (index, t) in wf.definition.triggers.iter().enumerate() {
                if keep(t) {
                    out.push(TriggerRef { workflow: wf.clone(), index });
                }
            }
        }
        out
    }
}

/// What a file looked like when last compiled: its length and modification time.
type Stamp = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The workflows directory, compiled; cheap to ask, reloaded when files change.
pub struct Catalog {
    dir: PathBuf,
    known: Option<KnownNames>,
    /// The current view. Held only to clone or swap the `Arc`, never while
    /// compiling.
    current: RwLock<Arc<Snapshot>>,
    /// The files behind `current`; the lock also keeps reloads one at a time.
    stamp: Mutex<Option<Stamp>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Catalog {
    /// A catalog of `dir`, compiled with `known` names (from `lifeboat.toml`,
    /// if one was read). Compiles the directory now, on the calling thread:
    /// from async code, call it inside `spawn_blocking`.
    pub fn load(dir: impl Into<PathBuf>, known: Option<KnownNames>) -> Arc<Catalog> {
        let catalog = Catalog {
            dir: dir.into(),
            known,
            current: RwLock::new(Arc::new(Snapshot::default())),
            stamp: Mutex::new(None),
        };
        catalog.reload();
        Arc::new(catalog)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current view. Never compiles, never waits for a reload.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A workflow by name, from the current view.
    pub fn get(&self, name: &str) -> Option<Arc<CompiledWorkflow>> {
        self.snapshot().get(name).cloned()
    }

    /// Looks at the directory and, if any file changed, compiles it and
    /// swaps the new view in. Blocking; true when the view changed.
    pub fn reload(&self) -> bool {
        let mut stamp = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp_of(&self.dir);
        if stamp.as_ref() == Some(&now) {
            return false;
        }
        let files: Vec<PathBuf> = now.iter().map(|(p, _, _)| p.clone()).collect();
        let snapshot = match crate::compile::isolated(|| self.compile(&files)) {
            Ok(snapshot) => snapshot,
            Err(problem) => {
                // Keep serving the last good view; try again when files change.
                tracing::error!(dir = %self.dir.display(), problem = %problem, "Compiling the workflows directory failed; the previous catalog stays in use.");
                *stamp = Some(now);
                return false;
            }
        };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        *stamp = Some(now);
        true
    }

    /// Reloads every `every` until `shutdown`, each time on a blocking
    /// thread, so requests and workers never wait for a compile.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let catalog = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || catalog.reload()).await {
                tracing::error!(error = %e, "The catalog reload task failed.");
            }
        }
    }

    fn compile(&self, files: &[PathBuf]) -> Snapshot {
        let outcome = files::compile_files(files, self.known.as_ref());
        let mut snapshot = Snapshot::default();
        for report in &outcome.reports {
            let rendered = report.render(false);
            tracing::warn!(
                file = %report.file,
                errors = report.diagnostics.len(),
                "Workflow file does not compile; it is left out of the catalog.\n{rendered}"
            );
            snapshot.invalid.push((report.file.clone(), rendered));
        }
        for wf in outcome.compiled {
            if outcome.reports.iter().any(|r| r.file == wf.file) {
                continue;
            }
            snapshot.workflows.insert(wf.name.clone(), Arc::new(wf));
        }
        tracing::info!(
            dir = %self.dir.display(),
            workflows = snapshot.workflows.len(),
            invalid = snapshot.invalid.len(),
            "Workflow catalog loaded."
        );
        snapshot
    }
}

/// The workflows whose triggers are live now: the catalog of `serve`
/// (every valid file of the workflows directory, reloaded when it changes),
/// or a fixed set (tests, `lifeboat schedules`). The scheduler looks again
/// at least once a second.
pub trait WorkflowSource: Send + Sync {
    /// The current workflows.
    fn workflows(&self) -> Vec<Arc<CompiledWorkflow>>;
}

impl WorkflowSource for Vec<Arc<CompiledWorkflow>> {
    fn workflows(&self) -> Vec<Arc<CompiledWorkflow>> {
        self.clone()
    }
}

/// The scheduler reads schedules from the catalog.
impl WorkflowSource for Catalog {
    fn workflows(&self) -> Vec<Arc<CompiledWorkflow>> {
        self.snapshot().workflows.values().cloned().collect()
    }
}

/// `*.yaml`/`*.yml` files directly in `dir`, sorted, with length and mtime.
fn stamp_of(dir: &Path) -> Stamp {
    let mut out: Stamp = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let path = e.path();
                    let yaml =
                        matches!(path.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"));
                    let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
                    yaml.then(|| (path, meta.len(), meta.modified().ok()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOKED: &str = "name: hooked\ntriggers:\n  - webhook: am\n    match: { alertname: SiteDown }\n  - schedule: { cron: \"0 2 * * *\" }\nsteps:\n  a: { uses: set }\n";

    fn catalog(dir: &Path) -> Arc<Catalog> {
        Catalog::load(dir, None)
    }

    #[test]
    fn workflows_are_indexed_by_name_with_their_triggers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("h.yaml"), HOOKED).unwrap();
        std::fs::write(dir.path().join("broken.yaml"), "name: broken\nsteps: [\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a workflow").unwrap();
        let snap = catalog(dir.path()).snapshot();
        assert_eq!(snap.workflows.keys().collect::<Vec<_>>(), ["hooked"]);
        assert_eq!(snap.invalid.len(), 1, "{:?}", snap.invalid);
        let hooks = snap.webhook_triggers("am");
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0].id(), "hooked#0");
        assert!(snap.webhook_triggers("other").is_empty());
        assert_eq!(snap.schedules().len(), 1);
        assert_eq!(snap.schedules()[0].0.index, 1);
    }

    #[test]
    fn a_changed_file_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.yaml");
        std::fs::write(&file, HOOKED).unwrap();
        let c = catalog(dir.path());
        assert!(c.get("hooked").is_some());
        std::fs::write(&file, HOOKED.replace("name: hooked", "name: renamed-it")).unwrap();
        assert!(c.reload());
        assert!(c.get("hooked").is_none());
        assert!(c.get("renamed-it").is_some());
        assert!(!c.reload(), "nothing changed");
        std::fs::remove_file(&file).unwrap();
        assert!(c.reload());
        assert!(c.snapshot().workflows.is_empty());
    }
}
