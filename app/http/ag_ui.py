"""``POST /ag-ui``: the quiz as an AG-UI agent, so any AG-UI client (``@ag-ui/client``'s ``HttpAgent``,
CopilotKit) plays rounds with no adapter of its own.

One run is one quiz round, built from the protocol's own models and encoder (``ag-ui-protocol``; protocol
1.0, https://docs.ag-ui.com/concepts/events):

    RUN_STARTED → CUSTOM "trace" {trace_id, session_id} → STATE_SNAPSHOT (before the round)
    → per agent step: STEP_STARTED "teacher.ask" → TEXT_MESSAGE_START/CONTENT/END (name "Teacher")
      → STEP_FINISHED; "student.answer" (name "Student"); "teacher.grade" (the verdict and feedback)
    → STATE_SNAPSHOT (after) → RUN_FINISHED {result: the Round, usage}

- ``threadId`` is the session, and belongs to the principal that started it (another principal's thread is
  ``session-not-found``, as an unknown one). An unknown id starts a new session under it only when the id is a
  random (version 4) UUID, as AG-UI clients make them (else RUN_ERROR ``thread-id-not-random``) and the run
  carries no earlier conversation: a run whose messages hold an assistant's message is a thread this service
  played, so an unknown id means it has expired (RUN_ERROR ``session-not-found``), never a silent new session.
  With authentication on, the route needs a credential like ``/ask``.
- The last user message is capped like ``/ask``'s ``message`` (``MESSAGE_MAX_CHARS``: 422 before the stream),
  and only read once the run has its place (``RoundService.admission``): a shed run pays for no parsing.
- Settings: ``forwardedProps`` beats the last message (if the conversation ends with a user message, parsed
  like ``/ask``'s ``message``), which beats ``state`` (a client echoes the last ``STATE_SNAPSHOT``), which
  beats the session's own. Keys: ``subject``, ``difficulty`` (``adaptive`` too), ``language``, ``student``,
  ``learner_id`` (app.learners), ``format`` (``choice``: multiple choice, the options lettered in the
  Teacher's message; a person resumes with a letter or an option's words).
- A person plays the Student (``student: "person"``): the run ends after the question with
  ``RUN_FINISHED`` ``outcome: {type: "interrupt"}`` (one ``Interrupt``, id ``round-<n>``, its
  ``responseSchema`` an object with ``answer``); the next run carries ``resume: [{interruptId,
  status: "resolved", payload: {answer}}]``, the same paused-round checkpoint as ``/ask``'s ``answer``.
  While hints are left (``metadata.hints_left``), the payload may be ``{hint: true}`` instead (the schema says
  so): the Tutor's step runs (STEP_STARTED/FINISHED ``tutor.hint``, its hint a message by "Tutor") and the run
  ends with a new interrupt for the same question (id ``round-<n>-hint-<k>``, ``metadata.hints``). This is
  ``/ask``'s ``hint: true``; a hint is the person's request, so it is a resume payload, not a tool the agent
  calls.
  A question cannot be skipped: ``status: "cancelled"`` is refused while it waits (``answer-awaited``).
- Invalid input is an HTTP 4xx problem before any event (401, 413, 422 naming the field by its wire name,
  e.g. ``body.forwardedProps.difficulty``: ``QuizRunInput`` is the protocol's input made exact). Once the
  stream has begun, a failure is ``RUN_ERROR`` whose
  ``code`` is the problem type ``/ask`` would have answered (``/problems/llm-timeout``) and whose
  ``metadata.problem`` is that problem body; it is counted and traced like a failed ``/ask``.

The state (``QuizAgentState``) never holds a reference answer: that comes only with the graded round in
``RUN_FINISHED.result``.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, Any, Literal

from ag_ui.core import (
    PROTOCOL_VERSION,
    BaseEvent,
    CustomEvent,
    Interrupt,
    Message,
    ResumeEntry,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TextPart,
    TokenUsage,
    UserMessage,
)
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Request, Response
from fastapi.sse import EventSourceResponse
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from app.auth import Principal
from app.errors import AnswerAwaited, NoAnswerAwaited, QuizError, RoundCancelled
from app.http.dependencies import PrincipalDep, ProblemsDep, RoundsDep, RunnerDep
from app.http.problems import ROUND_ERRORS, Problems, route_of
from app.http.routes import IdempotencyKey, LastEventId
from app.http.schemas import (
    MESSAGE_MAX_CHARS,
    Answer,
    AnswerRequest,
    AskRequest,
    DifficultyOrAdaptive,
    LearnerId,
    PendingRound,
    Problem,
    SessionId,
    Subject,
    ended,
)
from app.messages import parse_message
from app.rounds import AskHint, GiveAnswer, PlayRound, PreparedRound, RoundPlayed, RoundService
from app.runs import Frame, Holding, fingerprint, parse_key, run_id_of, to_play
from app.sessions import Outcome, RunRecord, RunState
from graphs.events import RoundEvent
from graphs.views import AwaitedQuestion, Score, SessionView
from quiz.choice import as_text
from quiz.vocabulary import Language, QuestionFormat, Student, Verdict
from telemetry.spans import current_trace_id

AG_UI_PATH = "/ag-ui"
TRACE_EVENT = "trace"  # the CUSTOM event that comes first: {trace_id, session_id}
INTERRUPT_REASON = "answer_awaited"  # Interrupt.reason of a question waiting for the person's answer
# The first words of a message whose step's outcome is a verdict, by language (the verdict, then the feedback).
VERDICT_WORDS: dict[str, dict[Verdict, str]] = {
    "en": {"correct": "Correct.", "partially_correct": "Partially correct.", "incorrect": "Incorrect."},
    "ko": {"correct": "정답입니다.", "partially_correct": "부분 정답입니다.", "incorrect": "오답입니다."},
}
# What the answer to an interrupt looks like (Interrupt.responseSchema): the same limits as /ask's answer; while
# hints are left, a request for one ({"hint": true}) too.
ANSWER_SCHEMA: dict[str, Any] = AnswerRequest.model_json_schema()["properties"]["answer"]
RESPONSE_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"answer": ANSWER_SCHEMA},
                                   "required": ["answer"], "additionalProperties": False}
HINT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"hint": {"const": True}}, "required": ["hint"],
                               "additionalProperties": False}

router = APIRouter()


class QuizProps(BaseModel):
    """The settings a run may carry in ``forwardedProps`` or ``state``, validated like ``/ask``'s fields.
    Other keys are allowed and ignored (a client echoes the whole ``STATE_SNAPSHOT`` as ``state``)."""

    model_config = ConfigDict(extra="allow")

    subject: Subject | None = None
    difficulty: DifficultyOrAdaptive = None
    language: Language | None = None
    student: Student | None = None
    learner_id: LearnerId | None = None
    format: QuestionFormat | None = None
    adaptive: bool | None = None  # as the session's state says it (STATE_SNAPSHOT): its difficulty is adaptive

    def settings(self) -> dict[str, Any]:
        """The settings given (``None`` left out); an adaptive session's state (``adaptive: true``, echoed
        back with the difficulty of its last round) stays adaptive."""
        given = {name: value for name in QuizProps.model_fields
                 if name != "adaptive" and (value := getattr(self, name)) is not None}
        if self.adaptive:
            given["difficulty"] = "adaptive"
        return given


class AnswerPayload(BaseModel):
    """What a person's answer looks like as a resume ``payload`` (the interrupt's ``responseSchema``)."""

    model_config = ConfigDict(extra="forbid")

    answer: Answer = Field(description="The answer, ≤ 1000 characters.")


class HintPayload(BaseModel):
    """A resume ``payload`` that asks the Tutor for a hint instead of answering (the round waits again)."""

    model_config = ConfigDict(extra="forbid")

    hint: Literal[True]


def _payload_kind(payload: Any) -> str:
    """The payload's tag: as received (a dict), or as the model it became (serialising the run's input)."""
    hint = isinstance(payload, HintPayload) or (isinstance(payload, dict) and "hint" in payload)
    return "HintPayload" if hint else "AnswerPayload"


class ResolvedEntry(ResumeEntry):
    """A resume entry that answers the question, or asks for a hint to it (told apart by ``hint``)."""

    status: Literal["resolved"]
    payload: Annotated[Annotated[AnswerPayload, Tag("AnswerPayload")] | Annotated[HintPayload, Tag("HintPayload")],
                       Discriminator(_payload_kind)]


class CancelledEntry(ResumeEntry):
    """A resume entry that gives the question up: refused while it waits (a question cannot be skipped)."""

    status: Literal["cancelled"]


class QuizRunInput(RunAgentInput):
    """AG-UI's ``RunAgentInput`` with what this agent reads made exact, so the OpenAPI document says what is
    accepted: ``threadId`` is a session id (``SESSION_ID_PATTERN``), ``state`` and ``forwardedProps`` carry
    ``QuizProps``, a ``resume`` entry answers with ``{"answer": "…"}``."""

    thread_id: SessionId
    state: QuizProps | None = None
    forwarded_props: QuizProps | None = None
    resume: list[Annotated[ResolvedEntry | CancelledEntry,
                           Field(discriminator="status")]] | None = None  # type: ignore[assignment]  # narrower

    @model_validator(mode="after")
    def _message_cap(self) -> QuizRunInput:
        """The last user message, the one read for settings, is capped like ``/ask``'s ``message``."""
        said = last_user_text(self.messages)
        if said is not None and len(said) > MESSAGE_MAX_CHARS:
            raise ValueError(f"the last user message is {len(said)} characters; at most {MESSAGE_MAX_CHARS} are read "
                             "(it asks for settings, like /ask's message)")
        return self


