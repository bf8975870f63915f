"""The web UI in a real browser: Debian's chromium driven by Playwright for
Python, against a running `lifeboat serve` (tests/ui.rs starts it, with run
RUN of the P1 `p1-failover` waiting at its `approve` gate: olga or bob may
approve, but olga started the run and `exclude_requester` is set).

    python3 tests/ui/cockpit.py BASE_URL RUN ARTIFACTS_DIR

Covers: a deep link that survives sign-in, a wrong token refused, the
requester refused next to the Approve button, the 400 px layout (the
decision buttons inside the viewport), axe-core with zero violations on
each page, approving as bob with an in-page comment, and the run's later
steps appearing live (no reload) from the event stream. Screenshots go to ARTIFACTS_DIR. Exits non-zero on failure.
"""
import os
import sys

from playwright.sync_api import expect, sync_playwright

BASE, RUN, ARTIFACTS = sys.argv[1], sys.argv[2], sys.argv[3]
CHROMIUM = os.environ.get("LIFEBOAT_CHROMIUM", "/usr/bin/chromium")
# axe-core, vendored for this test only (tests/ui/vendor; MPL-2.0): the page
# itself never loads it. Evaluated through the driver, so the page's CSP stays.
AXE = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor/axe-4.14.1.min.js")).read()
os.makedirs(ARTIFACTS, exist_ok=True)


def shot(page, name):
    page.screenshot(path=os.path.join(ARTIFACTS, name + ".png"), full_page=True)


def sign_in(page, token):
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def axe(page, what):
    """Runs axe-core on the page as it is; fails on any violation."""
    page.evaluate(AXE)
    result = page.evaluate("axe.run(document).then(r => ({passes: r.passes.length, violations: r.violations.map(v => "
                           "({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))}))")
    assert result["passes"] > 0, f"axe-core checked nothing on {what}"
    assert not result["violations"], f"axe-core on {what}: {result['violations']}"


def step_row(page, step):
    return page.locator("#steps-body tr").filter(has=page.locator("td.mono", has_text=step))


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
        row = step_row(page, "approve")
        expect(row.locator(".badge")).to_have_text("waiting")

        # olga started the run (exclude_requester): refused, and the
        # reason shows next to the button they pressed.
        row.get_by_role("button", name="approve step approve").click()
        answer = row.locator("output.answer")
        expect(answer).to_contain_text("403")
        expect(answer).to_contain_text("exclude_requester")
        expect(page.locator("#live")).to_contain_text("live")
        shot(page, "02-requester-refused")
        axe(page, "the run page with a refusal")

        # bob, on a 400 px wide phone: the decision controls fit.
        page.click("#signout")
        page.set_viewport_size({"width": 400, "height": 800})
        page.goto(f"{BASE}/runs/{RUN}")
        sign_in(page, "bob-token")
        row = step_row(page, "approve")
        expect(row.locator(".badge")).to_have_text("waiting")
        approve = row.get_by_role("button", name="approve step approve")
        expect(page.locator("#live")).to_contain_text("live")

        # Nothing happens for a while: once the stream's replay of past
        # events has been read, the page asks nothing (no polling).
        page.wait_for_timeout(1000)
        reads = []
        page.on("request", lambda r: reads.append(r.url) if f"/api/v1/runs/{RUN}" in r.url and not r.url.endswith("/events") else None)
        page.wait_for_timeout(2500)
        assert not reads, f"the page polled while nothing happened: {reads}"
        approve.scroll_into_view_if_needed()
        for name in ["approve step approve", "reject step approve"]:
            box = row.get_by_role("button", name=name).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 400, (name, box)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways at 400 px ({width} px wide)"
        shot(page, "03-phone-400px")
        axe(page, "the run page at 400 px")

        # Approving with a comment typed in the page; the rest of the run
        # (`done`) then finishes and shows up without a reload.
        row.get_by_label("Comment for step approve").fill("checked replication lag")
        page.evaluate("window.__noReload = true")
        approve.click()
        expect(row.locator("output.answer")).to_contain_text("approved by bob", timeout=15000)
        expect(step_row(page, "done").locator(".badge")).to_have_text("succeeded", timeout=20000)
        expect(page.locator("#live")).to_have_text("run finished", timeout=20000)
        assert page.evaluate("window.__noReload === true"), "the page was reloaded"
        shot(page, "04-approved-live")
        axe(page, "the finished run page")
        page.click("#back")
        expect(page.locator("#runs-body tr")).to_have_count(1)
        axe(page, "the runs list")

        assert not errors, errors
        browser.close()
    print("cockpit.py: all browser checks passed")


if __name__ == "__main__":
    main()
