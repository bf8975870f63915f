// live: following the server's event streams (Server-Sent Events) — a
// run's (`/api/v1/runs/{id}/events`, ends when the run does) and every
// run's (`/api/v1/events`, for the lists and the "waiting for me" count).
// Read through fetch rather than EventSource because EventSource cannot
// send the bearer token. A dropped stream reports "reconnecting", retries
// with backoff (0.5 s doubling to 10 s) and resumes with Last-Event-ID, so
// no event is lost. Nothing here polls.

const sleep = (delay) => new Promise((resolve) => setTimeout(resolve, delay));

// Calls `onEvent({id, kind, data})` for each complete event in `buffer`;
// returns what is left (an incomplete event).
function sseEvents(buffer, onEvent) {
  let cut;
  while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
    const block = buffer.slice(0, cut);
    buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
    let id = null;
    let kind = "message";
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith("id:")) id = line.slice(3).trim();
      else if (line.startsWith("event:")) kind = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (data.length) {
      let parsed = null;
      try { parsed = JSON.parse(data.join("\n")); } catch (e) { /* keep-alive or not JSON */ }
      onEvent({ id, kind, data: parsed });
    }
  }
  return buffer;
}

// Follows `path` until `stop()` (or the server ends the stream and
// `endless` is false). Handlers: onEvent(event), onState("live" |
// "reconnecting"), onEnd(). Returns {stop}.
function followStream(path, handlers, endless) {
  let stopped = false;
  let abort = null;
  let lastId = null;
  (async () => {
    let backoff = 500;
    while (!stopped) {
      abort = new AbortController();
      try {
        const headers = { Authorization: "Bearer " + token(), Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const res = await fetch(path, { headers, signal: abort.signal });
        if (res.status === 401) { signOut("Your token was refused (401). Enter a valid API token."); return; }
        if (!res.ok || !res.body) throw new Error(res.status + " " + res.statusText);
        backoff = 500;
        if (handlers.onState) handlers.onState("live");
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buffer = sseEvents(buffer + decoder.decode(value, { stream: true }), (ev) => {
            if (ev.id) lastId = ev.id;
            if (!stopped && handlers.onEvent) handlers.onEvent(ev);
          });
        }
        if (!endless && !stopped) { stopped = true; if (handlers.onEnd) handlers.onEnd(); return; }
      } catch (e) {
        if (stopped || (abort && abort.signal.aborted)) return;
      }
      if (stopped) return;
      if (handlers.onState) handlers.onState("reconnecting");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 10000);
    }
  })();
  return { stop() { stopped = true; if (abort) abort.abort(); } };
}

// Runs `fn` at most once at a time; a call while it runs runs it once more
// afterwards (every event re-reads, none is dropped, reads never pile up).
function coalesced(fn) {
  let running = false;
  let again = false;
  return async function run() {
    if (running) { again = true; return; }
    running = true;
    try {
      do { again = false; await fn(); } while (again);
    } finally { running = false; }
  };
}

// ----- every run's events: the lists and the header count ------------------

let everything = null; // the stream of /api/v1/events while signed in
let onAnyEvent = null; // the current page's reaction to events of any run: onAnyEvent(events)

function followEverything() {
  if (everything) return;
  let soon = null;
  let batch = [];
  everything = followStream("/api/v1/events", {
    onEvent: (ev) => {
      // A burst of events (a 100-step fan-out) is one refresh.
      batch.push(ev);
      clearTimeout(soon);
      soon = setTimeout(() => {
        const events = batch;
        batch = [];
        refreshWaitingCount();
        if (onAnyEvent) onAnyEvent(events);
      }, 250);
    },
    onState: (state) => {
      if (view && view.kind !== "run") setText($("live"), state === "live" ? "live" : "reconnecting…");
      // Events missed while away are replayed; the count is re-read too.
      if (state === "live") refreshWaitingCount();
    },
  }, true);
}

function stopEverything() {
  if (everything) everything.stop();
  everything = null;
}
