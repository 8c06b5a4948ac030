"""Slow clients and too many connections, against ``question-app`` as a real process on loopback with the fake
LLM, over raw sockets: a body that trickles in gets 408 and a closed connection within the configured time
while other clients' rounds keep their latency; uvicorn refuses connections beyond ``MAX_CONNECTIONS`` with 503
and closes idle keep-alive connections after ``KEEP_ALIVE_TIMEOUT_S``."""

from __future__ import annotations

import json
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.service import clean_env, start_service, stop

READ_TIMEOUT_S = 1.0  # BODY_READ_TIMEOUT_S
GRACE_S = 0.5  # BODY_READ_GRACE_S
MIN_RATE = 20  # BODY_MIN_RATE_BYTES_S
MAX_CONNECTIONS = 12
KEEP_ALIVE_S = 1  # KEEP_ALIVE_TIMEOUT_S
SLACK_S = 0.5  # scheduling and loopback, on a loaded CI machine


@pytest.fixture(scope="module")
def service(llm_server: FakeOpenAI, otlp: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = clean_env(OPENAI_BASE_URL=llm_server.base_url, OPENAI_API_KEY="sk-limits", OPENAI_MODEL="gpt-5.2-chat",
                    LLM_MAX_RETRIES="0", LLM_TIMEOUT_S="5", OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
                    BODY_READ_TIMEOUT_S=str(READ_TIMEOUT_S), BODY_READ_GRACE_S=str(GRACE_S),
                    BODY_MIN_RATE_BYTES_S=str(MIN_RATE), MAX_CONNECTIONS=str(MAX_CONNECTIONS),
                    KEEP_ALIVE_TIMEOUT_S=str(KEEP_ALIVE_S))
    process, base = start_service(env, tmp_path_factory.mktemp("limits") / "service.log")
    yield base
    stop(process)


@dataclass
class Answer:
    """What a raw-socket client saw: seconds from its headers to the first byte of the answer (``None``: no
    answer within the wait), the status, the headers (lower-case names), the body, and whether the server then
    closed the connection."""

    after_s: float | None
    status: int = 0
    headers: dict[str, str] | None = None
    body: bytes = b""
    closed: bool = False

    def problem(self) -> dict[str, object]:
        return json.loads(self.body)


def connect(base: str) -> socket.socket:
    url = urlsplit(base)
    return socket.create_connection((url.hostname, url.port), timeout=10)


def read_answer(sock: socket.socket, after_s: float | None, wait_s: float = 5) -> Answer:
    """Read one response with a ``Content-Length`` from ``sock``, then whether the server closes it."""
    sock.settimeout(wait_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    try:
        closed = sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        closed = False
    return Answer(after_s, int(status_line.split()[1]), headers, body, closed)


def trickle(base: str, every_s: float, per_send: int, size: int = 2000, wait_s: float = 5) -> Answer:
    """POST /ask declaring a ``size``-byte JSON body and sending ``per_send`` bytes of it every ``every_s``
    seconds until the server answers; ``after_s`` is ``None`` if it has not answered within ``wait_s``."""
    head, tail = b'{"subject": "math", "message": "', b'"}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    with connect(base) as sock:
        sock.sendall(b"POST /ask HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < wait_s:
            if select.select([sock], [], [], every_s)[0]:  # the server has answered (or closed): stop sending
                return read_answer(sock, time.monotonic() - started)
            sock.sendall(body[sent:sent + per_send])
            sent += per_send
        return Answer(None)


def test_a_body_trickling_one_byte_every_200_ms_is_408_and_closed_within_the_grace_and_rate(service: str) -> None:
    answer = trickle(service, every_s=0.2, per_send=1)
    # 5 bytes/s < BODY_MIN_RATE_BYTES_S: cut once GRACE_S + received / MIN_RATE seconds have passed (~0.67 s),
    # before BODY_READ_TIMEOUT_S (the detail says which limit cut it).
    assert answer.after_s is not None, "no answer: the trickle held the connection"
    assert GRACE_S <= answer.after_s <= READ_TIMEOUT_S + SLACK_S, answer
    assert (answer.status, answer.headers and answer.headers["connection"]) == (408, "close"), answer
    assert answer.headers and answer.headers["content-type"] == "application/problem+json"
    problem = answer.problem()
    assert problem["type"] == "/problems/body-too-slow" and "BODY_MIN_RATE_BYTES_S" in str(problem["detail"])
    assert answer.closed


def test_a_body_faster_than_the_minimum_rate_is_still_cut_at_the_read_timeout(service: str) -> None:
    answer = trickle(service, every_s=0.1, per_send=10)  # 100 bytes/s > MIN_RATE: only the deadline cuts it
    assert answer.after_s is not None, "no answer: the trickle held the connection"
    assert READ_TIMEOUT_S - 0.05 <= answer.after_s <= READ_TIMEOUT_S + SLACK_S, answer
    assert (answer.status, answer.headers and answer.headers["connection"]) == (408, "close"), answer
    problem = answer.problem()
    assert problem["type"] == "/problems/body-too-slow" and "BODY_READ_TIMEOUT_S" in str(problem["detail"])
    assert problem["trace_id"] and answer.closed


def test_rounds_keep_their_latency_while_bodies_trickle_in(service: str, fake_llm: FakeOpenAI) -> None:
    fake_llm.latency_s = 0.05  # each LLM call: a round of a few calls takes a few hundred ms

    def rounds(n: int) -> list[float]:
        took = []
        with httpx.Client(base_url=service, timeout=30) as client:
            for _ in range(n):
                started = time.monotonic()
                r = client.post("/ask", json={"subject": "math"})
                took.append(time.monotonic() - started)
                assert r.status_code == 200, r.text
        return took

    baseline = rounds(8)
    answers: list[Answer] = []
    stopping = threading.Event()

    def trickler() -> None:
        while not stopping.is_set():
            answers.append(trickle(service, every_s=0.2, per_send=1))

    # Four slow clients at a time (well under MAX_CONNECTIONS), each replaced as soon as it is cut off.
    threads = [threading.Thread(target=trickler, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)  # the trickles are under way
        during = rounds(8)
    finally:
        stopping.set()
        for thread in threads:
            thread.join(10)
    assert len(answers) >= 4 and {a.status for a in answers} == {408}, answers
    assert max(a.after_s or 99 for a in answers) <= READ_TIMEOUT_S + SLACK_S, answers
    # A server that waited on the slow bodies would add up to READ_TIMEOUT_S to the rounds queued behind them.
    assert statistics.median(during) <= 1.5 * statistics.median(baseline) + 0.15, (baseline, during)
    assert max(during) <= max(baseline) + READ_TIMEOUT_S / 2, (baseline, during)


def test_beyond_max_connections_uvicorn_answers_503_and_serves_again_when_they_close(service: str) -> None:
    with ExitStack() as stack:
        idle = [stack.enter_context(connect(service)) for _ in range(MAX_CONNECTIONS)]
        time.sleep(0.2)  # accepted by the server
        r = httpx.get(f"{service}/health", timeout=5)
        assert r.status_code == 503, r.text
        for sock in idle[:2]:
            sock.close()
        time.sleep(0.2)
        assert httpx.get(f"{service}/health", timeout=5).status_code == 200  # below the cap again


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_timeout(service: str) -> None:
    with connect(service) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        answer = read_answer(sock, None, wait_s=KEEP_ALIVE_S + SLACK_S)  # the close comes within the wait
    assert answer.status == 200 and answer.closed
