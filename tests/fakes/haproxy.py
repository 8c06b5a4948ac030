"""A real load balancer in front of the service's replicas: Debian's HAProxy, round-robin, no stickiness.

What it stands for is the Kubernetes Service (kube-proxy spreads connections over the ready pods) plus an
ingress that balances each request: a client cannot choose its replica, and a session's rounds land on any.
Each answer says which replica served it (``X-Served-By: r<i>``, HAProxy's ``%[srv_name]`` sample fetch), so a
test can tell. A replica whose ``/health`` stops answering is taken out after two failed checks 200 ms apart
(``check inter 200ms fall 2``), as a readiness probe would; a request whose connection to a dead replica is
refused is sent to another (``retries`` + ``option redispatch``: it never reached a replica, so resending it is
safe), while a request a replica was answering when it died ends in HAProxy's own 502, as in the cluster.

HAProxy configuration manual (2.6): https://docs.haproxy.org/2.6/configuration.html — ``balance roundrobin``,
``option httpchk``, ``http-response set-header``, ``option redispatch``, ``timeout server``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from tests.fakes import free_port

SERVED_BY = "x-served-by"


class HAProxy:
    """HAProxy on 127.0.0.1 balancing ``backends`` (base URLs ``http://127.0.0.1:<port>``) round-robin; its
    base URL is ``url``. Raises ``RuntimeError`` when ``haproxy`` is not installed (tests/prerequisites.py)."""

    def __init__(self, backends: list[str]) -> None:
        binary = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)
        if binary is None:
            raise RuntimeError("haproxy not found: apt-get install haproxy (tests/prerequisites.py does)")
        self.binary = binary
        self.backends = backends
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="qa-haproxy-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        servers = "\n".join(f"    server r{i} {b.removeprefix('http://')} check inter 200ms fall 2 rise 1"
                            for i, b in enumerate(self.backends))
        return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 10s
    retries 3
    option redispatch

frontend quiz
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /health
    http-response set-header X-Served-By %[srv_name]
{servers}
"""

    def start(self) -> HAProxy:
        path = self.root / "haproxy.cfg"
        path.write_text(self.config())
        subprocess.run([self.binary, "-c", "-q", "-f", str(path)], check=True, capture_output=True, timeout=30)
        self.process = subprocess.Popen([self.binary, "-db", "-f", str(path)], stdout=subprocess.DEVNULL,
                                        stderr=(self.root / "haproxy.log").open("w"))
        deadline = time.monotonic() + 10
        while True:  # up, and every replica checked healthy (all three serve before a test begins)
            served = set()
            for _ in range(len(self.backends) * 2):
                try:
                    served.add(httpx.get(f"{self.url}/health", timeout=1).headers.get(SERVED_BY))
                except httpx.TransportError:
                    pass
            if served >= {f"r{i}" for i in range(len(self.backends))}:
                return self
            assert time.monotonic() < deadline and self.process.poll() is None, (self.root / "haproxy.log").read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
