"""Rounds that outlive their connection (``app.runs``): an ``Idempotency-Key`` plays a round once, a stream
resumes from ``Last-Event-ID`` on another replica, ``DELETE /sessions/{id}/round`` stops a round on whichever
replica plays it, a round whose holder died is lost for its followers and played once more by a retry, and a
long round keeps its session by its heartbeat.

Two replicas here are two apps in one process on one real PostgreSQL: each has its own pool, its own
``LISTEN`` connection and its own rounds, as two pods do. ``tests/test_replicas.py`` does it with processes
behind a load balancer, SIGKILL included.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.http.schemas import AskRequest
from app.rounds import PlayRound, RoundPlayed
from app.runs import fingerprint, run_id_of
from app.sessions import RunRecord
from tests.fakes import wait_until
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.fakes.postgres import PostgresServer
from tests.test_api import parse_sse

SSE = {"accept": "text/event-stream"}


@pytest.fixture(params=["memory", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url


def blocks(text: str) -> list[dict[str, str]]:
    """An SSE body's events as their fields (``id``, ``event``, ``data``)."""
    return [dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            for block in text.strip().split("\n\n") if block.strip()]


@contextmanager
def streaming(client: TestClient, method: str, path: str, **kwargs: Any) -> Iterator[list[dict[str, str]]]:
    """Read a stream in a thread while the body runs; the events so far, then all of them once it ended."""
    seen: list[dict[str, str]] = []

    def read() -> None:
        with client.stream(method, path, **kwargs) as r:
            assert r.status_code == 200, r.read()
            block: dict[str, str] = {}
            for line in r.iter_lines():
                if not line:
                    seen.append(block)
                    block = {}
                elif ": " in line:
                    name, value = line.split(": ", 1)
                    block[name] = value

    reader = threading.Thread(target=read)
    reader.start()
    try:
        yield seen
    finally:
        reader.join(30)
        assert not reader.is_alive(), "the stream never ended"


def test_a_retry_with_the_same_key_never_plays_a_second_round(store_url: str, make_client,
                                                              fake_llm: FakeOpenAI) -> None:
    # One place: the round takes it, and its retries, which only follow it, need none (no 503 overloaded).
    client = make_client(checkpointer_url=store_url, max_concurrent_rounds=1)
    fake_llm.latency_s = 0.2
    key = {"idempotency-key": str(uuid.uuid4())}
    answers: list[Any] = []
    # A double click, a timeout retry and a third try, all during the round: one round is played.
    senders = [threading.Thread(target=lambda: answers.append(client.post("/ask", json={"subject": "math"},
                                                                            headers=key))) for _ in range(3)]
    for sender in senders:
        sender.start()
        time.sleep(0.05)
    for sender in senders:
        sender.join(30)
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
    assert len({r.text for r in answers}) == 1  # the same round, word for word, trace id included
    assert len(fake_llm.requests_for("Question")) == 1 and len(fake_llm.requests_for("Grade")) == 1
    # After the round, the same again: its outcome, kept; and the session has one round.
    fake_llm.latency_s = 0.0
    later = client.post("/ask", json={"subject": "math"}, headers=key)
    assert later.text == answers[0].text
    assert len(fake_llm.requests_for("Question")) == 1
    assert client.get(f"/sessions/{later.json()['session_id']}").json()["rounds_played"] == 1
    # As a stream, the same key gives the round's end (a JSON round keeps only its last event).
    with client.stream("POST", "/ask", json={"subject": "math"}, headers={**key, **SSE}) as r:
        events = parse_sse(r.read().decode())
    assert [e for e, _ in events] == ["round"] and events[0][1]["trace_id"] == later.json()["trace_id"]


def test_the_same_key_with_another_request_is_refused_and_a_bad_key_is_named(client: TestClient) -> None:
    key = {"idempotency-key": '"order-7f3a"'}  # an sf-string, as the draft writes it
    assert client.post("/ask", json={"subject": "math"}, headers=key).status_code == 200
    r = client.post("/ask", json={"subject": "history"}, headers=key)
    assert r.status_code == 422 and r.json()["type"] == "/problems/idempotency-key-reused"
    assert "new key" in r.json()["detail"]
    bare = {"idempotency-key": "order-7f3a"}  # the same key, unquoted
    assert client.post("/ask", json={"subject": "history"}, headers=bare).status_code == 422
    r = client.post("/ask", json={}, headers={"idempotency-key": "k" * 256})  # over 255 characters
    assert r.status_code == 422 and r.json()["type"] == "/problems/validation"
    assert r.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert r.json()["detail"] == "Fix these fields: header Idempotency-Key."
    # Keys belong to their principal: another principal's same key is another round (tests/test_principals).


