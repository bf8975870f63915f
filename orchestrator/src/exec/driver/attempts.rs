//! Action attempts: recorded before they start, run in a task, finished in
//! one commit with the step's new state (retries, for_each, poll).

use super::*;

impl Driver {
    /// Records a new attempt, then runs the action in a task.
    pub(super) async fn start_attempt(&mut self, i: usize, phase: Phase) -> ExecResult<()> {
        let step = self.wf.steps[i].clone();
        let body = self.body(i, phase).clone();
        let now = now_ms();
        // The context is built only when something needs rendering: it is
        // the costly part of starting a step in a large workflow.
        let needs_context = !body.templates.is_empty()
            || (phase == Phase::Forward
                && (step.definition.for_each.is_some() || step.definition.poll.is_some()));
        let ctx = needs_context.then(|| self.context(None, None));
        let items: Option<Vec<Value>> =
            if phase == Phase::Forward && step.definition.for_each.is_some() {
                match self.for_each_items(i, ctx.as_ref().expect("built for for_each")) {
                    Ok(items) => Some(items),
                    Err(e) => return self.fail_step(i, e).await,
                }
            } else {
                None
            };
        // A `for_each` body is rendered per item, in the attempt task.
        let config = if items.is_some() {
            None
        } else {
            let prepared = match &ctx {
                None => prepare_config(&body, None, &self.rt.opts.connections),
                Some(ctx) => prepare_config(&body, Some(ctx), &self.rt.opts.connections),
            };
            // An automatic rollback runs the inverse of the step's own action.
            let prepared = match prepared {
                Ok(c) if body.inverse_of_step => {
                    let outputs = self.slots[i].record.outputs.clone().unwrap_or_default();
                    c.inverse(&outputs)
                }
                other => other,
            };
            match prepared {
                Ok(c) => Some(c),
                Err(e) if phase == Phase::Forward => return self.fail_step(i, e).await,
                Err(e) => return self.finish_rollback(i, 0, Err((e, false))).await,
            }
        };
        let n = match phase {
            Phase::Forward => self.slots[i].record.attempts + 1,
            Phase::Rollback => self.slots[i].rollback.as_ref().map_or(0, |r| r.attempts) + 1,
        };
        // A drill's fault, recorded with the attempt's start (same commit).
        let fault = if phase == Phase::Forward { self.drill_fault(i, n) } else { None };
        let mut changes = vec![Change::AttemptStarted(AttemptRecord {
            run_id: self.run.id.clone(),
            step_id: step.id.clone(),
            phase,
            n,
            status: AttemptStatus::Running,
            worker: self.worker().to_string(),
            pgid: None,
            started_at: now,
            finished_at: None,
            error: None,
            stdout: None,
            stderr: None,
        })];
        match phase {
            Phase::Forward => {
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::Running;
                    s.attempts = n;
                    s.started_at.get_or_insert(now);
                    s.wake_at = None;
                }));
                changes.push(Self::event(
                    RunEvent::StepStarted,
                    Some(&step.id),
                    Some(json!({"attempt": n})),
                ));
            }
            Phase::Rollback => {
                let mut rb = self.slots[i].rollback.clone().unwrap_or_default();
                rb.status = RollbackStatus::Running;
                rb.attempts = n;
                rb.wake_at = None;
                changes.push(self.step_change(i, |s| s.rollback = Some(rb.to_stored())));
                changes.push(Self::event(
                    RunEvent::RollbackStarted,
                    Some(&step.id),
                    Some(json!({"attempt": n})),
                ));
            }
        }
        if let Some(fault) = fault {
            changes.push(self.fault_event(i, n, fault));
        }
        if fault == Some(crate::model::Fault::Crash) {
            // Recorded as started, then abandoned as if its worker died.
            self.commit(changes).await?;
            let at = now_ms();
            let interrupted = self.interrupted(i, n, at, true);
            self.commit(interrupted).await?;
            crate::telemetry::attempt_interrupted(self.attempt_facts(i, phase, n), now, at);
            return Ok(());
        }
        let span = self.attempt_span(i, phase, n);
        // Pure kinds have no side effect to protect: their start and end
        // share one commit. Forward only: a rollback's end goes through
        // `finish_rollback` (in `on_finished`), which the inline path skips.
        let pure = phase == Phase::Forward
            && fault.is_none()
            && config.as_ref().is_some_and(|c| c.kind().is_pure())
            && items.is_none()
            && step.definition.poll.is_none();
        let token = CancellationToken::new();
        let actx = self.attempt_context(i, n, &body, token.clone());
        if let (true, Some(config)) = (pure, &config) {
            let outcome = config.run(&actx).instrument(span.clone()).await;
            crate::telemetry::attempt_ended(&span, matches!(outcome, Outcome::Succeeded { .. }));
            // Apply the start to the local copy so the finish builds on it.
            if let Some(Change::Step(started)) =
                changes.iter().find(|c| matches!(c, Change::Step(_)))
            {
                self.slots[i] = Slot::new(started.clone())?;
            }
            let mut all = changes;
            let finish = self.finish_changes(i, phase, n, &outcome);
            // Start and finish of a pure attempt: one row, one event.
            if let (
                Some(Change::AttemptStarted(a)),
                Some(Change::AttemptFinished { status, finished_at, error, .. }),
            ) = (all.first_mut(), finish.first())
            {
                a.status = *status;
                a.finished_at = Some(*finished_at);
                a.error.clone_from(error);
            }
            all.retain(|c| !matches!(c, Change::Event { kind: RunEvent::StepStarted, .. }));
            all.extend(finish.into_iter().skip(1));
            self.stage(all)?;
            return Ok(());
        }
        // Staged: the next flush records this start (with whatever else is
        // staged) and only then launches the attempt.
        self.stage(changes)?;
        self.in_flight.insert((i, phase), token);
        let tx = self.tx.clone();
        let poll = if phase == Phase::Forward {
            step.definition.poll.clone().zip(step.templates.get("poll.until").cloned())
        } else {
            None
        };
        let base_ctx =
            if items.is_some() || poll.is_some() { self.context_value() } else { Value::Null };
        let for_each = items.map(|items| (items, body.clone(), self.rt.opts.connections.clone()));
        let spawned = self.spawned_tx.clone();
        let run_id = self.run.id.clone();
        let step_id = step.id.clone();
        let timeout = body.timeout;
        let attempt = async move {
            let cancel = actx.cancel.clone();
            let attempt = run_action(
                spawned, &run_id, &step_id, phase, n, config, actx, for_each, poll, base_ctx,
            );
            let outcome = match fault {
                Some(fault) => super::drill::injected(fault, timeout, cancel, attempt).await,
                None => attempt.await,
            };
            crate::telemetry::attempt_ended(
                &tracing::Span::current(),
                matches!(outcome, Outcome::Succeeded { .. }),
            );
            let _ = tx.send(Finished { index: i, phase, n, outcome });
        };
        self.launches.push(((i, phase), Box::pin(attempt.instrument(span))));
        Ok(())
    }

    /// The span of attempt `n` of step `i` (target `telemetry::TARGET`):
    /// in the logs' context, and with traces on, a child of the run's root.
    fn attempt_span(&self, i: usize, phase: Phase, n: u32) -> tracing::Span {
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "attempt",
            run_id = %self.run.id,
            step_id = %self.wf.steps[i].id,
            attempt = n,
            phase = %phase,
            otel.name = tracing::field::Empty,
        );
        crate::telemetry::attempt_started(&span, self.attempt_facts(i, phase, n));
        span
    }

    /// What the trace says about attempt `n` of step `i`.
    pub(super) fn attempt_facts(
        &self,
        i: usize,
        phase: Phase,
        n: u32,
    ) -> crate::telemetry::AttemptFacts<'_> {
        crate::telemetry::AttemptFacts {
            run_id: &self.run.id,
            workflow: &self.run.workflow,
            mode: self.run.mode.as_str(),
            step: &self.wf.steps[i].id,
            attempt: n,
            kind: self.body(i, phase).kind.name(),
            phase: phase.as_str(),
        }
    }

    pub(super) fn attempt_context(
        &self,
        i: usize,
        n: u32,
        body: &CompiledBody,
        cancel: CancellationToken,
    ) -> AttemptContext {
        let id = &self.wf.steps[i].id;
        let mut actx = AttemptContext::new(self.run.id.clone(), id.clone(), n);
        actx.timeout = body.timeout.map(|d| d.0);
        actx.cancel = cancel;
        actx.redactor = self.rt.redactor.clone();
        actx.http = self.rt.opts.http.clone();
        actx
    }

    pub(super) fn for_each_items(&self, i: usize, ctx: &Context) -> Result<Vec<Value>, String> {
        let step = &self.wf.steps[i];
        let raw = step.definition.for_each.as_ref().map(|f| f.value.clone()).unwrap_or(Value::Null);
        match &raw {
            Value::String(_) => {
                let t = step.templates.get("for_each").ok_or("`for_each` template missing")?;
                let text = render(t, ctx).map_err(|e| format!("`for_each`: {e}"))?;
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Array(items)) => Ok(items),
                    _ => Err(format!("`for_each` rendered `{text}`, which is not a JSON list")),
                }
            }
            Value::Array(_) => match render_value(&raw, &step.templates, "for_each", ctx)? {
                Value::Array(items) => Ok(items),
                _ => Err("`for_each` is not a list".into()),
            },
            _ => Err("`for_each` must be a list".into()),
        }
    }

    /// The changes that record an attempt's outcome (forward phase).
    pub(super) fn finish_changes(
        &self,
        i: usize,
        phase: Phase,
        n: u32,
        outcome: &Outcome,
    ) -> Vec<Change> {
        let id = self.wf.steps[i].id.clone();
        let now = now_ms();
        let outputs = self.redact(outcome.outputs().clone());
        let (stdout, stderr) = (
            outputs.get("stdout").and_then(Value::as_str).map(String::from),
            outputs.get("stderr").and_then(Value::as_str).map(String::from),
        );
        let (status, error, retryable) = match outcome {
            Outcome::Succeeded { .. } => (AttemptStatus::Succeeded, None, false),
            Outcome::Failed { error, retryable, .. } => {
                (AttemptStatus::Failed, Some(error.clone()), *retryable)
            }
        };
        let mut changes = vec![Change::AttemptFinished {
            step_id: id.clone(),
            phase,
            n,
            status,
            finished_at: now,
            error: error.clone(),
            stdout,
            stderr,
        }];
        if phase == Phase::Rollback {
            return changes; // the caller adds the rollback state
        }
        let body = &self.wf.steps[i].body;
        let base = StepState::attempt_base(self.slots[i].state.as_ref());
        match (status, error) {
            (AttemptStatus::Succeeded, _) => {
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::Succeeded;
                    s.outputs = Some(outputs.clone());
                    s.error = None;
                    s.finished_at = Some(now);
                }));
                changes.push(Self::event(
                    RunEvent::StepSucceeded,
                    Some(&id),
                    Some(json!({"attempt": n})),
                ));
            }
            (_, error) if retryable && n - base < body.retry.attempts => {
                let delay = backoff::delay_after(&body.retry, n - base, fastrand::f64());
                let wake = now + delay.as_millis() as i64;
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::RetryWait;
                    s.outputs = Some(outputs.clone());
                    s.error = error.clone();
                    s.wake_at = Some(wake);
                }));
                changes.push(Self::event(
                    RunEvent::StepRetrying,
                    Some(&id),
                    Some(
                        json!({"attempt": n, "error": error, "delay_ms": delay.as_millis() as u64}),
                    ),
                ));
            }
            (_, error) => {
                changes.push(self.step_change(i, |s| {
                    s.status = StepStatus::Failed;
                    s.outputs = Some(outputs.clone());
                    s.error = error.clone();
                    s.finished_at = Some(now);
                }));
                changes.push(Self::event(
                    RunEvent::StepFailed,
                    Some(&id),
                    Some(json!({"attempt": n, "error": error})),
                ));
            }
        }
        changes
    }

    pub(super) async fn on_finished(&mut self, done: Finished) -> ExecResult<()> {
        let i = done.index;
        // A result for a step no longer running (skipped or cancelled meanwhile) is recorded, not applied.
        let current = match done.phase {
            Phase::Forward => {
                self.slots[i].record.status == StepStatus::Running
                    && self.slots[i].record.attempts == done.n
            }
            Phase::Rollback => self.slots[i]
                .rollback
                .as_ref()
                .is_some_and(|r| r.status == RollbackStatus::Running && r.attempts == done.n),
        };
        // An end is staged, not committed: it has no side effect to guard,
        // and it becomes durable with the next flush, which is before the
        // driver waits and before any new attempt starts (one commit per
        // step in a chain).
        let mut changes = self.finish_changes(i, done.phase, done.n, &done.outcome);
        if !current {
            changes.truncate(1);
            return self.stage(changes);
        }
        if done.phase == Phase::Rollback {
            let result = match &done.outcome {
                Outcome::Succeeded { .. } => Ok(()),
                Outcome::Failed { error, retryable, .. } => Err((error.clone(), *retryable)),
            };
            self.stage(changes)?;
            return self.finish_rollback(i, done.n, result).await;
        }
        self.stage(changes)
    }
}

