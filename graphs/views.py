"""Read models: what a session, a finished round and a paused round look like to anyone outside the graph.

Built here from the graph's state (``QuizState`` values, ``StateSnapshot``), so no consumer digs in a
checkpoint: the API's models inherit these and add only what the API knows (the session id, the model, the
trace id), and the evaluation reads ``FinishedRound``. Token counts are the provider's, summed over a round's
steps and their attempts.
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.types import StateSnapshot
from pydantic import AliasChoices, BaseModel, Field, PrivateAttr

from graphs.events import AnswerAwaited
from graphs.graph import awaited_answer
from graphs.state import QuizState, StoredRound, asked_at, records_of
from quiz.learning import credit
from quiz.vocabulary import ANSWERED_BY_MODEL, Difficulty, Language, QuestionFormat, Student, Verdict
from telemetry.cost import total

QuestionSource = Literal["bank", "generated"]  # telemetry.contract.QUESTION_SOURCES
CheckedBy = Literal["numeric", "contains", "choice"]


class Usage(BaseModel):
    """Tokens, as the provider reported them, and what they cost."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float | None = Field(None, description="US dollars, by the price table (telemetry/prices.yaml or "
                                   "LLM_PRICES_FILE); null when the model has no price there.")

    @classmethod
    def of(cls, input_tokens: int, output_tokens: int, cost_usd: float | None = None) -> Usage:
        """``Usage`` with its total."""
        return cls(input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens,
                   cost_usd=cost_usd)


class AdaptiveChoice(BaseModel):
    """Why an adaptive round has its difficulty: the learner's predicted chance of a right answer at it was the
    closest to the target (``quiz.learning.choose``)."""

    difficulty: Difficulty = Field(description="The difficulty chosen.")
    predicted: float = Field(ge=0, le=1, description="The learner's predicted chance of a right answer at it.")
    target: float = Field(gt=0, lt=1, description="ADAPTIVE_TARGET: the chance aimed at.")


class StepOutcome(BaseModel):
    """What one step of the agent table did in a round."""

    step: str = Field(description="The step (`quiz.step`): ask, answer, grade … in the order they ran.")
    agent: str = Field(description="The agent that played it (`gen_ai.agent.name`).")
    outcome: str | None = Field(None, description="The step's bounded result (a verdict, a review's accepted "
                                "or rejected), or null when it has none.")
    detail: str | None = Field(None, description="Why, for people (a review's reason), or null.")
    runs: int = Field(1, ge=1, description="How many times the step ran in the round (a question sent back "
                      "to the Teacher is asked again).")


class Score(BaseModel):
    """How a session's finished rounds were graded, counted since it began (or was reset)."""

    correct: int = Field(0, ge=0)
    partially_correct: int = Field(0, ge=0)
    incorrect: int = Field(0, ge=0)


class AwaitedQuestion(BaseModel):
    """The question a session's paused round awaits an answer to, its options (multiple choice) and the hints
    given for it so far."""

    round: int = Field(ge=1)
    question: str
    options: list[str] = Field(default_factory=list)
    hints: list[str] = Field(default_factory=list)


