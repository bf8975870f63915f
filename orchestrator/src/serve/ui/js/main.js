// main: signing in and out, the routes (/, /runs/{id}, /waiting,
// /workflows, /workflows/{name}) and the wiring of the page's controls.

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  leaveRun();
  stopEverything();
  me = null;
  view = null;
  onAnyEvent = null;
  show("login");
  setText($("login-error"), message || "");
  $("token").focus();
}

async function loadMe() {
  me = await getJson("/api/v1/me");
  setText($("whoami"), me.name + " (" + me.roles.join(", ") + ")");
}

// Who is signed in is read beside the page's first data, not before it;
// once known, the page is drawn again with the controls the roles allow.
function whoAmI() {
  loadMe().then(() => {
    if (!view) return;
    if (view.kind === "run") { view.stepsKey = null; view.controlsKey = null; refreshRun(); }
    else if (view.kind === "workflow") refreshWorkflow();
  }).catch(() => { /* a refused token signs out in api() */ });
}

async function route() {
  if (!token()) { signOut(); return; }
  if (!me) whoAmI();
  followEverything(); // its first connection reads the "waiting for me" count
  leaveRun();
  closeDrawer();
  const path = location.pathname;
  let m;
  if ((m = path.match(/^\/runs\/([^/]+)$/))) openRun(decodeURIComponent(m[1]));
  else if (path === "/waiting") openWaiting();
  else if (path === "/workflows") openWorkflows();
  else if ((m = path.match(/^\/workflows\/([^/]+)$/))) openWorkflow(decodeURIComponent(m[1]));
  else openRuns();
}

function go(path) { history.pushState(null, "", path); route(); }

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const t = $("token").value.trim();
  if (!t) return;
  sessionStorage.setItem(TOKEN_KEY, t);
  try {
    await loadMe();
    $("token").value = "";
    setText($("login-error"), "");
    route();
  } catch (err) {
    if (err.status !== 401) setText($("login-error"), "Cannot reach the API: " + err.message);
  }
});
$("signout").addEventListener("click", () => signOut());
$("back").addEventListener("click", (e) => { e.preventDefault(); go("/"); });
$("back-workflows").addEventListener("click", (e) => { e.preventDefault(); go("/workflows"); });
for (const a of document.querySelectorAll("#nav a")) {
  a.addEventListener("click", (e) => { if (e.button === 0 && !e.ctrlKey && !e.metaKey) { e.preventDefault(); go(a.getAttribute("href")); } });
}
$("drawer-close").addEventListener("click", closeDrawer);
document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("drawer").hidden) closeDrawer(); });
$("start").addEventListener("submit", startRun);
wireList();
window.addEventListener("popstate", route);
route();
