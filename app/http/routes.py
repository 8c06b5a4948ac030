"""The HTTP routes: ``POST /ask`` (JSON or server-sent events), ``GET``/``DELETE /sessions/{id}`` and
``GET /health``. Thin: the work is in ``RoundService``, failures become problems in ``app.problems``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.sse import EventSourceResponse, format_sse_event

from app.http.dependencies import HealthDep, PrincipalDep, ProblemsDep, RateLimitsDep, RoundsDep, round_scope
from app.http.problems import (
    FEEDBACK_ERRORS,
    ROUND_ERRORS,
    SESSION_ERRORS,
    SESSION_LOOKUP_ERRORS,
    Problems,
    route_of,
)
from app.http.schemas import (
    SESSION_ID_PATTERN,
    SSE_AWAITING_ANSWER,
    SSE_EVENTS,
    AskBody,
    Feedback,
    Health,
    PendingRound,
    Round,
    Session,
    ended,
)
from app.rounds import PreparedRound, RoundPlayed, RoundService
from telemetry.spans import current_trace_id

log = logging.getLogger(__name__)
router = APIRouter()


@router.post("/ask", response_model=Round | PendingRound, responses={
    200: {"description": "The round as JSON (`status: graded`), or with `Accept: text/event-stream` as "
                         f"server-sent events: {SSE_EVENTS} (or `error`). When a person plays the Student "
                         "(`student: person`), the first request ends with the question (`status: "
                         f"awaiting_answer`; the stream: `trace`, `question`, `{SSE_AWAITING_ANSWER}`) and a "
                         "second one with `session_id` and `answer` grades it (`trace`, `answer`, `grade`, `round`).",
          "content": {"text/event-stream": {}}}, **ROUND_ERRORS})
async def ask(request: Request, body: AskBody, rounds: RoundsDep, problems: ProblemsDep, principal: PrincipalDep,
              limits: RateLimitsDep, scope: Annotated[AsyncExitStack, Depends(round_scope)],
              accept: Annotated[str | None, Header()] = None) -> Any:
    """Play one quiz round: the Teacher asks, the Student (the agent, or you) answers, the Teacher grades."""
    prepared = await rounds.prepare(body.domain(), scope, principal)
    if accept and "text/event-stream" in accept:
        return EventSourceResponse(_events(rounds, problems, prepared, route_of(request)),
                                   headers={"Cache-Control": "no-cache", **limits})
    return ended(await rounds.play(prepared))


async def _events(rounds: RoundService, problems: Problems, prepared: PreparedRound,
                  route: str | None) -> AsyncIterator[bytes]:
    """The round as server-sent events: ``trace``, one per finished step's ``RoundEvent`` (named by its
    ``kind``, whatever step it comes from), ``round`` (or ``awaiting_answer`` when the round pauses for a
    person's answer); a failure ends the stream with an ``error`` event holding the problem body
    (``Problems.failed_stream``: traced and counted). A step's start is not sent: this stream tells what a step
    produced (``POST /ag-ui`` tells both).
    """
    try:
        trace = {"trace_id": current_trace_id(), "session_id": prepared.session_id}
        yield format_sse_event(event="trace", data_str=json.dumps(trace, separators=(",", ":")))
        async for item in rounds.run(prepared):
            if isinstance(item, RoundPlayed):
                result = ended(item)
                name = SSE_AWAITING_ANSWER if isinstance(result, PendingRound) else "round"
                yield format_sse_event(event=name, data_str=result.model_dump_json())
            elif item.status == "finished":
                yield format_sse_event(event=item.kind, data_str=item.model_dump_json())
    except Exception as exc:  # a QuizError, or a bug: the stream still ends with a problem, never half-way
        problem = problems.failed_stream(exc, route)
        yield format_sse_event(event="error", data_str=problem.model_dump_json(exclude_unset=True))


SessionIdPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The `session_id` of a round.")]


@router.get("/sessions/{session_id}", response_model=Session,
            responses=SESSION_LOOKUP_ERRORS)
async def get_session(session_id: SessionIdPath, rounds: RoundsDep, principal: PrincipalDep) -> Session:
    """Look back at a session: its settings and its last rounds (oldest first), reference answers included."""
    return Session(**dict(await rounds.session(session_id, principal.id)), session_id=session_id)


@router.delete("/sessions/{session_id}", status_code=204, response_class=Response, responses=SESSION_ERRORS)
async def delete_session(session_id: SessionIdPath, rounds: RoundsDep, principal: PrincipalDep) -> Response:
    """Forget a session: every checkpoint of it is deleted; its id is unknown (404) from then on."""
    await rounds.forget(session_id, principal.id)
    return Response(status_code=204)


@router.post("/sessions/{session_id}/rounds/{round_no}/feedback", status_code=204, response_class=Response,
             responses=FEEDBACK_ERRORS)
async def rate_round(session_id: SessionIdPath, round_no: Annotated[int, Path(ge=1, le=1_000_000)],
                     feedback: Feedback, rounds: RoundsDep, principal: PrincipalDep) -> Response:
    """Thumbs up or down (and a comment) on a graded round: recorded as a GenAI evaluation result attached to
    that round's trace, and counted."""
    await rounds.feedback(session_id, round_no, feedback.rating, feedback.comment, principal.id)
    return Response(status_code=204)


probes = APIRouter()


@probes.get("/health", response_model=Health)
async def health(state: HealthDep) -> Health:
    """Liveness and readiness: answers from memory, never calls the LLM (an LLM outage must not restart pods)."""
    return state
