"""What the web UI shows for a run, read from a real browser (Debian's
chromium through Playwright for Python): the page at /runs/RUN, signed in
with TOKEN, once the run is shown as finished. Prints one JSON document:
every element's text by id, every attribute value on the page, the title,
and the errors the page's script raised.

    python3 tests/ui/render.py BASE_URL TOKEN RUN
"""
import json
import os
import sys

from playwright.sync_api import expect, sync_playwright

BASE, TOKEN, RUN = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
CHROMIUM = os.environ.get("LIFEBOAT_CHROMIUM", "/usr/bin/chromium")

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{BASE}/runs/{RUN}")
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#live")).to_have_text("run finished", timeout=20000)
    # The step drawer too: the attempt's error and output as shown there.
    first = page.locator("#steps-body button.linkish").first
    first.click()
    expect(page.locator("#drawer")).to_contain_text("Attempt 1")
    shown = page.evaluate("""() => ({
        title: document.title,
        text: Object.fromEntries(Array.from(document.querySelectorAll('[id]')).map(e => [e.id, e.textContent])),
        attributes: Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes).map(a => a.value)),
    })""")
    shown["errors"] = errors
    print(json.dumps(shown))
    browser.close()
