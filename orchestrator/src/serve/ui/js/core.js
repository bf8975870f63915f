// core: what every page uses — the token, the API client, text made
// visible, element building, formatting, and which section shows.
// Every value from the server reaches the page as text (text nodes,
// textContent), never markup, and passes through visible() first.
const TOKEN_KEY = "lifeboat.token";
const TERMINAL = ["succeeded", "failed", "rolled_back", "rollback_failed", "cancelled"];
const SECTIONS = ["login", "runs", "run", "waiting", "workflows", "workflow"];
const $ = (id) => document.getElementById(id);
let timer = null;
let view = null; // the page shown: {kind: "runs" | "run" | "waiting" | "workflows" | "workflow", …}
let me = null; // GET /api/v1/me: {name, roles, may: {read, operate, decide}}

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
  constructor(status, message, fields) { super(message); this.status = status; this.fields = fields || {}; }
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers.Authorization = "Bearer " + token();
  const res = await fetch(path, opts);
  if (res.status === 401) { signOut("Your token was refused (401). Enter a valid API token."); throw new HttpError(401, "unauthorized"); }
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    let fields = {};
    try {
      const body = await res.json();
      if (body && body.error) { message = body.error.message; fields = body.error.fields || {}; }
    } catch (e) { /* not JSON */ }
    throw new HttpError(res.status, message, fields);
  }
  return res;
}

const getJson = async (path) => (await api(path)).json();

async function postJson(path, body) {
  const res = await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
  return res.json();
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, visible(v === true ? "" : v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(visible(c)));
  }
  return node;
}

const badge = (status) => el("span", { class: "badge s-" + status }, status || "");
const shortId = (id) => (id || "").slice(0, 13);
const when = (t) => (t ? new Date(t).toLocaleString() : "");
const ms = (t) => (t ? new Date(t).getTime() : null);
const plural = (n, word) => n.toLocaleString("en") + " " + word + (n === 1 ? "" : "s");

// 850 ms, 12 s, 4 m 05 s, 2 h 10 m.
function human(msValue) {
  const v = Math.max(0, Math.round(msValue));
  if (v < 1000) return v + " ms";
  const s = Math.floor(v / 1000);
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " m " + String(s % 60).padStart(2, "0") + " s";
  return Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " m";
}

function duration(start, end) {
  if (!start) return "";
  return human((end ? ms(end) : Date.now()) - ms(start));
}

// `name = value` pairs of an object as the API returns it (secrets
// arrive already redacted by the server), as text.
function pairs(obj) {
  if (!obj || typeof obj !== "object") return "";
  return Object.entries(obj).map(([k, v]) => k + " = " + (typeof v === "string" ? v : JSON.stringify(v))).join("; ");
}

const fact = (k, v) => [el("dt", {}, k), el("dd", {}, v)];

// A performance mark the first time something is shown on a page
// (benches/ui_bench.py reads them: time from navigation to first rows).
const mark = (name) => {
  if (typeof performance !== "undefined" && performance.getEntriesByName(name).length === 0) performance.mark(name);
};

function schedule(fn, delay) { clearTimeout(timer); timer = setTimeout(fn, delay); }

function show(section) {
  for (const id of SECTIONS) $(id).hidden = id !== section;
  $("signout").hidden = section === "login";
  $("nav").hidden = section === "login";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.section === section || (section === "run" && a.dataset.section === "runs") || (section === "workflow" && a.dataset.section === "workflows")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

// A short message in a section's status line: ok (green) or not (red).
function say(node, ok, text) {
  node.className = ok ? "ok" : "bad";
  setText(node, text);
}

// The server's refusal as a person reads it: "409 — run … has ended".
const refusal = (e) => (e.status ? e.status + " — " : "") + e.message;

// An in-page link that routes without reloading.
function link(path, text, attrs) {
  return el("a", Object.assign({ href: path, onclick: (e) => { if (e.button === 0 && !e.ctrlKey && !e.metaKey) { e.preventDefault(); go(path); } } }, attrs || {}), text);
}

// Under 640 px the tables are stacked cards (app.css); each cell carries
// its column's heading as `data-label`, which the card shows before it.
// Kept current for every table body whatever redraws it.
function labelCells(tbody) {
  const heads = Array.from(tbody.closest("table").querySelectorAll("thead th")).map((th) => th.textContent);
  for (const tr of tbody.rows) {
    Array.from(tr.cells).forEach((td, i) => { if (heads[i] && !td.hasAttribute("colspan")) td.dataset.label = heads[i]; });
  }
}
for (const tbody of document.querySelectorAll("tbody")) {
  new MutationObserver(() => labelCells(tbody)).observe(tbody, { childList: true });
}
