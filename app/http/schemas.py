"""Request and response bodies of the HTTP API (what `/openapi.json` documents)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
)

from app.learners import LEARNER_ID_PATTERN
from app.messages import parse_message
from app.rounds import AskHint, GiveAnswer, PlayRound, RoundPlayed
from graphs.views import FinishedRound, PausedRound, SessionView
from quiz import learning
from quiz.learning import Profile
from quiz.vocabulary import SUBJECTS, Difficulty, Language, QuestionFormat, Rating, Student

# Korean difficulty words accepted as aliases (the upstream chat UI used them).
DIFFICULTY_ALIASES = {"쉬움": "easy", "보통": "medium", "어려움": "hard"}


def _difficulty(value: Any) -> Any:
    if isinstance(value, str):
        v = value.strip().lower()
        return DIFFICULTY_ALIASES.get(v, v)
    return value


SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
MESSAGE_MAX_CHARS = 500  # a chat message that asks for settings (/ask's message, AG-UI's last user message)
# The published pattern is what is validated, on the value as sent: no C0 or C1 control characters, no
# markup, at least one non-space character. Surrounding spaces are stripped after validation.
_SUBJECT_CHAR = r"[^\x00-\x1f\x7f-\x9f<>{}]"
Subject = Annotated[str, StringConstraints(
    min_length=1, max_length=80, pattern=rf"^{_SUBJECT_CHAR}*[^\s\x00-\x1f\x7f-\x9f<>{{}}]{_SUBJECT_CHAR}*$"),
    AfterValidator(str.strip)]


# A difficulty as a client may say it (Korean words too).
DifficultyIn = Annotated[Difficulty | None, BeforeValidator(_difficulty)]

DifficultyOrAdaptive = Annotated[Literal["easy", "medium", "hard", "adaptive"] | None, BeforeValidator(_difficulty)]
LearnerId = Annotated[str, StringConstraints(pattern=LEARNER_ID_PATTERN)]

# A person's answer: some visible text, no control characters but tab and newline.
Answer = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*\S"
                                                                                 r"[^\x00-\x08\x0b-\x1f\x7f]*$"),
                   AfterValidator(str.strip)]


class AskRequest(BaseModel):
    """One quiz round. Every field is optional: a new session starts with ``general``/``medium``; a
    continued session keeps its settings unless new ones are given. ``message`` is parsed into the
    fields that are absent (``"보통 난이도로 수학 문제 풀래"`` → medium, math; ``"next"``; ``"reset"``).

    ``student: "person"`` makes the caller the Student: the round stops after the question
    (``PendingRound``, status ``awaiting_answer``) and an ``AnswerRequest`` finishes it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"subject": "math", "difficulty": "easy", "language": "en"},
                     {"session_id": "Zq3v9yH0b7wQpL2xT5mN1c", "message": "next"},
                     {"message": "보통 난이도로 수학 문제 풀래"},
                     {"subject": "history", "student": "person"},
                     {"subject": "geography", "format": "choice"}]})

    subject: Subject | None = Field(None, description=f"{', '.join(SUBJECTS)}, or any topic (≤ 80 characters).")
    difficulty: DifficultyOrAdaptive = Field(
        None, description="easy | medium | hard (also 쉬움 | 보통 | 어려움), or adaptive: chosen each round for the "
        "learner (`learner_id`), the one whose predicted success is closest to ADAPTIVE_TARGET; the session "
        "stays adaptive until a difficulty is given.")
    language: Language | None = Field(None, description="ko | en. Default: the session's, else ko if the "
                                      "message or subject is Korean, else en.")
    session_id: SessionId | None = Field(None, description="From an earlier response, to play the next round.")
    message: Annotated[str, StringConstraints(max_length=MESSAGE_MAX_CHARS)] | None = Field(
        None, description="Free-form chat text, parsed into the fields above when they are absent.")
    student: Student | None = Field(
        None, description="Who answers: `model` (the Student agent) or `person` (you: the round pauses after "
        "the question until you send `answer`). Default: the session's, else `model`.")
    learner_id: LearnerId | None = Field(
        None, description="Your name for the person (or agent) playing, kept across sessions within your "
        "client: their mastery by subject and the questions they missed, asked again when due (GET "
        "/learners/{id}). Default: the session's, else none.")
    format: QuestionFormat | None = Field(
        None, description="`open`: answered in the Student's words; `choice`: multiple choice — the Teacher (or a "
        "bank item with options) gives 3 to 5 `options`, the answer is a letter (A, B …) or an option's words, "
        "graded exactly. Default: the session's, else `open`.")

    def domain(self, *, create: bool = False) -> PlayRound:
        """The round this asks the round service to play (``message`` parsed into what it says)."""
        adaptive = self.difficulty == "adaptive"
        return PlayRound(session_id=self.session_id, subject=self.subject,
                         difficulty=None if adaptive else cast(Difficulty | None, self.difficulty),
                         language=self.language, student=self.student, intent=parse_message(self.message),
                         create=create, learner_id=self.learner_id, adaptive=adaptive, format=self.format)


