"""The round service: admits rounds, resolves the session and its settings, plays the round (``app.play``),
keeps one round at a time per session (its lease) and records what a finished round means (``quiz.rounds``,
the Teacher's grade as an evaluation). It takes domain requests (``PlayRound``, ``GiveAnswer``), never an HTTP
body, and answers with the graph's read models (``graphs.views``).
"""

from __future__ import annotations

import logging
import random
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, cast

from langgraph.types import Command, StateSnapshot
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI

from app.auth import ANONYMOUS, Principal
from app.errors import (
    AnswerAwaited,
    AnswerNotAnOption,
    LearnerNotFound,
    LearnerRequired,
    NoAnswerAwaited,
    NoHintsLeft,
    Overloaded,
    RateLimited,
    RoundInProgress,
    RoundNotFound,
    SessionNotFound,
    SessionStoreUnavailable,
    WeakThreadId,
)
from app.learners import Graded, LearnerBook, review_question
from app.limits import (
    CAPACITY,
    FAIR_SHARE,
    ROUND_WINDOW_S,
    ROUNDS,
    TOKEN_WINDOW_S,
    TOKENS,
    FairAdmission,
    Policy,
    Standing,
    rate_limit_headers,
)
from app.messages import Intent, is_korean
from app.play import OWNER, RUN, Played, Quiz, learner_labels
from app.sessions import SessionStore
from app.sessions.sweeper import delete_session
from app.settings import Settings
from graphs.events import AnswerAwaited as Awaited
from graphs.events import RoundEvent
from graphs.graph import answer_command, awaited_answer, hint_command
from graphs.nodes import round_to_play
from graphs.state import InputState, QuizState, StoredChoice, StoredItem, StoredQuestion, asked_at
from graphs.views import FinishedRound, PausedRound, SessionView
from quiz.bank import Bank
from quiz.choice import LETTERS, choice_of
from quiz.learning import Profile
from quiz.vocabulary import (
    ANSWERED_BY_MODEL,
    ANSWERED_BY_PERSON,
    Difficulty,
    Language,
    QuestionFormat,
    Rating,
    Student,
    subject_of,
)
from telemetry import contract as C
from telemetry.spans import current_trace_id

log = logging.getLogger(__name__)

DEFAULT_SUBJECT = "general"
DEFAULT_DIFFICULTY: Difficulty = "medium"


@dataclass(frozen=True)
class PlayRound:
    """Play the next round: of ``session_id`` (``None``: a new session), with these settings (``None``: the
    session's, else what ``intent`` — a parsed chat message — says, else the defaults). ``create``: an unknown
    ``session_id`` starts a new session under it (an AG-UI client names its threads; the id must be a random
    UUID, ``WeakThreadId`` otherwise, unless ``adopt``: the service made it) instead of ``SessionNotFound``."""

    session_id: str | None = None
    subject: str | None = None
    difficulty: Difficulty | None = None
    language: Language | None = None
    student: Student | None = None
    intent: Intent = field(default_factory=Intent)
    create: bool = False
    adopt: bool = False  # with ``create``: the id is this service's own (a retry of a lost first round)
    learner_id: str | None = None  # the client's learner who plays (app.learners); None: the session's, if any
    adaptive: bool = False  # ``difficulty: adaptive``: chosen per round for the learner
    format: QuestionFormat | None = None  # open or choice (quiz.choice); None: the session's, else open


@dataclass(frozen=True)
class GiveAnswer:
    """A person's ``answer`` to the question the round of ``session_id`` awaits."""

    session_id: str
    answer: str


@dataclass(frozen=True)
class AskHint:
    """A person's request for a hint to the question the round of ``session_id`` awaits (the Tutor's step)."""

    session_id: str


