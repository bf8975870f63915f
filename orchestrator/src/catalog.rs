//! The catalog: every valid workflow of the workflows directory, compiled
//! and indexed by name with its triggers, reloaded when the files change.
//!
//! `lifeboat serve` asks it which workflows a webhook starts, the API lists
//! it, and the scheduler reads its cron triggers. Compiling goes through
//! `cli::validate::compile_files`, the same code `lifeboat validate` uses, so
//! a file the catalog refuses is one `validate` reports. A file that stops
//! compiling drops out of the catalog (with a warning) until it is fixed;
//! runs already started are pinned to their stored definition and go on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

struct Inner {
    snapshot: Arc<Snapshot>,
    stamp: Stamp,
    checked: Option<Instant>,
}

/// The workflows directory, compiled; cheap to ask, reloaded when files change.
pub struct Catalog {
    dir: PathBuf,
    known: Option<KnownNames>,
    check_every: Duration,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Catalog {
    /// A catalog of `dir`, compiled with `known` names (from `lifeboat.toml`,
    /// if one was read). Loads the directory now.
    pub fn new(dir: impl Into<PathBuf>, known: Option<KnownNames>) -> Arc<Catalog> {
        let catalog = Catalog {
            dir: dir.into(),
            known,
            check_every: DEFAULT_CHECK_EVERY,
            inner: Mutex::new(Inner {
                snapshot: Arc::new(Snapshot::default()),
                stamp: Vec::new(),
                checked: None,
            }),
        };
        catalog.snapshot();
        Arc::new(catalog)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current view; looks at the directory first if it was last looked
    /// at more than a second ago, and recompiles it if any file changed.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let mut inner = self.inner.lock().expect("catalog lock poisoned");
        if inner.checked.is_some_and(|t| t.elapsed() < self.check_every) {
            return inner.snapshot.clone();
        }
        inner.checked = Some(Instant::now());
        let stamp = stamp(&self.dir);
        if stamp != inner.stamp {
            let files: Vec<PathBuf> = stamp.iter().map(|(p, _, _)| p.clone()).collect();
            inner.snapshot = Arc::new(self.compile(&files));
            inner.stamp = stamp;
        }
        inner.snapshot.clone()
    }

    /// Forgets when the directory was last looked at: the next `snapshot` reloads.
    pub fn invalidate(&self) {
        self.inner.lock().expect("catalog lock poisoned").checked = None;
    }

    /// A workflow by name, from the current view.
    pub fn get(&self, name: &str) -> Option<Arc<CompiledWorkflow>> {
        self.snapshot().get(name).cloned()
    }

    fn compile(&self, files: &[PathBuf]) -> Snapshot {
        let outcome = crate::cli::validate::compile_files(files, self.known.as_ref());
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

/// The scheduler reads schedules from the catalog (it looks again every second).
#[async_trait::async_trait]
impl crate::triggers::WorkflowSource for Catalog {
    fn workflows(&self) -> Vec<Arc<CompiledWorkflow>> {
        self.snapshot().workflows.values().cloned().collect()
    }
}

/// `*.yaml`/`*.yml` files directly in `dir`, sorted, with length and mtime.
fn stamp(dir: &Path) -> Stamp {
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
        let c = Catalog::new(dir, None);
        c.invalidate();
        c
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
        c.invalidate();
        assert!(c.get("hooked").is_none());
        assert!(c.get("renamed-it").is_some());
        std::fs::remove_file(&file).unwrap();
        c.invalidate();
        assert!(c.snapshot().workflows.is_empty());
    }
}
