"""The web UI in a real headless Chromium (Debian's, through Playwright):
sign-in refused with a wrong token and accepted with a right one, then a
run page that asks nothing while nothing happens (no polling) and changes
without a reload when a step finishes in `serve`.

    python3 tests/ui/live.py BASE_URL RUN_ID ARTIFACTS_DIR

Run by tests/ui_browser.rs against a real `lifeboat serve` whose run RUN_ID
waits at bob's approval. Exit 0 when every check passed; otherwise the
failed check on stderr and a screenshot in ARTIFACTS_DIR.
"""

import json
import sys
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE, RUN, ARTIFACTS = sys.argv[1], sys.argv[2], sys.argv[3]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage"]


def approve_as_bob():
    request = urllib.request.Request(
        f"{BASE}/api/v1/runs/{RUN}/steps/approve/approve",
        data=json.dumps({"comment": "from the browser test"}).encode(),
        headers={"Authorization": "Bearer bob-token", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, response.status


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        loads = []
        page.on("load", lambda: loads.append(page.url))
        reads = []
        page.on("request", lambda r: reads.append(r.url) if r.url.endswith(f"/api/v1/runs/{RUN}") else None)
        try:
            # A deep link to the run: sign-in first, then the run itself.
            page.goto(f"{BASE}/runs/{RUN}")
            expect(page.locator("#login")).to_be_visible()
            page.fill("#token", "not-a-token")
            page.click("#login-form button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("refused (401)")
            page.fill("#token", "vic-token")
            page.click("#login-form button[type=submit]")
            row = page.locator("#steps-body tr", has=page.locator("td", has_text="approve"))
            expect(row.first).to_contain_text("waiting", timeout=10000)
            expect(page.locator("#live")).to_contain_text("live", timeout=10000)
            page.screenshot(path=f"{ARTIFACTS}/run-waiting.png", full_page=True)

            # Waiting, nothing happens: no request at all (no polling).
            before = len(reads)
            page.wait_for_timeout(2500)
            assert len(reads) == before, f"the page polled while nothing happened: {reads[before:]}"

            # bob approves elsewhere: the page follows the run's events.
            loads_before = len(loads)
            approve_as_bob()
            done = page.locator("#steps-body tr", has=page.locator("td", has_text="done"))
            expect(done.first).to_contain_text("succeeded", timeout=10000)
            expect(page.locator("#run-title")).to_contain_text("succeeded", timeout=10000)
            expect(page.locator("#live")).to_contain_text("run finished")
            assert len(loads) == loads_before, f"the page reloaded: {loads}"
            page.screenshot(path=f"{ARTIFACTS}/run-finished.png", full_page=True)
        except Exception:
            page.screenshot(path=f"{ARTIFACTS}/failure.png", full_page=True)
            raise
        finally:
            browser.close()


if __name__ == "__main__":
    main()
