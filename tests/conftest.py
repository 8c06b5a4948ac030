"""Test peers at the edge of the world: a fake OpenAI-protocol server and a real OTLP/gRPC receiver.

``make_client(**settings)`` builds the app the way production does (``create_app``), with its
telemetry pointed at the receiver and its LLM at the fake server, and runs its lifespan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, sync_playwright

from app.http.factory import create_app
from app.settings import Settings
from tests.browser import launch
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.fakes.postgres import PostgresServer

# A value that must never be observable: not in logs, spans, metrics or error bodies.
CANARY_KEY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def setting_variables() -> set[str]:
    """Every environment variable that ``Settings`` reads (field names and their aliases, upper-case)."""
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        alias = field.validation_alias
        names |= {str(a).upper() for a in getattr(alias, "choices", [alias]) if isinstance(a, str)}
    return names


@pytest.fixture(autouse=True)
def hermetic_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings merges the environment into ``Settings(**values)``: a developer's
    ``AZURE_OPENAI_ENDPOINT`` or ``API_KEYS`` must not change what a test plays against."""
    for name in setting_variables():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def otlp() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def llm_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright (``tests.browser``), one per test module: Playwright's sync API
    runs an event loop of its own, which must be gone before the next module's asyncio tests run."""
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback, shared by the tests of a run (ids keep their data apart)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def fake_llm(llm_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The shared fake server, cleared of faults, scripts and recorded requests before and after."""
    llm_server.clear()
    llm_server.latency_s = 0.0
    yield llm_server
    llm_server.clear()
    llm_server.latency_s = 0.0


@pytest.fixture
def telemetry_env(monkeypatch: pytest.MonkeyPatch, otlp: OTLPReceiver) -> OTLPReceiver:
    """Standard OTEL_* variables pointing the app at the receiver, with short export intervals."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "300")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "question-app")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=otel-app,deployment.environment.name=test")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    otlp.clear()
    otlp.refuse = False
    otlp.delay_s = 0.0
    return otlp


def settings_for(fake_llm: FakeOpenAI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"openai_base_url": fake_llm.base_url, "openai_api_key": CANARY_KEY,
                              "openai_model": "gpt-5.2-chat", "llm_timeout_s": 2.0, "llm_max_retries": 1}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def make_client(fake_llm: FakeOpenAI, telemetry_env: OTLPReceiver) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings_overrides)`` → a started ``TestClient``; all are closed at teardown."""
    with ExitStack() as stack:
        def make(settings: Settings | None = None, **overrides: Any) -> TestClient:
            app = create_app(settings or settings_for(fake_llm, **overrides))
            return stack.enter_context(TestClient(app, raise_server_exceptions=False))

        yield make


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
