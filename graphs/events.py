"""The graph's public events: what each agent step tells the world as it finishes.

Each node writes its event to LangGraph's custom stream (``runtime.stream_writer``), so a consumer runs
the graph with ``stream_mode=["custom", "values"]`` and reads typed events without knowing a node's name:

    async for mode, chunk in graph.astream(inputs, config, context=ctx, stream_mode=["custom", "values"]):
        if mode == "custom":   # a RoundEvent, in graph order
            ...

Every event names its ``kind`` (the server-sent event's name on ``POST /ask``), the ``agent`` that spoke
and the ``step`` it played; its fields are the payload. No event carries the reference answer: it is
revealed only with the finished round (``graphs.state.RoundResult``). Before an agent step runs, its
``StepStarted`` comes (not a ``RoundEvent``: it says that a step began, not what it produced), so a
consumer can show who is at work while the LLM call is in flight (AG-UI's ``STEP_STARTED``).
(LangGraph custom streams: https://docs.langchain.com/oss/python/langgraph/streaming#stream-custom-data)
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from telemetry.contract import AgentName, Step, Student, Verdict


class RoundEvent(BaseModel):
    """Base of every public event of a round. ``model_dump()`` is the payload."""

    model_config = ConfigDict(frozen=True)

    kind: ClassVar[str]
    agent: ClassVar[AgentName]
    step: ClassVar[Step]


class QuestionAsked(RoundEvent):
    """The Teacher asked ``question`` in round ``round`` (1-based) of the session."""

    kind = "question"
    agent = "teacher"
    step = "ask"

    round: int
    question: str


class AnswerGiven(RoundEvent):
    """The Student answered: the Student agent (``answered_by="model"``) or the person playing it."""

    kind = "answer"
    agent = "student"
    step = "answer"

    student_answer: str
    answered_by: Student = "model"


class AnswerGraded(RoundEvent):
    """The Teacher graded the answer; the round is finished."""

    kind = "grade"
    agent = "teacher"
    step = "grade"

    verdict: Verdict
    feedback: str


EVENTS: tuple[type[RoundEvent], ...] = (QuestionAsked, AnswerGiven, AnswerGraded)  # in the order they come


class StepStarted(BaseModel):
    """``agent`` began ``step`` of round ``round``; the step's ``RoundEvent`` follows when it finishes (or
    the run fails). A person playing the Student has no step: their answer arrives as ``AnswerGiven``."""

    model_config = ConfigDict(frozen=True)

    agent: AgentName
    step: Step
    round: int


class AnswerAwaited(BaseModel):
    """A person plays the Student and the round is paused for their answer: the value of the graph's
    ``interrupt`` (``StateSnapshot.interrupts``). The question only — never the reference answer.

    ``asked_trace_id``/``asked_span_id`` (hex): the span that asked, so the request that grades can link its
    trace to the one that asked (``None`` without telemetry, or after a failed grading).
    """

    model_config = ConfigDict(frozen=True)

    round: int
    question: str
    asked_trace_id: str | None = None
    asked_span_id: str | None = None