/// One attempt of an action: `for_each` items and `poll` iterations inside it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_action(
    spawned: mpsc::UnboundedSender<Change>,
    run_id: &str,
    step_id: &str,
    phase: Phase,
    n: u32,
    config: Option<ActionConfig>,
    mut actx: AttemptContext,
    for_each: Option<(Vec<Value>, CompiledBody, HashMap<String, String>)>,
    poll: Option<(crate::model::Poll, crate::compile::templates::Parsed)>,
    base_ctx: Value,
) -> Outcome {
    // The process group goes to the driver, which commits it under the
    // lease (retried like any commit), so a successor can clean up after a crash.
    {
        let step_id = step_id.to_string();
        actx.on_spawn = Some(Box::new(move |pgid| {
            let change = Change::AttemptPgid { step_id: step_id.clone(), phase, n, pgid };
            // The driver gone: its drive ended, and it kills its attempts.
            let _ = spawned.send(change);
        }));
    }
    let Some((items, body, connections)) = for_each else {
        let config = config.expect("rendered when there is no for_each");
        return poll_action(&config, &actx, poll, &base_ctx).await;
    };
    // for_each: one action per item, the outputs a list in item order.
    let mut outputs = Vec::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        actx.idempotency_key = format!("{run_id}/{step_id}/{k}");
        let mut ctx = base_ctx.clone();
        ctx["item"] = item.clone();
        let rendered = Context::wraps(&ctx)
            .map_err(|e| e.to_string())
            .and_then(|c| prepare_config(&body, Some(&c), &connections));
        let outcome = match rendered {
            Ok(config) => poll_action(&config, &actx, poll.clone(), &ctx).await,
            Err(e) => Outcome::fatal(e),
        };
        match outcome {
            Outcome::Succeeded { outputs: o } => outputs.push(json!({"item": item, "outputs": o})),
            Outcome::Failed { error, retryable, outputs: o } => {
                outputs.push(json!({"item": item, "outputs": o}));
                return Outcome::Failed {
                    error: format!("item {k} ({item}): {error}"),
                    retryable,
                    outputs: json!({"items": outputs}),
                };
            }
        }
    }
    Outcome::Succeeded { outputs: json!({"items": outputs}) }
}