class QuizAgentState(SessionView):
    """The agent's state, as ``STATE_SNAPSHOT`` sends it: the session (``graphs.views.SessionView``) before
    and after the round, without its kept rounds (they hold reference answers: those come only with the graded
    round in ``RUN_FINISHED.result``).

    ``round``: the round this run plays (1-based); ``rounds_played``: rounds graded so far; ``score``: their
    verdicts counted; ``awaiting_answer``: the question a person must answer (no reference answer, ever).
    """

    session_id: str
    round: int = Field(ge=1)

    @classmethod
    def at(cls, session_id: str, view: SessionView, round_no: int) -> QuizAgentState:
        """The state of ``view`` while round ``round_no`` is played."""
        return cls(**{**dict(view), "rounds": []}, session_id=session_id, round=round_no)

    def snapshot(self) -> dict[str, Any]:
        """What ``STATE_SNAPSHOT`` sends (no ``rounds``)."""
        return self.model_dump(exclude={"rounds"})


def interrupt_id(round_no: int, hints: int = 0) -> str:
    """The id of the interrupt that waits for the answer to round ``round_no`` after ``hints`` hints (unique within
    a thread: each hint ends its run with a new interrupt)."""
    return f"round-{round_no}" if not hints else f"round-{round_no}-hint-{hints}"


