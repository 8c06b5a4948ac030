"""The graph's public events: what each agent step tells the world as it starts and as it finishes.

Each step writes its events to LangGraph's custom stream (``runtime.stream_writer``), so a consumer runs the
graph with ``stream_mode=["custom", "values"]`` and reads them without knowing a node's name:

    async for mode, chunk in graph.astream(inputs, config, context=ctx, stream_mode=["custom", "values"]):
        if mode == "custom":   # a RoundEvent, in graph order
            ...

Every event carries what a consumer needs to render it without knowing its class: the ``step`` and ``agent``
(the agent table's names, ``graphs.agents``), the ``speaker`` (the agent's display name), the ``text`` said,
its ``status`` (``started`` while the step works, ``finished`` once it has spoken), the bounded ``outcome``
when the step has one (a verdict, a review's ``accepted``/``rejected``) and whether a ``person`` spoke. A
subclass adds typed fields for consumers that know it (``QuestionAsked.question``); its ``kind`` names it (the
server-sent event's name on ``POST /ask``). No event carries a reference answer: it is revealed only with the
finished round (``graphs.views.FinishedRound``).
(LangGraph custom streams: https://docs.langchain.com/oss/python/langgraph/streaming#stream-custom-data)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from quiz.vocabulary import Student, Verdict


class RoundEvent(BaseModel):
    """Base of every public event of a round; ``model_dump()`` is the payload.

    ``kind``: the event's name (a step's own, or ``step`` for a start); ``round``: 1-based round number;
    ``step``/``agent``/``speaker``: who; ``status``: ``started`` | ``finished``; ``text``: what was said (empty
    for a start); ``outcome``: a bounded result of the step, or ``None``; ``by``: ``agent``, or ``person`` when
    the person playing the Student spoke.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    round: int
    step: str
    agent: str
    speaker: str
    status: Literal["started", "finished"] = "finished"
    text: str = ""
    outcome: str | None = None
    by: Literal["agent", "person"] = "agent"


class StepStarted(RoundEvent):
    """A step began; its finished event follows when it has spoken (or the run fails). A person playing the
    Student has no step: their answer arrives as ``AnswerGiven`` with ``by="person"``."""

    kind: str = "step"
    status: Literal["started", "finished"] = "started"


class QuestionAsked(RoundEvent):
    """The Teacher asked ``question`` (a multiple-choice one with its ``options``, lettered A, B … in ``text``)."""

    kind: str = "question"
    question: str
    options: list[str] = []


class QuestionReviewed(RoundEvent):
    """The Reviewer checked the question: ``accepted`` or not, and why (``reason``, never the reference answer).
    A rejected question goes back to the Teacher once; a second rejection is kept and said."""

    kind: str = "review"
    accepted: bool
    reason: str


class HintGiven(RoundEvent):
    """The Tutor gave the person playing the Student a hint (``number``: 1 for the round's first); the round
    still awaits their answer."""

    kind: str = "hint"
    hint: str
    number: int


class AnswerGiven(RoundEvent):
    """The Student answered: the Student agent (``answered_by="model"``) or the person playing it."""

    kind: str = "answer"
    student_answer: str
    answered_by: Student = "model"


class AnswerGraded(RoundEvent):
    """The Teacher graded the answer; the round is finished."""

    kind: str = "grade"
    verdict: Verdict
    feedback: str


class AnswerAwaited(BaseModel):
    """A person plays the Student and the round is paused for their answer: the value of the graph's
    ``interrupt`` (``StateSnapshot.interrupts``). The question only — never the reference answer.

    ``asked_trace_id``/``asked_span_id`` (hex): the span that asked, so the request that grades can link its
    trace to the one that asked (``None`` without telemetry, or after a failed grading). ``hints``: the hints the
    Tutor gave so far in this round, oldest first.
    """

    model_config = ConfigDict(frozen=True)

    round: int
    question: str
    hints: list[str] = []
    options: list[str] = []  # a multiple-choice question's: the answer names one (quiz.choice)
    asked_trace_id: str | None = None
    asked_span_id: str | None = None
