"""Learners (``app.learners``, ``quiz.learning``): mastery that follows the answers, adaptive difficulty that
climbs and descends with them, missed questions that come back when FSRS says they are due (the scheduler's
clock injected, never slept), learners that belong to their client and can be forgotten, on every store."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from langgraph.store.base import PutOp
from scipy.stats import spearmanr

from app.sessions.memory import ExpiringMemoryStore
from evals import dataset
from quiz import learning
from quiz.bank import STARTER
from tests.fakes.openai_server import FakeOpenAI

BANK = {item.question: item for item in dataset.load(STARTER).items}


def ask(client: TestClient, **body: object) -> dict:
    r = client.post("/ask", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def play(client: TestClient, right: bool, **body: object) -> dict:
    """A person's round on a bank question: answered with the item's reference (right) or not (wrong)."""
    asked = ask(client, student="person", **body)
    assert asked["status"] == "awaiting_answer", asked
    item = BANK[asked["question"]]
    return ask(client, session_id=asked["session_id"], answer=item.reference if right else "I do not know")


def test_a_simulated_population_is_ranked_by_its_known_abilities() -> None:
    """Learners of known ability answer items of known difficulty (a Rasch model: P(right) = σ(θ − b)), seeded;
    the ratings recover both orders, and their predictions match the outcomes."""
    rng = random.Random(20261204)
    ability = [rng.gauss(0, 1.5) for _ in range(40)]
    difficulty = [rng.gauss(0, 1.5) for _ in range(30)]
    learners, items = [learning.new_skill() for _ in ability], [learning.new_skill() for _ in difficulty]
    predicted, happened = [], []
    for round_no in range(40):
        for i in rng.sample(range(len(ability)), len(ability)):
            j = rng.randrange(len(difficulty))
            right = rng.random() < 1 / (1 + math.exp(difficulty[j] - ability[i]))
            if round_no >= 20:  # the second half: once the ratings have something to go on
                predicted.append(learning.success(learners[i], items[j]))
                happened.append(right)
            learners[i], items[j] = learning.rate(learners[i], items[j], "correct" if right else "incorrect")
    assert spearmanr([s["mu"] for s in learners], ability).statistic > 0.85
    assert spearmanr([s["mu"] for s in items], difficulty).statistic > 0.85
    assert abs(sum(predicted) / len(predicted) - sum(happened) / len(happened)) < 0.05
    # Binned: where it predicts 70–90 %, about that share is right.
    likely = [h for p, h in zip(predicted, happened, strict=True) if 0.7 <= p < 0.9]
    assert len(likely) > 50 and 0.65 < sum(likely) / len(likely) < 0.95


def test_adaptive_difficulty_climbs_for_a_learner_who_is_always_right_and_descends_when_they_are_wrong(
        make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(question_source="bank")
    first = play(client, True, subject="geography", language="en", difficulty="adaptive", learner_id="ana")
    sid = first["session_id"]
    climbed = [first] + [play(client, True, session_id=sid) for _ in range(11)]
    fell = [play(client, False, session_id=sid) for _ in range(12)]
    up = [r["adaptive"]["difficulty"] for r in climbed]
    down = [r["adaptive"]["difficulty"] for r in fell]
    order = {"easy": 0, "medium": 1, "hard": 2}
    assert up[0] == "easy" and up[-1] == "hard", up  # a new learner starts where 70 % is likely
    assert all(order[a] <= order[b] for a, b in zip(up, up[1:], strict=False)), up
    assert down[-1] == "easy" and all(order[a] >= order[b] for a, b in zip(down, down[1:], strict=False)), down
    for result in climbed + fell:  # it says what it chose and why, and asks at that difficulty
        choice = result["adaptive"]
        assert result["difficulty"] == choice["difficulty"] and choice["target"] == 0.7
        assert 0 < choice["predicted"] < 1 and result["learner_id"] == "ana"
    assert [r["verdict"] for r in climbed] == ["correct"] * 12 and {r["verdict"] for r in fell} == {"incorrect"}

    learner = client.get("/learners/ana").json()
    (geography,) = learner["mastery"]
    assert (learner["rounds_played"], learner["accuracy"], geography["subject"]) == (24, 0.5, "geography")
    assert geography["rounds"] == 24 and 0 < geography["uncertainty"] < 25 / 3  # more sure than a new learner


def test_a_missed_question_comes_back_when_it_is_due(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(question_source="bank")
    book = client.app_state["rounds"].learners
    now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    book.clock = lambda: now
    missed = play(client, False, subject="history", difficulty="hard", language="ko", learner_id="bo")
    assert (missed["verdict"], missed["review"]) == ("incorrect", False)
    sid = missed["session_id"]
    now += timedelta(seconds=30)  # FSRS's first step after a miss is a minute
    not_yet = ask(client, session_id=sid, student="person", difficulty="medium")
    assert not_yet["question"] != missed["question"] and not not_yet["review"]  # not due yet: a new question
    ask(client, session_id=sid, answer="I do not know")
    assert client.get("/learners/bo").json()["reviews_due"] == 0

    now += timedelta(days=1)  # FSRS's first step after a miss is minutes: due by tomorrow
    assert client.get("/learners/bo").json()["reviews_due"] == 2
    again = ask(client, session_id=sid, student="person")
    assert (again["question"], again["review"]) == (missed["question"], True)  # the one due longest ago
    # Another session of the learner meanwhile gets the other review due, not this one a second time.
    other = ask(client, subject="history", language="ko", learner_id="bo", student="person")
    assert (other["review"], other["question"]) == (True, not_yet["question"])
    ask(client, session_id=other["session_id"], answer="I do not know")
    right = ask(client, session_id=sid, answer=BANK[again["question"]].reference)
    assert (right["review"], right["verdict"], right["item_id"]) == (True, "correct", missed["item_id"])
    # Asked at its own difficulty; the session keeps the one it was given.
    assert (right["difficulty"], client.get(f"/sessions/{sid}").json()["difficulty"]) == ("hard", "medium")
    learner = client.get("/learners/bo").json()
    assert learner["reviews_due"] == 0 and learner["reviews_scheduled"] == 2
    # Missed again, the other comes back within minutes; answered right, this one is scheduled further out.
    assert now < datetime.fromisoformat(learner["next_review_at"]) < now + timedelta(minutes=5)
    review = book_reviews(client, "bo")[f"item:{missed['item_id']}"]
    assert learning.due_at(review) > now + timedelta(minutes=5)


def book_reviews(client: TestClient, learner_id: str) -> dict:
    rounds = client.app_state["rounds"]
    profile = client.portal.call(rounds.learners.get, "anonymous", learner_id)  # type: ignore[union-attr]
    return profile["reviews"]


def answered(client: TestClient, headers: dict[str, str], **body: object) -> dict:
    """A person's round (asked, then answered), as the client ``headers`` authenticate."""
    asked = client.post("/ask", json={"student": "person", **body}, headers=headers).json()
    return client.post("/ask", json={"session_id": asked["session_id"], "answer": "42"}, headers=headers).json()


