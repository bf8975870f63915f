// run: one run — its facts (inputs, outputs, trigger, mode), the live
// "elapsed / RTO" clock, the operator controls its user's roles allow, the
// graph scrolled to the active step, the timeline against the RTO, the
// steps (each opens the step drawer; a waiting one shows its people and
// decisions) and the notifications. Follows the run's event stream: every
// event re-reads the run; nothing polls.
const ACTIVE_STEP = ["running", "waiting", "retry_wait", "needs_human"];

function openRun(id) {
  view = { kind: "run", id, graphKey: null, graphUrl: null, timelineKey: null, timelineUrl: null, stream: null, doc: null, activeStep: null };
  // A finished run has no stream of its own; a retry reopens it, and
  // every run's stream says so.
  onAnyEvent = (events) => {
    if (view && view.kind === "run" && !view.stream && events.some((e) => e.data && e.data.run === view.id)) refreshRun();
  };
  show("run");
  setText($("run-title"), "Run " + shortId(id));
  setText($("run-message"), "");
  for (const id2 of ["run-facts", "steps-body", "notes-body", "controls", "people"]) $(id2).replaceChildren();
  $("people-box").hidden = true;
  $("dag-img").removeAttribute("src");
  $("timeline-img").removeAttribute("src");
  $("clock").hidden = true;
  closeDrawer();
  refreshRun();
}

function leaveRun() {
  if (view && view.kind === "run" && view.stream) view.stream.stop();
}

const refreshRun = coalesced(async () => {
  if (!view || view.kind !== "run") return;
  const id = view.id;
  let doc;
  try {
    doc = await getJson("/api/v1/runs/" + encodeURIComponent(id));
  } catch (e) {
    if (e.status !== 401) say($("run-message"), false, "Cannot load run " + id + ": " + e.message);
    return;
  }
  if (!view || view.kind !== "run" || view.id !== id) return;
  view.doc = doc;
  renderRun(doc);
  mark("lifeboat:run-shown");
  await Promise.all([refreshGraph(doc), refreshTimeline(doc)]);
  if (view.drawer) refreshDrawer();
  const active = !TERMINAL.includes(doc.status);
  if (!active) {
    if (view.stream) { view.stream.stop(); view.stream = null; }
    setText($("live"), "run finished");
    return;
  }
  if (!view.stream) {
    view.stream = followStream("/api/v1/runs/" + encodeURIComponent(id) + "/events", {
      onEvent: () => refreshRun(),
      onState: (state) => {
        setText($("live"), state === "live" ? "live · updated " + new Date().toLocaleTimeString() : "reconnecting…");
        if (state === "live") refreshRun(); // what changed while away
      },
      onEnd: () => refreshRun(),
    }, false);
  } else if ($("live").textContent.startsWith("live")) {
    setText($("live"), "live · updated " + new Date().toLocaleTimeString());
  }
});

