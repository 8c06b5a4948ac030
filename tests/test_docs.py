"""The interactive API docs work with no network but loopback: Swagger UI at /docs and ReDoc at /redoc, their
files served by the app from fastapi-offline, under a Content-Security-Policy of their own that Chromium
enforces (no violation reported), listing the API's operations."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect

from app.http.docs import policy
from tests.browser import new_page
from tests.test_page import directives as parse_policy
from tests.test_page import services  # noqa: F401  (the fixture: a question-app process)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture
def offline(browser: Browser) -> Iterator[tuple[Page, list[str], list[str]]]:
    """A page whose every request off loopback is aborted (and listed), and the CSP violations it reports."""
    with new_page(browser) as page:
        blocked: list[str] = []
        violations: list[str] = []

        def route(request: Route) -> None:
            if urlsplit(request.request.url).hostname in LOOPBACK:
                request.continue_()
            else:
                blocked.append(request.request.url)
                request.abort()

        def console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                violations.append(message.text)

        page.route("**/*", route)
        page.on("console", console)
        yield page, blocked, violations


def test_swagger_ui_lists_the_operations_offline(services, offline) -> None:  # noqa: F811
    page, blocked, violations = offline
    base = services()
    page.goto(base + "/docs")
    operations = page.locator(".opblock-summary-path")
    expect(operations.filter(has_text="/ask")).to_have_count(1, timeout=20_000)
    assert {"/ask", "/ag-ui", "/sessions/{session_id}", "/learners/{learner_id}", "/health"} <= set(
        operations.all_inner_texts())
    page.locator(".opblock-summary-path", has_text="/ask").first.click()  # an operation opens: its schema renders
    expect(page.locator(".opblock-body").first).to_be_visible()
    assert blocked == [] and violations == [], (blocked, violations)


def test_redoc_lists_the_operations_offline(services, offline) -> None:  # noqa: F811
    page, blocked, violations = offline
    base = services()
    page.goto(base + "/redoc")
    operations = page.locator("h2")  # one per operation, named by its summary (FastAPI's, from the function)
    expect(operations.filter(has_text="Ask")).to_have_count(1, timeout=20_000)
    assert {"Ask", "Get Session", "Get Learner", "Run Agent", "Health"} <= set(operations.all_inner_texts())
    expect(page.get_by_text("Play one quiz round", exact=False).first).to_be_visible()  # its description
    assert "question-app" in page.title()
    # ReDoc's "powered by" badge is an image on its makers' CDN: the policy refuses it before any request leaves.
    assert blocked == [] and all("cdn.redoc.ly" in v and "img-src" in v for v in violations), (blocked, violations)


def test_the_docs_pages_have_a_strict_policy_of_their_own(services) -> None:  # noqa: F811
    base = services()
    for path in ("/docs", "/redoc"):
        page = httpx.get(base + path)
        directives = parse_policy(page.headers["content-security-policy"])
        assert directives["default-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
        scripts = directives["script-src"]
        assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
        assert all(s == "'self'" or s.startswith("'sha256-") for s in scripts), scripts
        assert "cdn" not in page.text.lower()  # no CDN named in the page: every file is this origin's
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        assert httpx.get(f"{base}/docs-static/{name}").status_code == 200


def test_an_inline_script_is_allowed_by_its_hash_only() -> None:
    # The hash of "alert(1)" as CSP Level 3 computes it: base64 of its SHA-256.
    found = policy("<html><script>alert(1)</script><script src='/x.js'></script></html>")
    assert "script-src 'self' 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='" in found
