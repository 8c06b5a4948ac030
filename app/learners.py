"""Learners: who plays across sessions, what they have mastered, and which missed questions are due again.

A learner is named by the client (``learner_id``), within its principal: two clients' learners of the same
name are two learners. Each is one item of LangGraph's long-term store (``SessionStore.learners``: in the
process for ``memory://``, beside the checkpoints for SQLite and Postgres), written with ``LEARNER_TTL_S`` as
its time to live, so an idle learner expires by itself; ``DELETE /learners/{id}`` forgets one at once. Question
calibrations — how hard each bank item, and each subject/difficulty/language of the Teacher's questions, has
been for people and for the model Student — are items of the same store without a time to live: they hold no
one's data, and their keys are bounded (the bank's items, the known subjects).

The model is ``quiz.learning``'s: Weng–Lin ratings (openskill) for mastery and difficulty, FSRS (fsrs) for
reviews. A learner is a person: only the rounds a person answered change the learner (mastery, counts,
reviews). A round the Student agent answers under a ``learner_id`` (adaptive difficulty for an agent, say)
calibrates the questions for the model and leaves the learner as it was.

A graded round updates the learner and the question it asked, read-modify-write. In one process these updates
take turns (a lock); LangGraph's store has no transactions, so rounds graded at the same moment on two replicas
may lose one of their updates to the same learner or the same question.

Without authentication every caller is the same client (``anonymous``): learner names are then shared by all
callers, as the threat model (docs/explanation/threat-model.md) says. Turn on API keys or Entra ID before learners
are exposed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from fsrs import Scheduler
from langgraph.store.base import BaseStore

from graphs.state import StoredItem, StoredQuestion
from quiz import learning
from quiz.learning import Choice, Profile, Review, Skill
from quiz.vocabulary import ANSWERED_BY_PERSON, DIFFICULTIES, Difficulty, Student, Verdict, subject_of

REVIEW_HOLD = timedelta(minutes=30)  # a review handed out is not due again for this long, unless it is graded
LEARNER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # a client's name for its learner (never a label, never logged)


def _principal_label(principal: str) -> str:
    """A store namespace label for ``principal`` (labels cannot hold dots; ids may): a digest of it."""
    return hashlib.sha256(principal.encode()).hexdigest()[:32]


def topic(subject: str) -> str:
    """The subject a review is kept under: the words the client used, case and spaces folded (a review of
    "dinosaurs" comes back in "Dinosaurs", never in "cooking"; mastery is kept by ``subject_of``, bounded)."""
    return " ".join(subject.casefold().split())


def question_key(item_id: str | None, question: str) -> str:
    """The key a question is scheduled and calibrated under: the bank item's, or a digest of the Teacher's text."""
    return learning.item_key(item_id) if item_id else "text:" + hashlib.sha256(question.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Plan:
    """What a learner's next round asks: its ``difficulty`` (the adaptive ``choice``, if any) and the ``review``
    due, if any (its question key and the question to ask again)."""

    difficulty: Difficulty
    choice: Choice | None = None
    review: tuple[str, Review] | None = None


@dataclass(frozen=True)
class Graded:
    """A graded round as the learner book needs it."""

    subject: str
    difficulty: Difficulty
    language: str
    question: str
    reference_answer: str
    verdict: Verdict
    answered_by: Student
    item: StoredItem | None
    hints: int = 0  # hints the person had before answering: a right answer after one counts as partly right
    options: tuple[str, ...] = ()  # a multiple-choice question's options

    @property
    def outcome(self) -> Verdict:
        """What the round counts as for learning (``quiz.learning.with_hints``)."""
        return learning.with_hints(self.verdict, self.hints)


class LearnerBook:
    """Learners and question calibrations in ``store`` (LangGraph's ``BaseStore``). ``ttl_s``: a learner's time
    to live, seconds; ``clock``: the scheduler's (UTC, injected by tests); ``scheduler``: FSRS."""

    def __init__(self, store: BaseStore, ttl_s: float, target: float = learning.TARGET_SUCCESS,
                 clock: Callable[[], datetime] = learning.now_utc, scheduler: Scheduler | None = None) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.ttl_minutes = ttl_s / 60
        self._turns = asyncio.Lock()  # one record() at a time in this process: no lost update here
        self.target = target
        self.clock = clock
        self.scheduler = scheduler or learning.scheduler()

    @staticmethod
    def _where(principal: str, learner_id: str) -> tuple[tuple[str, ...], str]:
        return ("quiz", "learners", _principal_label(principal)), learner_id

    async def _save(self, principal: str, learner_id: str, profile: Profile) -> None:
        """Write the learner, with ``LEARNER_TTL_S`` to live from now."""
        namespace, key = self._where(principal, learner_id)
        await self.store.aput(namespace, key, dict(profile), ttl=self.ttl_minutes)

    async def get(self, principal: str, learner_id: str) -> Profile | None:
        """The learner, or ``None`` (never seen, expired or forgotten)."""
        namespace, key = self._where(principal, learner_id)
        found = await self.store.aget(namespace, key)
        # Expired but not yet swept (SQLite and Postgres sweep hourly): forgotten all the same.
        if found is None:
            return None
        written = found.updated_at if found.updated_at.tzinfo else found.updated_at.replace(tzinfo=UTC)  # SQLite's
        if (datetime.now(UTC) - written).total_seconds() > self.ttl_s:
            return None
        return cast(Profile, found.value)

    async def forget(self, principal: str, learner_id: str) -> bool:
        """Forget the learner (their mastery, counts and reviews); whether there was one."""
        namespace, key = self._where(principal, learner_id)
        existed = await self.store.aget(namespace, key) is not None
        await self.store.adelete(namespace, key)
        return existed

    async def _calibration(self, population: Student, key: str, prior: float | None = None) -> Skill:
        found = await self.store.aget(("quiz", "calibration", population), key)
        return cast(Skill, found.value) if found is not None else learning.new_skill(prior)

    async def levels(self, population: Student, subject: str, language: str) -> dict[Difficulty, Skill]:
        """How hard each difficulty of the Teacher's questions on ``subject`` in ``language`` has been."""
        return {d: await self._calibration(population, learning.level_key(subject_of(subject), d, language),
                                           learning.LEVEL_PRIOR[d]) for d in DIFFICULTIES}

    async def plan(self, principal: str, learner_id: str, population: Student, subject: str, language: str,
                   difficulty: Difficulty, adaptive: bool) -> Plan:
        """The learner's next round on ``subject`` in ``language``: a review due, at the difficulty it was asked;
        else ``adaptive``ly the difficulty whose predicted success is closest to the target; else ``difficulty``."""
        async with self._turns:
            profile = await self.get(principal, learner_id) or learning.new_profile()
            review = learning.due(profile["reviews"], topic(subject), language, self.clock()) \
                if population == ANSWERED_BY_PERSON else None
            if review is not None:  # handed out: held back a while, so another session does not ask it too
                key, due = review
                held = Review(**{**due, "card": {**due["card"], "due": (self.clock() + REVIEW_HOLD).isoformat()}})
                await self._save(principal, learner_id, Profile(**{**profile, "reviews": {**profile["reviews"],
                                                                                         key: held}}))
                return Plan(due["difficulty"], review=review)
        if not adaptive:
            return Plan(difficulty)
        skill = profile["subjects"].get(subject_of(subject)) or learning.new_skill()
        choice = learning.choose(skill, await self.levels(population, subject, language), self.target)
        return Plan(choice.difficulty, choice=choice)

    async def record(self, principal: str, learner_id: str, graded: Graded) -> float:
        """Update the question's calibration for the population that answered (people, or the model Student)
        and, for a person's answer, the learner (mastery in the subject, counts, reviews) after a graded round,
        by what it counts as (``Graded.outcome``: a right answer after a hint is partly right); return the chance
        of a right answer the ratings predicted before it (0–1)."""
        async with self._turns:
            return await self._record(principal, learner_id, graded)

    async def _record(self, principal: str, learner_id: str, graded: Graded) -> float:
        subject, population = subject_of(graded.subject), graded.answered_by
        item_id = graded.item["id"] if graded.item else None
        key = question_key(item_id, graded.question)
        level_key = learning.level_key(subject, graded.difficulty, graded.language)
        level = await self._calibration(population, level_key, learning.LEVEL_PRIOR[graded.difficulty])
        profile = await self.get(principal, learner_id) or learning.new_profile()
        skill = profile["subjects"].get(subject) or learning.new_skill()
        # The learner plays the question: the bank item (its own rating, starting at its level's), or the level.
        # A bank round also tells how hard its level is: the level plays the learner as they were.
        if item_id:
            item = await self._calibration(population, learning.item_key(item_id), level["mu"])
            predicted = learning.success(skill, item)
            _, level = learning.rate(skill, level, graded.outcome)
            skill, item = learning.rate(skill, item, graded.outcome)
            await self.store.aput(("quiz", "calibration", population), learning.item_key(item_id), dict(item),
                                  ttl=None)
        else:
            predicted = learning.success(skill, level)
            skill, level = learning.rate(skill, level, graded.outcome)
        await self.store.aput(("quiz", "calibration", population), level_key, dict(level), ttl=None)
        if population != ANSWERED_BY_PERSON:  # the model played: the learner is as they were
            return predicted
        asked = Review(card={}, question=graded.question, reference_answer=graded.reference_answer,
                       item=cast(dict[str, Any], graded.item) if graded.item else None, subject=topic(graded.subject),
                       difficulty=graded.difficulty, language=graded.language)
        if graded.options:
            asked["options"] = list(graded.options)
        profile = Profile(subjects={**profile["subjects"], subject: skill},
                          reviews=learning.schedule(profile["reviews"], key, graded.outcome, self.clock(), asked,
                                                    self.scheduler),
                          rounds=profile["rounds"] + 1, correct=profile["correct"] + (graded.outcome == "correct"))
        await self._save(principal, learner_id, profile)
        return predicted


def review_question(review: Review) -> StoredQuestion:
    """A review as the round's preset question: the question, reference and difficulty kept, the bank item if it
    was one, its options if it was multiple choice."""
    question = StoredQuestion(question=review["question"], reference_answer=review["reference_answer"],
                              difficulty=review["difficulty"])
    if review["item"] is not None:
        question["item"] = cast(StoredItem, review["item"])
    if options := review.get("options"):
        question["options"] = options
    return question
