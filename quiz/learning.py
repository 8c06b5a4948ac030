"""What the quiz knows about a learner: mastery per subject, how hard each question is, which difficulty to ask
next and which missed question is due again. Pure functions on JSON-able values; ``app.learners`` keeps them.

**Mastery and difficulty** are ratings of one model, so that one predicts the other: every graded round is a
match between the learner (their rating in the round's subject) and the question (the bank item, or for a
question the Teacher wrote, its subject, difficulty and language as one "level"). A right answer is a win, a
wrong one a loss, a partly right one a draw. The ratings are Weng and Lin's Bayesian approximation for online
ranking with the Bradley–Terry/Plackett–Luce likelihood (R. C. Weng, C.-J. Lin, "A Bayesian Approximation Method
for Online Ranking", JMLR 12, 2011), as the ``openskill`` package implements it: each rating is a mean ``mu``
and an uncertainty ``sigma``, both updated by every attempt, and the predicted chance of a right answer is
``openskill``'s ``predict_win`` for the two. This is an Elo-style rating with uncertainty, the family adaptive
learning systems use for learners and items alike (R. Pelánek, "Applications of the Elo rating system in
adaptive educational systems", Computers & Education 98, 2016). People and the model Student are calibrated
apart (``population``): a question easy for one is not easy for the other.

**Reviews**: a question the learner missed, or got partly, is scheduled with FSRS (the Free Spaced Repetition
Scheduler, J. Ye et al., "A Stochastic Shortest Path Algorithm for Optimizing Spaced Repetition Scheduling", KDD
2022; the ``fsrs`` package, the scheduler Anki ships): missed is ``Again``, partly ``Hard``, right ``Good``. A
review answered right is scheduled further out; one missed again comes back soon.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NotRequired, TypedDict

from fsrs import Card, Rating, Scheduler
from openskill.models import PlackettLuce, PlackettLuceRating

from quiz.vocabulary import DIFFICULTIES, Difficulty, Verdict

MODEL: Final = PlackettLuce()  # mu 25, sigma 25/3: openskill's defaults
# Where a question the Teacher writes starts, by difficulty: a new learner (mu 25) is predicted to answer an easy
# one right 78 % of the time, a medium one 50 %, a hard one 22 %; the ratings then follow the outcomes.
LEVEL_PRIOR: Final[dict[Difficulty, float]] = {"easy": 15.0, "medium": 25.0, "hard": 35.0}
REVIEWS_KEPT: Final = 200  # per learner: past it, the reviews due last are dropped
TARGET_SUCCESS: Final = 0.7  # ADAPTIVE_TARGET's default
FSRS_RATING: Final[dict[Verdict, Rating]] = {"correct": Rating.Good, "partially_correct": Rating.Hard,
                                             "incorrect": Rating.Again}


class Skill(TypedDict):
    """A rating as kept: ``mu`` (mean) and ``sigma`` (uncertainty), on openskill's scale (a new one: 25, 8.33),
    with the rounds it counts and the right answers among them."""

    mu: float
    sigma: float
    rounds: int
    correct: int


class Review(TypedDict):
    """A question due again: the FSRS card (``fsrs.Card.to_dict()``) and what it takes to ask it again."""

    card: dict[str, Any]
    question: str
    reference_answer: str
    item: dict[str, Any] | None  # the bank item (graphs.state.StoredItem); None: the Teacher wrote it
    subject: str
    difficulty: Difficulty
    language: str
    options: NotRequired[list[str]]  # a multiple-choice question's: asked again as one


class Profile(TypedDict):
    """A learner as kept (``app.learners``): mastery by subject, reviews by question key, and counts."""

    subjects: dict[str, Skill]
    reviews: dict[str, Review]
    rounds: int
    correct: int


def new_profile() -> Profile:
    """A learner who has played nothing."""
    return Profile(subjects={}, reviews={}, rounds=0, correct=0)


def new_skill(mu: float | None = None) -> Skill:
    """A rating nothing has moved yet (``mu``: its prior mean; default openskill's 25)."""
    fresh = MODEL.rating(mu=mu)
    return Skill(mu=fresh.mu, sigma=fresh.sigma, rounds=0, correct=0)


def level_key(subject: str, difficulty: str, language: str) -> str:
    """The calibration key of a question the Teacher writes: its subject, difficulty and language."""
    return f"level:{subject}:{difficulty}:{language}"


def item_key(item_id: str) -> str:
    """The calibration key of a question bank's item."""
    return f"item:{item_id}"


def _rating(skill: Skill) -> PlackettLuceRating:
    return MODEL.rating(mu=skill["mu"], sigma=skill["sigma"])


def success(learner: Skill, question: Skill) -> float:
    """The predicted chance (0–1) that ``learner`` answers ``question`` right (openskill's ``predict_win``)."""
    return float(MODEL.predict_win([[_rating(learner)], [_rating(question)]])[0])


def rate(learner: Skill, question: Skill, verdict: Verdict) -> tuple[Skill, Skill]:
    """Both ratings after the learner's ``verdict`` on the question: a win, a loss, or a draw for partly right."""
    ranks = {"correct": [1.0, 2.0], "incorrect": [2.0, 1.0], "partially_correct": [1.0, 1.0]}[verdict]
    [[after_learner], [after_question]] = MODEL.rate([[_rating(learner)], [_rating(question)]], ranks=ranks)
    right = int(verdict == "correct")
    return (Skill(mu=after_learner.mu, sigma=after_learner.sigma, rounds=learner["rounds"] + 1,
                  correct=learner["correct"] + right),
            Skill(mu=after_question.mu, sigma=after_question.sigma, rounds=question["rounds"] + 1,
                  correct=question["correct"] + right))


CREDIT: Final[dict[Verdict, float]] = {"correct": 1.0, "partially_correct": 0.5, "incorrect": 0.0}


def with_hints(verdict: Verdict, hints: int) -> Verdict:
    """The outcome a graded answer counts as for learning: a right answer after ``hints`` hints (any) counts as
    partly right: the learner needed help, so the ratings move as for a draw and FSRS schedules it ``Hard``.
    Tutoring data does not count a hinted answer as a success either (the KDD Cup 2010 data sets from Carnegie
    Learning's tutors, PSLC DataShop: "Correct First Attempt" is 0 after an error or a hint request); half credit
    keeps what the learner did find. A wrong or partly right answer stays what it is."""
    return "partially_correct" if verdict == "correct" and hints > 0 else verdict


def credit(verdict: Verdict, hints: int = 0) -> float:
    """What an answer earns, 0–1: ``CREDIT`` of its outcome with ``hints`` taken into account (``with_hints``)."""
    return CREDIT[with_hints(verdict, hints)]


@dataclass(frozen=True)
class Choice:
    """An adaptive round's difficulty: the one whose predicted success is closest to ``target``, and that
    prediction (``predicted``, 0–1)."""

    difficulty: Difficulty
    predicted: float
    target: float


def choose(learner: Skill, levels: dict[Difficulty, Skill], target: float = TARGET_SUCCESS) -> Choice:
    """The difficulty to ask ``learner`` next: of ``levels`` (each difficulty's rating; missing ones at their
    prior), the one whose predicted success is closest to ``target`` (ties: the easier)."""
    best: Choice | None = None
    for difficulty in DIFFICULTIES:
        level = levels.get(difficulty) or new_skill(LEVEL_PRIOR[difficulty])
        predicted = success(learner, level)
        if best is None or abs(predicted - target) < abs(best.predicted - target) - 1e-12:
            best = Choice(difficulty, predicted, target)
    assert best is not None
    return best


def schedule(reviews: dict[str, Review], key: str, verdict: Verdict, now: datetime, asked: Review,
             scheduler: Scheduler) -> dict[str, Review]:
    """``reviews`` after the learner's ``verdict`` on question ``key`` at ``now`` (UTC): a question under review
    is rescheduled by FSRS whatever the verdict; a new one is scheduled only when missed or partly right. At
    most ``REVIEWS_KEPT`` stay (those due last go first)."""
    out = dict(reviews)
    held = out.get(key)
    if held is None and verdict == "correct":
        return out
    card = Card.from_dict(held["card"]) if held is not None else Card(due=now)  # type: ignore[arg-type]
    card, _ = scheduler.review_card(card, FSRS_RATING[verdict], review_datetime=now)
    out[key] = Review(**{**(held or asked), "card": dict(card.to_dict())})
    if len(out) > REVIEWS_KEPT:
        for late in sorted(out, key=lambda k: due_at(out[k]))[REVIEWS_KEPT:]:
            del out[late]
    return out


def due_at(review: Review) -> datetime:
    """When ``review`` is due (UTC)."""
    return datetime.fromisoformat(review["card"]["due"])


def due(reviews: dict[str, Review], subject: str, language: str, now: datetime) -> tuple[str, Review] | None:
    """The review of ``subject`` in ``language`` due longest ago at ``now``, or ``None``."""
    ready = [(due_at(r), k) for k, r in reviews.items()
             if r["subject"] == subject and r["language"] == language and due_at(r) <= now]
    if not ready:
        return None
    _, key = min(ready)
    return key, reviews[key]


def now_utc() -> datetime:
    """The scheduler's clock: now, UTC (tests inject theirs instead)."""
    return datetime.now(UTC)


def scheduler() -> Scheduler:
    """FSRS with its published default parameters and no interval fuzz (a review's due time is reproducible)."""
    return Scheduler(enable_fuzzing=False)
