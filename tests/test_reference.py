"""The reference pages cannot lie: docs/reference/ is what ``question-app reference`` generates from the code today
(regenerated and compared), every setting, HTTP route and telemetry name of the code is in its reference, and
nothing is there that the code does not have."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fastapi.routing import APIRoute

from app.http import ag_ui
from app.http.docs import DOCS_URL, REDOC_URL
from app.http.routes import probes, router
from app.settings import Settings
from telemetry import contract
from telemetry.slo import SLO
from tests.service import clean_env

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"


def reference(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "question-app"), "reference", *args],
                          env=clean_env(), capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_the_generated_pages_are_current() -> None:
    checked = reference("--check")
    assert checked.returncode == 0, checked.stderr


def test_a_stale_page_is_named_and_fails_the_check(tmp_path: Path) -> None:
    page = REFERENCE / "settings.md"
    kept = page.read_text(encoding="utf-8")
    try:
        page.write_text(kept.replace("`HINTS_PER_ROUND`", "`HINTS_PER_GAME`"), encoding="utf-8")
        checked = reference("--check")
        assert checked.returncode == 1 and "docs/reference/settings.md" in checked.stderr
    finally:
        page.write_text(kept, encoding="utf-8")


def documented_variables() -> set[str]:
    page = (REFERENCE / "settings.md").read_text(encoding="utf-8")
    return {name for row in page.splitlines() if row.startswith("| `")
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_every_setting_is_in_the_reference_and_every_variable_there_is_a_setting() -> None:
    fields = {name.upper() for name in Settings.model_fields} | {"CHECKPOINTER"}  # CHECKPOINTER_URL's alias
    fields |= {f"SLO_{name}".upper() for name in SLO.model_fields}
    assert documented_variables() == fields, (fields - documented_variables(), documented_variables() - fields)


def test_every_http_route_is_in_the_reference_and_every_one_there_is_served() -> None:
    # The routers' own routes, not the OpenAPI document the page is generated from.
    routes = {f"{method} {route.path}" for routes_of in (router, probes, ag_ui.router) for route in routes_of.routes
              if isinstance(route, APIRoute) and route.include_in_schema for method in route.methods or ()}
    page = (REFERENCE / "http-api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^## `([A-Z]+ /\S*)`$", page, re.M))
    assert documented == routes, (routes - documented, documented - routes)
    assert DOCS_URL in page and REDOC_URL in page  # where to read it interactively


def test_every_telemetry_name_of_the_contract_is_documented_and_every_documented_one_is_ours() -> None:
    names = {value for key, value in vars(contract).items()
             if key.startswith(("METRIC_", "ATTR_", "SPAN_", "EVENT_", "RESOURCE_")) and isinstance(value, str)}
    doc = (ROOT / "docs" / "telemetry.md").read_text(encoding="utf-8")
    assert not {n for n in names if f"`{n}`" not in doc}
    # quiz.workflow is the LangChain instrumentation's span around the graph run (documented as such), not ours.
    assert set(re.findall(r"`(quiz\.[a-z_.]+)`", doc)) - names == {"quiz.workflow"}