function renderRun(doc) {
  const active = !TERMINAL.includes(doc.status);
  document.title = visible(doc.workflow + " " + doc.status + " · lifeboat");
  $("run-title").replaceChildren(visible("Run " + shortId(doc.id) + " of " + doc.workflow + " "), badge(doc.status),
    ...(doc.paused ? [" ", el("span", { class: "badge s-paused" }, "paused")] : []));
  $("run").classList.toggle("paused", !!doc.paused);
  const trigger = doc.trigger || {};
  $("run-facts").replaceChildren(
    ...fact("Id", el("code", {}, doc.id)),
    ...fact("Workflow", link("/workflows/" + encodeURIComponent(doc.workflow), doc.workflow)),
    ...(doc.trace_id ? fact("Trace", el("code", {}, doc.trace_id)) : []),
    ...fact("Created", when(doc.created_at)),
    ...fact("Trigger", (trigger.kind || "") + (trigger.by ? " by " + trigger.by : "")),
    ...(doc.parent_run_id ? fact("Parent run", link("/runs/" + encodeURIComponent(doc.parent_run_id), shortId(doc.parent_run_id))) : []),
    ...(doc.error ? fact("Error", el("span", { class: "err" }, doc.error)) : []),
    ...(doc.paused ? fact("Paused", "yes: no new step starts until it is resumed") : []),
    ...fact("Inputs", pairs(doc.inputs) || "none"),
    ...(pairs(doc.outputs) ? fact("Outputs", pairs(doc.outputs)) : []),
    ...fact("Mode", (doc.mode || "live") + (doc.scenario ? " (scenario " + doc.scenario + ")" : "")),
    ...(doc.verdict ? fact("Drill verdict", (doc.verdict.passed ? "PASSED" : "FAILED") + ": " +
      (doc.verdict.expectations || []).map((c) => (c.ok ? "PASS " : "FAIL ") + c.what + ": expected " + c.expected + ", actual " + c.actual).join("; ")) : []));
  renderClock(doc);
  renderControls(doc);
  renderPeople(doc);
  // Re-drawn only when something shown changed, so a comment being
  // typed (and its focus) survives events that change nothing here.
  const stepsKey = JSON.stringify([active, answers, doc.steps.map((s) => [s.id, s.status, s.error, s.attempts.length, s.started_at, s.finished_at, s.gate])]);
  if (stepsKey !== view.stepsKey) {
    view.stepsKey = stepsKey;
    $("steps-body").replaceChildren(...doc.steps.map((s) => stepRow(doc, s, active)));
  }
  const notes = doc.notifications || [];
  if (!notes.length) $("notes-body").replaceChildren(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "None for this run.")));
  else $("notes-body").replaceChildren(...notes.map((n) => el("tr", {},
    el("td", {}, when(n.queued_at)),
    el("td", {}, n.event),
    el("td", { class: "mono" }, n.step || ""),
    el("td", {}, n.channel),
    el("td", {}, badge(n.status)),
    el("td", {}, n.subject || ""),
    el("td", { class: "err" }, n.error || ""))));
}

function stepRow(doc, s, active) {
  const forward = s.attempts.filter((a) => a.phase !== "rollback");
  const rollbacks = s.attempts.length - forward.length;
  const error = s.error || (forward.length ? forward[forward.length - 1].error : "") || "";
  const waiting = active && (s.status === "waiting" || s.status === "needs_human");
  return el("tr", { class: ACTIVE_STEP.includes(s.status) ? "active" : null },
    el("td", { class: "mono" }, el("button", { type: "button", class: "linkish", "aria-label": "Details of step " + s.id,
      onclick: () => openDrawer(s.id) }, s.id)),
    el("td", {}, s.kind || ""),
    el("td", {}, badge(s.status), s.irreversible ? el("span", { class: "tag warn-tag", title: "irreversible: cannot be rolled back" }, "irreversible") : null),
    el("td", {}, String(forward.length) + (rollbacks ? " + " + rollbacks + " rollback" : "")),
    el("td", {}, duration(s.started_at, s.finished_at)),
    el("td", { class: "err" }, error),
    el("td", {}, waiting && s.status === "waiting" && me && me.may.decide ? decideControls(doc.id, s.id, s.kind, s.gate, doc, afterDecision) : answerOnly(doc.id, s.id)));
}

function answerOnly(runId, step) {
  const a = answers[runId + "/" + step];
  return a ? el("div", { class: "decide" }, el("output", { class: a.ok ? "ok answer" : "bad answer", "data-step": step }, a.text)) : null;
}

function afterDecision(note) {
  say($("run-message"), note.ok, note.text);
  view.stepsKey = null;
  refreshRun();
}

// The steps waiting for people, each with what it asks and who decides.
function renderPeople(doc) {
  const gates = doc.steps.filter((s) => s.gate && (s.status === "waiting"));
  const key = JSON.stringify(gates.map((s) => [s.id, s.gate]));
  if (key === view.peopleKey) return;
  view.peopleKey = key;
  $("people").replaceChildren(...gates.map((s) => el("li", { class: "card" },
    el("p", {}, el("strong", {}, s.gate.awaiting === "ack" ? "Acknowledge " : "Approve "), el("code", {}, s.id)),
    ...gateFacts(s.gate, doc.trigger && doc.trigger.by))));
  $("people-box").hidden = gates.length === 0;
}

// ----- the clock: elapsed against objectives.rto ------------------------------

