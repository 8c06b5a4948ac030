"""The HTTP routes: ``POST /ask`` (JSON or server-sent events) and ``GET /health``. Thin: the work is in
``RoundService``, failures become problems in ``app.problems``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.sse import EventSourceResponse, format_sse_event
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import Status, StatusCode, get_current_span

from app.dependencies import HealthDep, ProblemsDep, RoundsDep, round_scope
from app.errors import QuizError
from app.problems import ROUND_ERRORS, Problems, route_of
from app.rounds import PreparedRound, RoundService
from app.schemas import SSE_EVENTS, AskRequest, Health, Round
from graphs.events import RoundEvent
from telemetry import current_trace_id

log = logging.getLogger(__name__)
router = APIRouter()


@router.post("/ask", response_model=Round, responses={
    200: {"description": "The round as JSON, or with `Accept: text/event-stream` as server-sent events: "
                         f"{SSE_EVENTS} (or `error`).",
          "content": {"text/event-stream": {}}}, **ROUND_ERRORS})
async def ask(request: Request, body: AskRequest, rounds: RoundsDep, problems: ProblemsDep,
              scope: Annotated[AsyncExitStack, Depends(round_scope)],
              accept: Annotated[str | None, Header()] = None) -> Any:
    """Play one quiz round: the Teacher asks, the Student answers, the Teacher grades."""
    prepared = await rounds.prepare(body, scope)
    if accept and "text/event-stream" in accept:
        return EventSourceResponse(_events(rounds, problems, prepared, route_of(request)),
                                   headers={"Cache-Control": "no-cache"})
    return await rounds.play(prepared)


async def _events(rounds: RoundService, problems: Problems, prepared: PreparedRound,
                  route: str | None) -> AsyncIterator[bytes]:
    """The round as server-sent events: ``trace``, one per ``RoundEvent`` (its ``kind``), ``round``; a
    failure ends the stream with an ``error`` event holding the problem body.

    The response said 200 before the round failed, so the failure is written on the request's server span
    instead (``error.type``, ERROR status: "another error" in the HTTP span conventions) and counted in
    ``quiz.errors`` on the route, where the dashboard's failed-request ratio finds it.
    """
    try:
        trace = {"trace_id": current_trace_id(), "session_id": prepared.session_id}
        yield format_sse_event(event="trace", data_str=json.dumps(trace, separators=(",", ":")))
        async for item in rounds.run(prepared):
            name = item.kind if isinstance(item, RoundEvent) else "round"
            yield format_sse_event(event=name, data_str=item.model_dump_json())
    except QuizError as error:
        problem, error_type = problems.of(error, route=route), error.error_type
    except Exception:  # a bug: the stream still ends with a problem, never half-way without a word
        log.exception("unhandled error in a streamed round (trace_id=%s)", current_trace_id())
        problem, error_type = problems.internal(route=route), "internal"
    else:
        return
    server = get_current_span()
    server.set_attribute(error_attributes.ERROR_TYPE, error_type)
    server.set_status(Status(StatusCode.ERROR, problem.title))
    yield format_sse_event(event="error", data_str=problem.model_dump_json(exclude_unset=True))


probes = APIRouter()


@probes.get("/health", response_model=Health)
async def health(state: HealthDep) -> Health:
    """Liveness and readiness: answers from memory, never calls the LLM (an LLM outage must not restart pods)."""
    return state
