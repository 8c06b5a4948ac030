"""The graph's state: what a session's checkpoint holds, and what a run takes as input.

Checkpoints hold only JSON-like data (``TypedDict``s of plain values), which every checkpointer serialises
without an allow-list. The structured outputs the agents produce are pydantic models (``Question``,
``StudentAnswer``, ``Grade``), stored as their ``model_dump()``. Consumers do not read this state: they read
the graph's events (``graphs.events``) and its read models (``graphs.views``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, NotRequired, TypedDict

from pydantic import BaseModel, Field

from quiz.checks import Match
from quiz.vocabulary import Difficulty, Language, QuestionFormat, Student, Verdict
from telemetry.cost import total


class Question(BaseModel):
    """The Teacher's question and the reference answer it keeps from the Student."""

    question: str = Field(description="One short quiz question for the student.")
    reference_answer: str = Field(description="The correct answer, short. Never shown to the student.")
    options: list[str] = Field(default_factory=list, description="Only when asked for a multiple-choice question: "
                               "3 to 5 short options, exactly one of them the reference answer; else empty.")


class StudentAnswer(BaseModel):
    """The Student's answer to the question."""

    answer: str = Field(description="The student's short answer.")


class Grade(BaseModel):
    """The Teacher's grading of the Student's answer against the reference answer."""

    verdict: Verdict = Field(description="correct, partially_correct or incorrect.")
    feedback: str = Field(description="One or two sentences of feedback for the student.")


class Review(BaseModel):
    """The Reviewer's check of the Teacher's question and reference answer."""

    verdict: Literal["accept", "reject"] = Field(
        description="accept, or reject when the question is unanswerable, has no single correct answer, misses the "
                    "subject, difficulty or language, or gives its answer away.")
    reason: str = Field(description="One sentence: why. Never the reference answer itself.")


class Hint(BaseModel):
    """The Tutor's hint for the person playing the Student: a nudge towards the answer, never the answer."""

    hint: str = Field(description="One or two sentences that help the student find the answer themselves: a "
                                  "method, a related fact or what to think about. Never the answer itself.")


