"use strict";
// lifeboat web UI: runs, a run's live DAG and steps, and people's decisions,
// all through the JSON API with the user's bearer token. No framework; every
// value from the server reaches the page as text (text nodes, textContent),
// never markup, and passes through visible() first.
(function () {
  const TOKEN_KEY = "lifeboat.token";
  const TERMINAL = ["succeeded", "failed", "rolled_back", "rollback_failed", "cancelled"];
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let view = null; // {kind: "runs"} or {kind: "run", id, kinds, graphKey, graphUrl}

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  // Control characters made visible: the rule of orchestrator/src/text.rs
  // (`visible`), mirrored here; tests/ui.rs checks that the two agree. A
  // step's output quoted in an error may hold ESC sequences, carriage
  // returns or bidirectional overrides; the page shows them as \x1b, \r,
  // \u{202e} instead of hiding them or letting them reorder the text.
  const HIDDEN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
  function visible(value) {
    return String(value == null ? "" : value).replace(HIDDEN, (c) => {
      if (c === "\r") return "\\r";
      const code = c.charCodeAt(0);
      return code < 0x80 ? "\\x" + code.toString(16).padStart(2, "0") : "\\u{" + code.toString(16) + "}";
    });
  }
  // Every text the page shows goes through here.
  const setText = (node, value) => { node.textContent = visible(value); };

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers.Authorization = "Bearer " + token();
    const res = await fetch(path, opts);
    if (res.status === 401) { signOut("Your token was refused (401). Enter a valid API token."); throw new HttpError(401, "unauthorized"); }
    if (!res.ok) {
      let message = res.status + " " + res.statusText;
      try { const body = await res.json(); if (body && body.error) message = body.error.message; } catch (e) { /* not JSON */ }
      throw new HttpError(res.status, message);
    }
    return res;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, visible(v));
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(visible(c)));
    return node;
  }

  const badge = (status) => el("span", { class: "badge s-" + status }, status || "");
  const shortId = (id) => (id || "").slice(0, 13);
  const when = (t) => (t ? new Date(t).toLocaleString() : "");

  function duration(start, end) {
    if (!start) return "";
    const ms = (end ? new Date(end) : new Date()) - new Date(start);
    if (ms < 1000) return ms + " ms";
    const s = Math.round(ms / 1000);
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    return m < 60 ? m + " m " + (s % 60) + " s" : Math.floor(m / 60) + " h " + (m % 60) + " m";
  }

  // A performance mark the first time something is shown on a page
  // (benches/ui_bench.py reads them: time from navigation to first rows).
  const mark = (name) => {
    if (typeof performance !== "undefined" && performance.getEntriesByName(name).length === 0) performance.mark(name);
  };

  function schedule(fn, ms) { clearTimeout(timer); timer = setTimeout(fn, ms); }

  function show(section) {
    for (const id of ["login", "runs", "run"]) $(id).hidden = id !== section;
    $("signout").hidden = section === "login";
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(timer);
    stopFollowing();
    view = null;
    show("login");
    setText($("login-error"), message || "");
    $("token").focus();
  }

  function route() {
    if (!token()) { signOut(); return; }
    const m = location.pathname.match(/^\/runs\/([^/]+)$/);
    if (m) openRun(decodeURIComponent(m[1])); else openRuns();
  }

  function go(path) { history.pushState(null, "", path); route(); }

  // ----- runs list -----------------------------------------------------------

  function openRuns() {
    stopFollowing();
    view = { kind: "runs", pages: [null] }; // keyset cursors: `before` of each page seen
    show("runs");
    document.title = "Runs · lifeboat";
    refreshRuns();
  }

  async function refreshRuns() {
    if (!view || view.kind !== "runs") return;
    const q = new URLSearchParams({ limit: "50" });
    if ($("status").value) q.set("status", $("status").value);
    if ($("workflow").value.trim()) q.set("workflow", $("workflow").value.trim());
    const before = view.pages[view.pages.length - 1];
    if (before) q.set("before", before);
    try {
      const runs = await (await api("/api/v1/runs?" + q)).json();
      if (!view || view.kind !== "runs") return;
      runs.sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
      $("runs-body").replaceChildren(...runs.map((r) => el("tr", {},
        el("td", { class: "mono" }, el("a", { href: "/runs/" + encodeURIComponent(r.id), title: r.id, onclick: (e) => { e.preventDefault(); go("/runs/" + encodeURIComponent(r.id)); } }, shortId(r.id))),
        el("td", {}, r.workflow + (r.mode === "drill" ? " (drill)" : "")),
        el("td", {}, badge(r.status)),
        el("td", {}, when(r.created_at)),
        el("td", {}, duration(r.started_at, r.finished_at)),
        el("td", { class: "err" }, r.error || ""))));
      setText($("runs-note"), runs.length ? "" : "No runs match.");
      // Keyset pages (`before` = the last id shown): a full page may have older runs.
      const page = view.pages.length;
      view.older = runs.length === 50 ? runs[runs.length - 1].id : null;
      $("older").hidden = !view.older;
      $("newer").hidden = page === 1;
      setText($("page-note"), runs.length ? "page " + page + " · showing " + runs.length + " run" + (runs.length === 1 ? "" : "s") : "");
      mark("lifeboat:runs-shown");
      setText($("live"), "updated " + new Date().toLocaleTimeString());
    } catch (e) {
      if (e.status !== 401) setText($("runs-note"), "Cannot list runs: " + e.message);
    }
    await refreshFreshness();
    if (view && view.kind === "runs" && view.pages.length === 1) schedule(refreshRuns, 5000);
  }

  // Each scenario's freshness (GET /api/v1/drills/freshness): overdue ones in red.
  async function refreshFreshness() {
    try {
      const all = await (await api("/api/v1/drills/freshness")).json();
      if (!view || view.kind !== "runs") return;
      const rows = [];
      for (const f of all.filter((f) => f.drill_every || f.scenarios.some((s) => s.last))) {
        for (const s of f.scenarios) {
          rows.push(el("tr", {},
            el("td", {}, f.workflow),
            el("td", {}, s.scenario || "(no scenario)"),
            el("td", {}, f.drill_every || "-"),
            el("td", s.overdue ? { class: "err" } : {}, s.summary)));
        }
      }
      $("fresh-body").replaceChildren(...rows);
      $("fresh").hidden = rows.length === 0;
    } catch (e) { /* the runs still show */ }
  }

  // ----- one run -------------------------------------------------------------

  function openRun(id) {
    stopFollowing();
    view = { kind: "run", id: id, kinds: null, graphKey: null, graphUrl: null, following: false, connected: false, abort: null, comments: {}, answers: {} };
    show("run");
    setText($("run-title"), "Run " + shortId(id));
    setText($("run-message"), "");
    $("run-facts").replaceChildren();
    $("steps-body").replaceChildren();
    $("notes-body").replaceChildren();
    $("dag-img").removeAttribute("src");
    refreshRun();
  }

  // Step kinds from the workflow, to offer only the decisions a step takes.
  async function loadKinds(workflow) {
    try {
      const wf = await (await api("/api/v1/workflows/" + encodeURIComponent(workflow))).json();
      const kinds = {};
      for (const n of wf.graph.nodes) kinds[n.id] = n.kind;
      return kinds;
    } catch (e) { return {}; }
  }

  function decisionsFor(kind) {
    if (kind === "approval") return ["approve", "reject"];
    if (kind === "escalate") return ["ack"];
    if (kind === undefined) return ["approve", "reject", "ack"];
    return [];
  }

  // The comment comes from the field beside the buttons (no browser
  // prompt); the answer, or the server's refusal, shows next to them.
  async function decide(run, step, decision) {
    const comment = (view.comments[step] || "").trim();
    const msg = $("run-message");
    let note;
    try {
      const res = await api("/api/v1/runs/" + encodeURIComponent(run) + "/steps/" + encodeURIComponent(step) + "/" + decision, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(comment ? { comment: comment } : {}),
      });
      const body = await res.json();
      const done = { approve: "approved", reject: "rejected", ack: "acknowledged" }[body.decision] || body.decision;
      note = { ok: true, text: "Step " + step + ": " + done + " by " + body.by + "." };
      view.comments[step] = "";
    } catch (e) {
      note = { ok: false, text: "Step " + step + ": " + (e.status ? e.status + " — " : "") + e.message };
    }
    view.answers[step] = note;
    msg.className = note.ok ? "ok" : "bad";
    setText(msg, note.text);
    refreshRun();
  }

  function decideCell(doc, s, active) {
    const kinds = view.kinds ? decisionsFor(view.kinds[s.id]) : [];
    const parts = [];
    if (s.status === "waiting" && active && kinds.length) {
      const field = el("input", { type: "text", class: "comment", "aria-label": "Comment for step " + s.id, placeholder: "comment (optional)",
        oninput: (e) => { view.comments[s.id] = e.target.value; } });
      field.value = view.comments[s.id] || "";
      parts.push(field, ...kinds.map((d) => el("button", { type: "button", class: d, "aria-label": d + " step " + s.id, onclick: () => decide(doc.id, s.id, d) }, d === "ack" ? "Ack" : d[0].toUpperCase() + d.slice(1))));
    }
    const answer = view.answers[s.id];
    if (answer) parts.push(el("output", { class: answer.ok ? "ok answer" : "bad answer", "data-step": s.id }, answer.text));
    return el("div", { class: "decide" }, ...parts);
  }

  // `name = value` pairs of an object as the API returns it (secrets
  // arrive already redacted by the server), as text.
  function pairs(obj) {
    if (!obj || typeof obj !== "object") return "";
    return Object.entries(obj).map(([k, v]) => k + " = " + (typeof v === "string" ? v : JSON.stringify(v))).join("; ");
  }

  function fact(k, v) { return [el("dt", {}, k), el("dd", {}, v)]; }

  async function refreshGraph(doc) {
    const key = doc.steps.map((s) => s.id + ":" + s.status).join(",");
    if (key === view.graphKey) return;
    try {
      const blob = await (await api("/api/v1/runs/" + encodeURIComponent(doc.id) + "/graph.svg")).blob();
      if (!view || view.id !== doc.id) return;
      const url = URL.createObjectURL(blob);
      $("dag-img").src = url;
      $("dag-img").alt = visible("Graph of " + doc.workflow + ": " + doc.steps.map((s) => s.id + " " + s.status).join(", "));
      if (view.graphUrl) URL.revokeObjectURL(view.graphUrl);
      view.graphUrl = url;
      view.graphKey = key;
    } catch (e) { /* the table still shows every status */ }
  }

  async function refreshRun() {
    if (!view || view.kind !== "run") return;
    const id = view.id;
    let doc;
    try {
      doc = await (await api("/api/v1/runs/" + encodeURIComponent(id))).json();
    } catch (e) {
      if (e.status !== 401) { $("run-message").className = "bad"; setText($("run-message"), "Cannot load run " + id + ": " + e.message); schedule(refreshRun, 3000); }
      return;
    }
    if (!view || view.id !== id) return;
    // The step kinds (which decisions each step takes) load beside the
    // first render instead of before it; their buttons appear once known.
    if (view.kinds === null && !view.kindsLoading) {
      view.kindsLoading = loadKinds(doc.workflow).then((kinds) => {
        if (!view || view.id !== id) return;
        view.kinds = kinds;
        view.stepsKey = null;
        refreshRun();
      });
    }
    document.title = visible(doc.workflow + " " + doc.status + " · lifeboat");
    $("run-title").replaceChildren(visible("Run " + shortId(doc.id) + " of " + doc.workflow + " "), badge(doc.status));
    $("run-facts").replaceChildren(
      ...fact("Id", el("code", {}, doc.id)),
      ...(doc.trace_id ? fact("Trace", el("code", {}, doc.trace_id)) : []),
      ...fact("Created", when(doc.created_at)),
      ...fact("Duration", duration(doc.started_at, doc.finished_at)),
      ...fact("Trigger", doc.trigger ? (doc.trigger.kind || "") + (doc.trigger.by ? " by " + doc.trigger.by : "") : ""),
      ...(doc.error ? fact("Error", doc.error) : []),
      ...(doc.paused ? fact("Paused", "yes: no new step starts until it is resumed") : []),
      ...(pairs(doc.inputs) ? fact("Inputs", pairs(doc.inputs)) : []),
      ...(pairs(doc.outputs) ? fact("Outputs", pairs(doc.outputs)) : []),
      ...fact("Mode", (doc.mode || "live") + (doc.scenario ? " (scenario " + doc.scenario + ")" : "")),
      ...(doc.verdict ? fact("Drill verdict", (doc.verdict.passed ? "PASSED" : "FAILED") + ": " +
        (doc.verdict.expectations || []).map((c) => (c.ok ? "PASS " : "FAIL ") + c.what + ": expected " + c.expected + ", actual " + c.actual).join("; ")) : []));
    const active = !TERMINAL.includes(doc.status);
    // Re-drawn only when something shown changed, so a comment being
    // typed (and its focus) survives events that change nothing here.
    const stepsKey = JSON.stringify([active, view.kinds !== null, view.answers, doc.steps.map((s) => [s.id, s.status, s.error, (s.attempts || []).length, s.started_at, s.finished_at])]);
    if (stepsKey !== view.stepsKey) {
      view.stepsKey = stepsKey;
      $("steps-body").replaceChildren(...doc.steps.map((s) => {
        const forward = (s.attempts || []).filter((a) => a.phase !== "rollback");
        const error = s.error || (forward.length ? forward[forward.length - 1].error : "") || "";
        return el("tr", {},
          el("td", { class: "mono" }, s.id),
          el("td", {}, badge(s.status)),
          el("td", {}, String(forward.length)),
          el("td", {}, duration(s.started_at, s.finished_at)),
          el("td", { class: "err" }, error),
          el("td", {}, decideCell(doc, s, active)));
      }));
    }
    mark("lifeboat:run-shown");
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
    await refreshGraph(doc);
    if (!active) { stopFollowing(); setText($("live"), "run finished"); return; }
    if (view && view.id === id && !view.following) follow(id);
    else if (view && view.connected) setText($("live"), "live · updated " + new Date().toLocaleTimeString());
  }

  // ----- live: the run's event stream ----------------------------------------
  // GET /api/v1/runs/{id}/events (Server-Sent Events), read through fetch
  // rather than EventSource because EventSource cannot send the bearer
  // token. Every event re-reads the run (at most one read in flight); a
  // dropped stream shows "reconnecting…" and resumes with Last-Event-ID,
  // so no event is lost. The server ends the stream when the run finishes.
  function stopFollowing() {
    if (view && view.abort) view.abort.abort();
    if (view) { view.following = false; view.abort = null; }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Calls `onEvent(id)` for each complete event in `buffer`; returns the rest.
  function sseEvents(buffer, onEvent) {
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let id = null;
      let data = false;
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("id:")) id = line.slice(3).trim();
        else if (line.startsWith("data:")) data = true;
      }
      if (data) onEvent(id);
    }
    return buffer;
  }

  async function follow(id) {
    view.following = true;
    let lastId = null;
    let backoff = 500;
    let pending = false;
    let again = false;
    const onEvent = async (eventId) => {
      if (eventId) lastId = eventId;
      if (pending) { again = true; return; }
      pending = true;
      do { again = false; await refreshRun(); } while (again && view && view.id === id);
      pending = false;
    };
    const current = () => view && view.kind === "run" && view.id === id && view.following;
    while (current()) {
      const abort = new AbortController();
      view.abort = abort;
      try {
        const headers = { Authorization: "Bearer " + token(), Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const res = await fetch("/api/v1/runs/" + encodeURIComponent(id) + "/events", { headers, signal: abort.signal });
        if (res.status === 401) { signOut("Your token was refused (401). Enter a valid API token."); return; }
        if (!res.ok || !res.body) throw new Error(res.status + " " + res.statusText);
        view.connected = true;
        backoff = 500;
        setText($("live"), "live · updated " + new Date().toLocaleTimeString());
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buffer = sseEvents(buffer + decoder.decode(value, { stream: true }), onEvent);
        }
        // The server ends the stream once the run has finished.
        if (current()) await refreshRun();
      } catch (e) {
        if (abort.signal.aborted) return;
      }
      if (!current()) return;
      view.connected = false;
      setText($("live"), "reconnecting…");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 10000);
      if (current()) await refreshRun();
    }
  }

  // ----- wiring --------------------------------------------------------------

  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    try {
      await api("/api/v1/runs?limit=1");
      $("token").value = "";
      setText($("login-error"), "");
      route();
    } catch (err) {
      if (err.status !== 401) setText($("login-error"), "Cannot reach the API: " + err.message);
    }
  });
  $("signout").addEventListener("click", () => signOut());
  $("back").addEventListener("click", (e) => { e.preventDefault(); go("/"); });
  const firstPage = () => { if (view && view.kind === "runs") view.pages = [null]; };
  $("status").addEventListener("change", () => { firstPage(); refreshRuns(); });
  $("workflow").addEventListener("input", () => { firstPage(); schedule(refreshRuns, 300); });
  $("older").addEventListener("click", () => { if (view.older) { view.pages.push(view.older); clearTimeout(timer); refreshRuns(); } });
  $("newer").addEventListener("click", () => { if (view.pages.length > 1) { view.pages.pop(); clearTimeout(timer); refreshRuns(); } });
  $("filter").addEventListener("submit", (e) => e.preventDefault());
  window.addEventListener("popstate", route);
  route();
})();
