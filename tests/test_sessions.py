"""Sessions through the API: the in-memory store is bounded (cap, idle expiry, one checkpoint per session);
SQLite keeps sessions across a restart; Postgres shares them between replicas."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import gc
import operator
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.sessions import LEASES as TABLE
from app.sessions import CheckpointerUnavailable, open_session_store
from app.sessions.memory import BoundedMemorySaver
from app.sessions.sqlite import SqliteLeases
from app.settings import Settings
from tests.conftest import CANARY_KEY
from tests.fakes import free_port, wait_until
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.fakes.postgres import PostgresServer
from tests.service import clean_env, start_service, stop


def new_round(client: TestClient, **body: object) -> dict:
    r = client.post("/ask", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_session_ids_are_128_bits_none_of_them_fixed(client: TestClient) -> None:
    """What a test can show of an unguessable id: its size — 22 URL-safe base64 characters that are exactly 16
    bytes (``secrets.token_urlsafe(16)``: 128 bits) — and that none of the 128 bits is fixed. A counter, a clock,
    a UUID (6 fixed bits) or a shorter random part padded out fails. That the bits come from the operating
    system's CSPRNG is for reading ``app.rounds.new_session_id``."""
    # New sessions whose rounds wait for a person: two LLM calls each instead of four.
    ids = [new_round(client, student="person")["session_id"] for _ in range(40)]
    assert len(set(ids)) == len(ids)
    bits = []
    for sid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", sid), sid
        raw = base64.urlsafe_b64decode(sid + "==")
        assert len(raw) == 16 and base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == sid, sid  # no spare bits
        bits.append(int.from_bytes(raw, "big"))
    # Every bit is 1 in some id and 0 in another. A random bit stays the same over 40 ids with probability
    # 2 * 2**-40: for any of 128 bits, about 2e-10.
    every = 2**128 - 1
    assert functools.reduce(operator.or_, bits) == functools.reduce(operator.or_, [every ^ b for b in bits]) == every


def test_the_least_recently_used_session_goes_first_past_the_cap(make_client) -> None:
    client = make_client(max_sessions=2)
    a = new_round(client)["session_id"]
    b = new_round(client)["session_id"]
    new_round(client, session_id=a)  # a is now more recent than b
    new_round(client)  # a third session: b is evicted
    assert client.post("/ask", json={"session_id": b}).status_code == 404
    assert new_round(client, session_id=a)["round"] == 3


def test_idle_sessions_expire(make_client) -> None:
    ttl = 2.0  # a round against the 0 ms fake LLM takes ~20 ms: far inside it, even on a busy machine
    client = make_client(session_ttl_s=ttl)
    sid = new_round(client)["session_id"]
    assert new_round(client, session_id=sid)["round"] == 2  # before: the session is there
    time.sleep(ttl + 0.5)
    r = client.post("/ask", json={"session_id": sid})  # after: the same id has expired
    assert r.status_code == 404 and r.json()["type"] == "/problems/session-not-found"


def test_memory_per_session_does_not_grow_with_rounds(make_client) -> None:
    client = make_client(session_rounds_kept=3)
    saver: BoundedMemorySaver = client.app_state["rounds"].store.checkpointer
    sid = new_round(client)["session_id"]
    sizes = []
    for _ in range(24):
        new_round(client, session_id=sid)
        blobs = [value for key, value in saver.blobs.items() if key[0] == sid]
        sizes.append((sum(len(c) for c in saver.storage[sid].values()), len(blobs),
                      sum(len(value[1]) for value in blobs)))
    assert {checkpoints for checkpoints, _, _ in sizes} == {1}  # only the latest checkpoint is kept
    assert len({blobs for _, blobs, _ in sizes}) == 1  # and a constant number of channel values
    # Every blob left is one the latest checkpoint reads: none of an older one stays behind.
    (checkpoint,) = saver.storage[sid][""].values()
    versions = saver.serde.loads_typed(checkpoint[0])["channel_versions"]
    assert set(saver.blobs) == {(sid, "", channel, version) for channel, version in versions.items()}
    # Past SESSION_ROUNDS_KEPT rounds (and the Teacher's 20-question memory) the bytes stop growing: only
    # round numbers, ids and times change length.
    steady = [size for _, _, size in sizes[20:]]
    assert max(steady) - min(steady) < 0.05 * min(steady), sizes


