"""What goes into a round, what a session keeps, and what comes out.

- ``InputState``: the graph's input, narrower than its state (as in langchain-ai/react-agent ``state.py``).
- ``QuizState``: what the checkpointer keeps per session (LangGraph thread = session id).
- ``Question``, ``StudentAnswer``, ``Grade``: what the agents must return (structured output through a
  forced function call).
- ``RoundResult``: the one projection of a finished round's state that consumers read.

The bounded vocabularies (``Difficulty``, ``Language``, ``Verdict``, ``Step``) are the telemetry contract's
label values, defined once in ``telemetry.contract``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, NotRequired, TypedDict

from pydantic import BaseModel, Field

from telemetry.contract import Difficulty, Language, Step, Student, Verdict

__all__ = ["Difficulty", "Grade", "InputState", "Language", "Question", "QuizState", "RoundResult", "Step",
           "StoredRound", "Student", "StudentAnswer", "TokenUsage", "Verdict"]


class Question(BaseModel):
    """The Teacher's question and the reference answer it keeps from the Student."""

    question: str = Field(description="One short quiz question for the student.")
    reference_answer: str = Field(description="The correct answer, short. Never shown to the student.")


class StudentAnswer(BaseModel):
    """The Student's answer to the question."""

    answer: str = Field(description="The student's short answer.")


class Grade(BaseModel):
    """The Teacher's grading of the Student's answer against the reference answer."""

    verdict: Verdict = Field(description="correct, partially_correct or incorrect.")
    feedback: str = Field(description="One or two sentences of feedback for the student.")


class TokenUsage(TypedDict):
    """Tokens of one agent step, as the provider reported them (OpenAI ``usage``), summed over attempts."""

    input_tokens: int
    output_tokens: int


def keep_last(limit: int) -> Callable[[list[str] | None, list[str] | None], list[str]]:
    """A reducer that appends new items and keeps the last ``limit`` (bounds per-session memory)."""

    def reduce(old: list[str] | None, new: list[str] | None) -> list[str]:
        merged = (old or []) + (new or [])
        return merged[-limit:] if limit else []

    return reduce


HISTORY_LIMIT = 20


def add_counts(old: dict[str, int] | None, new: dict[str, int] | None) -> dict[str, int]:
    """A reducer that adds counts key by key (``{"correct": 2} + {"correct": 1}`` → ``{"correct": 3}``)."""
    merged = dict(old or {})
    for key, count in (new or {}).items():
        merged[key] = merged.get(key, 0) + count
    return merged


class StoredQuestion(TypedDict):
    """``Question.model_dump()``, as the checkpoint keeps it."""

    question: str
    reference_answer: str


class StoredAnswer(TypedDict):
    """``StudentAnswer.model_dump()``."""

    answer: str


class StoredGrade(TypedDict):
    """``Grade.model_dump()``."""

    verdict: Verdict
    feedback: str


class StoredRound(TypedDict):
    """One finished round as the session keeps it for looking back (``GET /sessions/{id}``).

    ``answered_by``: who played the Student (``model``: the Student agent; ``person``: the caller).
    ``trace_id``: the W3C trace id of the request that graded it (App Insights ``operation_Id``), ``None``
    without telemetry. ``finished_at``:
    ISO 8601, UTC. Tokens: the round's, summed over its steps and their attempts. ``span_id``: the grading
    step's span (16 hex), where feedback on the round is attached.
    """

    round: int
    question: str
    answered_by: Student
    answer: str
    verdict: Verdict
    feedback: str
    reference_answer: str
    trace_id: str | None
    span_id: NotRequired[str | None]
    input_tokens: int
    output_tokens: int
    finished_at: str


class InputState(TypedDict):
    """The settings of the round to play. A continued session passes its own again (or new ones).

    ``reset``: play this round as round 1 of a fresh session under the same id (no history). It takes
    effect only when the round finishes: a reset round that fails leaves the old session as it was.
    ``student``: who answers (default ``model``). With ``person`` the round pauses after the question
    (``graphs.graph.person_answer``) until the caller's answer resumes it.
    ``preset``: a question (and its reference answer) to ask instead of the Teacher's — an evaluation item
    (``evals``); the Teacher's asking step then makes no LLM call. For a one-round thread only.
    """

    subject: str
    difficulty: Difficulty
    language: Language
    reset: NotRequired[bool]
    student: NotRequired[Student]
    preset: NotRequired[StoredQuestion]


class QuizState(InputState):
    """One session's state. Settings persist between rounds unless a request changes them.

    ``round``, ``history``, ``rounds``, ``score`` and a ``reset`` change only in the last step (grading), so a
    round that fails part-way leaves the session's count and history as they were.
    """

    round: NotRequired[int]  # rounds finished; a failed round does not count
    history: NotRequired[Annotated[list[str], keep_last(HISTORY_LIMIT)]]  # earlier questions, newest last
    # The current round's results, as plain dicts (``Question.model_dump()`` …): checkpoints hold only
    # JSON-like data, which every checkpointer serialises without an allow-list.
    question: NotRequired[StoredQuestion]
    answer: NotRequired[StoredAnswer]
    grade: NotRequired[StoredGrade]
    usage: NotRequired[Annotated[dict[Step, TokenUsage], operator.or_]]  # by step
    # The last ``QuizContext.rounds_kept`` finished rounds, oldest first (written whole by the last step).
    rounds: NotRequired[list[StoredRound]]
    # Verdicts of every finished round since the session began (or was reset): the session's score.
    score: NotRequired[Annotated[dict[Verdict, int], add_counts]]


@dataclass(frozen=True, slots=True)
class RoundResult:
    """A finished round, read from the graph's final state (``RoundResult.of(state)``).

    ``input_tokens``/``output_tokens``: summed over the round's agent steps and their attempts.
    """

    round: int
    subject: str
    difficulty: Difficulty
    language: Language
    question: str
    reference_answer: str
    student_answer: str
    answered_by: Student
    verdict: Verdict
    feedback: str
    input_tokens: int
    output_tokens: int

    @classmethod
    def of(cls, state: QuizState) -> RoundResult:
        """Project the state after ``teacher_grade``. Raises ``KeyError`` if the round did not finish."""
        question, answer, grade = state["question"], state["answer"], state["grade"]
        usage = state.get("usage", {}).values()
        return cls(round=state["round"], subject=state["subject"], difficulty=state["difficulty"],
                   language=state["language"], question=question["question"],
                   reference_answer=question["reference_answer"], student_answer=answer["answer"],
                   answered_by=state.get("student", "model"), verdict=grade["verdict"], feedback=grade["feedback"],
                   input_tokens=sum(u["input_tokens"] for u in usage),
                   output_tokens=sum(u["output_tokens"] for u in usage))
