"""Shutdown and Collector outages against a real process: what Kubernetes does to the pod."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import CANARY_KEY
from tests.fakes import free_port, wait_until
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import SPANS_PER_ROUND, OTLPReceiver
from tests.service import clean_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow




def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


def test_sigterm_under_load_finishes_in_flight_rounds_refuses_new_ones_and_flushes(
        otlp: OTLPReceiver, tmp_path: Path) -> None:
    with FakeOpenAI(latency_s=0.4) as llm:
        port = free_port()
        env = clean_env()
        # Spans would wait a minute in the queue: only the shutdown flush can deliver them.
        env.update(PORT=str(port), OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY=CANARY_KEY, LOG_LEVEL="debug",
                   OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="60000",
                   OTEL_RESOURCE_ATTRIBUTES="test.case=sigterm")
        log = (tmp_path / "log").open("w")
        process = subprocess.Popen([str(Path(sys.executable).parent / "question-app")], env=env, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and process.poll() is None
                    time.sleep(0.1)
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                in_flight = [pool.submit(httpx.post, f"{base}/ask", json={}, timeout=30) for _ in range(8)]
                wait_until(lambda: len(llm.requests) >= 8, what="all eight mid-round, waiting at the LLM")
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                wait_until(lambda: refuses_connections(port), 1.0, "new connections refused after SIGTERM")
                responses = [f.result() for f in in_flight]
            # uvicorn re-raises the signal once it has shut down gracefully, so the parent sees SIGTERM.
            assert process.wait(15) in (0, -signal.SIGTERM)
            took = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
        assert [r.status_code for r in responses] == [200] * 8  # nothing lost
        assert took < 5
        trace_ids = {r.json()["trace_id"] for r in responses}
        spans = [s for s in otlp.spans() if s.resource.get("test.case") == "sigterm"]
        assert {s.trace_id for s in spans} == trace_ids
        assert len(spans) == 8 * SPANS_PER_ROUND  # every span of every round, flushed on the way out
        assert CANARY_KEY not in (tmp_path / "log").read_text()  # not even in the process's debug log


def test_a_collector_that_goes_away_mid_load_gets_the_buffered_spans_when_it_returns(
        make_client, telemetry_env: OTLPReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "20")  # retries span the outage
    client = make_client()
    assert client.post("/ask", json={}).status_code == 200
    telemetry_env.refuse = True  # the Collector restarts
    durations, trace_ids = [], []
    for _ in range(4):
        started = time.perf_counter()
        r = client.post("/ask", json={})
        durations.append(time.perf_counter() - started)
        assert r.status_code == 200
        trace_ids.append(r.json()["trace_id"])
    time.sleep(1.5)
    telemetry_env.refuse = False  # and comes back
    telemetry_env.wait_for(lambda: all(len(telemetry_env.trace(t)) == SPANS_PER_ROUND for t in trace_ids), timeout_s=25)
    assert max(durations) < 1.0  # /ask never waited for the Collector