def last_user_text(messages: Sequence[Message]) -> str | None:
    """The text of the conversation's last message when it is the user's, else ``None`` (a run without new
    words from the user plays the next round). Text parts are joined; media parts are ignored."""
    if not messages or not isinstance(messages[-1], UserMessage):
        return None
    content = messages[-1].content
    text = content if isinstance(content, str) else " ".join(
        part.text for part in content if isinstance(part, TextPart))
    return text


def has_history(messages: Sequence[Message]) -> bool:
    """Whether the conversation holds an assistant's message: the thread was played before."""
    return any(message.role == "assistant" for message in messages)


def to_request(run: QuizRunInput) -> tuple[PlayRound | GiveAnswer | AskHint, str | None]:
    """The round-service request a run amounts to and the id of the interrupt it answers (``None``: a new
    round). Settings: ``forwardedProps`` > the last message (if the user's) > ``state`` > the session. An
    unknown thread becomes a session only when the conversation has no history (``has_history``)."""
    for entry in run.resume or []:
        if isinstance(entry, ResolvedEntry):
            if isinstance(entry.payload, HintPayload):
                return AskHint(session_id=run.thread_id), entry.interrupt_id
            return GiveAnswer(session_id=run.thread_id, answer=entry.payload.answer), entry.interrupt_id
    settings = run.state.settings() if run.state else {}
    said = last_user_text(run.messages)
    intent = parse_message(said)
    settings.update({k: v for k, v in (("subject", intent.subject), ("difficulty", intent.difficulty),
                                       ("language", intent.language)) if v is not None})
    settings.update(run.forwarded_props.settings() if run.forwarded_props else {})
    create = not has_history(run.messages)
    return replace(AskRequest(session_id=run.thread_id, **settings).domain(create=create), intent=intent), None