class AnswerRequest(BaseModel):
    """A person's answer to the question their session's round awaits (``student: person``): the Teacher
    grades it. The session id and the answer, nothing else."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"session_id": "Zq3v9yH0b7wQpL2xT5mN1c", "answer": "1492"}]})

    session_id: SessionId = Field(description="The session whose round awaits the answer.")
    answer: Answer = Field(description="Your answer, ≤ 1000 characters.")

    def domain(self) -> GiveAnswer:
        """The answer this gives to the round service."""
        return GiveAnswer(session_id=self.session_id, answer=self.answer)


class HintRequest(BaseModel):
    """A person's request for a hint to the question their session's round awaits (``student: person``): the
    Tutor gives one that does not give the answer away, at most HINTS_PER_ROUND a round. A right answer after a
    hint earns half credit and counts as partly right for the learner."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"session_id": "Zq3v9yH0b7wQpL2xT5mN1c", "hint": True}]})

    session_id: SessionId = Field(description="The session whose round awaits the answer.")
    hint: Literal[True] = Field(description="`true`: ask for a hint.")

    def domain(self) -> AskHint:
        """The hint request this gives to the round service."""
        return AskHint(session_id=self.session_id)


def _ask_kind(body: Any) -> str:
    if isinstance(body, dict):
        if "answer" in body:
            return "AnswerRequest"
        if "hint" in body:
            return "HintRequest"
    return "AskRequest"


# The body of ``POST /ask``: a round to play, an answer to a paused one, or a request for a hint to it (told
# apart by ``answer`` and ``hint``, so a wrong field is reported against the form the client meant). The tags are
# the models' names: validation errors drop them from their ``loc`` (``app.problems``), which stays
# ``["body", "<field>"]``.
AskBody = Annotated[Annotated[AskRequest, Tag("AskRequest")] | Annotated[AnswerRequest, Tag("AnswerRequest")]
                    | Annotated[HintRequest, Tag("HintRequest")], Discriminator(_ask_kind)]


class RoundState(BaseModel):
    """The state of a session's latest round (``GET /sessions/{id}/round``): ``running``, or how it ended."""

    session_id: str
    state: Literal["running", "finished", "failed", "cancelled", "lost"] = Field(
        description="`running`; `finished` (graded, or paused for a person's answer); `failed` (its problem "
                    "was the answer); `cancelled`; `lost` (its replica stopped mid-round: retry it).")
    attempt: int = Field(ge=1, description="1, then one more each time a retry took over a lost round.")
    status: int | None = Field(None, description="The HTTP status of the round's answer, once it ended.")


class Round(FinishedRound):
    """A played round: the question, the Student's answer, the Teacher's grade, every step's outcome."""

    session_id: str = Field(description="Send it back to play the next round of this session.")
    model: str = Field(description="The model that played the round (deployment name on Azure).")
    trace_id: str | None = Field(None, description="W3C trace id (32 hex) of this request = App Insights "
                                 "operation_Id. Null when tracing is disabled.")
    status: Literal["graded"] = Field("graded", description="`graded`: the round is finished.")


class PendingRound(PausedRound):
    """A round that awaits the person playing the Student: the Teacher's question, without its reference
    answer. Finish it with ``POST /ask {"session_id": …, "answer": "…"}``; ask for a hint first with
    ``{"session_id": …, "hint": true}``."""

    status: Literal["awaiting_answer"] = Field("awaiting_answer", description="The round waits for `answer`.")
    session_id: str
    model: str = Field(description="The model playing the Teacher.")
    trace_id: str | None = Field(None, description="W3C trace id of this request (the question, or the hint).")
    hints_left: int = Field(ge=0, description="Hints you may still ask for in this round (HINTS_PER_ROUND).")


