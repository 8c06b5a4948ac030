"""The HTTP routes: ``POST /ask`` (JSON or server-sent events), ``GET``/``DELETE /sessions/{id}`` and
``GET /health``. Thin: the work is in ``RoundService``, failures become problems in ``app.problems``."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.sse import EventSourceResponse, format_sse_event

from app.errors import QuizError, RoundCancelled, RoundNotFound
from app.http.dependencies import (
    HealthDep,
    PrincipalDep,
    ProblemsDep,
    RoundsDep,
    RunnerDep,
    round_scope,
)
from app.http.problems import (
    FEEDBACK_ERRORS,
    LEARNER_ERRORS,
    PROBLEM_JSON,
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
    Learner,
    PendingRound,
    Round,
    RoundState,
    Session,
    ended,
)
from app.learners import LEARNER_ID_PATTERN
from app.rounds import PlayRound, PreparedRound, RoundPlayed, RoundService
from app.runs import KEY_PATTERN, Frame, Holding, fingerprint, parse_key, run_id_of, to_play
from app.sessions import Outcome, RunRecord, RunState
from telemetry.spans import current_trace_id

log = logging.getLogger(__name__)
router = APIRouter()


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=KEY_PATTERN,
    description="Play this round once, however often the request is sent (IETF "
                "draft-ietf-httpapi-idempotency-key-header): a retry — on any replica, during or after the round, "
                "for ROUND_RETENTION_S — gets the first request's round (a stream from its start, or from "
                "`Last-Event-ID`). A UUID is a good key; the same key with another body is 422.")]
LastEventId = Annotated[str | None, Header(
    alias="Last-Event-ID", max_length=32,
    description="Resume a stream (with the same Idempotency-Key): the events after this `id`, then the rest.")]


@router.post("/ask", response_model=Round | PendingRound, responses={
    200: {"description": "The round as JSON (`status: graded`), or with `Accept: text/event-stream` as "
                         f"server-sent events: {SSE_EVENTS} (or `error`, or `cancelled`), each with an `id`. "
                         "When a person plays the Student "
                         "(`student: person`), the first request ends with the question (`status: "
                         f"awaiting_answer`; the stream: `trace`, `question`, `{SSE_AWAITING_ANSWER}`) and a "
                         "second one with `session_id` and `answer` grades it (`trace`, `answer`, `grade`, `round`). "
                         "Before answering, `session_id` and `hint: true` asks the Tutor for a hint (`trace`, "
                         f"`hint`, `{SSE_AWAITING_ANSWER}`: the question again, with its hints).",
          "content": {"text/event-stream": {}}}, **ROUND_ERRORS})
async def ask(request: Request, body: AskBody, rounds: RoundsDep, runner: RunnerDep, problems: ProblemsDep,
              principal: PrincipalDep, scope: Annotated[AsyncExitStack, Depends(round_scope)],
              accept: Annotated[str | None, Header()] = None, idempotency_key: IdempotencyKey = None,
              last_event_id: LastEventId = None) -> Any:
    """Play one quiz round: the Teacher asks, the Student (the agent, or you) answers, the Teacher grades."""
    streaming = bool(accept and "text/event-stream" in accept)
    route = route_of(request)
    key = parse_key(idempotency_key)
    run_id = run_id_of(principal.id, key)
    signature = fingerprint(route or "", body.model_dump_json())
    record = await runner.existing(run_id, signature) if key is not None else None
    starting = to_play(record)
    limits = await rounds.quota(principal, count=starting)  # a retry that follows is neither counted nor refused
    if starting:
        scope.enter_context(rounds.admission(principal))  # 429 over the fair share, 503 when full
        ask = body.domain()
        if record is not None and isinstance(ask, PlayRound):  # play the lost round again, in the same session
            ask = replace(ask, session_id=record.session_id, create=True, adopt=True)
        holder = secrets.token_hex(8)  # the round's holder: its run and its session's lease
        prepared = await rounds.prepare(ask, scope, principal, owner=holder,
                                        succeed=record.holder if record is not None else None, run=run_id)
        record = await runner.start(
            RunRecord(run_id, prepared.session_id, principal.id, key, signature, 1, holder, "running", alive=True),
            lambda holding: _frames(rounds, problems, prepared, route), partial(stopped_event, problems, route),
            Holding(scope.pop_all(), prepared.lease), stream=streaming)
    assert record is not None  # started here, or followed
    if streaming:
        return EventSourceResponse(runner.follow(record, last_event_id, partial(stopped_event, problems, route)),
                                   headers={"Cache-Control": "no-cache", **limits})
    outcome = await runner.outcome(record)
    return Response(outcome.body, outcome.status, {**limits, **outcome.headers},
                    media_type="application/json" if outcome.status < 400 else PROBLEM_JSON)


async def _frames(rounds: RoundService, problems: Problems, prepared: PreparedRound,
                  route: str | None) -> AsyncIterator[Frame]:
    """The round as server-sent events: ``trace``, one per finished step's ``RoundEvent`` (named by its
    ``kind``, whatever step it comes from), ``round`` (or ``awaiting_answer`` when the round pauses for a
    person's answer); a failure ends the stream with an ``error`` event holding the problem body
    (``Problems.failed_stream``: traced and counted). A step's start is not sent: this stream tells what a step
    produced (``POST /ag-ui`` tells both). The last event carries the round's outcome: a JSON request's answer.
    """
    try:
        trace = {"trace_id": current_trace_id(), "session_id": prepared.session_id}
        yield Frame(format_sse_event(event="trace", data_str=json.dumps(trace, separators=(",", ":"))))
        async for item in rounds.run(prepared):
            if isinstance(item, RoundPlayed):
                result = ended(item, rounds.settings.hints_allowed)
                name = SSE_AWAITING_ANSWER if isinstance(result, PendingRound) else "round"
                data = result.model_dump_json()
                yield Frame(format_sse_event(event=name, data_str=data), Outcome("finished", 200, data.encode()))
            elif item.status == "finished":
                yield Frame(format_sse_event(event=item.kind, data_str=item.model_dump_json()))
    except Exception as exc:  # a QuizError, or a bug: the stream still ends with a problem, never half-way
        problem = problems.failed_stream(exc, route)
        data = problem.model_dump_json(exclude_unset=True)
        headers = exc.headers if isinstance(exc, QuizError) else {}
        yield Frame(format_sse_event(event="error", data_str=data), Outcome("failed", problem.status, data.encode(),
                                                                               headers))


def stopped_event(problems: Problems, route: str | None, error: QuizError) -> Frame:
    """The last event of a round that did not end by itself: ``cancelled`` (it was cancelled) or ``error``
    (its replica was lost), holding the problem body; counted in ``quiz.errors``."""
    problem = problems.of(error, route=route)
    data = problem.model_dump_json(exclude_unset=True)
    name = "cancelled" if isinstance(error, RoundCancelled) else "error"
    state: RunState = "cancelled" if isinstance(error, RoundCancelled) else "lost"
    return Frame(format_sse_event(event=name, data_str=data), Outcome(state, error.status, data.encode(),
                                                                      error.headers))


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


LearnerIdPath = Annotated[str, Path(pattern=LEARNER_ID_PATTERN, description="The `learner_id` rounds were played "
                                                                            "with.")]


@router.get("/learners/{learner_id}", response_model=Learner, responses=LEARNER_ERRORS)
async def get_learner(learner_id: LearnerIdPath, rounds: RoundsDep, principal: PrincipalDep) -> Learner:
    """What the service knows about one of your learners: mastery by subject with its uncertainty, rounds played,
    accuracy, and the missed questions due to be asked again."""
    return Learner.of(learner_id, await rounds.learner(learner_id, principal.id), rounds.learners.clock())


@router.delete("/learners/{learner_id}", status_code=204, response_class=Response, responses=LEARNER_ERRORS)
async def delete_learner(learner_id: LearnerIdPath, rounds: RoundsDep, principal: PrincipalDep) -> Response:
    """Forget one of your learners: their mastery, counts and scheduled reviews (the questions' calibrations,
    which hold no one's data, stay). Sessions they played keep their own rounds."""
    await rounds.forget_learner(learner_id, principal.id)
    return Response(status_code=204)


@router.get("/sessions/{session_id}/round", responses={
    200: {"description": "With `Accept: text/event-stream`: the events of the session's latest round (its `id`s "
                         "as `POST /ask`'s stream sent them), from `Last-Event-ID` on, then the rest live until "
                         "it ends — on any replica. Otherwise the round's state as JSON.",
          "content": {"text/event-stream": {}}}, **SESSION_LOOKUP_ERRORS})
async def round_in_progress(request: Request, session_id: SessionIdPath, runner: RunnerDep, problems: ProblemsDep,
                            principal: PrincipalDep, accept: Annotated[str | None, Header()] = None,
                            last_event_id: LastEventId = None) -> Any:
    """Follow the session's latest round (the one in progress, or the last one, for ROUND_RETENTION_S): a
    stream that dropped reconnects here with `Last-Event-ID`. A round asked as JSON has kept only its end."""
    record = await runner.store.runs.latest(session_id)
    if record is None or record.principal != principal.id:
        raise RoundNotFound(f"Session {session_id!r} has no round in progress or kept (rounds are kept "
                            "ROUND_RETENTION_S after they end).")
    if accept and "text/event-stream" in accept:
        route = route_of(request)
        return EventSourceResponse(runner.follow(record, last_event_id, partial(stopped_event, problems, route)),
                                   headers={"Cache-Control": "no-cache"})
    return RoundState(session_id=session_id, state=record.state, attempt=record.attempt,
                      status=record.outcome.status if record.outcome else None)


@router.delete("/sessions/{session_id}/round", status_code=204, response_class=Response, responses={
    202: {"description": "The round was told to stop and has not confirmed yet (it will: see GET "
                         "/sessions/{id}/round)"}, **SESSION_LOOKUP_ERRORS})
async def cancel_round(session_id: SessionIdPath, runner: RunnerDep, principal: PrincipalDep) -> Response:
    """Stop the session's round in progress, on whichever replica plays it: its LLM call is cancelled, the
    session stays as it was before the round, its stream ends with `cancelled`. 204 once it has stopped."""
    outcome = await runner.cancel(session_id, principal.id)
    return Response(status_code=204 if outcome is not None else 202)


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
