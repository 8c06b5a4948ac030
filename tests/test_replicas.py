"""Three replicas behind a real load balancer, sharing one real PostgreSQL: what a client sees of the scaled
deployment.

Each replica is a ``question-app`` process (as a pod is), HAProxy balances every request round-robin with no
stickiness (``tests/fakes/haproxy.py``: a Kubernetes Service and ingress), and the LLM is the fake OpenAI
server. Nothing here reaches into a replica: what is asserted is what came back over HTTP, and which replica
sent it (``X-Served-By``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from app.sessions import RUN_EVENTS
from tests.fakes import wait_until
from tests.fakes.haproxy import SERVED_BY, HAProxy
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.postgres import PostgresServer
from tests.service import clean_env, start_service, stop

SSE = {"accept": "text/event-stream"}
LEASE_TTL_S = 3.0  # ROUND_LEASE_TTL_S: how soon a dead replica's rounds are lost (its minimum)


@dataclass
class Cluster:
    """The replicas (processes and base URLs, ``r<i>`` in ``X-Served-By``) and the balancer in front."""

    processes: list[subprocess.Popen[bytes]]
    replicas: list[str]
    balancer: HAProxy

    @property
    def url(self) -> str:
        return self.balancer.url

    def replica(self, served_by: str) -> str:
        return self.replicas[int(served_by.removeprefix("r"))]

    def other_than(self, served_by: str) -> str:
        return next(base for i, base in enumerate(self.replicas) if f"r{i}" != served_by)


@contextmanager
def cluster(postgres: PostgresServer, llm: FakeOpenAI, logs: Path, n: int = 3) -> Iterator[Cluster]:
    env = clean_env(OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-replicas", OTEL_SDK_DISABLED="true",
                    CHECKPOINTER_URL=postgres.url, ROUND_LEASE_TTL_S=str(LEASE_TTL_S))
    started = [start_service(env, logs / f"replica-{i}.log") for i in range(n)]
    try:
        with HAProxy([base for _, base in started]) as balancer:
            yield Cluster([p for p, _ in started], [base for _, base in started], balancer)
    finally:
        for process, _ in started:
            if process.poll() is None:
                stop(process)


@pytest.fixture(scope="module")
def three(postgres: PostgresServer, llm_server: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Cluster]:
    with cluster(postgres, llm_server, tmp_path_factory.mktemp("replicas")) as c:
        yield c


def events_of(lines: Iterator[str], stop_after: int | None = None) -> list[dict[str, str]]:
    """SSE blocks (``id``, ``event``, ``data``) read from ``lines``, at most ``stop_after`` of them."""
    seen: list[dict[str, str]] = []
    block: dict[str, str] = {}
    for line in lines:
        if not line:
            if block:
                seen.append(block)
                block = {}
            if stop_after is not None and len(seen) >= stop_after:
                break
        elif ": " in line:
            name, value = line.split(": ", 1)
            block[name] = value
    return seen


def test_a_sessions_rounds_go_round_the_replicas_numbered_one_after_another(three: Cluster,
                                                                              fake_llm: FakeOpenAI) -> None:
    served: list[str] = []
    sid = None
    for expected in range(1, 7):
        r = httpx.post(f"{three.url}/ask", json={"session_id": sid} if sid else {"subject": "history"}, timeout=30)
        assert r.status_code == 200, r.text
        assert (r.json()["round"], r.json()["subject"]) == (expected, "history")
        sid = r.json()["session_id"]
        served.append(r.headers[SERVED_BY])
    assert set(served) == {"r0", "r1", "r2"}  # no stickiness: every replica played some of the session
    assert all(a != b for a, b in zip(served, served[1:], strict=False)), served
    looked = httpx.get(f"{three.url}/sessions/{sid}", timeout=10).json()
    assert looked["rounds_played"] == 6 and [r["round"] for r in looked["rounds"]] == [1, 2, 3, 4, 5, 6]


def test_a_stream_dropped_mid_round_resumes_on_another_replica_every_event_once_in_order(
        three: Cluster, fake_llm: FakeOpenAI) -> None:
    fake_llm.latency_s = 0.4  # the round is still playing when the stream drops
    key = {"idempotency-key": str(uuid.uuid4())}
    with httpx.stream("POST", f"{three.url}/ask", json={"subject": "science"}, headers={**key, **SSE},
                      timeout=30) as r:
        first_replica = r.headers[SERVED_BY]
        before = events_of(r.iter_lines(), stop_after=2)  # trace, question: then the connection drops
    assert [e["event"] for e in before] == ["trace", "question"]
    sid = json.loads(before[0]["data"])["session_id"]
    resumed_on = three.other_than(first_replica)
    with httpx.stream("GET", f"{resumed_on}/sessions/{sid}/round", headers={**SSE, "last-event-id": before[-1]["id"]},
                      timeout=30) as r:
        assert r.status_code == 200
        after = events_of(r.iter_lines())
    events = before + after
    assert [e["event"] for e in events] == ["trace", "question", "review", "answer", "grade", "round"]
    assert [e["id"] for e in events] == [f"1.{n}" for n in range(1, 7)]  # each once, in order, one attempt
    # The round was played once, by the replica the stream first reached, and the session has it.
    assert len([q for q in fake_llm.requests if q.path.endswith("/chat/completions")]) == 4  # one per agent
    assert httpx.get(f"{resumed_on}/sessions/{sid}", timeout=10).json()["rounds_played"] == 1


def test_a_cancel_sent_to_a_replica_that_does_not_play_the_round_stops_it(three: Cluster,
                                                                            fake_llm: FakeOpenAI) -> None:
    first = httpx.post(f"{three.url}/ask", json={"subject": "math"}, timeout=30).json()
    sid = first["session_id"]
    fake_llm.latency_s = 2.0
    seen: list[dict[str, str]] = []
    playing: dict[str, str] = {}

    def follow() -> None:
        with httpx.stream("POST", f"{three.url}/ask", json={"session_id": sid}, headers=SSE, timeout=30) as r:
            playing["by"] = r.headers[SERVED_BY]
            seen.extend(events_of(r.iter_lines()))

    reader = threading.Thread(target=follow)
    calls_before = len(fake_llm.requests)
    reader.start()
    wait_until(lambda: "by" in playing and len(fake_llm.requests) > calls_before, 10)  # its first LLM call is on
    calls_before = len(fake_llm.requests)
    started = time.monotonic()
    r = httpx.delete(f"{three.other_than(playing['by'])}/sessions/{sid}/round", timeout=10)
    assert r.status_code == 204, r.text
    reader.join(10)
    assert not reader.is_alive()
    assert time.monotonic() - started < 2.0  # stopped mid-call: the 2 s answer was not waited for
    assert [e["event"] for e in seen][-1] == "cancelled"
    assert "round-cancelled" in seen[-1]["data"]
    assert len(fake_llm.requests) == calls_before  # no further LLM call after the cancel
    wait_until(lambda: len(fake_llm.abandoned) == 1, 5)  # and the call in flight was closed by the replica
    fake_llm.latency_s = 0.0
    looked = httpx.get(f"{three.url}/sessions/{sid}", timeout=10).json()
    assert looked["rounds_played"] == 1  # as it was before the round
    assert httpx.post(f"{three.url}/ask", json={"session_id": sid}, timeout=30).json()["round"] == 2


def test_a_replica_killed_after_saving_its_round_but_before_saying_so_never_has_it_played_twice(
        postgres: PostgresServer, llm_server: FakeOpenAI, tmp_path: Path) -> None:
    llm_server.clear()
    llm_server.latency_s = 0.0
    with cluster(postgres, llm_server, tmp_path, n=2) as c:
        (victim, survivor), holder = c.replicas, c.processes[0]
        sid = httpx.post(f"{victim}/ask", json={"subject": "math"}, timeout=30).json()["session_id"]
        key = {"idempotency-key": str(uuid.uuid4())}
        # Hold the round's outcome back: while this transaction locks the events table, the replica that plays
        # round 2 saves it (its checkpoint) and then waits to keep its outcome — the window a SIGKILL can hit.
        with psycopg.connect(postgres.admin_url) as lock:
            lock.execute(f"LOCK TABLE {RUN_EVENTS} IN EXCLUSIVE MODE")
            asked = threading.Thread(target=lambda: suppress_transport_error(
                lambda: httpx.post(f"{victim}/ask", json={"session_id": sid}, headers=key, timeout=30)))
            asked.start()
            wait_until(lambda: httpx.get(f"{survivor}/sessions/{sid}", timeout=10).json()["rounds_played"] == 2,
                       20, "round 2 saved")
            calls = len(llm_server.requests)
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(10)
        asked.join(10)
        # The client retries with its key on a replica that is up: it follows the round until it is known lost,
        # then takes it over — and finds it saved.
        r, deadline = None, time.monotonic() + 4 * LEASE_TTL_S
        while time.monotonic() < deadline:
            r = httpx.post(f"{survivor}/ask", json={"session_id": sid}, headers=key, timeout=30)
            if r.status_code != 503:
                break
            assert r.json()["type"] == "/problems/round-lost", r.text
            time.sleep(0.2)
        assert r is not None and r.status_code == 200, r and r.text
        looked = httpx.get(f"{survivor}/sessions/{sid}", timeout=10).json()
        assert r.json()["round"] == 2 and looked["rounds_played"] == 2  # asked for round 2, got round 2, once
        assert r.json()["question"] == looked["rounds"][-1]["question"]
        assert len(llm_server.requests) == calls  # answered as saved: no LLM call
        assert httpx.post(f"{survivor}/ask", json={"session_id": sid}, timeout=30).json()["round"] == 3


def suppress_transport_error(call: Callable[[], object]) -> None:
    """``call()``, its connection's end (the replica it talks to is killed) taken as an answer."""
    with contextlib.suppress(httpx.TransportError):
        call()