class TokenUsage(TypedDict):
    """Tokens of one agent step, as the provider reported them (OpenAI ``usage``), summed over attempts:
    ``cached_input_tokens`` are among ``input_tokens`` (read from the provider's prompt cache); ``cost_usd``
    is what they cost by the price table (``telemetry.cost``), ``None`` when the model has no price."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: float | None


NO_TOKENS = TokenUsage(input_tokens=0, output_tokens=0, cached_input_tokens=0, cost_usd=0.0)


class StepRecord(TypedDict):
    """What one step of the table did in round ``round``: its ``agent``, the bounded ``outcome`` it reported
    (``None`` when the step has none), a ``detail`` for people (a review's reason), how many times it ``runs``
    in the round (a step sent back to runs again) and its tokens and their cost (US dollars, ``None``
    without a price; absent in checkpoints written before costs were kept) over those runs; ``trace_id``/``span_id``
    (hex): its agent span's, of its latest run (``None`` when it has none: telemetry off, a person's answer),
    so that a judgement of what the step said attaches to it (the Teacher's grade to the Student's answer)."""

    round: int
    agent: str
    outcome: str | None
    detail: str | None
    runs: int
    input_tokens: int
    output_tokens: int
    cost_usd: NotRequired[float | None]
    trace_id: NotRequired[str | None]
    span_id: NotRequired[str | None]


def merge_steps(old: dict[str, StepRecord] | None, new: dict[str, StepRecord] | None) -> dict[str, StepRecord]:
    """A reducer keyed by step: a step's record of a new round replaces its last one; a second run in the same
    round adds its tokens and runs and takes the newest outcome and detail. Bounded by the number of steps."""
    merged = dict(old or {})
    for step, record in (new or {}).items():
        earlier = merged.get(step)
        if earlier is not None and earlier["round"] == record["round"]:
            record = StepRecord(**{**record, "runs": earlier["runs"] + record["runs"],
                                   "input_tokens": earlier["input_tokens"] + record["input_tokens"],
                                   "output_tokens": earlier["output_tokens"] + record["output_tokens"],
                                   "cost_usd": total([earlier.get("cost_usd"), record.get("cost_usd")])})
        merged[step] = record
    return merged


def records_of(state: QuizState, round_no: int) -> dict[str, StepRecord]:
    """The records of the steps that ran in round ``round_no`` (``QuizState.steps`` holds each step's latest)."""
    return {step: record for step, record in state.get("steps", {}).items() if record["round"] == round_no}


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


class StoredItem(TypedDict):
    """A question bank's item behind a question (``quiz.bank``): its ``id`` and how an answer to it is checked
    (``quiz.checks.check``: ``match``, the ``accept``ed alternatives, a numeric ``tolerance``)."""

    id: str
    match: Match
    accept: list[str]
    tolerance: float


class StoredChoice(TypedDict):
    """An adaptive round's difficulty (``quiz.learning.choose``): the one chosen, the learner's predicted chance
    of a right answer at it (0–1) and the target it was closest to."""

    difficulty: Difficulty
    predicted: float
    target: float


class StoredQuestion(TypedDict):
    """``Question.model_dump()``, as the checkpoint keeps it; ``item``: the bank item it is (none: the Teacher
    wrote it, or an evaluation's preset)."""

    question: str
    reference_answer: str
    item: NotRequired[StoredItem]
    review: NotRequired[bool]  # asked again: the learner missed it before and it was due (app.learners)
    difficulty: NotRequired[Difficulty]  # a review's own difficulty (it may differ from the session's setting)
    options: NotRequired[list[str]]  # a multiple-choice question's options, the reference among them (quiz.choice)


class StoredHint(TypedDict):
    """A hint the Tutor gave in round ``round`` (``Hint.hint`` as ``text``)."""

    round: int
    text: str


class StoredAnswer(TypedDict):
    """``StudentAnswer.model_dump()``."""

    answer: str


class StoredGrade(TypedDict):
    """``Grade.model_dump()``."""

    verdict: Verdict
    feedback: str


class StoredReview(TypedDict):
    """The Reviewer's outcome for the current question: ``accepted`` or ``rejected``, and why."""

    outcome: Literal["accepted", "rejected"]
    reason: str


class StoredStep(TypedDict):
    """A step's outcome as a kept round remembers it (``StepRecord`` without its round and tokens)."""

    step: str
    agent: str
    outcome: str | None
    detail: str | None
    runs: int


class StoredRound(TypedDict):
    """One finished round as the session keeps it for looking back (``graphs.views.KeptRound``).

    ``answered_by``: who played the Student (``model``: the Student agent; ``person``: the caller).
    ``trace_id``: the W3C trace id of the request that graded it (App Insights ``operation_Id``), ``None``
    without telemetry. ``finished_at``: ISO 8601, UTC. Tokens: the round's, summed over its steps and their
    attempts. ``span_id``: the grading step's span (16 hex), where feedback on the round is attached.
    ``steps``: every step's outcome, in table order.
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
    cost_usd: NotRequired[float | None]
    finished_at: str
    steps: NotRequired[list[StoredStep]]
    item_id: NotRequired[str | None]  # the question bank's item asked (None or absent: the Teacher wrote it)
    checked_by: NotRequired[str | None]  # the item's mechanical check that gave the verdict (None: the Teacher's)
    teacher_verdict: NotRequired[Verdict]  # the Teacher's own grade, kept beside a check's verdict
    review: NotRequired[bool]  # a missed question asked again (app.learners)
    choice: NotRequired[StoredChoice | None]  # the adaptive choice of its difficulty
    hints: NotRequired[list[str]]  # the hints the person asked for before answering (graphs.nodes.tutor_hint)
    options: NotRequired[list[str]]  # a multiple-choice question's options (quiz.choice)


class InputState(TypedDict):
    """The settings of the round to play. A continued session passes its own again (or new ones).

    ``reset``: play this round as round 1 of a fresh session under the same id (no history). It takes
    effect only when the round finishes: a reset round that fails leaves the old session as it was.
    ``student``: who answers (default ``model``). With ``person`` the round pauses after the question
    (``graphs.nodes.person_answer``) until the caller's answer resumes it.
    ``preset``: a question (and its reference answer) to ask instead of the Teacher's — an evaluation item
    (``evals``) or a question bank's (``quiz.bank``, with its ``item``: its check grades the answer); the
    Teacher's asking step then makes no LLM call. It stays in the session's state: a round that is to be the
    Teacher's passes ``None``.
    """

    subject: str
    difficulty: Difficulty
    language: Language
    reset: NotRequired[bool]
    student: NotRequired[Student]
    preset: NotRequired[StoredQuestion | None]
    learner: NotRequired[str | None]  # the client's learner who plays (app.learners), kept for the session
    adaptive: NotRequired[bool]  # the session's difficulty is chosen per round for its learner
    choice: NotRequired[StoredChoice | None]  # this round's adaptive choice (None: not adaptive, or a review)
    format: NotRequired[QuestionFormat]  # open (default) or choice: the Teacher writes lettered options


class QuizState(InputState):
    """One session's state. Settings persist between rounds unless a request changes them.

    ``round``, ``history``, ``rounds``, ``score`` and a ``reset`` change only in the last step (grading), so a
    round that fails part-way leaves the session's count and history as they were.
    """

    round: NotRequired[int]  # rounds finished; a failed round does not count
    history: NotRequired[Annotated[list[str], keep_last(HISTORY_LIMIT)]]  # earlier questions, newest last
    # What each step contributed to the current round (``Question.model_dump()`` …), by the table's ``writes``.
    question: NotRequired[StoredQuestion]
    review: NotRequired[StoredReview]
    answer: NotRequired[StoredAnswer]
    grade: NotRequired[StoredGrade]
    # The current round's hints (written whole by the Tutor's step), and a person's request for one that the
    # Tutor has not answered yet (a hint that failed leaves it: graphs.graph.answer_command settles it).
    hints: NotRequired[list[StoredHint]]
    hint_wanted: NotRequired[bool]
    # What each step of the table did, its latest round's record per step (outcome, runs, tokens).
    steps: NotRequired[Annotated[dict[str, StepRecord], merge_steps]]
    # The last ``QuizContext.rounds_kept`` finished rounds, oldest first (written whole by the last step).
    rounds: NotRequired[list[StoredRound]]
    # Verdicts of every finished round since the session began (or was reset): the session's score.
    score: NotRequired[Annotated[dict[Verdict, int], add_counts]]


def round_hints(state: QuizState, round_no: int) -> list[str]:
    """The hints given in round ``round_no`` so far, oldest first."""
    return [hint["text"] for hint in state.get("hints", []) if hint["round"] == round_no]


def asked_at(state: QuizState) -> Difficulty:
    """The difficulty of the round's question: a review's own (``app.learners``), else the session's setting."""
    return state.get("question", {}).get("difficulty") or state["difficulty"]


__all__ = ["NO_TOKENS", "Grade", "Hint", "InputState", "Question", "QuizState", "StepRecord", "StoredChoice",
           "StoredHint", "StoredItem", "StoredQuestion", "StoredRound", "StoredStep", "StudentAnswer", "TokenUsage",
           "add_counts", "asked_at", "keep_last", "merge_steps", "records_of", "round_hints"]
