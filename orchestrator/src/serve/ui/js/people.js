// people: steps that wait for a person — what an approval or escalation
// says (message, approvers, N-of-M with who approved, the requester kept
// out, the deadline counting down and what happens then, the escalation
// tier paged and the next page), deciding with a comment typed in the page
// (never a browser prompt), a warning before approving a step that leads to
// an irreversible one, and the "waiting for me" view with its count in the
// header. The answer, or the server's refusal, shows next to the button.

const DONE = { approve: "approved", reject: "rejected", ack: "acknowledged" };
const answers = {}; // "run/step" -> {ok, text}: the last answer next to its buttons
const comments = {}; // "run/step" -> the comment being typed

function decisionsFor(kind, gate) {
  const awaiting = gate ? gate.awaiting : null;
  if (awaiting === "ack" || kind === "escalate") return ["ack"];
  if (awaiting === "approval" || kind === "approval") return ["approve", "reject"];
  return [];
}

// "in 4 m 05 s" / "2 m 10 s ago", for a deadline.
function countdown(at) {
  const left = ms(at) - Date.now();
  return left >= 0 ? "in " + human(left) : human(-left) + " ago";
}

// The gate's facts as a list of lines; deadlines tick (data-deadline).
function gateFacts(gate, requester) {
  if (!gate) return [];
  const lines = [];
  if (gate.message) lines.push(el("p", { class: "gate-message" }, gate.message));
  if (gate.awaiting === "approval") {
    const who = gate.approvals.map((a) => a.by + (a.comment ? " (“" + a.comment + "”)" : ""));
    lines.push(el("p", { class: "nofm" }, el("strong", {}, gate.approvals.length + " of " + gate.min + " approvals"),
      who.length ? ": " + who.join(", ") : ": none yet"));
  }
  lines.push(el("p", {}, "Who may decide: " + (gate.people.length ? gate.people.join(", ") : "anyone with the approver or admin role")));
  if (gate.requester || requester) {
    lines.push(el("p", {}, "Requested by " + (gate.requester || requester) + (gate.requester ? " (exclude_requester: may not decide)" : "")));
  }
  if (gate.deadline && !gate.escalation) {
    lines.push(el("p", { class: "deadline" }, "Decide before " + when(gate.deadline) + " (",
      el("span", { "data-deadline": gate.deadline }, countdown(gate.deadline)), "), then on_timeout: " + (gate.on_timeout || "fail")));
  }
  const esc = gate.escalation;
  if (esc) {
    lines.push(el("p", { class: "escalation" }, "Escalation tier " + esc.tier + " of " + esc.tiers.length + " paged: " + (esc.paged || []).join(", ") +
      (esc.next_page ? "; next page " : ""), esc.next_page ? el("span", { "data-deadline": esc.next_page }, countdown(esc.next_page)) : null));
  }
  return lines;
}

// Steps not finished yet that approving `step` lets run, and the ones of
// them that cannot be undone.
function downstream(doc, step) {
  const children = {};
  for (const s of doc.steps) for (const n of s.needs || []) (children[n] = children[n] || []).push(s);
  const seen = new Set();
  const out = [];
  const walk = (id) => {
    for (const c of children[id] || []) {
      if (seen.has(c.id)) continue;
      seen.add(c.id);
      if (!TERMINAL.includes(c.status) && c.status !== "skipped") out.push(c);
      walk(c.id);
    }
  };
  walk(step);
  return out;
}

// Comment field, buttons and answer for one waiting step. `doc` (a run
// document) lets Approve warn about irreversible steps after it.
function decideControls(runId, step, kind, gate, doc, after) {
  const key = runId + "/" + step;
  const parts = [];
  const choices = decisionsFor(kind, gate);
  if (choices.length) {
    const field = el("input", { type: "text", class: "comment", "aria-label": "Comment for step " + step, placeholder: "comment (optional)",
      oninput: (e) => { comments[key] = e.target.value; } });
    field.value = comments[key] || "";
    parts.push(field);
    for (const d of choices) {
      const label = d === "ack" ? "Ack" : d[0].toUpperCase() + d.slice(1);
      parts.push(el("button", { type: "button", class: d, "aria-label": d + " step " + step,
        onclick: (e) => {
          const risky = d === "approve" && doc ? downstream(doc, step).filter((s) => s.irreversible) : [];
          if (risky.length) confirmIrreversible(e.target.closest(".decide"), doc, step, () => decide(runId, step, d, after));
          else decide(runId, step, d, after);
        } }, label));
    }
  }
  const answer = answers[key];
  if (answer) parts.push(el("output", { class: answer.ok ? "ok answer" : "bad answer", "data-step": step }, answer.text));
  return el("div", { class: "decide" }, ...parts);
}

