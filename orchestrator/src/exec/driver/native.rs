//! Engine-native kinds: they suspend instead of running a process (wait,
//! approval, escalate, notify, child workflows) and resume when due.

use super::*;

impl Driver {
    pub(super) async fn start_native(&mut self, i: usize, kind: NativeKind) -> ExecResult<()> {
        let step = self.wf.steps[i].clone();
        let now = now_ms();
        let ctx = self.context(None, None);
        let rendered = match render_value(&step.body.with, &step.body.templates, "", &ctx) {
            Ok(v) => v,
            Err(e) => return self.fail_step(i, e).await,
        };
        let config = match crate::exec::render::typed_config(step.body.kind, &rendered) {
            Ok(c) => c,
            Err(e) => return self.fail_step(i, e).await,
        };
        let mut changes = Vec::new();
        match (kind, &config) {
            (NativeKind::Wait, KindConfig::Wait(w)) => {
                let deadline = match (&w.duration, &w.until) {
                    (Some(d), _) => now + d.as_millis() as i64,
                    (None, Some(until)) => match chrono::DateTime::parse_from_rfc3339(until) {
                        Ok(t) => t.timestamp_millis(),
                        Err(e) => {
                            return self.fail_step(i, format!("`until` `{until}`: {e}")).await;
                        }
                    },
                    _ => now,
                };
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::Waiting;
                    s.started_at = Some(now);
                    s.wake_at = Some(deadline);
                    s.state = Some(StepState::Timer { until: deadline }.to_value());
                }));
                changes.push(Self::event(
                    RunEvent::StepWaiting,
                    Some(&step.id),
                    Some(json!({"until": deadline})),
                ));
            }
            (NativeKind::Notify, KindConfig::Notify(n)) => {
                let data = json!({ "message": null });
                let disc = format!("a{}", self.slots[i].record.attempts + 1);
                let queued = match (&n.template, &n.subject, &n.body) {
                    (_, subject, Some(body)) => self.notify_inline(
                        &step.id,
                        &n.channels,
                        subject.as_deref(),
                        body,
                        data,
                        &disc,
                    ),
                    (template, _, None) => self.notify_channels(
                        "notify",
                        Some(&step.id),
                        &n.channels,
                        template.as_deref(),
                        data,
                        lifeboat_notify::Action::Trigger,
                        &disc,
                    ),
                };
                let keys: Vec<String> = queued
                    .iter()
                    .filter_map(|c| match c {
                        Change::Notify(n) => Some(n.dedupe_key.clone()),
                        _ => None,
                    })
                    .collect();
                changes.extend(queued);
                changes.push(Self::event(
                    RunEvent::Notification,
                    Some(&step.id),
                    Some(json!({"channels": n.channels, "required": n.required})),
                ));
                if n.required {
                    // Done when every row is delivered (the dispatcher wakes the run).
                    changes.push(self.step_change(i, |s| {
                        s.status = StepStatus::Waiting;
                        s.started_at = Some(now);
                        s.wake_at = None;
                        s.state = Some(StepState::Outbox { keys }.to_value());
                    }));
                } else {
                    changes.push(self.step_change(i, |s| {
                        s.status = StepStatus::Succeeded;
                        s.started_at = Some(now);
                        s.finished_at = Some(now);
                        s.outputs = Some(json!({"queued": n.channels}));
                    }));
                    changes.push(Self::event(RunEvent::StepSucceeded, Some(&step.id), None));
                }
            }
            (NativeKind::Workflow, KindConfig::Workflow(c)) => {
                return self.start_child(i, c, now).await;
            }
            (NativeKind::Approval, KindConfig::Approval(a)) => {
                changes.extend(self.start_approval(i, a, rendered.clone(), now));
            }
            (NativeKind::Escalate, KindConfig::Escalate(e)) => {
                changes.extend(self.start_escalation(i, e, now));
            }
            _ => return self.fail_step(i, "step parameters do not match its kind".into()).await,
        }
        self.commit(changes).await?;
        // A drill's scenario person answers the gate at once.
        self.drill_answers().await
    }

    pub(super) async fn start_child(
        &mut self,
        i: usize,
        c: &crate::kinds::workflow::Config,
        now: i64,
    ) -> ExecResult<()> {
        let step_id = self.wf.steps[i].id.clone();
        // The child is the definition pinned when the run tree started, by
        // its declared name; never a path, never what the directory holds now.
        let child = match &self.run.pins {
            Some(pins) => match pins.get(&c.workflow) {
                Some(hash) => self.rt.definition(hash).await?,
                None => {
                    let dir = self.rt.opts.workflows_dir.display();
                    return self
                        .fail_step(
                            i,
                            format!(
                                "child workflow `{}` was not a valid workflow of {dir} when this run started, so it was not pinned; fix it (`lifeboat validate`) and start the run again",
                                c.workflow
                            ),
                        )
                        .await;
                }
            },
            // A run created before pinning existed: resolve the name now.
            None => match self.rt.catalog().await?.get(&c.workflow) {
                Some(wf) => wf,
                None => {
                    let dir = self.rt.opts.workflows_dir.display();
                    return self
                        .fail_step(
                            i,
                            format!(
                                "child workflow `{}` is not a valid workflow of {dir}",
                                c.workflow
                            ),
                        )
                        .await;
                }
            },
        };
        let given: serde_json::Map<String, Value> = c.inputs.clone().into_iter().collect();
        let inputs = match crate::exec::inputs::resolve(given, &child.definition.inputs) {
            Ok(v) => v,
            Err(errors) => {
                return self.fail_step(i, format!("child inputs: {}", errors.join("; "))).await;
            }
        };
        // Inputs are stored with the child run; the compiler forbids secrets in
        // them, and this keeps a value that slipped through out of the store.
        let inputs = self.redact(inputs);
        let trigger = json!({"kind": "workflow", "parent": self.run.id, "step": step_id});
        let parent = Some(crate::exec::runtime::Parent {
            run: self.run.id.clone(),
            step: step_id.clone(),
            root: self.run.root_run_id.clone(),
            pins: self.run.pins.clone().unwrap_or_default(),
        });
        // A drill's children rehearse too (without its faults).
        let keys = crate::exec::runtime::SubmitKeys { mode: self.run.mode, ..Default::default() };
        let mut run = self.rt.new_run(&child, inputs, trigger, parent, false, keys).await?;
        // Created by this commit, so it must be created: behind a busy
        // concurrency key the child queues (it is not skipped).
        run.skip_on_conflict = false;
        let child_id = run.id.clone();
        let changes = vec![
            // The child and the step that waits for it commit together: a
            // crash keeps both or neither, so a resumed parent never starts
            // a second child.
            crate::store::Change::CreateRun(Box::new(run)),
            self.step_change(i, |s| {
                s.status = StepStatus::Waiting;
                s.started_at = Some(now);
                s.wake_at = None;
                s.state = Some(StepState::Child { run: child_id.clone() }.to_value());
            }),
            Self::event(RunEvent::ChildStarted, Some(&step_id), Some(json!({"run": child_id}))),
        ];
        self.commit(changes).await?;
        crate::metrics::run_started(&child.name);
        Ok(())
    }

    /// A waiting step is due: a timer fired, or a child run may have ended.
    pub(super) async fn resume_waiting(&mut self, i: usize) -> ExecResult<()> {
        let id = self.wf.steps[i].id.clone();
        let now = now_ms();
        match self.slots[i].state.clone() {
            Some(StepState::Child { run: child }) => {
                let Some(run) = self.rt.store.run(&child).await? else {
                    return self.fail_step(i, format!("child run {child} disappeared")).await;
                };
                if !run.status.is_terminal() {
                    return Ok(());
                }
                let ok = run.status == RunStatus::Succeeded;
                let changes = vec![
                    self.step_change(i, |s| {
                        s.status = if ok { StepStatus::Succeeded } else { StepStatus::Failed };
                        s.finished_at = Some(now);
                        s.outputs = Some(run.outputs.clone().unwrap_or(json!({})));
                        s.error = (!ok).then(|| format!("child run {child} ended {}", run.status));
                    }),
                    Self::event(
                        if ok { RunEvent::StepSucceeded } else { RunEvent::StepFailed },
                        Some(&id),
                        Some(json!({"child": child})),
                    ),
                ];
                self.commit(changes).await
            }
            Some(StepState::Timer { .. }) => {
                let changes = vec![
                    self.step_change(i, |s| {
                        s.status = StepStatus::Succeeded;
                        s.finished_at = Some(now);
                        s.wake_at = None;
                        s.outputs = Some(json!({}));
                    }),
                    Self::event(RunEvent::StepSucceeded, Some(&id), None),
                ];
                self.commit(changes).await
            }
            Some(StepState::Outbox { keys }) => self.resume_required_notify(i, keys).await,
            // Waiting for a person; maybe a deadline or an update is due.
            Some(StepState::Gate(_)) => match self.gate_timer(i, now) {
                Some(changes) => self.commit(changes).await,
                None => Ok(()),
            },
            state @ (Some(StepState::Retried { .. }) | None) => {
                let error = format!("a waiting step has no wait condition (state: {state:?})");
                self.fail_step(i, error).await
            }
        }
    }

    /// A `required: true` notify step: succeeded once every message is
    /// delivered, failed if one could not be.
    pub(super) async fn resume_required_notify(
        &mut self,
        i: usize,
        keys: Vec<String>,
    ) -> ExecResult<()> {
        let id = self.wf.steps[i].id.clone();
        let rows = self.rt.store.outbox(&self.run.id).await?;
        let mine: Vec<_> = rows.iter().filter(|r| keys.contains(&r.dedupe_key)).collect();
        if let Some(failed) = mine.iter().find(|r| r.status == crate::store::OutboxStatus::Failed) {
            let error = format!(
                "notification to {} failed: {}",
                failed.channel,
                failed.last_error.as_deref().unwrap_or("unknown error")
            );
            return self.fail_step(i, error).await;
        }
        if mine.iter().all(|r| r.status == crate::store::OutboxStatus::Delivered) {
            let now = now_ms();
            let delivered: Vec<Value> =
                mine.iter().map(|r| json!({"channel": r.channel, "detail": r.detail})).collect();
            let changes = vec![
                self.step_change(i, |s| {
                    s.status = StepStatus::Succeeded;
                    s.finished_at = Some(now);
                    s.outputs = Some(json!({"delivered": delivered}));
                }),
                Self::event(RunEvent::StepSucceeded, Some(&id), None),
            ];
            return self.commit(changes).await;
        }
        Ok(())
    }
}
