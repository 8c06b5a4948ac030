"""Kubernetes' probes answered off the event loop: ``GET /health`` on ``PROBE_PORT``, from a thread of its own.

``GET /health`` on the service's port waits its turn on the event loop, behind every round's work: under 64
clients its p99 was 54–150 ms (bench/run.py), and a probe that waits is a probe that one day times out on a
busy node and restarts a healthy pod. Here a small HTTP server (the standard library's
``ThreadingHTTPServer``, as ``prometheus_client.start_http_server`` serves metrics) runs in a daemon thread
and answers from memory, needing the event loop for nothing — only the GIL, which CPython hands over within
its switch interval (5 ms, ``sys.getswitchinterval()``).

A probe that never waits must still tell a stuck process from a busy one. A task on the event loop stamps the
time every ``beat_s``; when the stamp is older than ``stall_s`` the loop has not run a task for that long (a
deadlock, a blocking call), and the probe answers 503 until it runs again — so the liveness probe still
restarts a pod whose loop is stuck, while a loop that is merely busy keeps answering 200 at once.

| state | ``GET /health`` on ``PROBE_PORT`` |
| --- | --- |
| starting (the app's lifespan has not finished) | 503 ``{"status": "starting"}`` |
| ready, the loop ran a task within ``stall_s`` | 200, the same body as ``GET /health`` on the service's port |
| ready, the loop stalled for more than ``stall_s`` | 503 ``{"status": "stalled", "stalled_s": …}`` |
| shutting down (SIGTERM received) | 503 ``{"status": "stopping"}``: no new traffic |

Any other path is 404; any other method 501 (``BaseHTTPRequestHandler``'s own answer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

log = logging.getLogger(__name__)

State = Literal["starting", "ready", "stopping"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_port = True  # several uvicorn workers of one pod each answer for themselves (SO_REUSEPORT)


class ProbeServer:
    """``GET /health`` on ``host``:``port`` from a daemon thread (module docstring); ``start()`` binds it,
    ``ready(body)`` makes it answer 200 with ``body`` (JSON bytes) while the event loop runs,
    ``stopping()`` 503, ``close()`` stops it. ``port`` 0 binds a free port (``port`` then says which)."""

    def __init__(self, host: str, port: int, stall_s: float) -> None:
        self.stall_s = stall_s
        self.state: State = "starting"
        self.body = b""
        self.beat = time.monotonic()
        probe = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's naming)
                if self.path.split("?", 1)[0] != "/health":
                    self._send(404, b'{"status": "not found"}')
                    return
                self._send(*probe.answer())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
                pass  # a probe every few seconds is not news

        self._server = _Server((host, port), Handler)
        self.port: int = self._server.server_address[1]
        # serve_forever notices shutdown() at its next poll: 0.1 s at most added to the process's shutdown.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="probe-server",
                                        daemon=True)

    def answer(self) -> tuple[int, bytes]:
        """The probe's answer now: (status, JSON body)."""
        if self.state != "ready":
            return 503, json.dumps({"status": self.state}).encode()
        stalled = time.monotonic() - self.beat
        if stalled > self.stall_s:
            return 503, json.dumps({"status": "stalled", "stalled_s": round(stalled, 1)}).encode()
        return 200, self.body

    def start(self) -> None:
        """Serve in the daemon thread (answering 503 ``starting`` until ``ready``)."""
        self._thread.start()
        log.info("probes: GET /health on port %d, answered off the event loop", self.port)

    def ready(self, body: bytes) -> None:
        """Answer 200 with ``body`` (the ``Health`` JSON) while the event loop's heartbeat is fresh."""
        self.body, self.beat, self.state = body, time.monotonic(), "ready"

    def stopping(self) -> None:
        """Answer 503 ``stopping`` from now on (the app is shutting down)."""
        self.state = "stopping"

    async def heartbeat(self, beat_s: float) -> None:
        """Stamp the time every ``beat_s`` seconds while the event loop runs tasks (until cancelled)."""
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(beat_s)

    def close(self) -> None:
        """Stop serving and close the socket (waits for the thread, at most 5 s)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
