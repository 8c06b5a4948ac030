"""LLM failures become the documented status and problem body, in bounded time, and the next request works.

The app runs with LLM_TIMEOUT_S=2 and LLM_MAX_RETRIES=1 (two attempts per call) against the fake server.
"""

from __future__ import annotations

import email.utils
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.conftest import CANARY_KEY, HEX32
from tests.fakes import free_port, wait_until
from tests.fakes.openai_server import FakeOpenAI, Fault


def play(client: TestClient):
    started = time.perf_counter()
    r = client.post("/ask", json={"subject": "math"})
    return r, time.perf_counter() - started


def assert_problem(r, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert HEX32.match(body["trace_id"])
    assert CANARY_KEY not in r.text
    assert "injected" not in body["detail"]  # upstream text is logged, never echoed
    return body


def assert_recovers(client: TestClient) -> None:
    r, _ = play(client)
    assert r.status_code == 200, r.text


def http_date_in(seconds: float) -> str:
    return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(("headers", "at_least_s", "told"), [
    ({"Retry-After": "1"}, 1.0, "1"),
    ({"retry-after-ms": "1500"}, 1.5, "2"),  # Azure OpenAI's header, in milliseconds
    # An HTTP-date 4 s ahead: one-second resolution makes it 3–4 s, and a busy machine may take a moment
    # before the first call, so the retry must come ≥ 2 s later. By the retry's 429 it has passed: "1", not "0".
    ({"Retry-After": "HTTP-DATE+4"}, 2.0, "1"),
], ids=["seconds", "milliseconds", "http-date"])
def test_rate_limit_with_retry_after_is_503_with_that_retry_after(client: TestClient, fake_llm: FakeOpenAI,
                                                                  headers: dict, at_least_s: float, told: str) -> None:
    headers = {k: http_date_in(4) if v == "HTTP-DATE+4" else v for k, v in headers.items()}
    fake_llm.fail_next(Fault("status", 429, headers), times=2)
    r, elapsed = play(client)
    body = assert_problem(r, 503, "llm-rate-limited")
    assert re.fullmatch(told, r.headers["retry-after"]), r.headers["retry-after"]
    assert f"Retry after {r.headers['retry-after']} s" in body["detail"]
    first, retry = fake_llm.requests
    assert retry.received_at - first.received_at >= at_least_s  # one retry, after waiting as told
    assert elapsed < 8
    assert_recovers(client)


def test_rate_limit_without_retry_after_gets_the_default(make_client, fake_llm: FakeOpenAI) -> None:
    client = make_client(rate_limit_retry_after_s=7)
    fake_llm.fail_next(Fault("status", 429), times=2)
    r, _ = play(client)
    assert_problem(r, 503, "llm-rate-limited")
    assert r.headers["retry-after"] == "7"
    assert_recovers(client)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_502(client: TestClient, fake_llm: FakeOpenAI, status: int) -> None:
    fake_llm.fail_next(Fault("status", status), times=2)
    r, elapsed = play(client)
    assert_problem(r, 502, "llm-upstream")
    assert elapsed < 5
    assert_recovers(client)


def test_transient_server_error_is_retried_and_succeeds(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.fail_next(Fault("status", 500))
    r, _ = play(client)
    assert r.status_code == 200
    assert len(fake_llm.requests) == 5  # 4 calls (ask, review, answer, grade) + 1 retry


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_502_auth(client: TestClient, fake_llm: FakeOpenAI, status: int) -> None:
    fake_llm.fail_next(Fault("status", status))
    r, _ = play(client)
    assert "credentials" in assert_problem(r, 502, "llm-auth")["detail"]
    assert len(fake_llm.requests) == 1  # not retried: the same key would be refused again
    assert_recovers(client)


def test_a_call_that_never_answers_is_504_within_timeout_times_attempts(client: TestClient,
                                                                         fake_llm: FakeOpenAI) -> None:
    fake_llm.fail_next(Fault("hang", seconds=10), times=2)
    r, elapsed = play(client)
    assert_problem(r, 504, "llm-timeout")
    # 2 attempts x 2 s timeout, plus the client's short backoff between them.
    assert 3.5 < elapsed < 7
    assert_recovers(client)


def test_malformed_json_is_502(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.fail_next(Fault("malformed"))
    r, _ = play(client)
    assert_problem(r, 502, "llm-upstream")
    assert_recovers(client)


def test_invalid_structured_output_is_retried_then_succeeds(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.fail_next(Fault("bad_arguments"))
    r, _ = play(client)
    assert r.status_code == 200
    assert r.json()["question"]  # a whole round, never half-made
    assert len(fake_llm.requests_for("Question")) == 2


def test_invalid_structured_output_on_every_attempt_is_502(client: TestClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.fail_next(Fault("bad_arguments"), times=2)
    r, _ = play(client)
    assert "valid ask result" in assert_problem(r, 502, "llm-invalid-output")["detail"]
    assert_recovers(client)


def test_failed_round_leaves_the_session_as_it_was(client: TestClient, fake_llm: FakeOpenAI) -> None:
    first = client.post("/ask", json={"subject": "math"}).json()
    fake_llm.fail_next(Fault("pass"), times=1)
    fake_llm.fail_next(Fault("status", 500), times=2)  # the Student fails
    failed = client.post("/ask", json={"session_id": first["session_id"]})
    assert failed.status_code == 502
    again = client.post("/ask", json={"session_id": first["session_id"]}).json()
    assert again["round"] == 2


def test_an_answer_that_trickles_in_is_504_within_the_call_deadline(make_client, fake_llm: FakeOpenAI) -> None:
    # One byte every 0.2 s never trips the client's per-read timeout (1 s); the call deadline stops it.
    client = make_client(llm_timeout_s=1.0, llm_max_retries=0, llm_deadline_margin_s=1.0)
    fake_llm.fail_next(Fault("trickle", seconds=0.2))
    r, elapsed = play(client)
    assert_problem(r, 504, "llm-timeout")
    assert 1.5 < elapsed < 4  # LLM_TIMEOUT_S x attempts + LLM_DEADLINE_MARGIN_S = 2 s
    assert_recovers(client)


def test_connection_refused_is_502(make_client) -> None:
    port = free_port()
    client = make_client(openai_base_url=f"http://127.0.0.1:{port}/v1")
    r, elapsed = play(client)
    assert_problem(r, 502, "llm-upstream")
    assert elapsed < 5


def test_health_stays_fast_while_the_llm_hangs(client: TestClient, fake_llm: FakeOpenAI) -> None:
    import threading

    fake_llm.fail_next(Fault("hang", seconds=10), times=2)
    worker = threading.Thread(target=play, args=(client,))
    worker.start()
    wait_until(lambda: fake_llm.requests)  # the round is now stuck at the LLM
    started = time.perf_counter()
    assert client.get("/health").status_code == 200
    assert time.perf_counter() - started < 0.5  # a kubelet's probe timeout is 1 s or more: half of it
    worker.join()


def test_past_the_concurrency_limit_requests_are_shed_with_503(make_client, fake_llm: FakeOpenAI) -> None:
    import concurrent.futures

    client = make_client(max_concurrent_rounds=2)
    fake_llm.latency_s = 0.5
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        started = time.perf_counter()
        responses = list(pool.map(lambda _: client.post("/ask", json={}), range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and set(statuses) <= {200, 503}
    shed = [r for r in responses if r.status_code == 503]
    assert shed, statuses
    for r in shed:
        assert r.headers["retry-after"] == "1" and r.json()["type"] == "/problems/overloaded"
    assert time.perf_counter() - started < 6  # shed at once, not queued
    fake_llm.latency_s = 0.0
    assert client.app_state["rounds"].in_flight == 0  # every admitted round released its place
    assert client.post("/ask", json={}).status_code == 200


def test_streams_release_their_place(make_client) -> None:
    client = make_client(max_concurrent_rounds=1)
    for _ in range(3):
        r = client.post("/ask", json={}, headers={"accept": "text/event-stream"})
        assert r.status_code == 200 and "event: round" in r.text
    assert client.post("/ask", json={"session_id": "Q" * 22}).status_code == 404
    assert client.app_state["rounds"].in_flight == 0