@dataclass(frozen=True)
class PreparedRound:
    """A round that can run: its session, its settings and, for a person's answer to a paused round, the
    command that resumes it (``graphs.graph.answer_command``; the graph input instead of ``inputs``)."""

    session_id: str
    inputs: InputState
    resume: Command | None = None
    asked: trace.Link | None = None  # a person's answer: a link to the span of the request that asked
    previous: QuizState | None = None  # the session's values as the round begins (None: a new session)
    awaited: Awaited | None = None  # a person's answer: the question it answers
    paused: PausedRound | None = None  # a person's answer: the paused round it finishes (its tokens so far)
    owner: str = ANONYMOUS.id  # the principal the session belongs to (app.auth)
    lease: tuple[str, str] | None = None  # (session id, lease owner) held for this round (None: a new session)
    metered: bool = False  # whether the round's tokens count against the owner's tokens per day (app.limits)
    run: str | None = None  # the round's run id (app.runs), kept in the metadata of the checkpoint it writes
    saved: RoundPlayed | None = None  # the round as its checkpoint keeps it: played already (RoundService._saved)

    @cached_property
    def before(self) -> SessionView | None:
        """The session as the round begins (``None``: a new session); built when asked for (AG-UI's state)."""
        return SessionView.of(self.previous, self.awaited) if self.previous else None

    @property
    def round(self) -> int:
        """The number of the round this plays."""
        if self.saved is not None:
            played = self.saved.finished or self.saved.paused
            assert played is not None  # a RoundPlayed is one or the other
            return played.round
        if self.awaited is not None:
            return self.awaited.round
        return round_to_play({**(self.previous or {}), **self.inputs})  # type: ignore[typeddict-item]


@dataclass(frozen=True)
class RoundPlayed:
    """The end of a round: ``finished`` (graded) or ``paused`` (awaiting the person's answer), the session as
    it is now (``session``), the model that played and the request's trace id."""

    session_id: str
    state: QuizState  # the graph's values after the round
    model: str
    trace_id: str | None
    finished: FinishedRound | None = None
    paused: PausedRound | None = None

    @cached_property
    def session(self) -> SessionView:
        """The session as it is now; built when asked for (AG-UI's state), not for every round."""
        paused = self.paused
        return SessionView.of(self.state, Awaited(round=paused.round, question=paused.question,
                                                      hints=paused.hints) if paused else None)


def settings_of(values: QuizState, student: Student) -> InputState:
    """The settings a session's ``values`` were played with, as a round's graph input, ``student`` playing."""
    inputs = InputState(subject=values["subject"], difficulty=values["difficulty"], language=values["language"],
                        student=student)
    if (question_format := values.get("format")) is not None:
        inputs["format"] = question_format
    return inputs


def graded(state: QuizState, finished: FinishedRound) -> Graded:
    """A finished round as the learner book records it (``app.learners``): at its question's own difficulty
    (``FinishedRound.difficulty``: a review's), with the bank item it asked."""
    return Graded(subject=finished.subject, difficulty=finished.difficulty, language=finished.language,
                  question=finished.question, reference_answer=finished.reference_answer, verdict=finished.verdict,
                  answered_by=finished.answered_by, item=state.get("question", {}).get("item"),
                  hints=len(finished.hints), options=tuple(finished.options))


def new_session_id() -> str:
    """128 random bits, URL-safe (22 characters): unguessable (``secrets``, RFC 4086 strength)."""
    return secrets.token_urlsafe(16)