def test_a_cancel_closes_the_llm_call_and_leaves_the_session_as_it_was(store_url: str, make_client,
                                                                       fake_llm: FakeOpenAI,
                                                                       telemetry_env: OTLPReceiver) -> None:
    client = make_client(checkpointer_url=store_url)
    sid = client.post("/ask", json={"subject": "math"}).json()["session_id"]
    rounds = client.app_state["rounds"]
    fake_llm.clear()
    fake_llm.latency_s = 1.0
    with streaming(client, "POST", "/ask", json={"session_id": sid}, headers=SSE) as seen:
        wait_until(lambda: fake_llm.requests_for("Question"), 5, "the round's first LLM call")
        started = time.monotonic()
        r = client.delete(f"/sessions/{sid}/round")
        assert r.status_code == 204, r.text
        assert time.monotonic() - started < 1.0  # it did not wait for the LLM's answer
        assert rounds.in_flight == 0  # its place is free at once
    assert [e.get("event") for e in seen] == ["trace", "cancelled"]
    problem = json.loads(seen[-1]["data"])
    assert problem["type"] == "/problems/round-cancelled" and problem["status"] == 409
    # The connection to the LLM was closed mid-call, and no other call followed.
    wait_until(lambda: fake_llm.abandoned, 3, "the LLM saw its client go")
    time.sleep(0.2)
    assert len(fake_llm.requests) == 1 and fake_llm.requests_for("Grade") == []
    # The session is as it was; the trace says cancelled.
    assert client.get(f"/sessions/{sid}").json()["rounds_played"] == 1
    trace_id = json.loads(seen[0]["data"])["trace_id"]
    workflow = telemetry_env.wait_for(lambda: [s for s in telemetry_env.trace(trace_id)
                                               if s.name == "invoke_workflow quiz"])
    assert workflow[0].attributes["error.type"] == "cancelled"
    assert client.get(f"/sessions/{sid}/round").json()["state"] == "cancelled"
    # Nothing left to stop; the next round is round 2.
    r = client.delete(f"/sessions/{sid}/round")
    assert r.status_code == 404 and r.json()["type"] == "/problems/round-not-found"
    fake_llm.latency_s = 0.0
    assert client.post("/ask", json={"session_id": sid}).json()["round"] == 2


def test_a_stream_resumes_and_a_cancel_lands_on_another_replica(make_client, fake_llm: FakeOpenAI,
                                                                postgres: PostgresServer) -> None:
    one, two = make_client(checkpointer_url=postgres.url), make_client(checkpointer_url=postgres.url)
    fake_llm.latency_s = 0.3
    key = {"idempotency-key": str(uuid.uuid4())}
    with one.stream("POST", "/ask", json={"subject": "science"}, headers={**key, **SSE}) as r:
        lines = r.iter_lines()
        first = [next(lines) for _ in range(8)]  # two events: trace and question
    before = blocks("\n".join(first))
    assert [b["id"] for b in before] == ["1.1", "1.2"]
    # Replica two hears the rest of a round that replica one plays.
    with two.stream("POST", "/ask", json={"subject": "science"}, headers={**key, **SSE, "last-event-id": "1.2"}) as r:
        after = blocks(r.read().decode())
    assert [b["id"] for b in after] == [f"1.{n}" for n in range(3, 3 + len(after))]
    assert [b["event"] for b in before + after] == ["trace", "question", "review", "answer", "grade", "round"]
    assert len(fake_llm.requests_for("Grade")) == 1
    session = json.loads(after[-1]["data"])["session_id"]
    # And from the session's side, on either replica, from any id.
    with two.stream("GET", f"/sessions/{session}/round", headers={**SSE, "last-event-id": "1.4"}) as r:
        assert [b["event"] for b in blocks(r.read().decode())] == ["grade", "round"]

    # A cancel sent to replica two stops the round replica one plays.
    fake_llm.clear()
    fake_llm.latency_s = 1.0
    with streaming(one, "POST", "/ask", json={"session_id": session}, headers=SSE) as seen:
        wait_until(lambda: fake_llm.requests_for("Question"), 5, "the round's first LLM call")
        assert two.delete(f"/sessions/{session}/round").status_code == 204
    assert seen[-1]["event"] == "cancelled"
    wait_until(lambda: fake_llm.abandoned, 3, "the LLM saw its client go")
    assert fake_llm.requests_for("Grade") == []
    assert two.get(f"/sessions/{session}").json()["rounds_played"] == 1
    assert one.app_state["rounds"].in_flight == 0


