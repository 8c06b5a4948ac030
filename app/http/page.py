"""The browser page: ``GET /`` and its files under ``/static``, served by the app itself.

Same origin, no CDN, no external font or script (the cluster has no internet) and no build step: plain
HTML, CSS and one JavaScript module in ``app/web``. Every page response carries a Content-Security-Policy
that allows only this origin — no inline script or style, no framing — and the page inserts model text
with ``textContent`` only, so a model's ``<script>`` is shown, never run. ``GET /ui/config`` tells the page
what it cannot know: whether ``API_KEYS`` is on (it then asks for a key, kept in the tab's
``sessionStorage`` and sent as ``Authorization: Bearer``, never in a URL), the model, and the optional
Application Insights link template. None of these routes is in the OpenAPI document, or traced.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.http.dependencies import HealthDep
from app.settings import Settings

WEB = Path(__file__).parent / "web"

# Only this origin: scripts, styles, fetches and images; no plugins, no <base>, no framing, forms post here.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # trace and session ids stay out of other sites' logs
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",  # revalidate: a new release's page is used at once
}
# The page's routes, as regular expressions for the HTTP instrumentation's excluded URLs (not traced).
UNTRACED_URLS = ("/static/", "/ui/config", r"//[^/]+/(\?.*)?$")


class PageConfig(BaseModel):
    """What the page needs to know about this deployment."""

    auth_required: bool
    app_insights_link_template: str | None
    model: str
    embedded: bool
    hints_per_round: int = Field(description="Hints a person may ask for in a round (0: hints are off).")


class PageFiles(StaticFiles):
    """``StaticFiles`` whose responses carry the page's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file at ``path`` (or its 404/304), with the headers."""
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def install_page(app: FastAPI, settings: Settings) -> None:
    """Serve the page at ``/``, its files at ``/static`` and its configuration at ``/ui/config``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    @router.get("/ui/config")
    async def config(health: HealthDep) -> PageConfig:
        return PageConfig(auth_required=settings.authenticated,
                          app_insights_link_template=settings.app_insights_link_template,
                          model=health.model, embedded=health.embedded, hints_per_round=settings.hints_allowed)

    app.include_router(router)
    app.mount("/static", PageFiles(directory=WEB / "static"), name="static")