// Before approving a step that leads to irreversible ones: what will run,
// and a second, explicit "Approve anyway".
function confirmIrreversible(box, doc, step, go) {
  const next = downstream(doc, step);
  const old = box.querySelector(".warn");
  if (old) old.remove();
  const warn = el("div", { class: "warn", role: "alertdialog", "aria-label": "Approving step " + step + " lets irreversible steps run" },
    el("p", {}, el("strong", {}, "Approving lets these steps run:")),
    el("ul", {}, ...next.map((s) => el("li", {}, el("code", {}, s.id), " (" + (s.kind || "step") + ")",
      s.irreversible ? el("strong", { class: "err" }, " irreversible: cannot be rolled back") : (s.undo ? " — undone by its rollback (" + s.undo + ") if the run fails" : "")))),
    el("button", { type: "button", class: "approve", onclick: () => { warn.remove(); go(); } }, "Approve anyway"),
    el("button", { type: "button", onclick: () => warn.remove() }, "Cancel"));
  box.append(warn);
  warn.querySelector("button").focus();
}

async function decide(runId, step, decision, after) {
  const key = runId + "/" + step;
  const comment = (comments[key] || "").trim();
  let note;
  try {
    const body = await postJson("/api/v1/runs/" + encodeURIComponent(runId) + "/steps/" + encodeURIComponent(step) + "/" + decision, comment ? { comment } : {});
    note = { ok: true, text: "Step " + step + ": " + (DONE[body.decision] || body.decision) + " by " + body.by + "." };
    comments[key] = "";
  } catch (e) {
    note = { ok: false, text: "Step " + step + ": " + refusal(e) };
  }
  answers[key] = note;
  if (after) after(note);
}

// ----- the header count and the "waiting for me" view ------------------------

const refreshWaitingCount = coalesced(async () => {
  if (!token()) return;
  try {
    const mine = await getJson("/api/v1/pending?mine=true");
    setText($("waiting-count"), String(mine.length));
    $("waiting-link").title = plural(mine.length, "step") + " waiting for you";
    $("waiting-count").className = mine.length ? "count hot" : "count";
  } catch (e) { /* the header keeps the last count */ }
});

function openWaiting() {
  view = { kind: "waiting" };
  show("waiting");
  document.title = "Waiting for me · lifeboat";
  onAnyEvent = () => refreshWaiting();
  refreshWaiting();
}

const refreshWaiting = coalesced(async () => {
  if (!view || view.kind !== "waiting") return;
  let all;
  try {
    all = await getJson("/api/v1/pending");
  } catch (e) {
    if (e.status !== 401) say($("waiting-note"), false, "Cannot read what is waiting: " + e.message);
    return;
  }
  if (!view || view.kind !== "waiting") return;
  // Redrawn only when something shown changed: a comment being typed
  // keeps its focus through events that change nothing here.
  const key = JSON.stringify([all, answers]);
  if (key === view.key) return;
  view.key = key;
  const mine = all.filter((p) => p.may_decide);
  const others = all.filter((p) => !p.may_decide);
  const card = (p) => el("li", { class: "card" },
    el("p", {}, el("strong", {}, p.workflow), " · step ", el("code", {}, p.step), " · ", badge(p.status), " · run ",
      link("/runs/" + encodeURIComponent(p.run), shortId(p.run), { title: p.run }), p.since ? " · waiting " + duration(p.since) : ""),
    ...gateFacts(p.gate),
    p.error ? el("p", { class: "err" }, p.error) : null,
    p.may_decide && p.gate ? decideControls(p.run, p.step, null, p.gate, null, () => { refreshWaiting(); refreshWaitingCount(); }) : null,
    p.may_decide && !p.gate ? el("p", {}, "Needs an operator: open the run to skip, mark or retry the step.") : null,
    p.why_not ? el("p", { class: "muted" }, "Not yours: " + p.why_not) : null);
  $("waiting-mine").replaceChildren(...mine.map(card));
  $("waiting-others").replaceChildren(...others.map(card));
  $("waiting-others-box").hidden = others.length === 0;
  say($("waiting-note"), true, mine.length ? plural(mine.length, "step") + " waiting for you." : "Nothing is waiting for you.");
  mark("lifeboat:waiting-shown");
});