@dataclass
class Load:
    """What 64 clients saw while a replica was killed under them."""

    rounds: int = 0
    served_by: Counter[str] = field(default_factory=Counter)
    retried_rounds: int = 0  # rounds that needed more than one request (lost with the killed replica)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (when, what) of every failed request
    sessions: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


async def play(client: httpx.AsyncClient, url: str, rounds: int, load: Load) -> None:
    """One client: ``rounds`` rounds of one session, each with its own Idempotency-Key, retried with it (200 ms
    apart) on anything but a 200 — as the README tells a client to."""
    sid: str | None = None
    for expected in range(1, rounds + 1):
        key, body = str(uuid.uuid4()), {"session_id": sid} if sid else {"subject": "geography"}
        started, attempts = time.monotonic(), 0
        while True:
            attempts += 1
            try:
                r = await client.post(f"{url}/ask", json=body, headers={"idempotency-key": key}, timeout=60)
            except httpx.TransportError as exc:
                load.failures.append((time.monotonic(), type(exc).__name__))
            else:
                if r.status_code == 200:
                    break
                what = r.json().get("type", r.status_code) if "json" in r.headers.get("content-type", "") else \
                    r.status_code
                load.failures.append((time.monotonic(), str(what)))
            assert attempts < 100, "a round never came back"
            await asyncio.sleep(0.2)
        data = r.json()
        assert data["round"] == expected, data  # never a round twice, never one skipped
        sid = data["session_id"]
        load.rounds += 1
        load.retried_rounds += attempts > 1
        load.served_by[r.headers[SERVED_BY]] += 1
        load.latencies.append(time.monotonic() - started)
    assert sid is not None
    load.sessions.append(sid)


