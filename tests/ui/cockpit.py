"""The web UI in a real browser: Debian's chromium driven by Playwright for
Python, against a running `lifeboat serve` (tests/ui.rs starts it, with run
RUN of the P1 `p1-failover` waiting at its `approve` gate — olga or bob may
approve, two approvals are needed, olga started the run and
`exclude_requester` is set — and run FLAKY of `flaky` rolled back after its
step `c` failed).

    python3 tests/ui/cockpit.py BASE_URL RUN FLAKY ARTIFACTS_DIR

The page talks to the server through a TCP proxy (tests/ui/proxy.py) so the
test can cut its connections. Covers: a deep link that survives sign-in, a
wrong token refused; the "waiting for me" count (0 for the requester, 1
for bob) and view; the requester refused next to the Approve button; the
step drawer with the attempt's stdout; starting a run from the form, the
server's field error shown at its field; pause and resume; retry from a
step, with a new input, of the rolled-back run, which then succeeds live;
the stream cut and resumed ("reconnecting…") without losing the approval
made meanwhile; the 400 px layout (decision buttons inside the viewport);
the warning before approving a step that leads to an irreversible one;
the rest of the run appearing live without a reload; the runs list with
its count and search; the workflow catalog; no polling while idle; and
axe-core with zero violations on every page. Screenshots go to
ARTIFACTS_DIR. Exits non-zero on failure.
"""
import json
import os
import sys
import urllib.request
from urllib.parse import urlparse

from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy import Proxy  # noqa: E402

SERVER, RUN, FLAKY, ARTIFACTS = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4]
CHROMIUM = os.environ.get("LIFEBOAT_CHROMIUM", "/usr/bin/chromium")
# axe-core, vendored for this test only (tests/ui/vendor; MPL-2.0): the page
# itself never loads it. Evaluated through the driver, so the page's CSP stays.
AXE = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor/axe-4.14.1.min.js")).read()
os.makedirs(ARTIFACTS, exist_ok=True)
upstream = urlparse(SERVER)
proxy = Proxy(upstream.hostname, upstream.port)
BASE = f"http://127.0.0.1:{proxy.port}"


def shot(page, name):
    page.screenshot(path=os.path.join(ARTIFACTS, name + ".png"), full_page=True)


def sign_in(page, token):
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def sign_in_as(page, token, path):
    page.click("#signout")
    page.goto(BASE + path)
    sign_in(page, token)


def axe(page, what):
    """Runs axe-core on the page as it is; fails on any violation."""
    page.evaluate(AXE)
    result = page.evaluate("axe.run(document).then(r => ({passes: r.passes.length, violations: r.violations.map(v => "
                           "({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))}))")
    assert result["passes"] > 0, f"axe-core checked nothing on {what}"
    assert not result["violations"], f"axe-core on {what}: {result['violations']}"


def step_row(page, step):
    return page.locator("#steps-body tr").filter(has=page.locator("td.mono", has_text=step))