def test_a_round_whose_holder_died_is_lost_for_its_followers_and_a_retry_plays_it_once(
        store_url: str, make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(checkpointer_url=store_url)
    runner = client.app_state["runner"]
    key = str(uuid.uuid4())
    body = {"subject": "history"}
    # A replica began this round and died: its record says running, its heartbeat has stopped.
    dead = RunRecord(run_id_of("anonymous", key), "LostSessionId0000000001", "anonymous", key,
                     fingerprint("/ask", AskRequest(**body).model_dump_json()), 1, "dead-holder", "running",
                     alive=True)
    client.portal.call(runner.store.runs.begin, dead, 0.05)
    time.sleep(0.1)
    # Who follows it is told it is lost (retryable), not kept waiting.
    with client.stream("GET", "/sessions/LostSessionId0000000001/round", headers=SSE) as r:
        events = parse_sse(r.read().decode())
    assert [e for e, _ in events] == ["error"] and events[0][1]["type"] == "/problems/round-lost"
    # The retry with its key takes it over and plays it, once, in the session it began.
    r = client.post("/ask", json=body, headers={"idempotency-key": key})
    assert r.status_code == 200, r.text
    assert r.json()["session_id"] == "LostSessionId0000000001" and r.json()["round"] == 1
    assert client.get("/sessions/LostSessionId0000000001/round").json()["attempt"] == 2
    assert client.post("/ask", json=body, headers={"idempotency-key": key}).text == r.text
    assert len(fake_llm.requests_for("Question")) == 1


@pytest.mark.parametrize("student", ["model", "person"])
def test_a_round_its_dead_holder_saved_is_answered_as_saved_and_never_played_again(
        store_url: str, student: str, make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(checkpointer_url=store_url)
    rounds, runner = client.app_state["rounds"], client.app_state["runner"]
    first = client.post("/ask", json={"subject": "history", "student": student}).json()
    sid = first["session_id"]
    if student == "person":
        assert client.post("/ask", json={"session_id": sid, "answer": "1492"}).json()["round"] == 1
    key, body = str(uuid.uuid4()), {"session_id": sid}
    run_id = run_id_of("anonymous", key)

    # A replica began round 2 under this key, played it and saved it, and died before it could say so: its
    # record still says running, its heartbeat has stopped.
    async def play_and_die() -> RoundPlayed:
        async with AsyncExitStack() as scope:
            return await rounds.play(await rounds.prepare(PlayRound(session_id=sid), scope, run=run_id))

    played = client.portal.call(play_and_die)
    saved = played.finished or played.paused
    assert saved is not None and saved.round == 2
    dead = RunRecord(run_id, sid, "anonymous", key, fingerprint("/ask", AskRequest(**body).model_dump_json()), 1,
                     "dead-holder", "running", alive=True)
    client.portal.call(runner.store.runs.begin, dead, 0.05)
    time.sleep(0.1)
    calls = len(fake_llm.requests)
    # The retry with its key takes the round over and finds it played: it answers with it, playing nothing.
    r = client.post("/ask", json=body, headers={"idempotency-key": key})
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["round"], got["question"], got["status"]) == \
        (2, saved.question, "graded" if student == "model" else "awaiting_answer")
    assert got["trace_id"] == played.trace_id  # the trace of the request that played it
    if student == "model":
        assert got["student_answer"] == played.finished.student_answer
    assert len(fake_llm.requests) == calls
    assert client.post("/ask", json=body, headers={"idempotency-key": key}).text == r.text
    looked = client.get(f"/sessions/{sid}").json()
    assert looked["rounds_played"] == (2 if student == "model" else 1)
    # The session goes on from there: the next round is 3 (or the person's answer grades round 2).
    nxt = client.post("/ask", json=body if student == "model" else {**body, "answer": "42"}).json()
    assert nxt["round"] == (3 if student == "model" else 2) and nxt["status"] == "graded"


def test_a_key_used_again_after_its_round_is_forgotten_plays_a_new_round(store_url: str, make_client) -> None:
    client = make_client(checkpointer_url=store_url)
    sid = client.post("/ask", json={}).json()["session_id"]
    key, body = {"idempotency-key": str(uuid.uuid4())}, {"session_id": sid}
    assert client.post("/ask", json=body, headers=key).json()["round"] == 2
    time.sleep(0.05)
    client.portal.call(client.app_state["runner"].store.runs.prune, 0.01)  # ROUND_RETENTION_S has passed
    # The checkpoint still names the round of that key; without its record the key is a new request.
    assert client.post("/ask", json=body, headers=key).json()["round"] == 3


def test_a_long_round_keeps_its_session_by_its_heartbeat(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(round_lease_ttl_s=3)
    sid = client.post("/ask", json={}).json()["session_id"]
    fake_llm.latency_s = 1.2  # five calls: a round of 6 s, twice the lease
    with streaming(client, "POST", "/ask", json={"session_id": sid}, headers=SSE) as seen:
        time.sleep(4.0)  # past the lease's first term: renewed, it still holds the session
        r = client.post("/ask", json={"session_id": sid})
        assert r.status_code == 409 and r.json()["type"] == "/problems/round-in-progress"
    assert seen[-1]["event"] == "round" and json.loads(seen[-1]["data"])["round"] == 2