@router.post(AG_UI_PATH, response_class=Response, responses={
    200: {"description": "The run as AG-UI events (server-sent events, `data:` lines of JSON, each with an `id`): "
                         "RUN_STARTED, "
                         "CUSTOM `trace`, STATE_SNAPSHOT, per agent step STEP_STARTED, a text message by the "
                         "Teacher or the Student and STEP_FINISHED, STATE_SNAPSHOT, RUN_FINISHED (the round "
                         "as `result`, `usage`; or an `interrupt` outcome when a person plays the Student). "
                         "A failure after the stream began is RUN_ERROR, its `code` the problem type. The same "
                         "input sent again (same `threadId` and `runId`) follows the same run — from "
                         "`Last-Event-ID` on — instead of playing another.",
          "content": {"text/event-stream": {}}},
    **{status: ROUND_ERRORS[status] for status in (400, 401, 413, 422, 429)}})
async def run_agent(run: QuizRunInput, request: Request, rounds: RoundsDep, runner: RunnerDep, problems: ProblemsDep,
                    principal: PrincipalDep, idempotency_key: IdempotencyKey = None,
                    last_event_id: LastEventId = None) -> EventSourceResponse:
    """Play one quiz round as an AG-UI run (protocol 1.0): the thread is the session, a person's answer
    comes as `resume`. For AG-UI clients; `POST /ask` is the same game in this API's own shapes."""
    route = route_of(request)
    key = parse_key(idempotency_key) or f"ag-ui:{run.thread_id}:{run.run_id}"
    run_id = run_id_of(principal.id, key)
    signature = fingerprint(route or "", run.model_dump_json())
    stopped = partial(_stopped, problems, run, route)
    record = await runner.existing(run_id, signature)
    starting = to_play(record)
    limits = await rounds.quota(principal, count=starting)  # a run followed again is neither counted nor refused
    if starting:
        holder = secrets.token_hex(8)
        record = await runner.start(
            RunRecord(run_id, run.thread_id, principal.id, key, signature, 1, holder, "running", alive=True),
            lambda holding: _run(rounds, problems, run, route, holding, principal, run_id), stopped,
            Holding(AsyncExitStack(), owner=holder, succeed=record.holder if record is not None else None),
            stream=True)
    assert record is not None  # started here, or followed
    return EventSourceResponse(runner.follow(record, last_event_id, stopped),
                               headers={"Cache-Control": "no-cache", **limits})


async def _run(rounds: RoundService, problems: Problems, run: QuizRunInput, route: str | None,
               holding: Holding, principal: Principal, run_id: str) -> AsyncIterator[Frame]:
    """The run as encoded AG-UI events, up to ``RUN_FINISHED`` — or ``RUN_ERROR`` for any failure once the
    stream has begun (``Problems.failed_stream``: traced and counted). The run's place and its session's lease
    are taken here, on ``holding``, which the round's task releases when the run ends; ``run_id``: the round's
    id (``app.runs``), kept beside the checkpoint it writes. (One generator, like
    ``/ask``'s stream: the round's spans open and close in it.)"""
    encoder = EventEncoder()
    yield Frame(_encode(encoder, RunStartedEvent(thread_id=run.thread_id, run_id=run.run_id,
                                                 protocol_version=PROTOCOL_VERSION)))
    yield Frame(_encode(encoder, CustomEvent(name=TRACE_EVENT, value={"trace_id": current_trace_id(),
                                                                      "session_id": run.thread_id})))
    try:
        holding.resources.enter_context(rounds.admission(principal))
        ask, answering = to_request(run)
        prepared = await _prepare(rounds, ask, answering, holding, principal, run_id)
        holding.lease = prepared.lease
        state = _state(prepared)
        yield Frame(_encode(encoder, StateSnapshotEvent(snapshot=state.snapshot())))
        async for item in rounds.run(prepared):
            for event in _translate(item, run, rounds, prepared):
                data = _encode(encoder, event)
                if isinstance(event, RunFinishedEvent):
                    yield Frame(data, Outcome("finished", 200, json.dumps(event.result).encode()))
                else:
                    yield Frame(data)
    except Exception as exc:  # a QuizError, or a bug: the run still ends with RUN_ERROR, never half-way
        problem = problems.failed_stream(exc, route)
        yield _error(encoder, run, problem, exc.headers if isinstance(exc, QuizError) else {}, "failed")


