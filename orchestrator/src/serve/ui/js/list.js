// list: the runs, newest first, in keyset pages of 50 ("showing 1–50 of
// 1,234", Older / Newer), searched by run id or workflow and filtered by
// status and mode. The filters live in the address (/?q=db&status=failed)
// so a filtered list can be shared. The first page follows every run's
// events; older pages do not change.
const PAGE = 50;

function filtersFromAddress() {
  const q = new URLSearchParams(location.search);
  $("search").value = q.get("q") || "";
  $("status").value = q.get("status") || "";
  $("mode").value = q.get("mode") || "";
  $("wf-filter").value = q.get("workflow") || "";
}

// The list's query (`q`, `status`, `mode`, `workflow`) as the form has it.
function listQuery() {
  const q = new URLSearchParams();
  if ($("search").value.trim()) q.set("q", $("search").value.trim());
  for (const id of ["status", "mode"]) if ($(id).value) q.set(id, $(id).value);
  if ($("wf-filter").value.trim()) q.set("workflow", $("wf-filter").value.trim());
  return q;
}

function openRuns() {
  view = { kind: "runs", pages: [null], count: null };
  show("runs");
  document.title = "Runs · lifeboat";
  filtersFromAddress();
  onAnyEvent = () => { if (view && view.kind === "runs" && view.pages.length === 1) refreshRuns(); };
  refreshRuns();
}

// Filters changed: back to the first page, the address updated.
function filtersChanged() {
  if (!view || view.kind !== "runs") return;
  view.pages = [null];
  view.count = null;
  const q = listQuery().toString();
  history.replaceState(null, "", "/" + (q ? "?" + q : ""));
  refreshRuns();
}

const refreshRuns = coalesced(async () => {
  if (!view || view.kind !== "runs") return;
  const q = listQuery();
  q.set("limit", String(PAGE));
  const before = view.pages[view.pages.length - 1];
  if (before) q.set("before", before);
  let runs;
  try {
    runs = await getJson("/api/v1/runs?" + q);
  } catch (e) {
    if (e.status !== 401) say($("runs-note"), false, "Cannot list runs: " + e.message);
    return;
  }
  if (!view || view.kind !== "runs") return;
  $("runs-body").replaceChildren(...runs.map((r) => el("tr", {},
    el("td", { class: "mono" }, link("/runs/" + encodeURIComponent(r.id), shortId(r.id), { title: r.id })),
    el("td", {}, r.workflow, r.mode === "drill" ? el("span", { class: "tag" }, "drill") : null),
    el("td", {}, badge(r.status), r.paused ? el("span", { class: "tag" }, "paused") : null),
    el("td", {}, when(r.created_at)),
    el("td", {}, duration(r.started_at, r.finished_at)),
    el("td", { class: "err" }, r.error || ""))));
  say($("runs-note"), true, runs.length ? "" : "No runs match.");
  const page = view.pages.length;
  view.older = runs.length === PAGE ? runs[runs.length - 1].id : null;
  $("older").hidden = !view.older;
  $("newer").hidden = page === 1;
  view.shown = runs.length;
  pageNote();
  mark("lifeboat:runs-shown");
  // The count after the rows: rows first, however long counting takes.
  try {
    const qc = listQuery();
    const count = await getJson("/api/v1/runs/count?" + qc);
    if (!view || view.kind !== "runs") return;
    view.count = count;
    pageNote();
  } catch (e) { /* the rows still show */ }
  await refreshFreshness();
});

// "showing 51–100 of 1,234" (or "of 10,000+" past the server's cap).
function pageNote() {
  const first = (view.pages.length - 1) * PAGE + 1;
  const n = view.shown || 0;
  let text = n ? "showing " + first.toLocaleString("en") + "–" + (first + n - 1).toLocaleString("en") : "";
  if (n && view.count) text += " of " + (view.count.more ? view.count.count.toLocaleString("en") + "+ runs" : plural(view.count.count, "run"));
  setText($("page-note"), text);
}

// Each scenario's freshness (GET /api/v1/drills/freshness): overdue ones in red.
async function refreshFreshness() {
  try {
    const all = await getJson("/api/v1/drills/freshness");
    if (!view || view.kind !== "runs") return;
    const rows = [];
    for (const f of all.filter((f) => f.drill_every || f.scenarios.some((s) => s.last))) {
      for (const s of f.scenarios) {
        rows.push(el("tr", {},
          el("td", {}, link("/workflows/" + encodeURIComponent(f.workflow), f.workflow)),
          el("td", {}, s.scenario || "(no scenario)"),
          el("td", {}, f.drill_every || "-"),
          el("td", s.overdue ? { class: "err" } : {}, s.summary)));
      }
    }
    $("fresh-body").replaceChildren(...rows);
    $("fresh").hidden = rows.length === 0;
  } catch (e) { /* the runs still show */ }
}

function wireList() {
  for (const id of ["status", "mode"]) $(id).addEventListener("change", filtersChanged);
  for (const id of ["search", "wf-filter"]) $(id).addEventListener("input", () => schedule(filtersChanged, 300));
  $("older").addEventListener("click", () => { if (view.older) { view.pages.push(view.older); refreshRuns(); } });
  $("newer").addEventListener("click", () => { if (view.pages.length > 1) { view.pages.pop(); refreshRuns(); } });
  $("filter").addEventListener("submit", (e) => e.preventDefault());
}
