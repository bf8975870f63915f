// drawer: one step in full (GET /api/v1/runs/{id}/steps/{step}) — kind,
// needs and what undoes it, every attempt (forward and rollback: worker,
// started, ended, duration, exit or HTTP status, error) with its stdout and
// stderr (control characters made visible, long output in pages of 200
// lines), the outputs as JSON (a `for_each` step's items one by one), the
// step's events (who decided what), and the break-glass skip and mark.
const LINES_PER_PAGE = 200;

function openDrawer(step) {
  view.drawer = { step, pages: {} };
  $("drawer").hidden = false;
  setText($("drawer-title"), "Step " + step);
  $("drawer-body").replaceChildren(el("p", { class: "muted" }, "Loading…"));
  refreshDrawer().then(() => $("drawer-close").focus());
}

function closeDrawer() {
  if (view) view.drawer = null;
  $("drawer").hidden = true;
}

const refreshDrawer = coalesced(async () => {
  if (!view || view.kind !== "run" || !view.drawer) return;
  const { step } = view.drawer;
  let d;
  try {
    d = await getJson("/api/v1/runs/" + encodeURIComponent(view.id) + "/steps/" + encodeURIComponent(step));
  } catch (e) {
    if (e.status !== 401) $("drawer-body").replaceChildren(el("p", { class: "err" }, "Cannot read step " + step + ": " + e.message));
    return;
  }
  if (!view || !view.drawer || view.drawer.step !== step) return;
  const key = JSON.stringify(d);
  if (key === view.drawer.key) return;
  view.drawer.key = key;
  $("drawer-body").replaceChildren(...drawerContent(d));
});

function drawerContent(d) {
  const out = [];
  out.push(el("dl", { class: "facts" },
    ...fact("Status", badge(d.status)),
    ...fact("Kind", d.kind || "?"),
    ...fact("Needs", (d.needs || []).join(", ") || "nothing"),
    ...fact("Undone by", d.irreversible ? "nothing: irreversible" : d.undo ? "its rollback (" + d.undo + ")" : "nothing declared"),
    ...fact("Started", when(d.started_at)),
    ...fact("Duration", duration(d.started_at, d.finished_at)),
    ...(d.error ? fact("Error", el("span", { class: "err" }, d.error)) : []),
    ...(d.rollback ? fact("Rollback", pairs(d.rollback)) : [])));
  if (d.gate) out.push(el("h3", {}, "People"), ...gateFacts(d.gate));
  out.push(el("h3", {}, "Attempts"));
  if (!d.attempts.length) out.push(el("p", { class: "muted" }, "No attempts: " + (d.kind === "approval" || d.kind === "escalate" ? "people decide this step." : "the step has not run (or runs in the engine).")));
  for (const a of d.attempts) out.push(attemptBlock(d, a));
  const outputs = d.outputs || {};
  if (Array.isArray(outputs.items)) {
    out.push(el("h3", {}, "for_each items (" + outputs.items.length + ")"));
    out.push(el("ol", { class: "items" }, ...outputs.items.map((item) => el("li", {}, el("pre", {}, JSON.stringify(item, null, 2))))));
  } else if (Object.keys(outputs).length) {
    out.push(el("h3", {}, "Outputs"), el("pre", { tabindex: "0", "aria-label": "Outputs of step " + d.id }, JSON.stringify(outputs, null, 2)));
  }
  if (d.events.length) {
    out.push(el("h3", {}, "Events"));
    out.push(el("ol", { class: "events" }, ...d.events.map((e) => el("li", {}, el("time", {}, when(e.at)), " ", el("strong", {}, e.kind),
      e.data ? " " + eventText(e.data) : ""))));
  }
  if (me && me.may.operate && view.doc && !TERMINAL.includes(view.doc.status)) out.push(breakGlass(d));
  return out;
}

// "by bob: checked lag" for a decision; the data as JSON otherwise.
function eventText(data) {
  const by = data.by || data.approved_by || data.rejected_by || data.acked_by;
  if (by) return "by " + (Array.isArray(by) ? by.join(", ") : by) + (data.comment ? ": “" + data.comment + "”" : "") + (data.reason ? " — " + data.reason : "");
  return JSON.stringify(data);
}