def ended(played: RoundPlayed, hints_allowed: int = 0) -> Round | PendingRound:
    """The API's shape of how a round ended: a ``Round`` when graded, a ``PendingRound`` when it awaits an answer
    (with ``hints_allowed`` a round: ``Settings.hints_allowed``)."""
    fields = {"session_id": played.session_id, "model": played.model, "trace_id": played.trace_id}
    if played.finished is not None:
        return Round(**dict(played.finished), **fields)
    assert played.paused is not None
    return PendingRound(**dict(played.paused), **fields,
                        hints_left=max(hints_allowed - len(played.paused.hints), 0))


class Feedback(BaseModel):
    """A person's verdict on a graded round: thumbs up or down, and an optional comment."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"rating": "down", "comment":
                                                                               "The reference answer is wrong."}]})
    rating: Rating = Field(description="`up` or `down`.")
    comment: str | None = Field(None, max_length=1000, description="Free text (content: recorded only with "
                                "content capture on).")


class Session(SessionView):
    """A session to look back at: its settings, its score and its last rounds, oldest first."""

    session_id: str


class Mastery(BaseModel):
    """A learner's mastery of one subject: a Weng–Lin rating (openskill's scale: a new learner is 25 ± 8.3; a
    Teacher's easy question starts at 15, a medium one at 25, a hard one at 35) and its uncertainty."""

    subject: str
    rating: float = Field(description="The rating's mean (mu).")
    uncertainty: float = Field(ge=0, description="Its standard deviation (sigma): how sure the rating is.")
    rounds: int = Field(ge=0)
    accuracy: float | None = Field(None, ge=0, le=1, description="Right answers / rounds in the subject.")


class Learner(BaseModel):
    """What the service knows about a learner: mastery by subject, rounds, accuracy and reviews."""

    learner_id: str
    rounds_played: int = Field(ge=0)
    accuracy: float | None = Field(None, ge=0, le=1, description="Right answers / rounds, all subjects.")
    mastery: list[Mastery] = Field(description="By subject, most played first.")
    reviews_due: int = Field(ge=0, description="Missed questions due to be asked again now.")
    reviews_scheduled: int = Field(ge=0, description="Missed questions scheduled (due now or later).")
    next_review_at: str | None = Field(None, description="When the next review is due (ISO 8601, UTC), or null.")

    @classmethod
    def of(cls, learner_id: str, profile: Profile, now: datetime) -> Learner:
        """The view of ``profile`` at ``now``."""
        def accuracy(correct: int, rounds: int) -> float | None:
            return round(correct / rounds, 4) if rounds else None
        dues = sorted(learning.due_at(review) for review in profile["reviews"].values())
        return cls(learner_id=learner_id, rounds_played=profile["rounds"],
                   accuracy=accuracy(profile["correct"], profile["rounds"]),
                   mastery=[Mastery(subject=subject, rating=round(skill["mu"], 3), uncertainty=round(skill["sigma"], 3),
                                    rounds=skill["rounds"], accuracy=accuracy(skill["correct"], skill["rounds"]))
                            for subject, skill in sorted(profile["subjects"].items(), key=lambda kv: -kv[1]["rounds"])],
                   reviews_due=sum(due <= now for due in dues), reviews_scheduled=len(dues),
                   next_review_at=dues[0].isoformat(timespec="seconds") if dues else None)


class Problem(BaseModel):
    """An error, as RFC 9457 ``application/problem+json``."""

    type: str = Field(description="A URI reference naming the kind of problem, e.g. /problems/llm-timeout.")
    title: str
    status: int
    detail: str = Field(description="What happened and what to do about it.")
    instance: str | None = None
    trace_id: str | None = None
    retry_after: int | None = Field(None, description="Seconds to wait before retrying, as the `Retry-After` "
                                    "header says (here too, for a stream's `error` event, which has no headers).")
    errors: list[dict[str, Any]] | None = Field(None, description="Field errors, for 422.")


# The server-sent events of a streamed round, in order: each step's finished event is named by its ``kind``.
SSE_EVENTS = "`trace`, one event per agent step as it finishes (`question`, `answer`, `grade`, or another step's " \
    "name; every one with `step`, `agent`, `speaker`, `text`, `outcome`), then `round`"
# The event that ends the first half of a person's round instead of `answer`, `grade` and `round`.
SSE_AWAITING_ANSWER = "awaiting_answer"


class Health(BaseModel):
    """The process is up (liveness and readiness), and which model and session store it uses."""

    status: Literal["ok"] = "ok"
    provider: str = Field(description="azure_openai | openai_compatible | embedded")
    model: str
    embedded: bool = Field(description="True when the embedded local model is in use (a demo, not production).")
    checkpointer: str
    version: str
