"""Kubernetes' probes on ``PROBE_PORT``, answered off the event loop (``app.http.probe``): the same body as
``GET /health`` while the loop runs, 503 while it is stuck, before the app is ready and once it stops.

How fast it answers under load is measured by ``bench/run.py`` (the ``/health`` rows), not timed here.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from app.http.probe import ProbeServer
from tests.fakes import free_port, wait_until


def probe(port: int, path: str = "/health") -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def test_the_probe_port_answers_as_health_does_while_the_loop_runs_and_503_while_it_is_stuck(make_client) -> None:
    port = free_port()
    client = make_client(probe_port=port, probe_stall_s=1)
    answer = probe(port)
    assert answer.status_code == 200 and answer.json() == client.get("/health").json()
    assert answer.headers["cache-control"] == "no-store"
    assert probe(port, "/ask").status_code == 404

    async def stuck() -> None:
        time.sleep(2.5)  # a blocking call on the event loop: nothing else runs meanwhile

    blocker = threading.Thread(target=client.portal.call, args=(stuck,))
    blocker.start()
    try:
        stalled = wait_until(lambda: (r := probe(port)).status_code == 503 and r, 3, "the probe saw the stall")
        assert stalled.json()["status"] == "stalled" and stalled.json()["stalled_s"] >= 1
    finally:
        blocker.join(10)
    wait_until(lambda: probe(port).status_code == 200, 3, "the probe saw the loop run again")


def test_the_probe_port_says_starting_then_stopping_and_closes_with_the_app(make_client) -> None:
    server = ProbeServer("127.0.0.1", 0, stall_s=10)
    server.start()
    try:
        assert (probe(server.port).status_code, probe(server.port).json()) == (503, {"status": "starting"})
        server.ready(b'{"status": "ok"}')
        assert probe(server.port).json() == {"status": "ok"}
        server.stopping()
        assert (probe(server.port).status_code, probe(server.port).json()) == (503, {"status": "stopping"})
    finally:
        server.close()
    with pytest.raises(httpx.ConnectError):
        probe(server.port)
    # With the app: the port lives as long as the app does.
    port = free_port()
    client = make_client(probe_port=port)
    assert probe(port).status_code == 200
    client.__exit__(None, None, None)
    with pytest.raises(httpx.ConnectError):
        probe(port)


def test_without_probe_port_nothing_else_listens(make_client: Any) -> None:
    assert make_client().get("/health").status_code == 200
    assert not [t for t in threading.enumerate() if t.name == "probe-server"]
