"""The FastAPI app: ``create_app()`` factory, lifespan, routes.

Run it with ``uvicorn --factory app.main:create_app`` (or ``question-app``). Nothing heavy happens at
import time: ``create_app()`` builds the settings and the telemetry providers (instrumentation must wrap
the app before it starts); the lifespan builds the LLM client, the checkpointer and the graph, and closes
them all on shutdown, telemetry last (flushing spans and metrics).
"""

from __future__ import annotations

import gc
import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, format_sse_event
from opentelemetry.instrumentation.propagators import TraceResponsePropagator, set_global_response_propagator

from app.errors import PROBLEM_JSON, QuizError, Unauthorized, current_trace_id, install_handlers, problem_for
from app.llm import build_llm
from app.limits import BodySizeLimit
from app.quiz import PreparedRound, QuizService
from app.schemas import AskRequest, Health, Problem, Round
from app.sessions import describe, open_checkpointer
from app.settings import Provider, Settings
from graphs.quiz import build_graph
import telemetry

log = logging.getLogger("app")

try:
    VERSION = version("question-app")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0.0.0"

router = APIRouter()


def get_quiz(request: Request) -> QuizService:
    return request.app.state.quiz


QuizDep = Annotated[QuizService, Depends(get_quiz)]
bearer = HTTPBearer(auto_error=False, description="One of API_KEYS, when set.")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="One of API_KEYS, when set.")


def require_api_key(request: Request,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
                    header_key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Optional authentication: with ``API_KEYS`` set, a valid bearer token or ``X-API-Key`` (401 otherwise)."""
    keys: list[str] = request.app.state.api_keys
    if not keys:
        return
    given = credentials.credentials if credentials is not None else header_key
    if given is None or not any(secrets.compare_digest(given.encode(), k.encode()) for k in keys):
        raise Unauthorized("Send `Authorization: Bearer <key>` or `X-API-Key: <key>` with a key from API_KEYS.",
                           {"WWW-Authenticate": "Bearer"})


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": text} for status, text in {
        400: "The body is not UTF-8 JSON", 401: "API_KEYS is set and no valid key was sent",
        404: "Unknown or expired session_id", 413: "Body too large", 422: "Invalid request",
        502: "LLM failure (auth, upstream error, unusable output)",
        503: "LLM rate limited, session store unavailable, or too many rounds in progress (see Retry-After)",
        504: "LLM timeout"}.items()}


@router.post("/ask", response_model=Round, responses={
    200: {"description": "The round as JSON, or with `Accept: text/event-stream` as server-sent events: "
                         "`trace`, `question`, `answer`, `grade`, then `round` (or `error`).",
          "content": {"text/event-stream": {}}}, **ERRORS})
async def ask(body: AskRequest, quiz: QuizDep, accept: Annotated[str | None, Header()] = None) -> Any:
    """Play one quiz round: the Teacher asks, the Student answers, the Teacher grades."""
    quiz.admit()
    streaming = False
    try:
        prepared = await quiz.prepare(body)
        if accept and "text/event-stream" in accept:
            streaming = True  # the stream releases its place when it ends
            return EventSourceResponse(_sse(quiz, prepared), headers={"Cache-Control": "no-cache"})
        return await quiz.play_round(prepared)
    finally:
        if not streaming:
            quiz.release()


async def _sse(quiz: QuizService, prepared: PreparedRound) -> AsyncIterator[bytes]:
    try:
        yield format_sse_event(event="trace", data_str=_json({"trace_id": current_trace_id(),
                                                              "session_id": prepared.session_id}))
        async for event, data in quiz.run(prepared):
            yield format_sse_event(event=event, data_str=_json(data))
    except QuizError as error:
        yield format_sse_event(event="error", data_str=problem_for(error).body.decode())
    finally:
        quiz.release()


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


probes = APIRouter()


@probes.get("/health", response_model=Health)
async def health(request: Request) -> Health:
    """Liveness and readiness: answers from memory, never calls the LLM (an LLM outage must not restart pods)."""
    return request.app.state.health


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


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. ``settings`` default: read from the environment (``Settings()``)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            tel = app.state.telemetry
            # Last out: flush spans and metrics of everything below, within a bounded time.
            stack.callback(tel.shutdown, settings.telemetry_shutdown_timeout_s)
            llm = await build_llm(settings)
            stack.push_async_callback(llm.aclose)
            checkpointer = await stack.enter_async_context(open_checkpointer(settings))
            app.state.quiz = QuizService(build_graph(checkpointer), checkpointer, llm, tel, settings)
            app.state.health = Health(provider=settings.provider.value, model=llm.model,
                                      embedded=settings.provider is Provider.EMBEDDED,
                                      checkpointer=describe(settings.checkpointer_url), version=VERSION)
            tune_gc()
            log.info("question-app %s ready: provider=%s model=%s checkpointer=%s", VERSION,
                     settings.provider.value, llm.model, describe(settings.checkpointer_url))
            yield
            gc.unfreeze()  # what this app built may be collected once it has stopped
            log.info("question-app shutting down: flushing telemetry")

    app = FastAPI(title="question-app", version=VERSION, lifespan=lifespan,
                  description="A Teacher–Student quiz played by a LangGraph multi-agent graph, with built-in "
                              "OpenTelemetry. `POST /ask` plays one round.")
    app.state.settings = settings
    app.state.api_keys = settings.api_key_list()
    app.state.telemetry = telemetry.configure(VERSION)
    app.state.telemetry.instrument_app(app)
    set_global_response_propagator(TraceResponsePropagator())  # `traceresponse` header on every response
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_handlers(app)
    # Authentication only when API_KEYS is set, so the OpenAPI document says exactly what is enforced.
    app.include_router(router, dependencies=[Depends(require_api_key)] if app.state.api_keys else [])
    app.include_router(probes)
    return app