/// Runs the action, repeating it every `interval` until `until` holds.
async fn poll_action(
    config: &ActionConfig,
    actx: &AttemptContext,
    poll: Option<(crate::model::Poll, crate::compile::templates::Parsed)>,
    ctx: &Value,
) -> Outcome {
    let Some((poll, until)) = poll else {
        return config.run(actx).await;
    };
    let deadline = Instant::now() + poll.timeout.0;
    loop {
        let outcome = config.run(actx).await;
        if let Outcome::Succeeded { outputs } = &outcome {
            let mut c = ctx.clone();
            c["outputs"] = outputs.clone();
            let holds =
                Context::wraps(c).map_err(|e| e.to_string()).and_then(|c| render(&until, &c));
            match holds {
                Ok(text) if truthy(&text) => return outcome,
                Ok(_) => {}
                Err(e) => return Outcome::fatal(format!("`poll.until`: {e}")),
            }
        }
        if Instant::now() + poll.interval.0 > deadline {
            return Outcome::Failed {
                error: format!(
                    "`poll.until` still false after {}; last outputs: {}",
                    poll.timeout,
                    last_outputs_summary(outcome.outputs())
                ),
                retryable: false,
                outputs: outcome.outputs().clone(),
            };
        }
        tokio::select! {
            _ = actx.cancel.cancelled() => return Outcome::fatal("cancelled while polling"),
            _ = tokio::time::sleep(poll.interval.0) => {}
        }
    }
}

/// Renders a body's `with` (when it has templates), types it into the
/// action's config, and resolves a named connection to its URL.
pub(super) fn prepare_config(
    body: &CompiledBody,
    ctx: Option<&Context>,
    connections: &HashMap<String, String>,
) -> Result<ActionConfig, String> {
    let rendered = match ctx {
        Some(ctx) if !body.templates.is_empty() => {
            render_value(&body.with, &body.templates, "", ctx)?
        }
        _ => body.with.clone(),
    };
    let mut config = match crate::exec::render::typed_config(body.kind, &rendered)? {
        KindConfig::Action(c) => c,
        _ => return Err("step parameters do not match its kind".into()),
    };
    config.resolve_connection(|name| connections.get(name).cloned());
    Ok(config)
}

/// The last result of a poll, short enough for an error line: `json`
/// when the action printed one, else the outputs without bulky fields.
pub(super) fn last_outputs_summary(outputs: &Value) -> String {
    let shown = match outputs.get("json") {
        Some(j) if !j.is_null() => j.clone(),
        _ => {
            let mut o = outputs.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("headers");
            }
            o
        }
    };
    let text = shown.to_string();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