def test_learners_belong_to_their_client_and_can_be_forgotten(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(api_keys="alice:alice-secret-0000000000,bob:bob-secret-00000000000")
    alice, bob = {"Authorization": "Bearer alice-secret-0000000000"}, {"Authorization": "Bearer bob-secret-00000000000"}
    assert answered(client, alice, subject="math", learner_id="kim")["status"] == "graded"
    assert client.get("/learners/kim", headers=alice).json()["rounds_played"] == 1
    for method in ("GET", "DELETE"):  # another client's learner of the same name is not there
        other = client.request(method, "/learners/kim", headers=bob)
        assert other.status_code == 404 and other.json()["type"] == "/problems/learner-not-found"
    answered(client, bob, subject="math", learner_id="kim")
    assert client.get("/learners/kim", headers=bob).json()["rounds_played"] == 1  # bob's own kim
    assert client.delete("/learners/kim", headers=alice).status_code == 204
    assert client.get("/learners/kim", headers=alice).status_code == 404
    assert client.get("/learners/kim", headers=bob).json()["rounds_played"] == 1
    assert client.get("/learners/not.valid", headers=alice).status_code == 422


def test_adaptive_difficulty_needs_a_learner(make_client) -> None:
    client = make_client()
    refused = client.post("/ask", json={"subject": "math", "difficulty": "adaptive"})
    assert refused.status_code == 422 and refused.json()["type"] == "/problems/learner-required"
    assert "learner_id" in refused.json()["detail"]


def test_a_round_without_a_learner_keeps_no_learner_state(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client()
    played = ask(client, subject="math")
    assert (played["learner_id"], played["adaptive"], played["review"]) == (None, None, False)
    values = client.portal.call(client.app_state["rounds"].quiz.graph.aget_state,
                                {"configurable": {"thread_id": played["session_id"]}}).values
    assert not {"learner", "adaptive", "choice", "preset"} & set(values)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_learner_outlives_the_process_and_is_shared_by_replicas(make_client, tmp_path: Path, backend: str,
                                                                  request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path}/sessions.db" if backend == "sqlite" else \
        request.getfixturevalue("postgres").url
    first = make_client(checkpointer_url=url, question_source="bank")
    play(first, False, subject="science", difficulty="easy", language="en", learner_id="lee")
    if backend == "sqlite":
        first.__exit__(None, None, None)
    second = make_client(checkpointer_url=url)
    learner = second.get("/learners/lee").json()
    assert (learner["rounds_played"], learner["accuracy"], learner["reviews_scheduled"]) == (1, 0.0, 1)
    assert second.delete("/learners/lee").status_code == 204
    assert second.get("/learners/lee").status_code == 404


def test_the_memory_store_forgets_idle_learners_and_stays_under_its_cap() -> None:
    now = [0.0]
    store = ExpiringMemoryStore(max_items=3, clock=lambda: now[0])
    put: Callable[[str, float | None], object] = lambda key, ttl: asyncio.run(store.abatch(  # noqa: E731
        [PutOp(("quiz", "learners", "p"), key, {"rounds": 1}, ttl=ttl)]))
    for key in "abcd":
        put(key, 1.0)  # minutes
    asyncio.run(store.abatch([PutOp(("quiz", "calibration", "person"), "level", {"mu": 1.0}, ttl=None)]))
    keys = {i.key for i in asyncio.run(store.asearch(("quiz",), limit=10))}
    assert keys == {"b", "c", "d", "level"}  # past the cap the oldest learner went; calibrations stay
    now[0] = 61.0
    put("e", 1.0)
    assert {i.key for i in asyncio.run(store.asearch(("quiz",), limit=10))} == {"e", "level"}
    store.put(("quiz", "learners", "p"), "f", {"rounds": 1}, ttl=1.0)  # the synchronous API keeps the same rules
    now[0] = 122.0
    assert {i.key for i in store.search(("quiz",), limit=10)} == {"level"}


def test_an_ag_ui_client_names_its_learner_and_its_echoed_state_stays_adaptive(client: TestClient,
                                                                              fake_llm: FakeOpenAI) -> None:
    from ag_ui.core import RunFinishedEvent, StateSnapshotEvent

    from tests.test_ag_ui import run, run_input

    first = run(client, run_input(message="a geography question",
                                  forwardedProps={"learner_id": "ana", "difficulty": "adaptive"}))
    finished = next(e for e in first if isinstance(e, RunFinishedEvent))
    result: dict = finished.result or {}
    assert result["adaptive"]["difficulty"] == "easy" and result["learner_id"] == "ana"
    snapshot = [e for e in first if isinstance(e, StateSnapshotEvent)][-1].snapshot
    assert (snapshot["learner_id"], snapshot["adaptive"], snapshot["difficulty"]) == ("ana", True, "easy")
    # The client sends the last snapshot back as its state (difficulty "easy" in it): the session stays adaptive.
    again = run(client, run_input(thread_id=finished.thread_id, state=snapshot))
    assert (next(e for e in again if isinstance(e, RunFinishedEvent)).result or {})["adaptive"] is not None
    # The Student agent played both: a learner is a person, so nothing of the learner was recorded.
    assert client.get("/learners/ana").status_code == 404


def test_a_review_comes_back_in_the_topic_it_was_missed_in_not_in_another(make_client, fake_llm: FakeOpenAI) -> None:
    fake_llm.script("Question", question="Which dinosaur had three horns?", reference_answer="Triceratops")
    fake_llm.script("Grade", verdict="incorrect", feedback="It had three horns: Triceratops.")
    client = make_client()
    book = client.app_state["rounds"].learners
    now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    book.clock = lambda: now
    asked = ask(client, subject="Dinosaurs", learner_id="cy", student="person")
    ask(client, session_id=asked["session_id"], answer="Stegosaurus")  # graded by the scripted Teacher: missed
    now += timedelta(days=1)
    fake_llm.script("Question", question="How long do you boil an egg for a soft yolk?", reference_answer="6 min")
    cooking = ask(client, subject="cooking", learner_id="cy", student="person")
    assert (cooking["review"], cooking["question"]) == (False, "How long do you boil an egg for a soft yolk?")
    again = ask(client, subject="dinosaurs ", learner_id="cy", student="person")
    assert (again["review"], again["question"]) == (True, "Which dinosaur had three horns?")


def test_rounds_of_one_learner_graded_at_once_in_one_process_all_count(tmp_path: Path) -> None:
    """The learner book's updates take turns: 20 rounds graded at the same moment, on SQLite (whose store awaits
    between the read and the write), are 20 rounds and 20 reviews, not the last writer's one."""
    from dataclasses import replace

    from langgraph.store.sqlite.aio import AsyncSqliteStore

    from app.learners import Graded, LearnerBook

    async def main() -> dict:
        async with AsyncSqliteStore.from_conn_string(str(tmp_path / "learners.db")) as store:
            await store.setup()
            book = LearnerBook(store, 3600.0)
            missed = Graded(subject="math", difficulty="easy", language="en", question="Q", reference_answer="1",
                            verdict="incorrect", answered_by="person", item=None)
            await asyncio.gather(*(book.record("p", "ana", replace(missed, question=f"Q{i}")) for i in range(20)))
            profile = await book.get("p", "ana")
            assert profile is not None
            return dict(profile)

    profile = asyncio.run(main())
    assert profile["rounds"] == 20 and len(profile["reviews"]) == 20
