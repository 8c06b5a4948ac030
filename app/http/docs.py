"""The interactive API docs, offline: ``GET /docs`` (Swagger UI) and ``GET /redoc`` (ReDoc), whose scripts, styles
and icon the app serves itself under ``/docs-static`` from the ``fastapi-offline`` package, which ships them.
FastAPI's own pages load them from a CDN, which a cluster without internet access (the deployment's network
policy) cannot reach: the page would stay blank exactly where an operator opens it.

Each page is FastAPI's own (``fastapi.openapi.docs``), pointed at those files, and answered with a strict
Content-Security-Policy of its own: only this origin, plus the one inline script each page has, allowed by its
SHA-256 hash (CSP Level 3, https://www.w3.org/TR/CSP3/#grammardef-hash-source) rather than ``'unsafe-inline'``.
Styles may be inline (both libraries set ``style`` attributes from script), images may be ``data:`` URLs
(Swagger UI's icons) and ReDoc may start its search worker from a ``blob:``. Neither page is traced. The one
thing either page asks of another origin, ReDoc's "powered by" badge (an image on ``cdn.redoc.ly``), the policy
refuses before a request leaves: the page is whole without it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi_offline import FastAPIOffline

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
DOCS_STATIC = "/docs-static"  # where fastapi-offline's files are served
UNTRACED_DOCS_URLS = (f"{DOCS_STATIC}/", rf"{DOCS_URL}$", rf"{REDOC_URL}$")
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)  # an inline script: one without src


def documented_app(**fields: Any) -> FastAPI:
    """``FastAPI(**fields)`` with the docs pages of this module and the files they load, none from a CDN
    (``fastapi_offline.FastAPIOffline`` mounts the files; the pages are added here, with their policy)."""
    app = FastAPIOffline(docs_url=None, redoc_url=None, static_url=DOCS_STATIC, **fields)

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return with_policy(get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png"))

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return with_policy(get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png", with_google_fonts=False))

    return app


def policy(html: str) -> str:
    """The Content-Security-Policy for a docs page ``html``: this origin only, and its inline scripts by hash."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
                      for script in _INLINE_SCRIPT.findall(html))
    return ("default-src 'none'; "
            f"script-src 'self' {hashes}".rstrip() + "; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; "
            "worker-src 'self' blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def with_policy(page: HTMLResponse) -> HTMLResponse:
    """``page`` with its own Content-Security-Policy (``policy``) and the page's other security headers."""
    html = bytes(page.body).decode()
    page.headers.update({"Content-Security-Policy": policy(html), "X-Content-Type-Options": "nosniff",
                         "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"})
    return page