def api(method, path, token, body=None):
    """A request straight to the server (not through the page)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(SERVER + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read() or b"null")


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        # A deep link to the run asks for a token first, and keeps the link.
        page.goto(f"{BASE}/runs/{RUN}")
        expect(page.locator("#login")).to_be_visible()
        sign_in(page, "not-a-token")
        expect(page.locator("#login-error")).to_contain_text("refused")
        expect(page.locator("#login")).to_be_visible()
        shot(page, "01-wrong-token")
        axe(page, "the sign-in page")

        sign_in(page, "olga-token")
        expect(page.locator("#run")).to_be_visible()
        assert page.url.endswith(f"/runs/{RUN}"), page.url
        expect(page.locator("#run-title")).to_contain_text("p1-failover")
        expect(page.locator("#run-facts")).to_contain_text("severity = P1")
        expect(page.locator("#whoami")).to_contain_text("olga")
        row = step_row(page, "approve")
        expect(row.locator(".badge")).to_have_text("waiting")
        # The people panel: N-of-M, who may decide, the requester kept out, the deadline.
        people = page.locator("#people")
        expect(people).to_contain_text("0 of 2 approvals")
        expect(people).to_contain_text("olga, bob")
        expect(people).to_contain_text("Requested by olga (exclude_requester")
        expect(people).to_contain_text("then on_timeout: fail")
        expect(page.locator("#clock")).to_contain_text("RTO 5 m 00 s")
        # olga started the run: nothing waits for her.
        expect(page.locator("#waiting-count")).to_have_text("0")

        # olga started the run (exclude_requester): refused, and the
        # reason shows next to the button they pressed.
        row.get_by_role("button", name="approve step approve").click()
        row.locator(".warn").get_by_role("button", name="Approve anyway").click()
        answer = row.locator("output.answer")
        expect(answer).to_contain_text("403")
        expect(answer).to_contain_text("exclude_requester")
        expect(page.locator("#live")).to_contain_text("live")
        shot(page, "02-requester-refused")
        axe(page, "the run page with a refusal")

        # The step drawer: the shell step's attempt and its stdout.
        page.get_by_role("button", name="Details of step prepare").click()
        drawer = page.locator("#drawer")
        expect(drawer).to_be_visible()
        expect(drawer).to_contain_text("Attempt 1")
        expect(drawer.locator("pre[aria-label=stdout]")).to_contain_text("replica lag 0 bytes")
        expect(drawer).to_contain_text("exit 0")
        shot(page, "03-drawer")
        axe(page, "the step drawer")
        page.click("#drawer-close")
        expect(drawer).to_be_hidden()

        # Pause and resume (olga is an operator): the run looks paused.
        page.get_by_role("button", name="Pause").click()
        expect(page.locator("#run-title")).to_contain_text("paused", timeout=15000)
        page.get_by_role("button", name="Resume").click()
        expect(page.locator("#run-title")).not_to_contain_text("paused", timeout=15000)

        # Start a run from the form: the site's pattern is Rust regex
        # syntax the browser cannot check, so the server refuses, at the field.
        page.get_by_role("link", name="Workflows").click()
        expect(page.locator("#workflows-body")).to_contain_text("p1-failover")
        expect(page.locator("#workflows-body")).to_contain_text("RTO 5m")
        axe(page, "the workflow catalog")
        page.get_by_role("link", name="p1-failover").click()
        expect(page.locator("#start")).to_be_visible()
        page.fill("#start-input-site", "x9")
        page.click("#start-button")
        expect(page.locator("#start-input-site-error")).to_contain_text("does not match the pattern")
        expect(page.locator("#start-answer")).to_contain_text("422")
        shot(page, "04-start-field-error")
        axe(page, "the start form with a field error")
        page.fill("#start-input-site", "dc7")
        page.click("#start-button")
        expect(page.locator("#run-facts")).to_contain_text("site = dc7", timeout=15000)
        started = page.url.rsplit("/", 1)[1]
        assert started != RUN, started

        # Retry the rolled-back run from its failed step with a new input;
        # it succeeds, and the page shows it without a reload.
        page.goto(f"{BASE}/runs/{FLAKY}")
        expect(page.locator("#run-title")).to_contain_text("rolled_back")
        page.get_by_role("button", name="Retry…").click()
        page.select_option("#retry-from", "c")
        page.select_option("#retry-input-fix", '"yes"')
        page.click("#retry-form button[type=submit]")
        expect(page.locator("#retry-answer")).to_contain_text("Retry requested from c")
        expect(page.locator("#run-title")).to_contain_text("succeeded", timeout=20000)
        expect(page.locator("#run-facts")).to_contain_text("fix = yes")
        shot(page, "05-retried")
        axe(page, "the retried run")

        # bob, on a 400 px wide phone: one step waits for him (the count),
        # and the decision controls fit.
        page.set_viewport_size({"width": 400, "height": 800})
        sign_in_as(page, "bob-token", f"/runs/{RUN}")
        expect(page.locator("#waiting-count")).to_have_text("2")  # RUN and the run started from the form
        row = step_row(page, "approve")
        expect(row.locator(".badge")).to_have_text("waiting")
        approve = row.get_by_role("button", name="approve step approve")
        expect(page.locator("#live")).to_contain_text("live")

        # Nothing happens for a while: once the stream's replay of past
        # events has been read, the page asks nothing (no polling).
        page.wait_for_timeout(1000)
        reads = []
        page.on("request", lambda r: reads.append(r.url) if "/events" not in r.url else None)
        page.wait_for_timeout(2500)
        assert not reads, f"the page polled while nothing happened: {reads}"
        approve.scroll_into_view_if_needed()
        for name in ["approve step approve", "reject step approve"]:
            box = row.get_by_role("button", name=name).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 400, (name, box)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways at 400 px ({width} px wide)"
        shot(page, "06-phone-400px")
        axe(page, "the run page at 400 px")

        # The connection drops: the page says so, and once it is back it
        # shows what happened meanwhile (root's approval: 1 of 2).
        proxy.cut()
        expect(page.locator("#live")).to_have_text("reconnecting…", timeout=10000)
        api("POST", f"/api/v1/runs/{RUN}/steps/approve/approve", "root-token", {"comment": "lag checked"})
        expect(page.locator("#people")).to_contain_text("1 of 2 approvals: root", timeout=20000)
        expect(page.locator("#live")).to_contain_text("live", timeout=20000)

        # Approving leads to `promote`, which is irreversible: the page says
        # what will run and asks again. Then the rest of the run finishes
        # and shows up without a reload.
        row.get_by_label("Comment for step approve").fill("checked replication lag")
        page.evaluate("window.__noReload = true")
        approve.click()
        warning = row.locator(".warn")
        expect(warning).to_contain_text("promote")
        expect(warning).to_contain_text("irreversible")
        shot(page, "07-irreversible-warning")
        axe(page, "the irreversible warning")
        warning.get_by_role("button", name="Approve anyway").click()
        expect(row.locator("output.answer")).to_contain_text("approved by bob", timeout=15000)
        expect(step_row(page, "done").locator(".badge")).to_have_text("succeeded", timeout=20000)
        expect(page.locator("#live")).to_have_text("run finished", timeout=20000)
        assert page.evaluate("window.__noReload === true"), "the page was reloaded"
        shot(page, "08-approved-live")
        axe(page, "the finished run page")

        # What waits for bob now: the run started from the form (count 1).
        page.set_viewport_size({"width": 1280, "height": 900})
        expect(page.locator("#waiting-count")).to_have_text("1", timeout=15000)
        page.locator("#waiting-link").click()
        expect(page.locator("#waiting-mine")).to_contain_text(started[:13])
        shot(page, "09-waiting-for-me")
        axe(page, "the waiting-for-me view")

        # The runs list: three runs, counted, and searchable.
        page.get_by_role("link", name="Runs", exact=True).click()
        expect(page.locator("#runs-body tr")).to_have_count(3)
        expect(page.locator("#page-note")).to_have_text("showing 1–3 of 3 runs")
        page.fill("#search", "flak")
        expect(page.locator("#runs-body tr")).to_have_count(1)
        expect(page.locator("#page-note")).to_have_text("showing 1–1 of 1 run")
        assert "q=flak" in page.url, page.url
        axe(page, "the runs list")

        # A viewer sees the run, and no control to change it.
        sign_in_as(page, "vic-token", f"/runs/{FLAKY}")
        expect(page.locator("#run-title")).to_contain_text("succeeded")
        expect(page.locator("#whoami")).to_contain_text("vic (viewer)")
        page.wait_for_timeout(500)
        expect(page.get_by_role("button", name="Retry…")).to_have_count(0)
        page.get_by_role("button", name="Details of step c").click()
        expect(page.locator("#drawer")).to_contain_text("Attempt 2")
        expect(page.locator("#drawer")).not_to_contain_text("Break glass")

        assert not errors, errors
        browser.close()
    print("cockpit.py: all browser checks passed")


if __name__ == "__main__":
    main()
