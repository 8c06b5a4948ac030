"""State and structured outputs of the Teacher–Student graph.

The three pydantic models are what the agents must return (structured output through a forced function
call); ``QuizState`` is what the checkpointer keeps per session (LangGraph thread = session id).
"""

from __future__ import annotations

import operator
from typing import Annotated, Literal, NotRequired, TypedDict

from pydantic import BaseModel, Field

Difficulty = Literal["easy", "medium", "hard"]
Language = Literal["ko", "en"]
Verdict = Literal["correct", "partially_correct", "incorrect"]
Step = Literal["ask", "answer", "grade"]


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
    """Tokens of one agent step, as the provider reported them (OpenAI `usage`)."""

    input_tokens: int
    output_tokens: int


def keep_last(limit: int):
    """A reducer that appends new items and keeps the last ``limit`` (bounds per-session memory)."""

    def reduce(old: list[str] | None, new: list[str] | None) -> list[str]:
        merged = (old or []) + (new or [])
        return merged[-limit:] if limit else []

    return reduce


HISTORY_LIMIT = 20


class QuizState(TypedDict):
    """One session's state. Settings persist between rounds unless a request changes them.

    ``round`` and ``history`` change only in the last step (grading), so a round that fails part-way
    leaves the session's count and history as they were.
    """

    subject: str
    difficulty: Difficulty
    language: Language
    round: NotRequired[int]  # rounds finished; a failed round does not count
    history: NotRequired[Annotated[list[str], keep_last(HISTORY_LIMIT)]]  # earlier questions, newest last
    # The current round's results, as plain dicts (``Question.model_dump()`` …): checkpoints hold only
    # JSON-like data, which every checkpointer serialises without an allow-list.
    question: NotRequired[dict[str, str]]
    answer: NotRequired[dict[str, str]]
    grade: NotRequired[dict[str, str]]
    usage: NotRequired[Annotated[dict[str, TokenUsage], operator.or_]]  # by step: ask / answer / grade
