"""Web UI benchmark: a real `lifeboat serve` on SQLite, measured in Debian's
chromium through Playwright for Python.

    python3 benches/ui_bench.py [LIFEBOAT_BINARY]   (default target/debug/lifeboat)

1. Run page: a 200-step workflow runs to the end; the time from navigation
   start until all 200 step rows are on the page and the page is
   interactive (performance.now() in the page, so it includes fetching the
   page, the script, the run document and the graph). Target: < 300 ms.
2. Runs list: 100,000 runs inserted straight into the SQLite database
   (copies of that run with older UUIDv7-shaped ids); the time from
   navigation start to the first rows of the list. Target: < 100 ms.
   Also the API's own time for the first page and for a page deep in the
   history (keyset pagination: `before`), which must cost the same.
Prints the medians of 5 loads each (after one warm-up).
"""
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/lifeboat"))
TOKEN = "bench-token"
STEPS = 200
RUNS = 100_000
LOADS = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, path, method="GET", body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Bearer " + TOKEN)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())


def timed_api(base, path):
    samples = []
    for _ in range(LOADS + 1):
        t = time.perf_counter()
        call(base, path)
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples[1:])


def seed(db, template_id, n):
    con = sqlite3.connect(db, timeout=30)
    cols = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
    fresh = {"id": "printf('%08x-0000-7000-8000-%012x', k, k)", "root_run_id": "printf('%08x-0000-7000-8000-%012x', k, k)",
             "status": "CASE k % 3 WHEN 0 THEN 'failed' WHEN 1 THEN 'succeeded' ELSE 'rolled_back' END",
             "lease_owner": "NULL", "lease_expires_at": "NULL", "wake_at": "NULL"}
    select = ", ".join(fresh.get(c, c) for c in cols)
    con.execute(
        f"WITH RECURSIVE seq(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM seq WHERE k < ?) "
        f"INSERT INTO runs ({', '.join(cols)}) SELECT {select} FROM seq, runs WHERE runs.id = ?",
        (n, template_id),
    )
    con.commit()
    con.close()


def page_time(page, url, ready, mark):
    """Median ms from navigation start to the page's performance mark `mark`
    (set by app.js when it first draws the rows), and to Playwright seeing
    `ready` (an upper bound: it includes the driver's own round trips)."""
    samples, seen = [], []
    for _ in range(LOADS + 1):
        page.goto(url)
        page.wait_for_selector(ready, state="attached", timeout=30000)
        seen.append(page.evaluate("performance.now()"))
        samples.append(page.evaluate(f"performance.getEntriesByName({json.dumps(mark)})[0].startTime"))
        if os.environ.get("UI_BENCH_DEBUG"):
            print(url, page.evaluate("JSON.stringify([performance.getEntriesByType('navigation')[0]].concat(performance.getEntriesByType('resource')).map(e => [e.name.slice(-40), Math.round(e.startTime), Math.round(e.responseEnd)]))"))
    return statistics.median(samples[1:]), statistics.median(seen[1:])


def main():
    work = tempfile.mkdtemp(prefix="lifeboat-ui-bench-")
    os.makedirs(os.path.join(work, "workflows"))
    with open(os.path.join(work, "lifeboat.toml"), "w") as f:
        f.write('database_url = "sqlite://lifeboat.db"\nworkflows_dir = "workflows"\n'
                '[[users]]\nname = "bench"\ntoken_env = "LIFEBOAT_TOKEN_BENCH"\nroles = ["admin"]\n')
    with open(os.path.join(work, "workflows/big.yaml"), "w") as f:
        f.write("name: big\nsteps:\n")
        for i in range(STEPS):
            f.write(f"  s{i:03}:\n")
            if i:
                f.write(f"    needs: [s{(i - 1) // 2:03}]\n")
            f.write(f"    uses: set\n    with: {{ n: \"{i}\" }}\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, LIFEBOAT_TOKEN_BENCH=TOKEN, LIFEBOAT_SERVER__LISTEN=f"127.0.0.1:{port}")
    log = open(os.path.join(work, "serve.log"), "w")
    serve = subprocess.Popen([BINARY, "serve"], cwd=work, env=env, stdout=log, stderr=log)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        run = call(base, "/api/v1/workflows/big/runs", "POST", {})["id"]
        for _ in range(1200):
            if call(base, f"/api/v1/runs/{run}")["status"] == "succeeded":
                break
            time.sleep(0.1)
        else:
            sys.exit("the 200-step run did not finish")

        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=os.environ.get("LIFEBOAT_CHROMIUM", "/usr/bin/chromium"),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            context = browser.new_context()
            context.add_init_script(f"sessionStorage.setItem('lifeboat.token', {json.dumps(TOKEN)})")
            page = context.new_page()
            run_ms = page_time(page, f"{base}/runs/{run}",
                               f"#steps-body tr:nth-child({STEPS})", "lifeboat:run-shown")

            seed(os.path.join(work, "lifeboat.db"), run, RUNS)
            total = call(base, "/api/v1/runs?limit=1000")
            assert len(total) == 1000, len(total)
            list_ms = page_time(page, f"{base}/", "#runs-body tr", "lifeboat:runs-shown")
            # Older pages by keyset: page 3 holds runs 101-150, deep as it may be.
            page.wait_for_selector("#page-note:has-text('showing 1–50 of 10,000+ runs')", timeout=10000)
            for n in (2, 3):
                page.click("#older")
                page.wait_for_selector(f"#page-note:has-text('showing {(n - 1) * 50 + 1}–{n * 50} of')", timeout=10000)
            page.click("#newer")
            page.wait_for_selector("#page-note:has-text('showing 51–100 of')", timeout=10000)
            browser.close()
        first_api = timed_api(base, "/api/v1/runs?limit=50")
        deep_api = timed_api(base, "/api/v1/runs?limit=50&before=" + f"{RUNS // 10:08x}-0000-7000-8000-{RUNS // 10:012x}")
        failed_api = timed_api(base, "/api/v1/runs?limit=50&status=failed")
        count_api = timed_api(base, "/api/v1/runs/count")
        search_api = timed_api(base, "/api/v1/runs?limit=50&q=BIG")
        rare_api = timed_api(base, "/api/v1/runs?limit=50&q=zzz")
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    (run_ms, run_seen), (list_ms, list_seen) = run_ms, list_ms
    print(f"run page, {STEPS} steps, navigation to all rows drawn: {run_ms:.0f} ms "
          f"(seen by the driver: {run_seen:.0f} ms; target < 300)")
    print(f"runs list, {RUNS + 1} runs, navigation to first rows drawn: {list_ms:.0f} ms "
          f"(seen by the driver: {list_seen:.0f} ms; target < 100)")
    print(f"GET /api/v1/runs?limit=50: first page {first_api:.1f} ms, deep page (before) {deep_api:.1f} ms, "
          f"status=failed {failed_api:.1f} ms")
    print(f"GET /api/v1/runs/count (stops at 10,001): {count_api:.1f} ms; search q=BIG (every run matches): "
          f"{search_api:.1f} ms, q=zzz (none does: the whole history walked): {rare_api:.1f} ms")
    ok = run_ms < 300 and list_ms < 100
    print("ui_bench: " + ("within targets" if ok else "OVER TARGET"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