def _error(encoder: EventEncoder, run: QuizRunInput, problem: Problem, headers: dict[str, str],
           state: RunState) -> Frame:
    """``RUN_ERROR`` for ``problem``: its ``code`` the problem type, its ``metadata.problem`` the body."""
    body = problem.model_dump(exclude_unset=True)
    return Frame(_encode(encoder, RunErrorEvent(message=problem.detail, code=problem.type,
                                                metadata={"problem": body})),
                 Outcome(state, problem.status, json.dumps(body).encode(), headers))


def _stopped(problems: Problems, run: QuizRunInput, route: str | None, error: QuizError) -> Frame:
    """The last event of a run that did not end by itself: ``RUN_ERROR`` with ``/problems/round-cancelled``
    (AG-UI 1.0 has no event for a run stopped by the server; its clients abort by closing the stream, which
    here leaves the run playing for a reconnect: ``DELETE /sessions/{threadId}/round`` stops it) or
    ``/problems/round-lost``."""
    state: RunState = "cancelled" if isinstance(error, RoundCancelled) else "lost"
    return _error(EventEncoder(), run, problems.of(error, route=route), error.headers, state)


def _encode(encoder: EventEncoder, event: BaseEvent) -> bytes:
    """``event`` as an SSE ``data:`` line, stamped with the time it is sent (ms since the epoch, as every
    AG-UI SDK sets ``timestamp``)."""
    event.timestamp = time.time_ns() // 1_000_000
    return encoder.encode(event).encode()


async def _prepare(rounds: RoundService, ask: PlayRound | GiveAnswer | AskHint, answering: str | None,
                   holding: Holding, principal: Principal, run_id: str) -> PreparedRound:
    """``RoundService.prepare`` (a thread the service has not seen becomes a session), its 409s told in this
    protocol's words, and a resume checked against the interrupt that waits."""
    try:
        prepared = await rounds.prepare(ask, holding.resources, principal, owner=holding.owner,
                                        succeed=holding.succeed, run=run_id)
    except AnswerAwaited:
        raise AnswerAwaited("A question of this thread waits for an answer (the interrupt of the run that "
                            "asked it; GET /sessions/{threadId} shows it): resume it with status "
                            "\"resolved\" and {\"answer\": \"…\"} — a question cannot be skipped, and \"I "
                            "don't know\" is an answer — or start a new thread.") from None
    except NoAnswerAwaited:
        raise NoAnswerAwaited(f"No question of this thread waits for an answer, so interrupt {answering!r} "
                              "cannot be resumed (graded already?): run without `resume`.") from None
    awaited = prepared.awaited
    if answering is not None and awaited is not None \
            and answering != (waiting := interrupt_id(awaited.round, len(awaited.hints))):
        raise NoAnswerAwaited(f"The thread has no interrupt {answering!r} waiting: it waits for {waiting!r}.")
    return prepared