def test_a_replica_killed_under_64_clients_loses_only_its_rounds_in_flight_and_no_session(
        postgres: PostgresServer, llm_server: FakeOpenAI, tmp_path: Path) -> None:
    clients, rounds = 64, 4
    llm_server.clear()
    llm_server.latency_s = 0.15
    load = Load()
    with cluster(postgres, llm_server, tmp_path) as c:
        victim = c.processes[1]

        async def run() -> float:
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(limits=limits) as client:
                players = [asyncio.create_task(play(client, c.url, rounds, load)) for _ in range(clients)]
                while load.rounds < clients:  # every client is past its first round: all are mid-session
                    await asyncio.sleep(0.02)
                killed = time.monotonic()
                os.kill(victim.pid, signal.SIGKILL)
                await asyncio.gather(*players)
                return killed

        try:
            killed = asyncio.run(run())
            sessions = [httpx.get(f"{c.url}/sessions/{sid}", timeout=10) for sid in load.sessions]
        finally:
            llm_server.latency_s = 0.0
    # Sessions lost: none. Every session has all its rounds, each once (the clients checked the numbers).
    assert len(sessions) == clients
    assert all(s.status_code == 200 and s.json()["rounds_played"] == rounds for s in sessions)
    assert load.rounds == clients * rounds
    # Rounds lost: only those in flight on the killed replica — at most one per client — and each was played
    # again, once, by a retry with its key.
    summary = (load.retried_rounds, Counter(what for _, what in load.failures))
    assert 0 < load.retried_rounds <= clients, summary
    before = [what for when, what in load.failures if when < killed]
    assert before == [], before  # nothing failed before the kill
    # The others serve everything again about a lease after the kill: the lease runs out (3 s), its followers
    # see it within a beat (1 s), HAProxy's checks take the replica out (0.4 s), a retry comes 0.2 s later.
    # The bound leaves room for a loaded machine and still fails a lease held for the round's deadline (600 s).
    recovered_s = max(when for when, _ in load.failures) - killed
    assert recovered_s < 2 * LEASE_TTL_S + 2.0, (recovered_s, summary)
    assert set(load.served_by) == {"r0", "r1", "r2"}
    print(f"\nkilled r1 under {clients} clients: {load.retried_rounds} rounds retried, "
          f"failures {dict(Counter(what for _, what in load.failures))}, served again {recovered_s:.1f} s after")
