// catalog: the workflows — each with its triggers, RTO/RPO objectives,
// last run and drill freshness — and one workflow's page: its graph, its
// inputs, its runs, and (for operators) the form that starts a run.

function triggerText(t) {
  if (t.webhook) return "webhook " + t.webhook + (Object.keys(t.match || {}).length ? " when " + pairs(t.match) : "");
  if (t.schedule) {
    const s = t.schedule;
    return (s.mode === "drill" ? "drill " + (s.scenario ? s.scenario + " " : "") : "schedule ") + s.cron + (s.timezone && s.timezone !== "UTC" ? " (" + s.timezone + ")" : "");
  }
  return Object.keys(t).join(", ");
}

function objectivesText(o) {
  if (!o) return "none";
  return ["rto", "rpo", "drill_every"].filter((k) => o[k]).map((k) => k.toUpperCase().replace("DRILL_EVERY", "drill every") + " " + o[k]).join(" · ") || "none";
}

function openWorkflows() {
  view = { kind: "workflows" };
  show("workflows");
  document.title = "Workflows · lifeboat";
  onAnyEvent = () => refreshCatalog();
  refreshCatalog();
}

const refreshCatalog = coalesced(async () => {
  if (!view || view.kind !== "workflows") return;
  let list;
  let fresh = [];
  try {
    [list, fresh] = await Promise.all([getJson("/api/v1/workflows"), getJson("/api/v1/drills/freshness").catch(() => [])]);
  } catch (e) {
    if (e.status !== 401) say($("workflows-note"), false, "Cannot list workflows: " + e.message);
    return;
  }
  if (!view || view.kind !== "workflows") return;
  const freshness = {};
  for (const f of fresh) freshness[f.workflow] = f;
  list.sort((a, b) => a.name.localeCompare(b.name));
  $("workflows-body").replaceChildren(...list.map((w) => {
    const f = freshness[w.name];
    const drilled = f ? f.scenarios.map((s) => (s.scenario ? s.scenario + ": " : "") + s.summary).join("; ") : "";
    return el("tr", {},
      el("td", {}, link("/workflows/" + encodeURIComponent(w.name), w.name), w.description ? el("div", { class: "muted" }, w.description) : null),
      el("td", {}, (w.triggers || []).map(triggerText).join("; ") || "by hand"),
      el("td", {}, objectivesText(w.objectives)),
      el("td", {}, String(w.steps)),
      el("td", {}, w.last_run ? [link("/runs/" + encodeURIComponent(w.last_run.id), when(w.last_run.created_at)), " ", badge(w.last_run.status)] : "never"),
      el("td", f && f.overdue ? { class: "err" } : {}, drilled || "never drilled"));
  }));
  say($("workflows-note"), true, list.length ? "" : "No workflows: put YAML files in the workflows directory.");
  mark("lifeboat:workflows-shown");
});

function openWorkflow(name) {
  view = { kind: "workflow", name, graphUrl: null, form: null };
  show("workflow");
  document.title = visible(name + " · lifeboat");
  setText($("workflow-title"), "Workflow " + name);
  for (const id of ["workflow-facts", "start-fields"]) $(id).replaceChildren();
  setText($("start-answer"), "");
  $("wf-img").removeAttribute("src");
  onAnyEvent = () => refreshWorkflow();
  refreshWorkflow();
}

const refreshWorkflow = coalesced(async () => {
  if (!view || view.kind !== "workflow") return;
  const name = view.name;
  let wf;
  try {
    wf = await getJson("/api/v1/workflows/" + encodeURIComponent(name));
  } catch (e) {
    if (e.status !== 401) say($("workflow-note"), false, "Cannot read workflow " + name + ": " + e.message);
    return;
  }
  if (!view || view.kind !== "workflow" || view.name !== name) return;
  const fresh = wf.freshness;
  $("workflow-facts").replaceChildren(
    ...(wf.description ? fact("Description", wf.description) : []),
    ...fact("File", el("code", {}, wf.file)),
    ...fact("Triggers", (wf.triggers || []).map(triggerText).join("; ") || "by hand"),
    ...fact("Objectives", objectivesText(wf.objectives)),
    ...fact("Steps", String(wf.steps)),
    ...fact("Last run", wf.last_run ? [link("/runs/" + encodeURIComponent(wf.last_run.id), when(wf.last_run.created_at)), " ", badge(wf.last_run.status)] : "never"),
    ...fact("Drills", fresh && fresh.scenarios ? fresh.scenarios.map((s) => (s.scenario ? s.scenario + ": " : "") + s.summary).join("; ") : "never drilled"),
    ...fact("Runs", link("/?workflow=" + encodeURIComponent(name), "all runs of " + name)));
  if (view.graphUrl === null) {
    try {
      const blob = await (await api("/api/v1/workflows/" + encodeURIComponent(name) + "/graph.svg")).blob();
      view.graphUrl = URL.createObjectURL(blob);
      $("wf-img").src = view.graphUrl;
      $("wf-img").alt = visible("Graph of " + name + ": " + wf.graph.nodes.map((n) => n.id + " (" + n.kind + ")").join(", "));
    } catch (e) { /* the facts still show */ }
  }
  $("start").hidden = !(me && me.may.operate);
  if (!view.form) view.form = inputsForm($("start-fields"), wf.inputs || {}, {}, "start-");
  mark("lifeboat:workflow-shown");
});

async function startRun(e) {
  e.preventDefault();
  if (!view || view.kind !== "workflow" || !view.form) return;
  const inputs = view.form.values();
  if (!inputs) { say($("start-answer"), false, "Fix the fields marked above."); return; }
  try {
    const created = await postJson("/api/v1/workflows/" + encodeURIComponent(view.name) + "/runs", { inputs });
    go("/runs/" + encodeURIComponent(created.id));
  } catch (err) {
    view.form.serverErrors(err.fields);
    say($("start-answer"), false, "Not started: " + refusal(err));
  }
}