class FinishedRound(BaseModel):
    """A graded round: the question, the Student's answer, the Teacher's grade and every step's outcome."""

    round: int = Field(ge=1, description="1 for the first round of a session, then 2, 3, …")
    subject: str
    difficulty: Difficulty
    language: Language
    question: str
    options: list[str] = Field(default_factory=list, description="A multiple-choice question's options (A, B, C … "
                               "in order); empty for an open question.")
    format: QuestionFormat = Field("open", description="`choice` (multiple choice, graded exactly) or `open`.")
    student_answer: str
    answered_by: Student = Field(ANSWERED_BY_MODEL, description="Who answered: `model` (the Student agent) or "
                                 "`person`.")
    verdict: Verdict
    feedback: str
    reference_answer: str
    usage: Usage = Field(description="The round's tokens; for a person's round, the question's and the grade's.")
    steps: list[StepOutcome] = Field(default_factory=list, description="What each step of the agent table did, "
                                     "in table order.")
    source: QuestionSource = Field("generated", description="Where the question came from: `bank` (an item of "
                                   "the question bank, `item_id`) or `generated` (the Teacher wrote it).")
    item_id: str | None = Field(None, description="The question bank's item asked; null when the Teacher wrote "
                                "the question.")
    checked_by: CheckedBy | None = Field(None, description="How the answer was checked, giving `verdict`: a bank "
                                         "item's `numeric` or `contains` (the strict judge's rules), or `choice` "
                                         "(a multiple-choice answer, exactly); null when the Teacher's grade is "
                                         "the verdict.")
    teacher_verdict: Verdict | None = Field(None, description="With `checked_by`: the Teacher's own grade, kept "
                                            "beside the check's `verdict` (they disagree when it differs).")
    learner_id: str | None = Field(None, description="The learner who played (`learner_id`), whose mastery and "
                                   "reviews the round updated; null: none.")
    review: bool = Field(False, description="The question was asked again: the learner missed it before and it "
                         "was due (`GET /learners/{id}`).")
    adaptive: AdaptiveChoice | None = Field(None, description="With `difficulty: adaptive`: the difficulty chosen "
                                            "and why; null otherwise (and for a review, asked at its own).")
    hints: list[str] = Field(default_factory=list, description="The hints the Tutor gave before the answer (a "
                             "person's round), oldest first.")
    credit: float = Field(description="What the answer earns, 0–1: 1 right, 0.5 partly right, 0 wrong; a right "
                          "answer after a hint earns 0.5 (quiz.learning.credit), and counts as partly right for the "
                          "learner's mastery, the question's calibration and its review.")

    _judged: tuple[str, str] | None = PrivateAttr(None)

    @property
    def judged(self) -> tuple[str, str] | None:
        """The (trace id, span id) of what the Teacher graded: the Student agent's answer step; ``None`` for a
        person's answer (given in the grading request itself) or without telemetry. Not part of the API."""
        return self._judged

    @classmethod
    def of(cls, state: QuizState) -> FinishedRound:
        """The round the state's last step finished (``KeyError`` if no round finished in it)."""
        played: StoredRound = state["rounds"][-1]
        options = played.get("options", [])
        answered = records_of(state, played["round"]).get("answer")
        trace_id, span_id = (answered.get("trace_id"), answered.get("span_id")) if answered else (None, None)
        finished = cls(round=played["round"], subject=state["subject"], difficulty=asked_at(state),
                       language=state["language"], question=played["question"], options=options,
                       format="choice" if options else "open",
                       student_answer=played["answer"],
                       answered_by=played["answered_by"], verdict=played["verdict"], feedback=played["feedback"],
                       reference_answer=played["reference_answer"],
                       usage=Usage.of(played["input_tokens"], played["output_tokens"], played.get("cost_usd")),
                       steps=[StepOutcome.model_validate(s) for s in played.get("steps", [])],
                       source="bank" if played.get("item_id") else "generated", item_id=played.get("item_id"),
                       checked_by=played.get("checked_by"), teacher_verdict=played.get("teacher_verdict"),
                       learner_id=state.get("learner"), review=played.get("review", False),
                       adaptive=AdaptiveChoice.model_validate(choice) if (choice := played.get("choice")) else None,
                       hints=played.get("hints", []), credit=credit(played["verdict"], len(played.get("hints", []))))
        finished._judged = (trace_id, span_id) if trace_id and span_id else None
        return finished


class PausedRound(BaseModel):
    """A round that awaits the person playing the Student: the Teacher's question, without its reference answer."""

    round: int = Field(ge=1, description="The number the round will have once graded.")
    subject: str
    difficulty: Difficulty
    language: Language
    question: str
    options: list[str] = Field(default_factory=list, description="A multiple-choice question's options: answer "
                               "with one's letter (A, B, C …) or its words.")
    usage: Usage = Field(description="Tokens so far (the question).")
    source: QuestionSource = Field("generated", description="`bank` (an item of the question bank, `item_id`) or "
                                   "`generated` (the Teacher wrote it).")
    item_id: str | None = None
    learner_id: str | None = None
    review: bool = Field(False, description="A question the learner missed before, asked again.")
    adaptive: AdaptiveChoice | None = None
    hints: list[str] = Field(default_factory=list, description="The hints the Tutor gave so far, oldest first.")

    @classmethod
    def of(cls, state: QuizState, awaited: AnswerAwaited) -> PausedRound:
        """The paused round of ``state`` (a session's values) that awaits ``awaited``."""
        records = records_of(state, awaited.round).values()
        item = state.get("question", {}).get("item")
        input_tokens, output_tokens = (sum(r[k] for r in records) for k in ("input_tokens", "output_tokens"))
        return cls(round=awaited.round, subject=state["subject"], difficulty=asked_at(state),
                   language=state["language"], question=awaited.question, options=awaited.options,
                   usage=Usage.of(input_tokens, output_tokens, total([r.get("cost_usd") for r in records])),
                   source="bank" if item else "generated", item_id=item["id"] if item else None,
                   learner_id=state.get("learner"), review=bool(state.get("question", {}).get("review")),
                   adaptive=AdaptiveChoice.model_validate(choice) if (choice := state.get("choice")) else None,
                   hints=awaited.hints)