function renderClock(doc) {
  const start = doc.started_at || doc.created_at;
  if (!start) { $("clock").hidden = true; return; }
  const elapsed = (doc.finished_at ? ms(doc.finished_at) : Date.now()) - ms(start);
  const rto = doc.rto_ms;
  let text = "elapsed " + human(elapsed);
  let over = false;
  if (rto) {
    over = elapsed > rto;
    text += " / RTO " + human(rto) + " (" + Math.round((elapsed / rto) * 100) + "%)" + (over ? " — OVER the RTO" : "");
  } else text += " (no RTO declared)";
  $("clock").hidden = false;
  $("clock").className = "clock" + (over ? " over" : rto && elapsed > rto * 0.8 ? " near" : "");
  setText($("clock"), text);
}

// ----- the graph, scrolled to the active step --------------------------------

async function refreshGraph(doc) {
  const key = doc.steps.map((s) => s.id + ":" + s.status).join(",");
  if (key === view.graphKey) return;
  let svg;
  try {
    svg = await (await api("/api/v1/runs/" + encodeURIComponent(doc.id) + "/graph.svg")).text();
  } catch (e) { return; /* the table still shows every status */ }
  if (!view || view.id !== doc.id) return;
  const url = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
  $("dag-img").src = url;
  $("dag-img").alt = visible("Graph of " + doc.workflow + ": " + doc.steps.map((s) => s.id + " " + s.status).join(", "));
  if (view.graphUrl) URL.revokeObjectURL(view.graphUrl);
  view.graphUrl = url;
  view.graphKey = key;
  const active = doc.steps.find((s) => ACTIVE_STEP.includes(s.status));
  if (active && active.id !== view.activeStep) scrollGraphTo(svg, active.id);
  view.activeStep = active ? active.id : null;
}

// Scrolls the graph's box so step `id` is in view: its box is read from
// the SVG (parsed, never inserted into the page).
function scrollGraphTo(svg, id) {
  try {
    const xml = new DOMParser().parseFromString(svg, "image/svg+xml");
    const group = Array.from(xml.querySelectorAll("g.lb-step")).find((g) => g.getAttribute("id") === "lb-step-" + id);
    const rect = group && group.querySelector("rect");
    if (!rect) return;
    const x = Number(rect.getAttribute("x"));
    const y = Number(rect.getAttribute("y"));
    const box = $("dag");
    box.scrollLeft = Math.max(0, x - box.clientWidth / 2 + Number(rect.getAttribute("width")) / 2);
    box.scrollTop = Math.max(0, y - box.clientHeight / 2);
  } catch (e) { /* scrolling is a convenience */ }
}

async function refreshTimeline(doc) {
  const key = JSON.stringify([doc.status, doc.steps.map((s) => [s.status, s.attempts.length])]);
  if (key === view.timelineKey) return;
  try {
    const blob = await (await api("/api/v1/runs/" + encodeURIComponent(doc.id) + "/timeline.svg")).blob();
    if (!view || view.id !== doc.id) return;
    const url = URL.createObjectURL(blob);
    $("timeline-img").src = url;
    $("timeline-img").alt = visible("Timeline of every attempt of run " + shortId(doc.id) + (doc.rto_ms ? " against its RTO of " + human(doc.rto_ms) : ""));
    if (view.timelineUrl) URL.revokeObjectURL(view.timelineUrl);
    view.timelineUrl = url;
    view.timelineKey = key;
  } catch (e) { /* the table has the same times */ }
}

// ----- operator controls ---------------------------------------------------------

