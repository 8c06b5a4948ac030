"""Plays quiz rounds: admits them, resolves the session and settings, runs the graph, maps failures.

The graph runs with ``durability="exit"``: one checkpoint per round, written when the round ends, so a
round that fails leaves the session as it was before it. This module reads the graph through its public
surface only: ``InputState`` in, ``RoundEvent``s on the custom stream, ``RoundResult.of()`` of the final
state.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command, StateSnapshot
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode

from app.errors import (
    STORE_ERRORS,
    AnswerAwaited,
    NoAnswerAwaited,
    Overloaded,
    QuizError,
    RoundInProgress,
    RoundNotFound,
    SessionNotFound,
    SessionStoreUnavailable,
    classify,
)
from app.expiry import NoActivity, SessionActivity, delete_session
from app.leases import RoundLeases
from app.llm import LLM
from app.messages import Intent, is_korean, parse_message
from app.schemas import (
    AnswerRequest,
    AskRequest,
    AwaitedQuestion,
    Feedback,
    PendingRound,
    Round,
    Score,
    Session,
    SessionRound,
    Usage,
)
from app.settings import Settings
from graphs.context import QuizAgents, QuizContext
from graphs.events import AnswerAwaited as Awaited
from graphs.events import RoundEvent, StepStarted
from graphs.graph import QuizGraph, answer_command, awaited_answer
from graphs.prompts import Prompts
from graphs.state import InputState, QuizState, RoundResult
from telemetry import Telemetry, current_trace_id
from telemetry import contract as C

log = logging.getLogger(__name__)

DEFAULT_SUBJECT = "general"
DEFAULT_DIFFICULTY: C.Difficulty = "medium"


@dataclass(frozen=True)
class PreparedRound:
    """A round that can run: its session, its settings and, for a person's answer to a paused round, the
    command that resumes it (``graphs.graph.answer_command``; the graph input instead of ``inputs``)."""

    session_id: str
    inputs: InputState
    resume: Command | None = None
    asked: trace.Link | None = None  # a person's answer: a link to the span of the request that asked
    previous: dict[str, Any] = field(default_factory=dict)  # the session's state before the round ({}: new)
    awaited: Awaited | None = None  # a person's answer: the question it answers


def new_session_id() -> str:
    """128 random bits, URL-safe (22 characters): unguessable (``secrets``, RFC 4086 strength)."""
    return secrets.token_urlsafe(16)


@dataclass
class RoundService:
    """The quiz as the API sees it: ``prepare()`` a request, then ``run()`` (events) or ``play()`` (the result).

    ``in_flight``: rounds admitted and not yet released (``admission()``), at most
    ``settings.max_concurrent_rounds``.
    """

    graph: QuizGraph
    checkpointer: BaseCheckpointSaver
    leases: RoundLeases
    llm: LLM
    telemetry: Telemetry
    settings: Settings
    activity: SessionActivity = field(default_factory=NoActivity)  # when sessions last played (expiry)
    agents: QuizAgents = field(init=False)
    prompts: Prompts = field(init=False)  # the agents' prompt versions (TEACHER_/STUDENT_PROMPT_VERSION)
    in_flight: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        # Bound once: binding tools converts the schemas to JSON Schema, which is not free.
        self.agents = QuizAgents.create(teacher=self.llm.chat, student=self.llm.chat)
        self.prompts = self.settings.prompts()

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of ``MAX_CONCURRENT_ROUNDS`` places while the body runs; raise ``Overloaded`` (503 +
        ``Retry-After: 1``) at once when none is free. One event loop runs every round, so a plain counter
        is exact."""
        if self.in_flight >= self.settings.max_concurrent_rounds:
            raise Overloaded(f"{self.in_flight} rounds are in progress on this instance (MAX_CONCURRENT_ROUNDS). "
                             "Retry in a second.", {"Retry-After": "1"})
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def prepare(self, request: AskRequest | AnswerRequest, scope: AsyncExitStack, *,
                      create: bool = False, intent: Intent | None = None) -> PreparedRound:
        """Resolve session and settings; a continued session is leased for this round until ``scope`` closes.

        ``create``: an ``AskRequest`` whose ``session_id`` is unknown starts a new session under that id (an
        AG-UI client names its threads itself) instead of raising ``SessionNotFound``. ``intent``: what a chat
        message asked for, when the caller parsed it itself (default: ``parse_message(request.message)``).

        Raises ``RoundInProgress`` when another round of the session holds the lease, ``SessionNotFound``
        for an unknown or expired id, ``AnswerAwaited``/``NoAnswerAwaited`` (409) when the request does not
        fit the session's paused round and ``SessionStoreUnavailable`` when the store cannot be reached.
        """
        previous: dict[str, Any] = {}
        if request.session_id is not None:
            await self._lease(request.session_id, scope)
            if create and isinstance(request, AskRequest):
                snapshot = await self._lookup(request.session_id)
            else:
                snapshot = await self._snapshot(request.session_id, "Omit session_id to start a new session.")
            previous = snapshot.values
            if isinstance(request, AnswerRequest):
                return self._answer(request.session_id, snapshot, request.answer)
            if (awaited := awaited_answer(snapshot)) is not None:
                raise AnswerAwaited(f"Round {awaited.round} of session {request.session_id!r} awaits your answer: "
                                    'send {"session_id": …, "answer": "…"} (GET /sessions/{id} shows the '
                                    "question), or omit session_id to start a new session.")
        assert isinstance(request, AskRequest)  # an AnswerRequest always has its session
        intent = intent or parse_message(request.message)
        language = (request.language or intent.language or previous.get("language")
                    or ("ko" if is_korean(request.subject) else "en"))
        inputs = InputState(
            subject=request.subject or intent.subject or previous.get("subject") or DEFAULT_SUBJECT,
            difficulty=request.difficulty or intent.difficulty or previous.get("difficulty") or DEFAULT_DIFFICULTY,
            language=language, reset=intent.reset,
            student=request.student or previous.get("student") or C.ANSWERED_BY_MODEL)
        return PreparedRound(request.session_id or new_session_id(), inputs, previous=previous)

    @staticmethod
    def _answer(session_id: str, snapshot: StateSnapshot, answer: str) -> PreparedRound:
        """The round that grades a person's ``answer`` to the session's paused round (``NoAnswerAwaited``: none)."""
        resume = answer_command(snapshot, answer)
        if resume is None:
            played = snapshot.values.get("round", 0)
            raise NoAnswerAwaited(f"No round of session {session_id!r} awaits an answer (rounds graded: {played}); "
                                  "an answer is graded once. Omit `answer` to play the next round.")
        values = snapshot.values
        inputs = InputState(subject=values["subject"], difficulty=values["difficulty"],
                            language=values["language"], student=C.ANSWERED_BY_PERSON)
        awaited = awaited_answer(snapshot)
        asked = None
        if awaited is not None and awaited.asked_trace_id and awaited.asked_span_id:
            asked = trace.Link(trace.SpanContext(int(awaited.asked_trace_id, 16), int(awaited.asked_span_id, 16),
                                                 is_remote=True, trace_flags=trace.TraceFlags.get_default()))
        return PreparedRound(session_id, inputs, resume, asked, previous=values, awaited=awaited)

    async def session(self, session_id: str) -> Session:
        """The session's settings and its kept rounds (oldest first). Raises ``SessionNotFound`` (404) and
        ``SessionStoreUnavailable`` (503)."""
        snapshot = await self._snapshot(session_id)
        values, awaited = snapshot.values, awaited_answer(snapshot)
        return Session(session_id=session_id, subject=values["subject"], difficulty=values["difficulty"],
                       language=values["language"], student=values.get("student", C.ANSWERED_BY_MODEL),
                       rounds_played=values.get("round", 0), score=Score(**values.get("score", {})),
                       rounds=[SessionRound.model_validate(r) for r in values.get("rounds", [])],
                       awaiting_answer=AwaitedQuestion(round=awaited.round, question=awaited.question)
                       if awaited else None)

    async def forget(self, session_id: str) -> None:
        """Delete the session with every checkpoint of it, once no round of it is playing (its lease).

        Raises ``RoundInProgress`` (409), ``SessionNotFound`` (404), ``SessionStoreUnavailable`` (503).
        """
        async with AsyncExitStack() as scope:
            await self._lease(session_id, scope)
            await self._values(session_id)
            try:
                await delete_session(self.checkpointer, self.activity, session_id)
            except STORE_ERRORS as exc:
                raise self._failure(SessionStoreUnavailable(), exc) from exc

    async def feedback(self, session_id: str, round_no: int, feedback: Feedback) -> None:
        """Record a person's ``feedback`` on a kept round: a ``gen_ai.evaluation.result`` (``user_feedback``)
        attached to that round's grading span, and ``quiz.feedback``. Raises ``SessionNotFound``,
        ``RoundNotFound`` (404) and ``SessionStoreUnavailable`` (503)."""
        values = await self._values(session_id)
        played = next((r for r in values.get("rounds", []) if r["round"] == round_no), None)
        if played is None:
            raise RoundNotFound(f"Session {session_id!r} keeps no round {round_no}: rounds can be rated once "
                                "graded, and the last SESSION_ROUNDS_KEPT are kept. See GET /sessions/{id}.")
        self.telemetry.evaluations.record(
            C.EVALUATION_USER_FEEDBACK, feedback.rating, C.RATING_SCORES[feedback.rating], feedback.comment,
            {GenAI.GEN_AI_CONVERSATION_ID: session_id, C.ATTR_ROUND: round_no, C.ATTR_VERDICT: played["verdict"]},
            trace_id=played.get("trace_id"), span_id=played.get("span_id"))
        self.telemetry.instruments.feedback.add(1, {C.ATTR_RATING: feedback.rating,
                                                    C.ATTR_VERDICT: played["verdict"]})

    async def _values(self, session_id: str, hint: str = "Start a new session with POST /ask.") -> dict[str, Any]:
        return (await self._snapshot(session_id, hint)).values

    async def _snapshot(self, session_id: str, hint: str = "Start a new session with POST /ask.") -> StateSnapshot:
        state = await self._lookup(session_id)
        if not state.values:
            raise SessionNotFound(f"Session {session_id!r} does not exist or has expired. {hint}")
        return state

    async def _lookup(self, session_id: str) -> StateSnapshot:
        """The session's latest checkpoint (empty ``values``: no such session). Raises ``SessionStoreUnavailable``."""
        try:
            return await self.graph.aget_state(self._config(session_id))
        except STORE_ERRORS as exc:
            raise self._failure(SessionStoreUnavailable(), exc) from exc

    async def _lease(self, session_id: str, scope: AsyncExitStack) -> None:
        owner = secrets.token_hex(8)
        try:
            held = await self.leases.acquire(session_id, owner, self.settings.round_deadline_s)
        except STORE_ERRORS as exc:
            raise self._failure(SessionStoreUnavailable(), exc) from exc
        if not held:
            raise RoundInProgress("Another round of this session is still being played (a double click, or a "
                                  "retry?). Wait for it to finish, then ask again.", {"Retry-After": "2"})
        scope.push_async_callback(self._unlease, session_id, owner)

    async def _unlease(self, session_id: str, owner: str) -> None:
        try:
            await self.leases.release(session_id, owner)
        except STORE_ERRORS as exc:  # it expires by itself after Settings.round_deadline_s
            log.warning("could not release the lease of a session: %s: %s", type(exc).__name__, exc)

    async def run(self, prepared: PreparedRound) -> AsyncIterator[StepStarted | RoundEvent | Round | PendingRound]:
        """Play the round: yield each agent step's ``StepStarted`` and ``RoundEvent`` as they happen, then the
        ``Round`` — or, when a person plays the Student and the round pauses for their answer, the
        ``PendingRound``.

        Raises a ``QuizError`` (``app.errors``) for every expected failure; the session is then unchanged.
        """
        inputs = prepared.inputs
        subject = C.subject_label(inputs["subject"])
        attributes = {
            GenAI.GEN_AI_OPERATION_NAME: GenAI.GenAiOperationNameValues.INVOKE_WORKFLOW.value,
            GenAI.GEN_AI_WORKFLOW_NAME: C.WORKFLOW_NAME,
            GenAI.GEN_AI_CONVERSATION_ID: prepared.session_id,
            GenAI.GEN_AI_PROVIDER_NAME: self.llm.gen_ai_provider,
            GenAI.GEN_AI_REQUEST_MODEL: self.llm.model,
            C.ATTR_SUBJECT: subject,
            C.ATTR_DIFFICULTY: inputs["difficulty"],
            C.ATTR_LANGUAGE: inputs["language"],
            C.ATTR_ANSWERED_BY: inputs.get("student", C.ANSWERED_BY_MODEL),
        }
        with self.telemetry.tracer.start_as_current_span(
                C.SPAN_ROUND, kind=SpanKind.INTERNAL, attributes=attributes,
                links=[prepared.asked] if prepared.asked else None,
                record_exception=False, set_status_on_exception=False) as span:
            final: QuizState | None = None
            awaited: Awaited | None = None
            try:
                async for part in self.graph.astream(
                        prepared.resume or inputs, self._config(prepared.session_id),
                        context=self._context(prepared.session_id),
                        stream_mode=["custom", "values"], durability="exit", version="v2"):
                    if part["type"] == "values":
                        final = part["data"]
                        for pending in part["interrupts"]:
                            awaited = Awaited.model_validate(pending.value)
                    elif part["type"] == "custom" and isinstance(part["data"], RoundEvent | StepStarted):
                        yield part["data"]
                if final is None:
                    raise RuntimeError("the graph ended without a state")
                result = None if awaited else RoundResult.of(final)
            except Exception as exc:
                error = classify(exc, self.settings.rate_limit_retry_after_s)
                if error is None:
                    raise
                span.set_attribute(error_attributes.ERROR_TYPE, error.error_type)
                span.set_status(Status(StatusCode.ERROR, error.title))
                raise self._failure(error, exc) from exc
            if result is None:  # paused for the person's answer: no verdict yet
                assert awaited is not None
                span.set_attribute(C.ATTR_ROUND, awaited.round)
                played: Round | PendingRound = self._pending(prepared, awaited, final)
            else:
                played = self._graded(prepared.session_id, result, span)
        try:  # the round is saved; a session without a fresh row is given one at the next start
            await self.activity.touch(prepared.session_id)
        except STORE_ERRORS as exc:
            log.warning("could not record the session's activity: %s: %s", type(exc).__name__, exc)
        yield played

    def _graded(self, session_id: str, result: RoundResult, span: Any) -> Round:
        """Record a graded round on its span, in ``quiz.rounds`` and as the Teacher's evaluation; the ``Round``."""
        subject = C.subject_label(result.subject)
        span.set_attribute(C.ATTR_ROUND, result.round)
        span.set_attribute(C.ATTR_VERDICT, result.verdict)
        span.set_attribute(GenAI.GEN_AI_USAGE_INPUT_TOKENS, result.input_tokens)
        span.set_attribute(GenAI.GEN_AI_USAGE_OUTPUT_TOKENS, result.output_tokens)
        self.telemetry.instruments.rounds.add(1, {C.ATTR_SUBJECT: subject, C.ATTR_DIFFICULTY: result.difficulty,
                                                  C.ATTR_VERDICT: result.verdict,
                                                  C.ATTR_ANSWERED_BY: result.answered_by})
        self.telemetry.evaluations.record(  # the Teacher's grade, parented to this round's span
            C.EVALUATION_CORRECTNESS, result.verdict, C.VERDICT_SCORES[result.verdict], result.feedback,
            {GenAI.GEN_AI_CONVERSATION_ID: session_id, C.ATTR_ROUND: result.round,
             C.ATTR_SUBJECT: subject, C.ATTR_DIFFICULTY: result.difficulty, C.ATTR_ANSWERED_BY: result.answered_by})
        return self._round(session_id, result)

    def _pending(self, prepared: PreparedRound, awaited: Awaited, state: QuizState) -> PendingRound:
        """The first half of a person's round: the question (never the reference answer) and its tokens."""
        asked = state.get("usage", {}).get("ask", {"input_tokens": 0, "output_tokens": 0})
        inputs = prepared.inputs
        return PendingRound(session_id=prepared.session_id, round=awaited.round, subject=inputs["subject"],
                            difficulty=inputs["difficulty"], language=inputs["language"], question=awaited.question,
                            model=self.llm.model,
                            usage=Usage(input_tokens=asked["input_tokens"], output_tokens=asked["output_tokens"],
                                        total_tokens=asked["input_tokens"] + asked["output_tokens"]),
                            trace_id=current_trace_id())

    async def play(self, prepared: PreparedRound) -> Round | PendingRound:
        """Play the round to its end (or its pause) and return it. Raises a ``QuizError`` as ``run()`` does."""
        last: StepStarted | RoundEvent | Round | PendingRound | None = None
        async for last in self.run(prepared):  # noqa: B007  (the last item is the Round or PendingRound)
            pass
        assert isinstance(last, Round | PendingRound), "run() ends with the Round (or PendingRound) or raises"
        return last

    def _failure(self, error: QuizError, cause: BaseException) -> QuizError:
        log.warning("round failed: %s (%s: %s) trace_id=%s", error.title, type(cause).__name__, cause,
                    current_trace_id())
        return error

    @staticmethod
    def _config(session_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": session_id}}

    def _context(self, session_id: str) -> QuizContext:
        return QuizContext(agents=self.agents, session_id=session_id,
                           provider=self.llm.gen_ai_provider, model=self.llm.model, tracer=self.telemetry.tracer,
                           step_duration=self.telemetry.instruments.step_duration,
                           structured_output_attempts=self.settings.structured_output_attempts,
                           call_deadline_s=self.settings.llm_call_deadline_s,
                           rounds_kept=self.settings.session_rounds_kept, prompts=self.prompts)

    def _round(self, session_id: str, result: RoundResult) -> Round:
        return Round(session_id=session_id, round=result.round, subject=result.subject,
                     difficulty=result.difficulty, language=result.language, question=result.question,
                     student_answer=result.student_answer, answered_by=result.answered_by,
                     verdict=result.verdict, feedback=result.feedback,
                     reference_answer=result.reference_answer, model=self.llm.model,
                     usage=Usage(input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                                 total_tokens=result.input_tokens + result.output_tokens),
                     trace_id=current_trace_id())
