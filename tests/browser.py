"""Debian's Chromium, driven by Playwright with the system browser as its executable (nothing downloads a
browser; ``tests/prerequisites.py`` installs the ``chromium`` package)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's own browser check starts it: no sandbox (tests may run as root) and none of Chromium's
# calls home, which a closed network refuses many at a time.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def launch(playwright: Playwright) -> Browser:
    """Headless system Chromium. Raises ``FileNotFoundError`` naming the set-up step when it is missing."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"Debian's chromium is missing ({CHROMIUM}): run python3 tests/prerequisites.py")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextmanager
def new_page(browser: Browser, locale: str = "en-US") -> Iterator[Page]:
    """A page in a fresh context (its own storage, clipboard allowed) that fails the test on a script error."""
    context = browser.new_context(locale=locale, viewport={"width": 1100, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert errors == [], errors


def open_page(page: Page, base: str) -> Page:
    """Load the page at ``base`` and wait until it has read its configuration and any kept session."""
    page.goto(base + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page