function renderControls(doc) {
  const active = !TERMINAL.includes(doc.status);
  const key = JSON.stringify([active, doc.paused, me && me.may.operate, view.retryOpen]);
  if (key === view.controlsKey) return;
  view.controlsKey = key;
  if (!me || !me.may.operate) { $("controls").replaceChildren(); return; }
  const post = (path, body, what) => async () => {
    try {
      const answer = await postJson("/api/v1/runs/" + encodeURIComponent(doc.id) + path, body);
      say($("controls-answer"), true, what + ": requested (" + answer.requested + "); the run's worker applies it.");
    } catch (e) { say($("controls-answer"), false, what + ": " + refusal(e)); }
  };
  const parts = [];
  if (active) {
    parts.push(el("button", { type: "button", onclick: post("/cancel", {}, "Cancel") }, "Cancel (roll back)"));
    parts.push(el("button", { type: "button", class: "reject", onclick: (e) => confirmTyped(e.target, "Cancel without rolling back: type the run's first 8 characters", doc.id.slice(0, 8), post("/cancel", { no_rollback: true }, "Cancel without rollback")) }, "Cancel without rollback…"));
    parts.push(doc.paused
      ? el("button", { type: "button", onclick: post("/resume", {}, "Resume") }, "Resume")
      : el("button", { type: "button", onclick: post("/pause", {}, "Pause") }, "Pause"));
  }
  parts.push(el("button", { type: "button", "aria-expanded": view.retryOpen ? "true" : "false", onclick: () => { view.retryOpen = !view.retryOpen; view.controlsKey = null; renderControls(doc); } }, "Retry…"));
  const box = [el("div", { class: "buttons" }, ...parts), el("output", { id: "controls-answer", "aria-live": "polite" })];
  if (view.retryOpen) box.push(retryForm(doc));
  $("controls").replaceChildren(...box);
}

// A break-glass control asks for a typed confirmation first.
function confirmTyped(button, question, expected, then) {
  const holder = button.parentElement;
  const old = holder.querySelector(".typed");
  if (old) old.remove();
  const field = el("input", { type: "text", "aria-label": question, autocomplete: "off" });
  const form = el("form", { class: "typed", onsubmit: (e) => {
    e.preventDefault();
    if (field.value.trim() !== expected) { say(note, false, "Type " + expected + " to confirm."); return; }
    form.remove();
    then();
  } }, el("label", {}, question + " (" + expected + ")", field), el("button", { type: "submit", class: "reject" }, "Confirm"),
  el("button", { type: "button", onclick: () => form.remove() }, "Never mind"));
  const note = el("output", {});
  form.append(note);
  holder.append(form);
  field.focus();
}

// Retry the whole run or from a step, with changed inputs.
function retryForm(doc) {
  const select = el("select", { id: "retry-from" }, el("option", { value: "" }, "(the failed steps: retry the run)"),
    ...doc.steps.map((s) => el("option", { value: s.id }, s.id + " (" + s.status + ")")));
  const fields = el("div", { class: "input-fields" });
  const note = el("output", { id: "retry-answer", "aria-live": "polite" });
  const form = el("form", { id: "retry-form", class: "panel", novalidate: true }, el("h2", {}, "Retry"),
    el("label", { for: "retry-from" }, "From step"), select, fields,
    el("button", { type: "submit" }, "Request retry"), note);
  let inputs = null;
  getJson("/api/v1/workflows/" + encodeURIComponent(doc.workflow)).then((wf) => {
    inputs = inputsForm(fields, wf.inputs || {}, doc.inputs || {}, "retry-");
  }).catch(() => setText(fields, "The workflow's inputs cannot be read: the run's own inputs are kept."));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {};
    if (select.value) body.from = select.value;
    if (inputs) {
      const values = inputs.values();
      if (!values) { say(note, false, "Fix the fields marked above."); return; }
      const changed = {};
      for (const [k, v] of Object.entries(values)) if (JSON.stringify(v) !== JSON.stringify((doc.inputs || {})[k])) changed[k] = v;
      if (Object.keys(changed).length) body.inputs = changed;
    }
    try {
      await postJson("/api/v1/runs/" + encodeURIComponent(doc.id) + "/retry", body);
      say(note, true, "Retry requested" + (body.from ? " from " + body.from : "") + "; the run's worker applies it.");
    } catch (err) {
      if (inputs) inputs.serverErrors(err.fields);
      say(note, false, "Retry: " + refusal(err));
    }
  });
  return form;
}

// The live clock and deadlines tick once a second on the page (no request).
setInterval(() => {
  if (view && view.kind === "run" && view.doc && !TERMINAL.includes(view.doc.status)) renderClock(view.doc);
  for (const span of document.querySelectorAll("[data-deadline]")) span.textContent = visible(countdown(span.getAttribute("data-deadline")));
}, 1000);