def test_the_session_count_stays_at_the_cap(make_client) -> None:
    client = make_client(max_sessions=25)
    for _ in range(60):
        new_round(client)
    saver: BoundedMemorySaver = client.app_state["rounds"].store.checkpointer
    assert saver.thread_count() == 25
    assert len(saver.storage) == 25 and len({k[0] for k in saver.blobs}) == 25
    for sid in list(saver.storage):  # a deleted session leaves no blob behind
        saver.delete_thread(sid)
    assert not saver.storage and not saver.blobs and not saver.writes


def test_sqlite_sessions_survive_a_restart(make_client, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sessions.db"
    first = make_client(checkpointer_url=url)
    sid = new_round(first, subject="history", difficulty="hard")["session_id"]
    assert first.get("/health").json()["checkpointer"] == "sqlite"
    first.__exit__(None, None, None)

    second = make_client(checkpointer_url=url)
    again = new_round(second, session_id=sid)
    assert (again["round"], again["subject"], again["difficulty"]) == (2, "history", "hard")


def test_postgres_sessions_are_shared_by_replicas(make_client, postgres: PostgresServer) -> None:
    replica_a = make_client(checkpointer_url=postgres.url)
    replica_b = make_client(checkpointer_url=postgres.url)
    assert replica_a.get("/health").json()["checkpointer"] == "postgresql"
    sid = new_round(replica_a, subject="geography", difficulty="easy")["session_id"]

    on_b = new_round(replica_b, session_id=sid)
    on_a = new_round(replica_a, session_id=sid)

    assert (on_b["round"], on_b["subject"], on_a["round"]) == (2, "geography", 3)
    assert replica_b.post("/ask", json={"session_id": "N" * 22}).status_code == 404


def test_unreachable_postgres_is_a_clear_start_up_error(make_client) -> None:
    port = free_port()
    with pytest.raises(CheckpointerUnavailable) as failure:
        make_client(checkpointer_url=f"postgresql://app:hunter2-secret@127.0.0.1:{port}/quiz")
    message = str(failure.value)
    assert f"127.0.0.1:{port}" in message and "CHECKPOINTER_URL" in message
    assert "hunter2-secret" not in message


def test_losing_postgres_mid_load_is_503_then_recovers_with_nothing_lost(make_client, telemetry_env: OTLPReceiver,
                                                                         postgres: PostgresServer,
                                                                         fake_llm: FakeOpenAI) -> None:
    client = make_client(checkpointer_url=postgres.url, postgres_timeout_s=1.0)
    sid = new_round(client, subject="math")["session_id"]
    fake_llm.requests.clear()
    postgres.pause()
    try:
        for body in ({"session_id": sid}, {"subject": "history"}):
            started = time.perf_counter()
            r = client.post("/ask", json=body)
            assert r.status_code == 503, r.text
            assert r.json()["type"] == "/problems/session-store-unavailable" and r.headers["retry-after"] == "5"
            assert time.perf_counter() - started < 10
        # Nothing was played that could not be kept: the round's record comes first, and no LLM call was paid.
        assert fake_llm.requests == []
        server = telemetry_env.wait_for(lambda: [s for s in telemetry_env.trace(r.json()["trace_id"])
                                                 if s.name == "POST /ask"])
        assert server[0].attributes["http.response.status_code"] == 503
        assert client.get("/health").status_code == 200  # a store outage must not restart the pod
    finally:
        postgres.resume()
    # The pool reconnects with backoff: a client honouring the 503 retries until the store is back.
    deadline = time.monotonic() + 20
    while (r := client.post("/ask", json={"session_id": sid})).status_code == 503:
        assert time.monotonic() < deadline, "the session store did not come back within 20 s"
        time.sleep(0.5)
    assert r.status_code == 200, r.text
    again = r.json()  # the finished round survived the outage
    assert (again["round"], again["subject"]) == (2, "math")


@pytest.mark.parametrize("store", ["memory", "sqlite", "postgres"])
def test_a_reset_that_fails_leaves_the_old_session_and_a_retry_works(store: str, make_client, fake_llm: FakeOpenAI,
                                                                     tmp_path: Path, request) -> None:
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/sessions.db"}
    url = urls.get(store) or request.getfixturevalue("postgres").url
    client = make_client(checkpointer_url=url)
    fake_llm.script("Question", question="First question?", reference_answer="one")
    sid = new_round(client, subject="english", difficulty="easy")["session_id"]
    fake_llm.script("Question", question="Second question?", reference_answer="two")
    assert new_round(client, session_id=sid)["round"] == 2

    fake_llm.script("Question", question="Reset question?", reference_answer="three")
    fake_llm.fail_next(Fault("pass"))
    fake_llm.fail_next(Fault("status", 429), times=2)  # the reset round's Student call is rate limited
    failed = client.post("/ask", json={"session_id": sid, "message": "reset"})
    assert failed.status_code == 503, failed.text

    # The old session is intact: its round count and the Teacher's no-repeat history.
    fake_llm.requests.clear()
    assert new_round(client, session_id=sid)["round"] == 3
    prompt = fake_llm.requests_for("Question")[-1].prompt_text
    assert "First question?" in prompt and "Second question?" in prompt

    # Retrying the reset works: round 1 of the same session, settings kept, no history.
    fake_llm.requests.clear()
    reset = new_round(client, session_id=sid, message="reset")
    assert (reset["session_id"], reset["round"], reset["subject"], reset["difficulty"]) == (sid, 1, "english", "easy")
    assert "Second question?" not in fake_llm.requests_for("Question")[-1].prompt_text
    fake_llm.requests.clear()
    assert new_round(client, session_id=sid)["round"] == 2
    prompt = fake_llm.requests_for("Question")[-1].prompt_text
    assert "Reset question?" in prompt and "Second question?" not in prompt


# --- one round at a time per session ---------------------------------------------------------------------
@pytest.mark.parametrize("store", ["memory", "sqlite", "postgres"])
async def test_a_session_lease_is_exclusive_expires_and_is_released_by_its_owner_only(
        store: str, tmp_path: Path, request) -> None:
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/sessions.db"}
    url = urls.get(store) or request.getfixturevalue("postgres").url
    async with open_session_store(Settings(checkpointer_url=url)) as sessions:
        leases = sessions.leases
        assert await leases.acquire("session-a", "round-1", 30)
        assert not await leases.acquire("session-a", "round-2", 30)  # held
        assert await leases.acquire("session-b", "round-3", 30)  # other sessions are independent
        await leases.release("session-a", "round-2")  # not its owner: nothing happens
        assert not await leases.acquire("session-a", "round-2", 30)
        await leases.release("session-a", "round-1")
        assert await leases.acquire("session-a", "round-2", 0.2)
        await asyncio.sleep(0.5)  # its holder died: the lease expires
        assert await leases.acquire("session-a", "round-4", 30)
        # A retry replaying round 4, whose heartbeat stopped, takes its lease over at once; nobody else does.
        assert not await leases.acquire("session-a", "round-5", 30, succeed="round-3")
        assert await leases.acquire("session-a", "round-5", 30, succeed="round-4")
        assert not await leases.renew("session-a", "round-4", 30)  # the old holder learns it lost the lease
        assert await leases.acquire("session-c", "crashed", 0.1)
    await asyncio.sleep(0.3)
    if store != "memory":  # a process that starts later finds no expired lease left in the table
        async with open_session_store(Settings(checkpointer_url=url)) as sessions:
            assert await lease_rows(sessions.leases, "session-c") == 0  # expired: dropped at start
            assert await lease_rows(sessions.leases, "session-a") == 1  # still held: kept


async def lease_rows(leases: Any, session_id: str) -> int:
    """Rows of ``session_id`` in the lease table (SQLite or Postgres)."""
    if isinstance(leases, SqliteLeases):
        query = f"SELECT count(*) FROM {TABLE} WHERE session_id = ?"
        async with leases._saver.lock, leases._saver.conn.execute(query, (session_id,)) as cursor:
            row = await cursor.fetchone()
            return int(row[0]) if row else 0
    async with leases._pool.connection() as conn:
        cursor = await conn.execute(f"SELECT count(*) AS n FROM {TABLE} WHERE session_id = %s", (session_id,))
        found = await cursor.fetchone()
        return int(found["n"]) if found else 0


def play_at_once(post: Callable[[Any], Any], bodies: Sequence[Any]) -> list[Any]:
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def assert_one_played_the_rest_refused(responses: list, round_no: int) -> None:
    played = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(played) == 1, [r.status_code for r in responses]
    assert played[0].json()["round"] == round_no
    for r in refused:
        assert r.status_code == 409, r.text
        assert r.json()["type"] == "/problems/round-in-progress" and r.headers["retry-after"] == "2"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_concurrent_rounds_on_one_session_never_lose_or_repeat_a_round(store: str, make_client, fake_llm: FakeOpenAI,
                                                                       tmp_path: Path) -> None:
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/sessions.db"}[store]
    client = make_client(checkpointer_url=url)
    sid = new_round(client)["session_id"]
    fake_llm.latency_s = 0.2
    responses = play_at_once(lambda body: client.post("/ask", json=body), [{"session_id": sid}] * 3)
    assert_one_played_the_rest_refused(responses, 2)
    fake_llm.latency_s = 0.0
    assert new_round(client, session_id=sid)["round"] == 3  # nothing lost, nothing numbered twice
    assert client.app_state["rounds"].in_flight == 0


@pytest.mark.slow
def test_two_processes_sharing_postgres_play_one_round_of_a_session_at_a_time(postgres: PostgresServer,
                                                                             fake_llm: FakeOpenAI,
                                                                             tmp_path: Path) -> None:
    env = clean_env(OPENAI_BASE_URL=fake_llm.base_url, OPENAI_API_KEY=CANARY_KEY, OTEL_SDK_DISABLED="true",
                    CHECKPOINTER_URL=postgres.url, LOG_LEVEL="debug")
    replicas = [start_service(env, tmp_path / f"replica-{i}.log") for i in range(2)]
    try:
        (_, a), (_, b) = replicas
        sid = httpx.post(f"{a}/ask", json={"subject": "math"}, timeout=30).json()["session_id"]
        fake_llm.latency_s = 0.2
        for round_no in (2, 3, 4):
            bodies = [(base, {"session_id": sid}) for base in (a, b, a, b)]
            responses = play_at_once(lambda job: httpx.post(f"{job[0]}/ask", json=job[1], timeout=30), bodies)
            assert_one_played_the_rest_refused(responses, round_no)
        fake_llm.latency_s = 0.0
        final = httpx.post(f"{b}/ask", json={"session_id": sid}, timeout=30).json()
        assert (final["round"], final["subject"]) == (5, "math")
    finally:
        for process, _ in replicas:
            stop(process)
    for i in range(2):  # the key is in no replica's debug log
        log = (tmp_path / f"replica-{i}.log").read_text()
        assert " DEBUG " in log and CANARY_KEY not in log


# --- looking back at a session, forgetting it ---------------------------------------------------------------
@pytest.mark.parametrize("store", ["memory", "sqlite", "postgres"])
def test_a_session_shows_its_last_rounds_and_can_be_forgotten(store: str, make_client, fake_llm: FakeOpenAI,
                                                               telemetry_env: OTLPReceiver, tmp_path: Path,
                                                               request) -> None:
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/sessions.db"}
    url = urls.get(store) or request.getfixturevalue("postgres").url
    client = make_client(checkpointer_url=url, session_rounds_kept=2)
    played: list[dict] = []
    for n, verdict in enumerate(["correct", "incorrect", "partially_correct"], start=1):
        fake_llm.script("Question", question=f"Question {n}?", reference_answer=f"answer {n}")
        fake_llm.script("Grade", verdict=verdict, feedback=f"feedback {n}")
        body = {"subject": "history", "difficulty": "hard"} if n == 1 else {"session_id": played[0]["session_id"]}
        played.append(new_round(client, **body))
    sid = played[0]["session_id"]

    session = client.get(f"/sessions/{sid}").json()
    assert (session["session_id"], session["subject"], session["difficulty"], session["rounds_played"]) \
        == (sid, "history", "hard", 3)
    # Only the last two (SESSION_ROUNDS_KEPT), oldest first, each as the round's response said it.
    assert [r["round"] for r in session["rounds"]] == [2, 3]
    for kept, answer in zip(session["rounds"], played[1:], strict=True):
        assert (kept["question"], kept["answer"], kept["verdict"], kept["feedback"], kept["reference_answer"]) \
            == (answer["question"], answer["student_answer"], answer["verdict"], answer["feedback"],
                answer["reference_answer"])
        assert kept["trace_id"] == answer["trace_id"] and kept["answered_by"] == "model"
        assert (kept["input_tokens"], kept["output_tokens"]) == (answer["usage"]["input_tokens"],
                                                                 answer["usage"]["output_tokens"])
        assert kept["finished_at"].endswith("+00:00")

    # A reset starts the list again; the next round continues it.
    new_round(client, session_id=sid, message="reset")
    assert [r["round"] for r in client.get(f"/sessions/{sid}").json()["rounds"]] == [1]

    assert client.delete(f"/sessions/{sid}").status_code == 204
    for gone in (client.get(f"/sessions/{sid}"), client.delete(f"/sessions/{sid}"),
                 client.post("/ask", json={"session_id": sid})):
        assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"
        assert gone.json()["type"] == "/problems/session-not-found"
    # An id that cannot be a session id is invalid input, refused by the path's pattern (SESSION_ID_PATTERN)
    # before any store is asked: 422 naming the field. A well-formed id that nobody holds (the forgotten one,
    # above) is 404: it may have existed, and a new session can be started.
    for malformed in ("not-a-session-id!", "short"):
        refused = client.get(f"/sessions/{malformed}")
        assert refused.status_code == 422 and refused.json()["type"] == "/problems/validation", refused.text
        assert [e["loc"] for e in refused.json()["errors"]] == [["path", "session_id"]]


def test_a_session_is_not_forgotten_while_one_of_its_rounds_plays(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client()
    sid = new_round(client)["session_id"]
    fake_llm.latency_s = 0.5
    fake_llm.requests.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        playing = pool.submit(client.post, "/ask", json={"session_id": sid})
        wait_until(lambda: fake_llm.requests, what="the round at the LLM")
        refused = client.delete(f"/sessions/{sid}")
        assert playing.result().status_code == 200
    assert refused.status_code == 409 and refused.headers["retry-after"]
    assert client.get(f"/sessions/{sid}").json()["rounds_played"] == 2
    assert client.delete(f"/sessions/{sid}").status_code == 204


# --- idle sessions expire on every store ----------------------------------------------------------------
def checkpoint_rows(url: str, session_id: str) -> int:
    """Rows of ``session_id`` in the saver's checkpoint table, read from the database itself."""
    if url.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return db.execute("SELECT count(*) FROM checkpoints WHERE thread_id = ?", (session_id,)).fetchone()[0]
    import psycopg

    with psycopg.connect(url) as db:
        row = db.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s", (session_id,)).fetchone()
        return row[0] if row else 0


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_idle_sessions_expire_on_sqlite_and_postgres_too(store: str, make_client, tmp_path: Path, request) -> None:
    url = f"sqlite:///{tmp_path}/sessions.db" if store == "sqlite" else request.getfixturevalue("postgres").url
    client = make_client(checkpointer_url=url, session_ttl_s=2.0, session_sweep_interval_s=0.2)
    idle = new_round(client)["session_id"]
    assert checkpoint_rows(url, idle) > 0
    time.sleep(1.2)
    active = new_round(client)["session_id"]
    wait_until(lambda: client.get(f"/sessions/{idle}").status_code == 404, timeout_s=5, what="the idle session gone")
    assert checkpoint_rows(url, idle) == 0  # every checkpoint of it, not only hidden
    assert client.get(f"/sessions/{active}").status_code == 200  # played 1.2 s later: not idle yet
    assert new_round(client, session_id=active)["round"] == 2
    assert client.post("/ask", json={"session_id": idle}).status_code == 404


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_a_sweep_spares_a_session_whose_round_plays_and_two_sweepers_delete_each_once(
        store: str, tmp_path: Path, request) -> None:
    from app.sessions.sweeper import sweep

    url = f"sqlite:///{tmp_path}/sessions.db" if store == "sqlite" else request.getfixturevalue("postgres").url
    async with open_session_store(Settings(checkpointer_url=url)) as sessions:
        ids = [f"sweep-{store}-{n:03d}-{time.time_ns()}" for n in range(30)]
        for session_id in ids:
            await sessions.activity.touch(session_id)
        await asyncio.sleep(0.05)
        assert await sessions.leases.acquire(ids[0], "a-round", 30)  # its round is playing
        args = (sessions, 0.01, 30, 1000)
        before = set(await sessions.activity.idle(0.01, 1000))  # (a shared database may hold other tests' too)
        first, second = await asyncio.gather(sweep(*args), sweep(*args))
        after = set(await sessions.activity.idle(0.01, 1000))
        assert first + second == len(before - after)  # each deleted once, across both sweepers
        assert ids[0] in after and not set(ids[1:]) & after
        await sessions.leases.release(ids[0], "a-round")
        assert await sweep(*args) >= 1 and ids[0] not in await sessions.activity.idle(0.01, 1000)


async def test_sessions_stored_before_expiry_existed_expire_too(tmp_path: Path) -> None:
    """A store from an older version has checkpoints and no activity rows: opening it gives them one."""
    url = f"sqlite:///{tmp_path}/sessions.db"
    settings = Settings(checkpointer_url=url)
    async with open_session_store(settings) as sessions:
        from graphs.graph import build_graph

        graph = build_graph(sessions.checkpointer)
        await graph.aupdate_state({"configurable": {"thread_id": "from-an-older-version"}},
                                  {"subject": "math", "difficulty": "easy", "language": "en"})
        await sessions.activity.forget("from-an-older-version")
        assert await sessions.activity.idle(0, 10) == []
    async with open_session_store(settings) as sessions:
        await asyncio.sleep(0.05)
        assert await sessions.activity.idle(0.01, 10) == ["from-an-older-version"]


def test_the_score_counts_every_round_not_only_the_kept_ones_and_a_reset_restarts_it(
        make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(session_rounds_kept=2)
    sid = None
    for verdict in ("correct", "correct", "partially_correct", "incorrect", "correct"):
        fake_llm.script("Grade", verdict=verdict)
        sid = new_round(client, **({"session_id": sid} if sid else {}))["session_id"]
    session = client.get(f"/sessions/{sid}").json()
    assert len(session["rounds"]) == 2 and session["rounds_played"] == 5
    assert session["score"] == {"correct": 3, "partially_correct": 1, "incorrect": 1}
    fake_llm.script("Grade", verdict="incorrect")
    new_round(client, session_id=sid, message="reset")
    assert client.get(f"/sessions/{sid}").json()["score"] == {"correct": 0, "partially_correct": 0, "incorrect": 1}


def test_rounds_that_ended_leave_no_waiters_behind(make_client) -> None:
    """Each round's heartbeat waits for a cancel that never comes (it is itself cancelled when the round ends);
    a process that kept those waits' events grew by about a kilobyte a round, past every cap."""
    client = make_client()
    runs = client.app_state["rounds"].store.runs
    for _ in range(30):
        new_round(client)
    with client.stream("GET", f"/sessions/{new_round(client)['session_id']}/round",  # a follower too
                       headers={"Accept": "text/event-stream"}) as ended:
        assert ended.status_code == 200 and b"event: round" in b"".join(ended.iter_bytes())
    gc.collect()
    assert runs._news.topics() == 0