def _translate(item: RoundEvent | RoundPlayed, run: QuizRunInput, rounds: RoundService,
               prepared: PreparedRound) -> list[BaseEvent]:
    """The AG-UI events for one item of ``RoundService.run``: any step's start and finish (its name
    ``<agent>.<step>``, what it said as a text message by its speaker), whatever the step; then the end."""
    if isinstance(item, RoundEvent):
        name = f"{item.agent}.{item.step}"
        if item.status == "started":
            return [StepStartedEvent(step_name=name)]
        said = _said(item, prepared.inputs["language"])
        # A person's answer is no agent step: it is said, not started or finished.
        return said if item.by == "person" else [*said, StepFinishedEvent(step_name=name)]
    result = ended(item, rounds.settings.hints_allowed)
    after = QuizAgentState.at(prepared.session_id, item.session, result.round)
    if isinstance(result, PendingRound):
        return [StateSnapshotEvent(snapshot=after.snapshot()),
                RunFinishedEvent(
                    thread_id=run.thread_id, run_id=run.run_id, result=result.model_dump(),
                    usage=[_usage(rounds, result.usage.input_tokens, result.usage.output_tokens)],
                    outcome=RunFinishedInterruptOutcome(interrupts=[Interrupt(
                        id=interrupt_id(result.round, len(result.hints)), reason=INTERRUPT_REASON,
                        message=as_text(result.question, result.options),
                        response_schema={"anyOf": [RESPONSE_SCHEMA, HINT_SCHEMA]} if result.hints_left
                        else RESPONSE_SCHEMA,
                        metadata={"round": result.round, "options": result.options, "hints": result.hints,
                                  "hints_left": result.hints_left},
                        expires_at=_expiry(rounds))]))]
    before = prepared.paused.usage if prepared.paused else None  # a resumed run reports its own calls only
    return [StateSnapshotEvent(snapshot=after.snapshot()),
            RunFinishedEvent(
                thread_id=run.thread_id, run_id=run.run_id, result=result.model_dump(),
                usage=[_usage(rounds, result.usage.input_tokens - (before.input_tokens if before else 0),
                              result.usage.output_tokens - (before.output_tokens if before else 0))])]


def _said(event: RoundEvent, language: str) -> list[BaseEvent]:
    """What a step said, as one text message by its speaker: an agent's (``assistant``) or, when a person
    played the Student, the person's (``user``). A verdict is said in words first."""
    words = VERDICT_WORDS.get(language, VERDICT_WORDS["en"]).get(event.outcome or "")  # type: ignore[call-overload]
    text = f"{words} {event.text}" if words else event.text
    message_id = str(uuid.uuid4())
    return [TextMessageStartEvent(message_id=message_id, role="user" if event.by == "person" else "assistant",
                                  name=event.speaker),
            TextMessageContentEvent(message_id=message_id, delta=text or "…"),
            TextMessageEndEvent(message_id=message_id)]


def _state(prepared: PreparedRound) -> QuizAgentState:
    """The session as the round begins (its settings are the round's)."""
    inputs = prepared.inputs
    view = prepared.before or SessionView(subject=inputs["subject"], difficulty=inputs["difficulty"],
                                          language=inputs["language"], student=inputs.get("student", "model"),
                                          rounds_played=0, score=Score(), rounds=[])
    waiting = prepared.awaited
    view = view.model_copy(update={
        "subject": inputs["subject"], "difficulty": inputs["difficulty"], "language": inputs["language"],
        "student": inputs.get("student", view.student),
        "awaiting_answer": AwaitedQuestion(round=waiting.round, question=waiting.question, options=waiting.options,
                                          hints=waiting.hints) if waiting else None})
    return QuizAgentState.at(prepared.session_id, view, prepared.round)


def _usage(rounds: RoundService, input_tokens: int, output_tokens: int) -> TokenUsage:
    return TokenUsage(provider=rounds.quiz.llm.gen_ai_provider, model=rounds.quiz.llm.model, input_tokens=input_tokens,
                      output_tokens=output_tokens, total_tokens=input_tokens + output_tokens)


def _expiry(rounds: RoundService) -> str:
    """When the paused session expires if nobody answers (``SESSION_TTL_S`` of idleness), ISO 8601 UTC."""
    return (datetime.now(UTC) + timedelta(seconds=rounds.settings.session_ttl_s)).isoformat(timespec="seconds")