function attemptBlock(d, a) {
  const status = (d.outputs && a.status === "succeeded" && d.outputs.exit_code != null) ? "exit " + d.outputs.exit_code
    : (d.outputs && a.status === "succeeded" && d.outputs.status != null) ? "HTTP " + d.outputs.status : "";
  const box = el("section", { class: "attempt" },
    el("h4", {}, (a.phase === "rollback" ? "Rollback attempt " : "Attempt ") + a.n + " ", badge(a.status), status ? " " + status : ""),
    el("p", { class: "muted" }, "worker " + a.worker + " · " + when(a.started_at) + (a.finished_at ? " → " + when(a.finished_at) : " → running") + (a.duration_ms != null ? " · " + human(a.duration_ms) : "")),
    a.error ? el("p", { class: "err" }, a.error) : null);
  for (const stream of ["stdout", "stderr"]) {
    if (a[stream]) box.append(outputPager(d.id + "-" + a.phase + "-" + a.n + "-" + stream, stream, a[stream]));
  }
  return box;
}

// Long output in pages of LINES_PER_PAGE lines, newest page kept when
// re-drawn; every character made visible (the text is set, never parsed).
function outputPager(key, name, text) {
  const lines = text.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const pages = Math.max(1, Math.ceil(lines.length / LINES_PER_PAGE));
  const state = view.drawer.pages;
  if (state[key] === undefined) state[key] = pages - 1; // the end first: where errors are
  const pre = el("pre", { tabindex: "0", "aria-label": name });
  const note = el("span", { class: "muted" });
  const draw = () => {
    const p = state[key];
    setText(pre, lines.slice(p * LINES_PER_PAGE, (p + 1) * LINES_PER_PAGE).join("\n"));
    setText(note, pages > 1 ? "lines " + (p * LINES_PER_PAGE + 1) + "–" + Math.min(lines.length, (p + 1) * LINES_PER_PAGE) + " of " + lines.length : plural(lines.length, "line"));
    prev.disabled = p === 0;
    next.disabled = p === pages - 1;
  };
  const prev = el("button", { type: "button", onclick: () => { state[key]--; draw(); } }, "Earlier");
  const next = el("button", { type: "button", onclick: () => { state[key]++; draw(); } }, "Later");
  const nav = pages > 1 ? el("span", { class: "pager" }, prev, next) : null;
  const box = el("div", { class: "output" }, el("p", {}, el("strong", {}, name), " ", note, " ", nav), pre);
  draw();
  return box;
}

// Skip or mark the step by hand: typed confirmation, audited by the server.
function breakGlass(d) {
  const note = el("output", { "aria-live": "polite" });
  const act = (path, body, what) => async () => {
    try {
      const answer = await postJson("/api/v1/runs/" + encodeURIComponent(view.id) + "/steps/" + encodeURIComponent(d.id) + path, body);
      say(note, true, what + ": requested (" + answer.requested + ") and written to the audit log.");
    } catch (e) { say(note, false, what + ": " + refusal(e)); }
  };
  const holder = el("div", { class: "buttons" });
  const ask = (label, what, path, body) => el("button", { type: "button", class: "reject", onclick: (e) => confirmTyped(e.target, what + ": type the step's name", d.id, act(path, body, what)) }, label);
  if (!["succeeded", "skipped", "rolled_back"].includes(d.status)) holder.append(ask("Skip…", "Skip step " + d.id, "/skip", {}));
  if (d.status !== "succeeded") {
    holder.append(ask("Mark succeeded…", "Mark step " + d.id + " succeeded", "/mark", { outcome: "succeeded" }));
    holder.append(ask("Mark failed…", "Mark step " + d.id + " failed", "/mark", { outcome: "failed" }));
  }
  return el("section", { class: "break-glass" }, el("h3", {}, "Break glass"),
    el("p", { class: "muted" }, "For a step a person finished, or gave up on, by hand. Each asks you to type the step's name and is audited under your name."), holder, note);
}
