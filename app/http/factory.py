"""The app factory and its lifespan: ``create_app()`` builds, the lifespan opens and closes.

Run it with ``uvicorn --factory app.http.factory:create_app`` (or ``question-app``). Nothing heavy happens at
import time: ``create_app()`` reads the settings and configures telemetry (instrumentation must wrap the
app before it starts); the lifespan builds the LLM client, the session store and the graph, yields them as
typed state (``AppState``), and closes them all on shutdown, telemetry last (flushing spans and metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from opentelemetry.instrumentation.propagators import TraceResponsePropagator, set_global_response_propagator

from app import bootstrap
from app.auth import Authenticator, EntraValidator
from app.http import ag_ui
from app.http.dependencies import AppState, authenticate
from app.http.docs import UNTRACED_DOCS_URLS, documented_app
from app.http.limits import BodySizeLimit
from app.http.page import UNTRACED_URLS, install_page
from app.http.probe import ProbeServer
from app.http.problems import Problems
from app.http.routes import probes, router
from app.http.schemas import Health
from app.play import Quiz
from app.rounds import RoundService
from app.runs import Runner
from app.sessions import describe, open_session_store
from app.sessions.sweeper import expire_idle_sessions
from app.settings import Provider, Settings
from app.version import VERSION

log = logging.getLogger("app")
PROBE_BEAT_S = 1.0  # how often the event loop stamps the probe server's heartbeat (app.http.probe), seconds


def tune_gc() -> None:
    """Keep garbage collection from stopping the event loop for long (measured in bench/README.md).

    Everything built before the app is ready lives as long as the process; ``gc.freeze()`` moves it out of
    the collector's view, so a full collection no longer re-scans the import-time heap (LangChain, pydantic
    schemas, OpenTelemetry): 140 ms → 22 ms per pass. A first-generation threshold of 10,000 (CPython's
    default is 700) makes collections rarer on a workload of many short-lived objects
    (https://docs.python.org/3/library/gc.html#gc.freeze).
    """
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(10_000, second, third)


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has stopped."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def require_discriminators(document: dict[str, Any]) -> dict[str, Any]:
    """Make ``document`` (an OpenAPI document) say what validation enforces: a tagged union's tag property is
    required in every schema its ``discriminator.mapping`` names. Pydantic cannot pick a member without the
    tag, but a model whose tag has a default (AG-UI's ``role: "user"``, ``type: "text"``) leaves it out of
    ``required``, and the document would then allow bodies that get 422. Changes ``document`` in place."""
    components = document.get("components", {}).get("schemas", {})

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            tag = node.get("discriminator", {})
            for ref in tag.get("mapping", {}).values() if isinstance(tag, dict) else ():
                schema = components.get(ref.rsplit("/", 1)[-1])
                if schema is not None and tag["propertyName"] not in schema.setdefault("required", []):
                    schema["required"].append(tag["propertyName"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(document)
    return document


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. ``settings`` default: read from the environment (``Settings()``, which raises
    ``pydantic.ValidationError`` naming the variable for a bad value).

    ``app.state.telemetry`` is the one attribute set here, because telemetry must exist before the app
    starts; call its ``shutdown()`` if the app is built but never started.
    """
    settings = settings or Settings()
    tel = bootstrap.start_telemetry()
    problems = Problems(tel.instruments.errors)
    entra = EntraValidator(str(settings.entra_authority), settings.entra_tenant_id, settings.entra_audiences(),
                           settings.entra_keys_refresh_s) if settings.entra_tenant_id else None
    auth = Authenticator(settings.api_key_table(), entra)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[AppState]:
        async with AsyncExitStack() as stack:
            probe = None
            if settings.probe_port:  # first: it answers 503 "starting" until the app is ready
                probe = ProbeServer(settings.host, settings.probe_port, settings.probe_stall_s)
                probe.start()
                stack.callback(probe.close)
            # The LLM, then telemetry flushed last (bootstrap.running): the spans of everything below leave.
            llm = await stack.enter_async_context(bootstrap.running(settings, tel))
            store = await stack.enter_async_context(open_session_store(settings))
            quiz = Quiz.create(llm, tel, settings, store.checkpointer, store_errors=store.errors)
            rounds = RoundService(quiz, store, settings)
            runner = Runner(store, settings.round_lease_ttl_s, settings.round_retention_s)
            expiry = asyncio.create_task(expire_idle_sessions(
                store, settings.session_ttl_s, settings.round_lease_ttl_s, settings.session_sweep_interval_s,
                settings.round_retention_s), name="session-expiry")
            stack.push_async_callback(stop, expiry)  # before the store closes
            # Rounds whose clients went away still end (or are lost) before the store closes.
            stack.push_async_callback(runner.close, settings.graceful_shutdown_s)
            health = Health(provider=settings.provider.value, model=llm.model,
                            embedded=settings.provider is Provider.EMBEDDED,
                            checkpointer=describe(settings.checkpointer_url), version=VERSION)
            if probe is not None:
                beat = asyncio.create_task(probe.heartbeat(PROBE_BEAT_S), name="probe-heartbeat")
                stack.push_async_callback(stop, beat)
                probe.ready(health.model_dump_json().encode())
            tune_gc()
            log.info("question-app %s ready: provider=%s model=%s checkpointer=%s", VERSION,
                     settings.provider.value, llm.model, describe(settings.checkpointer_url))
            yield AppState(rounds=rounds, runner=runner, problems=problems, health=health, auth=auth)
            if probe is not None:
                probe.stopping()
            gc.unfreeze()  # what this app built may be collected once it has stopped
            log.info("question-app shutting down: flushing telemetry")

    app = documented_app(title="question-app", version=VERSION, lifespan=lifespan,
                         description="A Teacher–Student quiz played by a LangGraph multi-agent graph, with built-in "
                                     "OpenTelemetry. `POST /ask` plays one round.")
    app.state.telemetry = tel
    generate = app.openapi
    app.openapi = lambda: app.openapi_schema or require_discriminators(generate())  # type: ignore[method-assign]
    tel.instrument_app(app, untraced=(*UNTRACED_URLS, *UNTRACED_DOCS_URLS))
    set_global_response_propagator(TraceResponsePropagator())  # `traceresponse` header on every response
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, problems=problems,
                       per_path={ag_ui.AG_UI_PATH: (settings.ag_ui_max_body_bytes, "AG_UI_MAX_BODY_BYTES")},
                       read_timeout_s=settings.body_read_timeout_s, min_rate_bytes_s=settings.body_min_rate_bytes_s,
                       grace_s=settings.body_read_grace_s)
    problems.install(app)
    # Authentication only when it is on, so the OpenAPI document says exactly what is enforced.
    guard = [Depends(authenticate)] if auth.required else []
    app.include_router(router, dependencies=guard)
    app.include_router(ag_ui.router, dependencies=guard)
    app.include_router(probes)
    install_page(app, settings)
    return app