def is_random_uuid(value: str) -> bool:
    """Whether ``value`` is a version 4 UUID in its canonical form: 122 random bits (RFC 9562 §5.4), what
    AG-UI clients generate for a thread id (``uuidv4()``)."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == value.lower()


@dataclass
class RoundService:
    """The quiz as the API sees it: ``quota()`` and ``admission()`` let a round in (``app.limits``),
    ``prepare()`` a request, then ``run()`` (events) or ``play()`` (the end)."""

    quiz: Quiz
    store: SessionStore
    settings: Settings
    places: FairAdmission = field(init=False)
    bank: Bank | None = field(init=False)
    learners: LearnerBook = field(init=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self.places = FairAdmission(self.settings.max_concurrent_rounds, self.settings.fair_share_window_s)
        # The question bank, read and validated at start (BankError naming file, item and field); none when the
        # Teacher writes every question.
        self.bank = None if self.settings.questions_from == "generate" else Bank.load(self.settings.question_bank)
        self.learners = LearnerBook(self.store.learners, self.settings.learner_ttl_s, self.settings.adaptive_target)
        instruments = self.quiz.telemetry.instruments  # both series exist from the start: 0 of the limit
        instruments.round_limit.add(self.places.capacity)
        instruments.round_active.add(0)

    @property
    def in_flight(self) -> int:
        """Rounds admitted and not yet released (``admission()``), at most ``MAX_CONCURRENT_ROUNDS``."""
        return self.places.in_flight

    def policies(self, principal: Principal) -> list[Policy]:
        """The rate limits that apply to ``principal``: none for the anonymous one unless
        ``RATE_LIMIT_ANONYMOUS``, and none whose quota is 0."""
        if principal.kind == "anonymous" and not self.settings.rate_limit_anonymous:
            return []
        return [policy for policy in (
            Policy(ROUNDS, self.settings.rate_limit_rounds_per_minute, ROUND_WINDOW_S),
            Policy(TOKENS, self.settings.rate_limit_tokens_per_day, TOKEN_WINDOW_S, "llm-tokens")) if policy.quota]

    async def quota(self, principal: Principal, count: bool = True) -> dict[str, str]:
        """Count a round against ``principal``'s rounds per minute and look up its tokens today, on the store
        (every replica counts the same rows); return the ``RateLimit`` fields to answer with. Raises
        ``RateLimited`` (429, ``Retry-After`` and those fields) when either is used up, and
        ``SessionStoreUnavailable``. A refusal is counted in ``quiz.admissions``. ``count=False``: only look
        (a retry that follows a round already started plays nothing: it is neither counted nor refused)."""
        standings: list[Standing] = []
        try:
            for policy in self.policies(principal):
                used, reset_s = await self.store.usage.add(principal.id, policy.name, policy.window_s,
                                                           1 if count and policy.name == ROUNDS else 0)
                standings.append(Standing(policy, used, reset_s))
        except self.store.errors as exc:
            raise self.unavailable(exc) from exc
        headers = rate_limit_headers(standings)
        spent = [s for s in standings if s.used > s.policy.quota or (s.policy.name == TOKENS and not s.remaining)]
        if spent and count:
            self._admitted(principal, spent[0].policy.name)
            wait = max(s.reset_s for s in spent)
            what = " and ".join(f"{s.policy.quota} {s.policy.name} per {s.policy.window_s} s" for s in spent)
            raise RateLimited(f"This client has used its {what} (RATE_LIMIT_*). Retry in {wait} s.",
                              {"Retry-After": str(wait), **headers})
        return headers

    @contextmanager
    def admission(self, principal: Principal = ANONYMOUS) -> Iterator[None]:
        """Hold one of ``MAX_CONCURRENT_ROUNDS`` places, within ``principal``'s fair share, while the body runs
        (``app.limits.FairAdmission``); raise ``RateLimited`` (429) over the share and ``Overloaded`` (503 +
        ``Retry-After: 1``) when no place is free, at once. Counted in ``quiz.admissions`` either way; a place
        held is counted in ``quiz.round.active`` until it is released."""
        with ExitStack() as stack:
            try:
                stack.enter_context(self.places.place(principal.id))
            except RateLimited:
                self._admitted(principal, FAIR_SHARE)
                raise
            except Overloaded:
                self._admitted(principal, CAPACITY)
                raise
            self._admitted(principal, None)
            active = self.quiz.telemetry.instruments.round_active
            active.add(1)
            stack.callback(active.add, -1)
            yield

    def _admitted(self, principal: Principal, limit: str | None) -> None:
        """Count a request for a round in ``quiz.admissions``: allowed, or refused by ``limit``."""
        labels = {C.ATTR_ADMISSION_OUTCOME: C.LIMITED if limit else C.ADMITTED}
        if limit:
            labels[C.ATTR_LIMIT] = limit
        if self.settings.metrics_principal_label:
            labels[C.ATTR_PRINCIPAL] = principal.id
        self.quiz.telemetry.instruments.admissions.add(1, labels)

    async def prepare(self, request: PlayRound | GiveAnswer | AskHint, scope: AsyncExitStack,
                      principal: Principal = ANONYMOUS, *, owner: str | None = None,
                      succeed: str | None = None, run: str | None = None) -> PreparedRound:
        """Resolve session and settings for ``principal``; a continued session is leased for this round until
        ``scope`` closes, and is checked to be the principal's under the lease. The lease's ``owner`` token is
        the round's holder (``app.runs``; a fresh token when ``None``); ``succeed``: the holder of a lost round
        this one replays, whose lease it takes over at once. ``run``: the round's run id, kept beside the
        checkpoint it writes; when a take-over (``succeed``) finds the session's checkpoint already that round's
        (its replica saved it, then died before it could say so), the prepared round is ``saved``: ``run()``
        answers with it, playing nothing.

        Raises ``RoundInProgress`` when another round of the session holds the lease, ``SessionNotFound``
        for an unknown or expired id or another principal's session (the same answer: ids do not leak),
        ``WeakThreadId`` for a new client-named session whose id is not a random UUID,
        ``AnswerAwaited``/``NoAnswerAwaited`` (409) when the request does not fit the session's paused round,
        ``NoHintsLeft`` (409) for a hint past ``HINTS_PER_ROUND`` and ``SessionStoreUnavailable`` when the store
        cannot be reached.
        """
        owner, metered = principal.id, any(p.name == TOKENS for p in self.policies(principal))
        previous: QuizState | None = None
        lease: tuple[str, str] | None = None
        if request.session_id is not None:
            lease = (request.session_id, await self._lease(request.session_id, scope, owner, succeed))
            if isinstance(request, PlayRound) and request.create:
                snapshot = await self._lookup(request.session_id)
                if snapshot.values:
                    self._check_owner(request.session_id, snapshot, owner, "")
                elif not request.adopt and not is_random_uuid(request.session_id):
                    raise WeakThreadId(f"Thread {request.session_id!r} is new, and a new thread's id must be a random "
                                       "(version 4) UUID, as AG-UI clients make them: anyone could guess or plant "
                                       "this one. Start the thread with a fresh UUID.")
            else:
                snapshot = await self._snapshot(request.session_id, owner, "Omit session_id to start a new session.")
            # Only a take-over can find its round saved: a key used again after ROUND_RETENTION_S is a new request.
            if succeed is not None and run is not None \
                    and (saved := self._saved(request.session_id, snapshot, run)) is not None:
                values = saved.state
                return PreparedRound(request.session_id, settings_of(values, values.get("student", ANSWERED_BY_MODEL)),
                                     previous=values, owner=owner, lease=lease, metered=metered, run=run, saved=saved)
            if isinstance(request, GiveAnswer):
                return replace(self._answer(request.session_id, snapshot, request.answer), owner=owner,
                               lease=lease, metered=metered)
            if isinstance(request, AskHint):
                return replace(self._hint(request.session_id, snapshot), owner=owner, lease=lease, metered=metered)
            previous = cast(QuizState, snapshot.values) if snapshot.values else None
            if previous is not None and (awaited := awaited_answer(snapshot)) is not None:
                raise AnswerAwaited(f"Round {awaited.round} of session {request.session_id!r} awaits "
                                    'your answer: send {"session_id": …, "answer": "…"} (GET /sessions/{id} shows the '
                                    "question), or omit session_id to start a new session.")
        assert isinstance(request, PlayRound)  # an answer always has its session
        intent = request.intent
        known: QuizState | dict[str, Any] = previous or {}
        language = (request.language or intent.language or known.get("language")
                    or ("ko" if is_korean(request.subject) else "en"))
        inputs = InputState(
            subject=request.subject or intent.subject or known.get("subject") or DEFAULT_SUBJECT,
            difficulty=request.difficulty or intent.difficulty or known.get("difficulty") or DEFAULT_DIFFICULTY,
            language=language, reset=intent.reset,
            student=request.student or known.get("student") or ANSWERED_BY_MODEL)
        if (question_format := request.format or known.get("format")) is not None:  # open unless said
            inputs["format"] = question_format
        question = await self._learner_round(request, inputs, known, principal)
        if question is None:
            question = self._bank_question(inputs, previous)
        if question is not None or (previous is not None and previous.get("preset") is not None):  # else unwritten
            inputs["preset"] = question
        return PreparedRound(request.session_id or new_session_id(), inputs, previous=previous, owner=owner,
                             lease=lease, metered=metered, run=run)

    async def _learner_round(self, request: PlayRound, inputs: InputState, known: QuizState | dict[str, Any],
                             principal: Principal) -> StoredQuestion | None:
        """For a round with a learner (the request's ``learner_id``, else the session's), plan it
        (``app.learners.LearnerBook.plan``): a review due is the round's question (returned) at the difficulty it
        was asked; else an adaptive session's difficulty is chosen for the learner, and the choice kept in
        ``inputs``. Nothing for a round without a learner (its state keys stay unwritten). Raises
        ``LearnerRequired`` for ``difficulty: adaptive`` without a learner, ``SessionStoreUnavailable``."""
        learner = request.learner_id or known.get("learner")
        adaptive = request.adaptive or (request.difficulty is None and request.intent.difficulty is None
                                        and bool(known.get("adaptive")))
        if adaptive and not learner:
            raise LearnerRequired("difficulty: adaptive chooses the difficulty for a learner: send learner_id "
                                  "(your name for the person playing, e.g. \"ana\") or a fixed difficulty.")
        if request.adaptive or known.get("adaptive"):
            inputs["adaptive"] = adaptive
        if not learner:
            return None
        inputs["learner"] = learner
        try:
            plan = await self.learners.plan(principal.id, learner, inputs.get("student", ANSWERED_BY_MODEL),
                                            inputs["subject"], inputs["language"], inputs["difficulty"], adaptive)
        except self.store.errors as exc:
            raise self.unavailable(exc) from exc
        choice = plan.choice
        inputs["choice"] = StoredChoice(difficulty=choice.difficulty, predicted=round(choice.predicted, 4),
                                        target=choice.target) if choice else None
        if plan.review is None:
            inputs["difficulty"] = plan.difficulty
            return None
        # A review keeps its own difficulty (graphs.state.StoredQuestion); the session keeps its setting.
        return StoredQuestion(**review_question(plan.review[1]), review=True)

    def _bank_question(self, inputs: InputState, previous: QuizState | None) -> StoredQuestion | None:
        """The question bank's item the round asks, when ``QUESTION_SOURCE`` says this round is the bank's (every
        round for ``bank``, ``QUESTION_BANK_SHARE`` of them for ``mixed``) and the bank has one for its subject,
        difficulty and language (with options, for a multiple-choice round) — not one the session was asked yet
        while any is left (``quiz.bank.Bank.pick``);
        else ``None``: the Teacher writes the question (and a preset an earlier round left is cleared)."""
        if self.bank is None or (self.settings.questions_from == "mixed"
                                 and self._rng.random() >= self.settings.question_bank_share):
            return None
        asked = [] if previous is None or inputs.get("reset") else previous.get("history", [])
        choice = inputs.get("format") == "choice"
        item = self.bank.pick(subject_of(inputs["subject"]), inputs["difficulty"], inputs["language"], asked,
                              self._rng, choice=choice)
        if item is None:
            return None
        question = StoredQuestion(question=item.question, reference_answer=item.reference,
                                  item=StoredItem(id=item.id, match=item.match, accept=list(item.accept),
                                                  tolerance=item.tolerance))
        if choice and item.options:
            question["options"] = list(item.options)
        return question

    def _saved(self, session_id: str, snapshot: StateSnapshot, run: str) -> RoundPlayed | None:
        """Round ``run`` as the session's checkpoint ``snapshot`` keeps it, when that round wrote it and ended
        there — graded, or paused for a person's answer — though its record still says it is playing: its
        replica died between saving the round and saying so (``app.runs``). ``None`` when the checkpoint is
        another round's, or one a failed step left (a person's answer kept for the retry to grade).

        Without this, the retry that takes the lost round over would play it again: the session would gain a
        round nobody asked for (the client asked for round 2 and would get round 3).
        """
        if (snapshot.metadata or {}).get(RUN) != run or (snapshot.next and not snapshot.interrupts):
            return None
        values = cast(QuizState, snapshot.values)
        model = self.quiz.llm.model
        if (awaited := awaited_answer(snapshot)) is not None:
            return RoundPlayed(session_id, values, model, awaited.asked_trace_id,
                               paused=PausedRound.of(values, awaited))
        return RoundPlayed(session_id, values, model, values["rounds"][-1].get("trace_id"),
                           finished=FinishedRound.of(values))

    def _hint(self, session_id: str, snapshot: StateSnapshot) -> PreparedRound:
        """The run that asks the Tutor for a hint to the session's paused round: ``NoAnswerAwaited`` when none
        waits, ``NoHintsLeft`` once ``HINTS_PER_ROUND`` were given or when the answer is in (its grading failed:
        it waits to be sent again, not for a hint)."""
        resume = hint_command(snapshot)
        awaited = awaited_answer(snapshot)
        if resume is None and awaited is not None:  # the answer is in; its grading failed and waits to be retried
            raise NoHintsLeft(f"Your answer to round {awaited.round} is in, and its grading failed: send your answer "
                              "again to have it graded. No hint can be given after the answer.")
        if resume is None or awaited is None:
            played = snapshot.values.get("round", 0)
            raise NoAnswerAwaited(f"No question of session {session_id!r} awaits an answer (rounds graded: "
                                  f"{played}), so there is nothing to give a hint for. Omit `hint` to play the next "
                                  "round.")
        allowed = self.settings.hints_allowed
        if len(awaited.hints) >= allowed and resume.resume is not None:  # a failed hint is retried, never refused
            why = f"Round {awaited.round} has had its {allowed} hint(s) (HINTS_PER_ROUND)" if allowed else \
                "Hints are off on this service (HINTS_PER_ROUND=0, or DISABLED_AGENTS names the tutor)"
            raise NoHintsLeft(f"{why}; the question still awaits your answer.")
        return self._resumed(session_id, snapshot, resume, awaited)

    def _answer(self, session_id: str, snapshot: StateSnapshot, answer: str) -> PreparedRound:
        """The round that grades a person's ``answer`` to the session's paused round (``NoAnswerAwaited``: none)."""
        resume = answer_command(snapshot, answer)
        awaited = awaited_answer(snapshot)
        if resume is None or awaited is None:
            played = snapshot.values.get("round", 0)
            raise NoAnswerAwaited(f"No round of session {session_id!r} awaits an answer (rounds graded: {played}); "
                                  "an answer is graded once. Omit `answer` to play the next round.")
        if awaited.options and choice_of(answer, awaited.options) is None:
            letters = ", ".join(LETTERS[:len(awaited.options)])
            raise AnswerNotAnOption(f"Round {awaited.round} is multiple choice: answer with one option's letter "
                                    f"({letters}) or its words. The question still waits for your answer.")
        return self._resumed(session_id, snapshot, resume, awaited)

    @staticmethod
    def _resumed(session_id: str, snapshot: StateSnapshot, resume: Command, awaited: Awaited) -> PreparedRound:
        """The run that goes on with the session's paused round (``resume``: an answer, or a hint request)."""
        values: QuizState = snapshot.values  # type: ignore[assignment]
        # The round's span says what the asking request's did: its question's source, its learner, its own
        # difficulty (a review's).
        inputs = settings_of(values, ANSWERED_BY_PERSON)
        inputs["difficulty"] = asked_at(values)
        if (preset := values.get("preset")) is not None:
            inputs["preset"] = preset
        if learner := values.get("learner"):
            inputs["learner"], inputs["adaptive"] = learner, bool(values.get("adaptive"))
        asked = None
        if awaited.asked_trace_id and awaited.asked_span_id:
            asked = trace.Link(trace.SpanContext(int(awaited.asked_trace_id, 16), int(awaited.asked_span_id, 16),
                                                 is_remote=True, trace_flags=trace.TraceFlags.get_default()))
        return PreparedRound(session_id, inputs, resume, asked, previous=values, awaited=awaited,
                             paused=PausedRound.of(values, awaited))

    async def session(self, session_id: str, owner: str = ANONYMOUS.id) -> SessionView:
        """The session's settings, score and kept rounds (oldest first). Raises ``SessionNotFound`` (404: also
        another principal's session) and ``SessionStoreUnavailable`` (503)."""
        return SessionView.of_snapshot(await self._snapshot(session_id, owner))

    async def learner(self, learner_id: str, owner: str = ANONYMOUS.id) -> Profile:
        """``owner``'s learner ``learner_id``. Raises ``LearnerNotFound`` (404: also another principal's) and
        ``SessionStoreUnavailable`` (503)."""
        try:
            profile = await self.learners.get(owner, learner_id)
        except self.store.errors as exc:
            raise self.unavailable(exc) from exc
        if profile is None:
            raise LearnerNotFound(f"This client has no learner {learner_id!r} (never played, idle past "
                                  "LEARNER_TTL_S, or forgotten). Play a round with learner_id to start one.")
        return profile

    async def forget_learner(self, learner_id: str, owner: str = ANONYMOUS.id) -> None:
        """Forget ``owner``'s learner ``learner_id``. Raises ``LearnerNotFound`` and ``SessionStoreUnavailable``."""
        try:
            existed = await self.learners.forget(owner, learner_id)
        except self.store.errors as exc:
            raise self.unavailable(exc) from exc
        if not existed:
            raise LearnerNotFound(f"This client has no learner {learner_id!r} to forget.")

    async def forget(self, session_id: str, owner: str = ANONYMOUS.id) -> None:
        """Delete the session with every checkpoint of it, once no round of it is playing (its lease).

        Raises ``RoundInProgress`` (409), ``SessionNotFound`` (404: also another principal's session),
        ``SessionStoreUnavailable`` (503).
        """
        async with AsyncExitStack() as scope:
            await self._lease(session_id, scope)
            await self._snapshot(session_id, owner)
            try:
                await delete_session(self.store, session_id)
            except self.store.errors as exc:
                raise self.unavailable(exc) from exc

    async def feedback(self, session_id: str, round_no: int, rating: Rating, comment: str | None,
                       owner: str = ANONYMOUS.id) -> None:
        """Record a person's ``rating`` (and ``comment``) of a kept round, once per round and principal
        (``app.sessions.Ratings``): a first rating is a ``gen_ai.evaluation.result`` (``user_feedback``) attached
        to that round's grading span and one count of ``quiz.feedback``; a changed one is a new evaluation
        event (the latest is the principal's rating) and no count; the same one again is nothing. Raises
        ``SessionNotFound``, ``RoundNotFound`` (404) and ``SessionStoreUnavailable`` (503)."""
        values = (await self._snapshot(session_id, owner)).values
        played = next((r for r in values.get("rounds", []) if r["round"] == round_no), None)
        if played is None:
            raise RoundNotFound(f"Session {session_id!r} keeps no round {round_no}: rounds can be rated once "
                                "graded, and the last SESSION_ROUNDS_KEPT are kept. See GET /sessions/{id}.")
        try:
            rated = await self.store.ratings.rate(session_id, round_no, owner, rating, comment)
        except self.store.errors as exc:
            raise self.unavailable(exc) from exc
        if rated == "same":  # the same rating again (a double click, a retry): nothing new to say
            return
        telemetry = self.quiz.telemetry
        telemetry.evaluations.record(
            C.EVALUATION_USER_FEEDBACK, rating, C.RATING_SCORES[rating], comment,
            {GenAI.GEN_AI_CONVERSATION_ID: session_id, C.ATTR_ROUND: round_no, C.ATTR_VERDICT: played["verdict"]},
            trace_id=played.get("trace_id"), span_id=played.get("span_id"))
        if rated == "new":  # a change of mind is the latest evaluation event, never a second count
            telemetry.instruments.feedback.add(1, {C.ATTR_RATING: rating, C.ATTR_VERDICT: played["verdict"]})

    async def _snapshot(self, session_id: str, owner: str,
                        hint: str = "Start a new session with POST /ask.") -> StateSnapshot:
        state = await self._lookup(session_id)
        if not state.values:
            raise SessionNotFound(f"Session {session_id!r} does not exist or has expired. {hint}")
        self._check_owner(session_id, state, owner, hint)
        return state

    @staticmethod
    def _check_owner(session_id: str, state: StateSnapshot, owner: str, hint: str) -> None:
        """``SessionNotFound`` — word for word what an unknown id gets — unless the session is ``owner``'s (a
        session saved before owners were kept belongs to the anonymous principal)."""
        if (state.metadata or {}).get(OWNER, ANONYMOUS.id) != owner:
            raise SessionNotFound(f"Session {session_id!r} does not exist or has expired. {hint}".strip())

    async def _lookup(self, session_id: str) -> StateSnapshot:
        """The session's latest checkpoint (empty ``values``: no such session). Raises ``SessionStoreUnavailable``."""
        try:
            return await self.quiz.graph.aget_state(Quiz.config(session_id))
        except self.store.errors as exc:
            raise self.unavailable(exc) from exc

    async def _lease(self, session_id: str, scope: AsyncExitStack, owner: str | None = None,
                     succeed: str | None = None) -> str:
        """Take the session's lease until ``scope`` closes, for ``ROUND_LEASE_TTL_S`` (a round renews it while
        it plays: ``app.runs``); its owner token. ``RoundInProgress`` when it is held."""
        owner = owner or secrets.token_hex(8)
        try:
            held = await self.store.leases.acquire(session_id, owner, self.settings.round_lease_ttl_s, succeed)
        except self.store.errors as exc:
            raise self.unavailable(exc) from exc
        if not held:
            raise RoundInProgress("Another round of this session is still being played (a double click, or a "
                                  "retry?). Wait for it to finish, then ask again.", {"Retry-After": "2"})
        scope.push_async_callback(self._unlease, session_id, owner)
        return owner

    async def _unlease(self, session_id: str, owner: str) -> None:
        try:
            await self.store.leases.release(session_id, owner)
        except self.store.errors as exc:  # it expires by itself after ROUND_LEASE_TTL_S
            log.warning("could not release the lease of a session: %s: %s", type(exc).__name__, exc)

    @staticmethod
    def unavailable(cause: BaseException) -> SessionStoreUnavailable:
        """The 503 for a store that could not be reached (``cause``: what it raised), logged with the trace id."""
        log.warning("session store unavailable (%s: %s) trace_id=%s", type(cause).__name__, cause, current_trace_id())
        return SessionStoreUnavailable()

    async def run(self, prepared: PreparedRound) -> AsyncIterator[RoundEvent | RoundPlayed]:
        """Play the round: yield each agent step's events as they happen, then the ``RoundPlayed``.

        Raises a ``QuizError`` (``app.errors``) for every expected failure; the session is then unchanged. A
        ``saved`` round (played already: ``prepare``) is answered as it was saved, neither played nor counted
        again.
        """
        if prepared.saved is not None:
            log.info("round %d of session %s was saved by a replica lost before it could say so: answered from "
                     "its checkpoint, not played again", prepared.round, prepared.session_id)
            yield prepared.saved
            return
        with self.quiz.round_span(prepared.session_id, prepared.inputs, link=prepared.asked):
            ended: Played | None = None
            async for item in self.quiz.stream(prepared.session_id, prepared.resume or prepared.inputs,
                                             prepared.owner, prepared.run):
                if isinstance(item, Played):
                    ended = item
                else:
                    yield item
            assert ended is not None
            if ended.finished is not None:
                self._record(prepared.session_id, ended.finished)
            elif ended.paused is not None and prepared.awaited is not None \
                    and len(ended.paused.hints) > len(prepared.awaited.hints):  # the Tutor gave a hint
                self.quiz.telemetry.instruments.hints.add(1, {C.ATTR_SUBJECT: C.subject_label(ended.paused.subject),
                                                              C.ATTR_DIFFICULTY: ended.paused.difficulty,
                                                              C.ATTR_LANGUAGE: ended.paused.language})
            trace_id = current_trace_id()
        try:  # the round is saved; a session without a fresh row is given one at the next start
            if prepared.metered and (tokens := self._tokens(prepared, ended)):
                await self.store.usage.add(prepared.owner, TOKENS, TOKEN_WINDOW_S, tokens)
            await self.store.activity.touch(prepared.session_id)
        except self.store.errors as exc:
            log.warning("could not record the session's tokens or activity: %s: %s", type(exc).__name__, exc)
        if ended.finished is not None and (learner := ended.state.get("learner")):
            try:  # on its own: a learner store that fails costs the learner's update, never the metering
                predicted = await self.learners.record(prepared.owner, learner, graded(ended.state, ended.finished))
                self._record_learner(ended.state, ended.finished, predicted)
            except self.store.errors as exc:
                log.warning("could not record the round for its learner: %s: %s", type(exc).__name__, exc)
        yield RoundPlayed(prepared.session_id, ended.state, self.quiz.llm.model, trace_id, ended.finished,
                          ended.paused)

    @staticmethod
    def _tokens(prepared: PreparedRound, ended: Played) -> int:
        """The LLM tokens this request's part of the round used (a resumed round's question was counted when
        it was asked)."""
        usage = ended.finished.usage if ended.finished else ended.paused.usage if ended.paused else None
        if usage is None:
            return 0
        before = prepared.paused.usage if prepared.paused else None
        return (usage.input_tokens + usage.output_tokens
                - (before.input_tokens + before.output_tokens if before else 0))

    def _record_learner(self, state: QuizState, result: FinishedRound, predicted: float) -> None:
        """Count a named learner's graded round in ``quiz.learner.rounds``: predicted success beside the verdict."""
        self.quiz.telemetry.instruments.learner_rounds.add(1, {
            C.ATTR_PREDICTION_BIN: C.prediction_bin(predicted), C.ATTR_VERDICT: result.verdict,
            C.ATTR_ANSWERED_BY: result.answered_by, C.ATTR_HINTS_USED: len(result.hints), **learner_labels(state)})

    def _record(self, session_id: str, result: FinishedRound) -> None:
        """Count a graded round in ``quiz.rounds`` and record the Teacher's grade as an evaluation of it."""
        subject = C.subject_label(result.subject)
        telemetry = self.quiz.telemetry
        telemetry.instruments.rounds.add(1, {C.ATTR_SUBJECT: subject, C.ATTR_DIFFICULTY: result.difficulty,
                                             C.ATTR_VERDICT: result.verdict, C.ATTR_ANSWERED_BY: result.answered_by,
                                             C.ATTR_QUESTION_SOURCE: result.source,
                                             C.ATTR_QUESTION_FORMAT: result.format})
        # The Teacher's grade judges the Student's answer: attached to its step's span (a person's answer came
        # with this request: to this round's span).
        trace_id, span_id = result.judged or (None, None)
        telemetry.evaluations.record(
            C.EVALUATION_CORRECTNESS, result.verdict, C.VERDICT_SCORES[result.verdict], result.feedback,
            {GenAI.GEN_AI_CONVERSATION_ID: session_id, C.ATTR_ROUND: result.round,
             C.ATTR_SUBJECT: subject, C.ATTR_DIFFICULTY: result.difficulty, C.ATTR_ANSWERED_BY: result.answered_by},
            trace_id=trace_id, span_id=span_id)

    async def play(self, prepared: PreparedRound) -> RoundPlayed:
        """Play the round to its end (or its pause). Raises a ``QuizError`` as ``run()`` does."""
        async for item in self.run(prepared):
            if isinstance(item, RoundPlayed):
                return item
        raise RuntimeError("run() ends with a RoundPlayed or raises")