class KeptRound(BaseModel):
    """One finished round of a session, as it kept it."""

    round: int = Field(ge=1)
    question: str
    options: list[str] = Field(default_factory=list, description="A multiple-choice question's options.")
    answered_by: Student = Field(description="Who played the Student: `model` (the Student agent) or `person`.")
    answer: str
    verdict: Verdict
    feedback: str
    reference_answer: str
    trace_id: str | None = Field(None, description="W3C trace id of the request that played it (App Insights "
                                 "operation_Id).")
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = Field(None, description="US dollars (null: the model has no price).")
    finished_at: str = Field(description="When the round was graded: ISO 8601, UTC.")
    steps: list[StepOutcome] = Field(default_factory=list, description="What each step did, in table order.")
    item_id: str | None = Field(None, description="The question bank's item asked (null: the Teacher wrote it).")
    checked_by: CheckedBy | None = Field(None, description="How `verdict` was checked: a bank item's check, or "
                                         "`choice` (null: the Teacher's grade).")
    teacher_verdict: Verdict | None = Field(None, description="With `checked_by`: the Teacher's own grade.")
    review: bool = Field(False, description="A question the learner missed before, asked again.")
    adaptive: AdaptiveChoice | None = Field(None, validation_alias=AliasChoices("adaptive", "choice"),
                                            description="With `difficulty: adaptive`: the difficulty chosen.")
    hints: list[str] = Field(default_factory=list, description="The hints given before the answer.")


class SessionView(BaseModel):
    """A session to look back at: its settings, its score and its last rounds, oldest first."""

    subject: str
    difficulty: Difficulty
    language: Language
    student: Student = Field(description="Who answers in this session's rounds: `model` or `person`.")
    learner_id: str | None = Field(None, description="The learner who plays this session (`learner_id`), or null.")
    adaptive: bool = Field(False, description="Whether each round's difficulty is chosen for the learner.")
    format: QuestionFormat = Field("open", description="`open` (answers in the Student's words) or `choice` "
                                   "(multiple choice).")
    rounds_played: int = Field(ge=0, description="Rounds finished in this session (since a reset).")
    score: Score = Field(description="The verdicts of those rounds, counted (all of them, not only the kept ones).")
    rounds: list[KeptRound] = Field(description="The last SESSION_ROUNDS_KEPT finished rounds, oldest first.")
    awaiting_answer: AwaitedQuestion | None = Field(
        None, description="The question of a round paused for the person's answer (no reference answer), or null.")

    @classmethod
    def of(cls, values: QuizState | dict[str, Any], awaited: AnswerAwaited | None = None,
           **fields: Any) -> SessionView:
        """The view of a session's ``values`` (a snapshot's, or a run's final state), with the question it
        ``awaited`` (``awaited_answer``); ``fields``: what a subclass adds (the session id)."""
        return cls(subject=values["subject"], difficulty=values["difficulty"], language=values["language"],
                   student=values.get("student", ANSWERED_BY_MODEL), rounds_played=values.get("round", 0),
                   learner_id=values.get("learner"), adaptive=bool(values.get("adaptive")),
                   score=Score.model_validate(values.get("score", {})),
                   rounds=[KeptRound.model_validate(r) for r in values.get("rounds", [])],
                   awaiting_answer=AwaitedQuestion(round=awaited.round, question=awaited.question,
                                                   options=awaited.options, hints=awaited.hints)
                   if awaited else None, format=values.get("format", "open"), **fields)

    @classmethod
    def of_snapshot(cls, snapshot: StateSnapshot, **fields: Any) -> SessionView:
        """The view of the session a checkpoint (``graph.aget_state()``) holds."""
        return cls.of(snapshot.values, awaited_answer(snapshot), **fields)
