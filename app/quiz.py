"""Plays quiz rounds: resolves the session and settings, runs the graph, turns failures into domain errors.

The graph runs with ``durability="exit"``: one checkpoint per round, written when the round ends (a round
that fails leaves the session as it was before it).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode

from app.errors import (STORE_ERRORS, Overloaded, QuizError, SessionNotFound, current_trace_id,
                        translate_llm_error)
from app.llm import LLM
from app.messages import is_korean, parse_message
from app.schemas import AskRequest, Round, Usage
from app.settings import Settings
from graphs.quiz import QuizAgents, QuizContext
from telemetry import Telemetry
from telemetry import contract as C

log = logging.getLogger(__name__)

DEFAULT_SUBJECT = "general"
DEFAULT_DIFFICULTY = "medium"


@dataclass(frozen=True)
class PreparedRound:
    """A round that can run: its session and the graph input (settings for this round)."""

    session_id: str
    graph_input: dict[str, str]
    round: int  # the number this round will have when it finishes


def new_session_id() -> str:
    """128 random bits, URL-safe (22 characters): unguessable (``secrets``, RFC 4086 strength)."""
    return secrets.token_urlsafe(16)


@dataclass
class QuizService:
    graph: CompiledStateGraph
    checkpointer: BaseCheckpointSaver
    llm: LLM
    telemetry: Telemetry
    settings: Settings
    agents: QuizAgents = field(init=False)
    in_flight: int = field(init=False, default=0)

    def admit(self) -> None:
        """Count a round in; raise ``Overloaded`` (503) past ``MAX_CONCURRENT_ROUNDS``. Pair with ``release()``.

        One event loop runs every round, so a plain counter is exact.
        """
        if self.in_flight >= self.settings.max_concurrent_rounds:
            self.telemetry.instruments.errors.add(1, {error_attributes.ERROR_TYPE: Overloaded.error_type})
            raise Overloaded(f"{self.in_flight} rounds are in progress on this instance (MAX_CONCURRENT_ROUNDS). "
                             "Retry in a second.", {"Retry-After": "1"})
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def __post_init__(self) -> None:
        # Bound once: binding tools converts the schemas to JSON Schema, which is not free.
        self.agents = QuizAgents.create(teacher=self.llm.chat, student=self.llm.chat)

    async def prepare(self, request: AskRequest) -> PreparedRound:
        """Resolve session and settings. Raises ``SessionNotFound`` for an unknown or expired id."""
        intent = parse_message(request.message)
        previous: dict[str, Any] = {}
        if request.session_id is not None:
            try:
                state = await self.graph.aget_state(self._config(request.session_id))
            except STORE_ERRORS as exc:
                raise self._failed(exc) or exc from exc  # store errors always map to a 503
            if not state.values:
                self.telemetry.instruments.errors.add(1, {error_attributes.ERROR_TYPE: SessionNotFound.error_type})
                raise SessionNotFound(
                    f"Session {request.session_id!r} does not exist or has expired. Omit session_id to start "
                    "a new session.")
            previous = state.values
            if intent.reset:
                try:
                    await self.checkpointer.adelete_thread(request.session_id)
                except STORE_ERRORS as exc:
                    raise self._failed(exc) or exc from exc  # store errors always map to a 503  # store errors always map to a 503
        session_id = request.session_id or new_session_id()
        language = (request.language or intent.language or previous.get("language")
                    or ("ko" if is_korean(request.subject) else "en"))
        graph_input = {
            "subject": request.subject or intent.subject or previous.get("subject") or DEFAULT_SUBJECT,
            "difficulty": request.difficulty or intent.difficulty or previous.get("difficulty") or DEFAULT_DIFFICULTY,
            "language": language,
        }
        finished = 0 if intent.reset else int(previous.get("round", 0))
        return PreparedRound(session_id, graph_input, finished + 1)

    def _failed(self, exc: BaseException) -> QuizError | None:
        """The domain error for ``exc`` (counted and logged), or ``None`` when it is unexpected."""
        error = translate_llm_error(exc, self.settings.rate_limit_retry_after_s)
        if error is not None:
            self.telemetry.instruments.errors.add(1, {error_attributes.ERROR_TYPE: error.error_type})
            log.warning("round failed: %s (%s: %s) trace_id=%s", error.title, type(exc).__name__, exc,
                        current_trace_id())
        return error

    def _config(self, session_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": session_id}}

    def _context(self, session_id: str) -> QuizContext:
        return QuizContext(agents=self.agents, session_id=session_id,
                           provider=self.llm.gen_ai_provider, model=self.llm.model, tracer=self.telemetry.tracer,
                           step_duration=self.telemetry.instruments.step_duration,
                           structured_output_attempts=self.settings.structured_output_attempts,
                           call_deadline_s=self.settings.llm_call_deadline_s)

    async def run(self, prepared: PreparedRound) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Play the round, yielding ``(event, data)`` as each agent step finishes.

        Events in order: ``question`` {round, question}, ``answer`` {student_answer},
        ``grade`` {verdict, feedback}, then ``round`` (the whole ``Round``). Raises ``QuizError``.
        """
        inputs = prepared.graph_input
        attributes = {
            GenAI.GEN_AI_OPERATION_NAME: "invoke_workflow",
            "gen_ai.workflow.name": C.WORKFLOW_NAME,
            GenAI.GEN_AI_CONVERSATION_ID: prepared.session_id,
            GenAI.GEN_AI_PROVIDER_NAME: self.llm.gen_ai_provider,
            GenAI.GEN_AI_REQUEST_MODEL: self.llm.model,
            C.ATTR_SUBJECT: C.subject_label(inputs["subject"]),
            C.ATTR_DIFFICULTY: inputs["difficulty"],
            C.ATTR_LANGUAGE: inputs["language"],
        }
        with self.telemetry.tracer.start_as_current_span(
                C.SPAN_ROUND, kind=SpanKind.INTERNAL, attributes=attributes,
                record_exception=False, set_status_on_exception=False) as span:
            final: dict[str, Any] = {}
            try:
                async for mode, chunk in self.graph.astream(
                        inputs, self._config(prepared.session_id), context=self._context(prepared.session_id),
                        stream_mode=["updates", "values"], durability="exit"):
                    if mode == "values":
                        final = chunk
                        continue
                    for node, update in chunk.items():
                        event = _step_event(node, update, prepared.round)
                        if event is not None:
                            yield event
            except Exception as exc:
                error = self._failed(exc)
                if error is None:
                    raise
                span.set_attribute(error_attributes.ERROR_TYPE, error.error_type)
                span.set_status(Status(StatusCode.ERROR, error.title))
                raise error from exc
            result = self._round(prepared.session_id, final)
            span.set_attribute(C.ATTR_ROUND, result.round)
            span.set_attribute(C.ATTR_VERDICT, result.verdict)
            span.set_attribute(GenAI.GEN_AI_USAGE_INPUT_TOKENS, result.usage.input_tokens)
            span.set_attribute(GenAI.GEN_AI_USAGE_OUTPUT_TOKENS, result.usage.output_tokens)
            self.telemetry.instruments.rounds.add(1, {C.ATTR_SUBJECT: attributes[C.ATTR_SUBJECT],
                                                      C.ATTR_DIFFICULTY: result.difficulty,
                                                      C.ATTR_VERDICT: result.verdict})
        yield "round", result.model_dump()

    async def play_round(self, prepared: PreparedRound) -> Round:
        async for event, data in self.run(prepared):
            if event == "round":
                return Round.model_validate(data)
        raise QuizError("the round ended without a result")  # unreachable: run() always ends with "round"

    def _round(self, session_id: str, state: dict[str, Any]) -> Round:
        usage = Usage()
        for step in state.get("usage", {}).values():
            usage.input_tokens += step["input_tokens"]
            usage.output_tokens += step["output_tokens"]
        usage.total_tokens = usage.input_tokens + usage.output_tokens
        return Round(session_id=session_id, round=state["round"], subject=state["subject"],
                     difficulty=state["difficulty"], language=state["language"],
                     question=state["question"]["question"], student_answer=state["answer"]["answer"],
                     verdict=state["grade"]["verdict"], feedback=state["grade"]["feedback"],
                     reference_answer=state["question"]["reference_answer"], model=self.llm.model, usage=usage,
                     trace_id=current_trace_id())


def _step_event(node: str, update: dict[str, Any] | None, round_no: int) -> tuple[str, dict[str, Any]] | None:
    if not update:
        return None
    if node == "teacher_ask":
        return "question", {"round": round_no, "question": update["question"]["question"]}
    if node == "student_answer":
        return "answer", {"student_answer": update["answer"]["answer"]}
    if node == "teacher_grade":
        return "grade", {"verdict": update["grade"]["verdict"], "feedback": update["grade"]["feedback"]}
    return None
