"""One end-to-end consent in a real browser: `vault consent --flow browser` in its own process,
headless Chromium (Debian's) signing in at oidc-provider and landing on vault's loopback page."""

from __future__ import annotations

import json
import queue
import threading
import time

from tests.conftest import Harness, add_oidc_client
from tests.consent import ALICE


def _authorize_url(process, timeout: float = 30.0) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr],
                     daemon=True).start()
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if line.startswith("http"):
            return line.strip()
    raise AssertionError(f"vault consent printed no URL: {''.join(seen)}")


def test_consent_in_headless_chromium(sqlite_vault: Harness, oidc, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    vault = sqlite_vault
    add_oidc_client(vault, oidc)
    process = vault.spawn("consent", "idp", "--mailbox", ALICE[0], "--protocols", "imap,smtp",
                          "--flow", "browser", "--no-open", "--timeout", "60")
    try:
        url = _authorize_url(process)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update",
                      "--disable-sync"])
            page = browser.new_page()
            page.goto(url)
            page.fill("#username", ALICE[0])
            page.fill("#password", ALICE[1])
            page.click("#login")
            page.click("#consent")
            page.wait_for_url("http://127.0.0.1:*/callback*", timeout=15000)
            landing = page.inner_text("body")
            browser.close()
        out = process.stdout.read()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out
    assert "Consent received" in landing
    assert "Consent recorded for alice@example.test under idp" in out
    shown = json.loads(vault.ok("grant", "show", ALICE[0], "--json").out)
    assert shown["method"] == "browser" and shown["tokens"]["refresh_token"] == "held"
    assert oidc.introspect(vault.ok("token", ALICE[0]).out.strip())["active"] is True
