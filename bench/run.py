"""question-app benchmark: throughput, latency, /health under load, CPU and memory per round, telemetry
loss and size, shutdown time, streaming time-to-first-event.

    uv run python bench/run.py            # full run, ~6 minutes on 2 cores
    uv run python bench/run.py --quick    # smaller counts, ~2 minutes

It starts, all on 127.0.0.1: the fake OpenAI-protocol server (tests/fakes/openai_server.py) in its own
process with a fixed latency per call, an OTLP/gRPC receiver (tests/fakes/otlp_receiver.py) in this
process, and the service itself with its installed entry point (`question-app`, one uvicorn worker, as the
README runs it). Load comes from this process over loopback, bounded in count and time. It prints one
Markdown table and writes it to bench/results/<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.settings import Settings  # noqa: E402
from tests.fakes import free_port  # noqa: E402
from tests.fakes.otlp_receiver import OTLPReceiver, spans_per_round  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")




def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class FakeLLM:
    def __init__(self, latency_ms: float) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(self.port),
             "--latency-ms", str(latency_ms)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class Service:
    """The service under test, started and waited for until ``/health`` answers 200 (``started_s``: how long
    that took). ``tree``: another checkout's code (this checkout's venv); ``command``: another service
    altogether, a shell command that listens on ``$PORT`` and reads the same ``OPENAI_*``/``OTEL_*``
    variables (``--against``); ``core``: pin it (and every process it starts) to that CPU."""

    def __init__(self, llm: FakeLLM, otlp_endpoint: str, workers: int = 1, tree: Path | None = None,
                 command: str | None = None, core: int | None = None, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_OPENAI", "OPENAI_", "OTEL_"))}
        environment.update(PORT=str(self.port), OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="bench",
                           OPENAI_MODEL="gpt-5.2-chat", OTEL_EXPORTER_OTLP_ENDPOINT=otlp_endpoint,
                           OTEL_SERVICE_NAME="question-app", OTEL_RESOURCE_ATTRIBUTES="service.namespace=bench",
                           OTEL_METRIC_EXPORT_INTERVAL="5000", LOG_LEVEL="warning", **env)
        if tree is not None:  # another checkout's code (a before/after comparison), this checkout's venv
            environment["PYTHONPATH"] = str(tree)
        argv: list[str]
        if command is not None:
            argv = ["bash", "-c", f"exec {command}"]
        elif workers == 1:
            argv = [str(Path(sys.executable).parent / "question-app")]
        else:
            argv = [sys.executable, "-m", "uvicorn", "--factory", "app.http.factory:create_app", "--port",
                    str(self.port), "--workers", str(workers), "--log-level", "warning"]
        self.log = open(ROOT / "bench" / "results" / f"service-{self.port}.log", "w")
        started = time.monotonic()
        self.process = subprocess.Popen(
            argv, cwd=tree or ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, {core})) if core is not None else None)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start; see {self.log.name}")
            time.sleep(0.01)
        self.started_s = time.monotonic() - started
        self.probe_port = self.port
        if env.get("PROBE_PORT"):  # probes on their own port, if this service has one
            try:
                httpx.get(f"http://127.0.0.1:{env['PROBE_PORT']}/health", timeout=1)
                self.probe_port = int(env["PROBE_PORT"])
            except httpx.TransportError:
                pass

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> float:
        """SIGTERM and wait; return seconds to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)
        return time.monotonic() - started


async def load(base: str, concurrency: int, seconds: float, max_rounds: int, body: dict | None = None
               ) -> dict:
    """`concurrency` clients each playing rounds back to back until the time or the count runs out."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    remaining = max_rounds

    async with httpx.AsyncClient(base_url=base, timeout=30,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            nonlocal remaining
            while time.monotonic() < deadline and remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/ask", json=body or {})
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                        if r.status_code == 503 and "retry-after" in r.headers:
                            await asyncio.sleep(float(r.headers["retry-after"]))  # a well-behaved client
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"rounds": len(latencies), "elapsed": elapsed, "rps": len(latencies) / elapsed,
            "p50": pct(latencies, 50), "p95": pct(latencies, 95), "p99": pct(latencies, 99),
            "errors": sum(errors.values()), "error_kinds": errors, "latencies": latencies}


async def load_with_health(base: str, concurrency: int, seconds: float, max_rounds: int,
                           probe_port: int | None = None) -> tuple[dict, list]:
    """Load, while bench/probe.py times /health from its own process (this one is busy driving load), on
    ``probe_port`` if given (``PROBE_PORT``: where Kubernetes probes), else the service's own port."""
    url = httpx.URL(base)
    prober = subprocess.Popen([sys.executable, str(ROOT / "bench" / "probe.py"), url.host,
                               str(probe_port or url.port)], stdout=subprocess.PIPE, text=True)
    result = await load(base, concurrency, seconds, max_rounds)
    prober.terminate()
    return result, json.loads(prober.communicate(timeout=30)[0])


async def first_event_times(base: str, samples: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for _ in range(samples):
            t0 = time.perf_counter()
            async with client.stream("POST", "/ask", json={}, headers={"accept": "text/event-stream"}) as r:
                seen = False
                async for line in r.aiter_lines():
                    if line == "event: question" and not seen:
                        out.append(time.perf_counter() - t0)
                        seen = True
    return out


async def flood_and_quiet(base: str, seconds: float) -> tuple[dict, dict]:
    """Two clients with their own API keys: a flood (64 connections, retrying 50 ms after any refusal,
    Retry-After ignored) and a quiet one (2 connections, honouring Retry-After). Returns each one's
    statuses and, for the quiet one, each round's time from its first attempt to its 200 (retries included)."""
    deadline = time.monotonic() + seconds
    flood: dict[str, int] = {}
    quiet: dict[str, int] = {}
    quiet_rounds: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=80)) as client:
        async def flooder() -> None:
            while time.monotonic() < deadline:
                r = await client.post("/ask", json={}, headers={"x-api-key": "flood-secret"})
                flood[str(r.status_code)] = flood.get(str(r.status_code), 0) + 1
                if r.status_code != 200:
                    await asyncio.sleep(0.05)

        async def player() -> None:
            await asyncio.sleep(1)  # the flood holds every place by then
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                while True:
                    r = await client.post("/ask", json={}, headers={"x-api-key": "quiet-secret"})
                    quiet[str(r.status_code)] = quiet.get(str(r.status_code), 0) + 1
                    if r.status_code == 200:
                        quiet_rounds.append(time.perf_counter() - t0)
                        break
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))

        await asyncio.gather(*(flooder() for _ in range(64)), *(player() for _ in range(2)))
    return flood, {"statuses": quiet, "rounds": quiet_rounds}


def fairness(otlp_endpoint: str, seconds: float, latency_ms: float) -> tuple[str, str, str]:
    """The fair-admission row: MAX_CONCURRENT_ROUNDS=16, a flooding client and a quiet one (``flood_and_quiet``)."""
    llm = FakeLLM(latency_ms)
    service = Service(llm, otlp_endpoint, API_KEYS="flood-secret,quiet-secret", MAX_CONCURRENT_ROUNDS="16",
                      RATE_LIMIT_ROUNDS_PER_MINUTE="0", RATE_LIMIT_TOKENS_PER_DAY="0")
    try:
        flood, quiet = asyncio.run(flood_and_quiet(service.base, seconds))
    finally:
        service.stop()
        llm.stop()
    statuses = quiet["statuses"]
    answered = sum(statuses.values())
    rounds = quiet["rounds"]
    return ("two clients, one flooding (64 connections) at MAX_CONCURRENT_ROUNDS=16, "
            f"{latency_ms:.0f} ms LLM",
            f"quiet client: {statuses.get('200', 0) / max(1, answered):.0%} of its requests answered 200, "
            f"round p50 {ms(pct(rounds, 50))}, p99 {ms(pct(rounds, 99))} (retries included)",
            f"quiet {dict(sorted(statuses.items()))}, flood {dict(sorted(flood.items()))} in {seconds:.0f} s")


def store_soak(otlp_endpoint: str, seconds: float, latency_ms: float) -> tuple[str, str, str]:
    """New sessions on a SQLite store for ``seconds`` (16 clients, ``latency_ms`` per LLM call) with
    SESSION_TTL_S=2: the sessions and bytes it holds stay near rate × TTL while rounds are played, and fall
    to none once they are idle (app/expiry.py)."""
    import sqlite3
    import tempfile
    import threading

    folder = Path(tempfile.mkdtemp(prefix="qa-soak-"))
    db = folder / "sessions.db"
    fast = FakeLLM(latency_ms)
    service = Service(fast, otlp_endpoint, CHECKPOINTER_URL=f"sqlite:///{db}", SESSION_TTL_S="2",
                      SESSION_SWEEP_INTERVAL_S="0.5")
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            with sqlite3.connect(db, timeout=5) as conn:
                sessions = conn.execute("SELECT count(DISTINCT thread_id) FROM checkpoints").fetchone()[0]
            samples.append((sessions, sum(f.stat().st_size for f in folder.glob("sessions.db*"))))

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        sampler.start()
        result = asyncio.run(load(service.base, 16, seconds, 1_000_000))
        time.sleep(2 + 1.5)  # TTL, then a sweep or three
        with sqlite3.connect(db, timeout=5) as conn:
            left = conn.execute("SELECT count(DISTINCT thread_id) FROM checkpoints").fetchone()[0]
    finally:
        stop.set()
        sampler.join()
        service.stop()
        fast.stop()
    half = len(samples) // 2
    early, late = samples[:half] or [(0, 0)], samples[half:] or [(0, 0)]
    return ("SQLite store under new sessions, SESSION_TTL_S=2 (soak)",
            f"sessions held: max {max(n for n, _ in early)} in the first half, {max(n for n, _ in late)} in the "
            f"second, {left} once idle; file + WAL max {max(b for _, b in early) / 1024:.0f} KiB, then "
            f"{max(b for _, b in late) / 1024:.0f} KiB",
            f"{result['rounds']} sessions of one round in {result['elapsed']:.0f} s "
            f"({result['rps']:.0f}/s × 2 s TTL ≈ {result['rps'] * 2:.0f} held)")


def scaling(latency_ms: float, otlp_endpoint: str, seconds: float) -> list[tuple[str, str, str]]:
    """1 vs 2 uvicorn workers at 64 clients (new sessions only: with memory:// a session lives in
    one worker, so more than one worker needs CHECKPOINTER_URL=postgresql://… for continued sessions)."""
    rows = []
    llm = FakeLLM(latency_ms)
    try:
        for workers in (1, 2):
            service = Service(llm, otlp_endpoint, workers=workers)
            try:
                asyncio.run(load(service.base, 8, 5, 40))
                # (128 clients would measure this 2-core rig: the load generator itself runs out of CPU.)
                for clients in (64,):
                    r = asyncio.run(load(service.base, clients, seconds, 50_000))
                    rows.append((f"{workers} uvicorn worker{'s' if workers > 1 else ''}, {clients} clients, "
                                 f"{latency_ms:.0f} ms LLM",
                                 f"{r['rps']:.1f} rounds/s, p50 {ms(r['p50'])}, p99 {ms(r['p99'])}, "
                                 f"not played {r['errors']}",
                                 f"{r['rounds']} rounds" + (f"; {r['error_kinds']}" if r["errors"] else "")))
            finally:
                service.stop()
    finally:
        llm.stop()
    return rows


async def session_load(base: str, clients: int, seconds: float, max_rounds: int, *, keyed: bool,
                       stream: bool) -> dict:
    """``clients`` clients each playing one session's rounds back to back (through a balancer: on every
    replica), with an ``Idempotency-Key`` per round if ``keyed`` and as server-sent events if ``stream``; a
    round answered 409/503 or cut off is retried (with its key) after ``Retry-After``, as the README says."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline, started, remaining = time.monotonic() + seconds, time.monotonic(), max_rounds
    headers = {"accept": "text/event-stream"} if stream else {}
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=clients)) as client:
        async def player() -> None:
            nonlocal remaining
            sid = None
            while time.monotonic() < deadline and remaining > 0:
                remaining -= 1
                key = {"idempotency-key": os.urandom(16).hex()} if keyed else {}
                body: dict[str, str] = {"session_id": sid} if sid else {}
                t0 = time.perf_counter()
                while time.monotonic() < deadline + 30:
                    try:
                        r = await client.post("/ask", json=body, headers={**headers, **key})
                    except httpx.HTTPError as exc:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                        await asyncio.sleep(0.2)
                        continue
                    if r.status_code == 200:
                        if stream:
                            last = [line for line in r.text.splitlines() if line.startswith("data: ")][-1]
                            sid = json.loads(last[6:]).get("session_id", sid)
                        else:
                            sid = r.json()["session_id"]
                        latencies.append(time.perf_counter() - t0)
                        break
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))

        await asyncio.gather(*(player() for _ in range(clients)))
    elapsed = time.monotonic() - started
    return {"rounds": len(latencies), "elapsed": elapsed, "rps": len(latencies) / elapsed,
            "p50": pct(latencies, 50), "p99": pct(latencies, 99), "errors": sum(errors.values()),
            "error_kinds": errors}


def postgres_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server: its postmaster and every backend it forked."""
    total = cpu_seconds(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            continue
    return total


def store_bytes(url: str, tables: tuple[str, ...]) -> int:
    """Bytes of ``tables`` (with their indexes and TOAST) in the Postgres at ``url``; absent tables count 0."""
    import psycopg

    total = 0
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            row = conn.execute("SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)", (table,)).fetchone()
            total += int(row[0]) if row is not None else 0
    return total


RUN_TABLES = ("quiz_rounds", "quiz_round_events")
CHECKPOINT_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


def replicas(latency_ms: float, otlp_endpoint: str, seconds: float, cpu_rounds: int,
             tree: Path | None = None) -> list[tuple[str, str, str]]:
    """Replicas on one PostgreSQL behind HAProxy (round-robin, tests/fakes/haproxy.py), each replica pinned to a
    core of its own (``sched_setaffinity``: replica *i* on core *i*; Postgres, HAProxy, the fake LLM and this
    load generator float over both): rounds/s and p99 at 64 clients with one and with two replicas, then the
    cost of keeping rounds (``app.runs``) on one replica with a 0 ms LLM — server CPU (the replica and
    Postgres) and bytes in the store per round, for JSON rounds without a key, with one, and streamed rounds
    with one (every event kept). ``tree``: play another checkout's code (a before/after comparison)."""
    from tests.fakes.haproxy import HAProxy
    from tests.fakes.postgres import PostgresServer

    rows: list[tuple[str, str, str]] = []
    label = f" [{tree.name}]" if tree is not None else ""
    cores = sorted(os.sched_getaffinity(0))
    postgres = PostgresServer().start()
    try:
        postmaster = int((postgres.root / "data" / "postmaster.pid").read_text().split()[0])
        for count, latency in ((1, latency_ms), (2, latency_ms)):
            llm = FakeLLM(latency)
            services = [Service(llm, otlp_endpoint, tree=tree, CHECKPOINTER_URL=postgres.url,
                                RATE_LIMIT_ROUNDS_PER_MINUTE="0") for _ in range(count)]
            for i, service in enumerate(services):
                os.sched_setaffinity(service.pid, {cores[i % len(cores)]})
            try:
                with HAProxy([s.base for s in services]) as balancer:
                    asyncio.run(session_load(balancer.url, 8, 5, 40, keyed=True, stream=False))  # warm up
                    r = asyncio.run(session_load(balancer.url, 64, seconds, 50_000, keyed=True, stream=False))
                rows.append((f"{count} replica{'s' if count > 1 else ''} on Postgres behind HAProxy, 64 clients, "
                             f"{latency:.0f} ms LLM{label}",
                             f"{r['rps']:.1f} rounds/s, p50 {ms(r['p50'])}, p99 {ms(r['p99'])}, "
                             f"retried {r['errors']}",
                             f"{r['rounds']} rounds of continued sessions with Idempotency-Key, JSON; replica i "
                             f"pinned to core i of {len(cores)}" + (f"; {r['error_kinds']}" if r["errors"] else "")))
            finally:
                for service in services:
                    service.stop()
                llm.stop()
        fast = FakeLLM(0)
        service = Service(fast, otlp_endpoint, tree=tree, CHECKPOINTER_URL=postgres.url,
                          RATE_LIMIT_ROUNDS_PER_MINUTE="0")
        os.sched_setaffinity(service.pid, {cores[0]})
        try:
            asyncio.run(session_load(service.base, 4, 10, 100, keyed=False, stream=False))  # warm up
            for keyed, stream, what in ((False, False, "JSON, no key"), (True, False, "JSON + Idempotency-Key"),
                                        (True, True, "streamed + Idempotency-Key")):
                runs, checkpoints = store_bytes(postgres.url, RUN_TABLES), store_bytes(postgres.url, CHECKPOINT_TABLES)
                cpu, db_cpu = cpu_seconds(service.pid), postgres_cpu_seconds(postmaster)
                r = asyncio.run(session_load(service.base, 4, 120, cpu_rounds, keyed=keyed, stream=stream))
                cpu, db_cpu = cpu_seconds(service.pid) - cpu, postgres_cpu_seconds(postmaster) - db_cpu
                runs = store_bytes(postgres.url, RUN_TABLES) - runs
                checkpoints = store_bytes(postgres.url, CHECKPOINT_TABLES) - checkpoints
                n = max(1, r["rounds"])
                rows.append((f"cost per round on Postgres, 0 ms LLM, {what}{label}",
                             f"replica CPU {cpu / n * 1000:.1f} ms + Postgres CPU {db_cpu / n * 1000:.1f} ms; "
                             f"round records {runs / n / 1024:.2f} KiB",
                             f"{r['rounds']} rounds at 4 clients; checkpoints grew {checkpoints / n / 1024:.1f} KiB "
                             "per round meanwhile (table sizes: pages, not rows)"))
        finally:
            service.stop()
            fast.stop()
    finally:
        postgres.stop()
    return rows


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def dead_collector() -> str:
    """An OTLP endpoint nobody listens on: the Collector is down."""
    return f"http://127.0.0.1:{free_port()}"


async def in_flight_then_stop(service: Service) -> tuple[float, list[int]]:
    """Eight rounds (their spans queued), eight more in flight, then SIGTERM: seconds to exit, their statuses."""
    async with httpx.AsyncClient(base_url=service.base, timeout=30) as client:
        await asyncio.gather(*(client.post("/ask", json={}) for _ in range(8)))  # spans queued
        tasks = [asyncio.create_task(client.post("/ask", json={})) for _ in range(8)]
        await asyncio.sleep(0.3)  # all eight are mid-round
        stop_task = asyncio.get_running_loop().run_in_executor(None, service.stop)
        responses = await asyncio.gather(*tasks, return_exceptions=True)
        return await stop_task, [getattr(r, "status_code", 0) for r in responses]


def side_by_side(latency_ms: float, otlp_endpoint: str, quick: bool, tree: Path | None,
                 command: str | None) -> list[tuple[str, str, str, str]]:
    """Issue #24's figures for this checkout's service and another — ``tree`` (another checkout, e.g. the
    tree before a change) or ``command`` (another implementation) — under one harness in one run, so what is
    compared is a ratio, never absolute times across runs or machines. Each service is pinned to the first
    core and everything else (the load generator, the fake LLM, the OTLP receiver, the probe) to the others;
    the two run side by side and are loaded in alternating slices, so a drifting machine moves both alike.
    Returns rows (figure, this, other, this ÷ other)."""
    cores = sorted(os.sched_getaffinity(0))
    core = cores[0]
    os.sched_setaffinity(0, set(cores[1:]) or {core})
    other: dict[str, object] = {"tree": tree} if tree is not None else {"command": command}
    kinds: list[dict[str, object]] = [{}, other]
    values: dict[str, list[float]] = {}
    notes: dict[str, str] = {}

    def start(which: dict[str, object], llm: FakeLLM, collector: str = otlp_endpoint) -> Service:
        return Service(llm, collector, core=core, PROBE_PORT=str(free_port()), MAX_SESSIONS="10000",
                       RATE_LIMIT_ROUNDS_PER_MINUTE="0", **which)  # type: ignore[arg-type]

    def add(figure: str, value: float) -> None:
        values.setdefault(figure, []).append(value)

    fast, slow = FakeLLM(0), FakeLLM(latency_ms)
    try:
        starts = 3 if quick else 7
        times: list[list[float]] = [[], []]
        for _ in range(starts):  # alternating, so a noisy moment hits both
            for i, which in enumerate(kinds):
                service = start(which, fast)
                times[i].append(service.started_s)
                service.stop()
        for i in range(2):
            add("start-up, process to healthy (median), s", pct(times[i], 50))
        notes["start-up, process to healthy (median), s"] = f"{starts} starts each, alternating"

        # Both services up at once (only one is loaded at a time), measured in alternating slices: a machine
        # whose speed drifts over minutes (a shared host) moves both figures alike, not one.
        sessions, slices = (2000 if quick else 5000), 4
        services = [start(which, fast) for which in kinds]
        try:
            done = [asyncio.run(load(s.base, 4, 10, 60))["rounds"] for s in services]  # warm up; each a new session
            for clients, rounds in ((1, 100 if quick else 300), (32, 300 if quick else 1000)):
                used, played = [0.0, 0.0], [0, 0]
                for _ in range(slices):
                    for i, service in enumerate(services):
                        before = cpu_seconds(service.pid)
                        r = asyncio.run(load(service.base, clients, 120, rounds // slices))
                        used[i] += cpu_seconds(service.pid) - before
                        played[i] += r["rounds"]
                        done[i] += r["rounds"]
                for i in range(2):
                    add(f"server CPU per round, 0 ms LLM, {clients} client{'s' if clients > 1 else ''}, ms",
                        used[i] / max(1, played[i]) * 1000)
            for i, service in enumerate(services):
                while done[i] < sessions:
                    batch = asyncio.run(load(service.base, 16, 600, sessions - done[i]))
                    done[i] += batch["rounds"] + batch["errors"]
                add(f"RSS after {sessions:,} new sessions (MAX_SESSIONS=10000), MB", rss_mb(service.pid))
        finally:
            for service in services:
                service.stop()

        seconds = 8 if quick else 15
        services = [start(which, slow) for which in kinds]
        try:
            outcomes: list[list[tuple[dict, list]]] = [[], []]
            for s in services:
                asyncio.run(load(s.base, 8, 3, 24))
            for _ in range(2):
                for i, service in enumerate(services):
                    outcomes[i].append(asyncio.run(load_with_health(service.base, 64, seconds / 2, 50_000,
                                                                    service.probe_port)))
            for runs in outcomes:
                latencies = [x for r, _ in runs for x in r["latencies"]]
                health = [x for _, h in runs for x in h]
                add(f"rounds/s at 64 clients, {latency_ms:.0f} ms LLM", sum(r["rounds"] for r, _ in runs)
                    / sum(r["elapsed"] for r, _ in runs))
                add(f"round p99 at 64 clients, {latency_ms:.0f} ms LLM, s", pct(latencies, 99))
                add("errors at 64 clients", sum(r["errors"] for r, _ in runs))
                add("/health p50 under 64 clients, ms", pct(health, 50) * 1000)
                add("/health p99 under 64 clients, ms", pct(health, 99) * 1000)
            notes["/health p99 under 64 clients, ms"] = "where each service's probes go: " + ", ".join(
                "PROBE_PORT" if s.probe_port != s.port else "its own port" for s in services)
        finally:
            for service in services:
                service.stop()

        for which in kinds:
            stop_s, _ = asyncio.run(in_flight_then_stop(start(which, slow, dead_collector())))
            add("shutdown with the Collector down, 8 rounds in flight, s", stop_s)
    finally:
        fast.stop()
        slow.stop()
        os.sched_setaffinity(0, set(cores))
    rows = []
    for figure, (this, that) in values.items():
        ratio = f"{this / that:.2f}" if that else "–"
        rows.append((figure + (f" ({notes[figure]})" if figure in notes else ""), f"{this:.3g}", f"{that:.3g}",
                     ratio))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="question-app benchmark")
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 2 minutes)")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--only-scaling", action="store_true", help="only the 1 vs 2 workers rows")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--only-fairness", action="store_true", help="only the flooding-client row")
    parser.add_argument("--only-replicas", action="store_true",
                        help="only the replicas-on-Postgres rows (1 and 2 replicas behind HAProxy, cost per round)")
    parser.add_argument("--tree", type=Path, help="with --only-replicas: play this checkout's code (before/after)")
    parser.add_argument("--against-tree", type=Path, metavar="CHECKOUT",
                        help="side by side: issue #24's figures for this checkout and CHECKOUT (e.g. a git worktree "
                             "of the commit before a change), one harness, one run, with ratios")
    parser.add_argument("--against", metavar="COMMAND",
                        help="side by side with another service: a shell command that serves on $PORT and reads "
                             "OPENAI_BASE_URL/OPENAI_API_KEY/OPENAI_MODEL and the OTEL_* variables")
    args = parser.parse_args()
    if args.against_tree or args.against:
        with OTLPReceiver() as otlp:
            pairs = side_by_side(args.latency_ms, otlp.endpoint, args.quick, args.against_tree, args.against)
        against = args.against_tree or args.against
        text = (f"## {dt.date.today().isoformat()} side by side — this checkout against `{against}`"
                f"{' (--quick)' if args.quick else ''}; each service pinned to one core\n\n"
                "| figure | this | other | this ÷ other |\n| --- | --- | --- | --- |\n"
                + "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in pairs) + "\n")
        print(text)
        out = ROOT / "bench" / "results" / f"{dt.date.today().isoformat()}-side-by-side.md"
        out.write_text(text)
        print(f"written to {out.relative_to(ROOT)}")
        return
    quick = args.quick
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str]] = []
    if args.only_fairness:
        with OTLPReceiver() as otlp:
            a, b, c = fairness(otlp.endpoint, 10 if quick else 20, args.latency_ms)
        print(f"| {a} | {b} | {c} |")
        return
    if args.only_replicas:
        with OTLPReceiver() as otlp:
            rows = replicas(args.latency_ms, otlp.endpoint, 8 if quick else 15, 200 if quick else 500, args.tree)
        print("\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows))
        return
    if args.only_scaling:
        with OTLPReceiver() as otlp:
            rows = scaling(args.latency_ms, otlp.endpoint, 8 if quick else 15)
        print("\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows))
        return

    per_round = spans_per_round(Settings().steps())  # the agents this environment plays (DISABLED_AGENTS …)
    with OTLPReceiver() as otlp:
        # --- A: throughput and latency with a slow LLM --------------------------------------------------
        slow = FakeLLM(args.latency_ms)
        service = Service(slow, otlp.endpoint, PROBE_PORT=str(free_port()))
        try:
            asyncio.run(load(service.base, 4, 5, 8))  # warm up, then wait for its spans before counting
            otlp.wait_for(lambda: len(otlp.spans()) >= 8 * per_round, timeout_s=15)
            otlp.clear()
            played = 0
            for concurrency in (1, 8, 32, 64):
                seconds = 8 if quick else 20
                if concurrency == 64:
                    result, health = asyncio.run(load_with_health(service.base, 64, seconds, 20_000,
                                                                  service.probe_port))
                else:
                    result = asyncio.run(load(service.base, concurrency, seconds, 20_000))
                played += result["rounds"]
                rows.append((f"{args.latency_ms:.0f} ms LLM, {concurrency} clients",
                             f"{result['rps']:.1f} rounds/s, p50 {ms(result['p50'])}, p95 {ms(result['p95'])}, "
                             f"p99 {ms(result['p99'])}, errors {result['errors']}",
                             f"{result['rounds']} rounds in {result['elapsed']:.1f} s"
                             + (f"; {result['error_kinds']}" if result["errors"] else "")))
            rows.append(("/health on PROBE_PORT while 64 clients play",
                         f"p50 {ms(pct(health, 50))}, p99 {ms(pct(health, 99))}, max {ms(max(health))}",
                         f"{len(health)} probes"))
            ttfe = asyncio.run(first_event_times(service.base, 10))
            played += len(ttfe)
            rows.append(("streaming: first agent event (`question`)",
                         f"p50 {ms(pct(ttfe, 50))}, max {ms(max(ttfe))}",
                         f"first LLM call takes {args.latency_ms:.0f} ms; 10 rounds, 1 client"))
            stop_s = service.stop()
            expected = played * per_round
            received = len(otlp.spans())
            trace_bytes = sum(r.ByteSize() for r in otlp.trace_requests)
            metric_bytes = sum(r.ByteSize() for r in otlp.metric_requests)
            event_bytes = sum(r.ByteSize() for r in otlp.log_requests)
            rows.append(("spans received / expected after load and shutdown flush",
                         f"{received} / {expected} (lost {expected - received})",
                         f"{played} rounds; shutdown took {stop_s:.1f} s"))
            rows.append(("OTLP bytes per round (content capture off)",
                         f"{trace_bytes / played / 1024:.1f} KiB spans + {event_bytes / played / 1024:.2f} KiB events",
                         f"+ {metric_bytes / 1024:.0f} KiB metrics "
                         "in all (periodic, independent of rounds)"))
        finally:
            if service.process.poll() is None:
                service.stop()
            slow.stop()

        # --- B: CPU and memory with a 0 ms LLM ------------------------------------------------------------
        fast = FakeLLM(0)
        service = Service(fast, otlp.endpoint)
        try:
            asyncio.run(load(service.base, 4, 10, 100))
            cpu_rounds = 300 if quick else 1000
            before = cpu_seconds(service.pid)
            result = asyncio.run(load(service.base, 4, 120, cpu_rounds))
            used = cpu_seconds(service.pid) - before
            rows.append(("server CPU per round, 0 ms LLM, tracing + metrics on",
                         f"{used / max(1, result['rounds']) * 1000:.1f} ms",
                         f"{result['rounds']} rounds at 4 clients, {result['rps']:.0f} rounds/s"))
            marks = (0, 2000, 5000) if quick else (0, 5000, 10000, 20000)
            done = 0
            rss = []
            for mark in marks:
                while done < mark:
                    batch = asyncio.run(load(service.base, 16, 600, mark - done))
                    done += batch["rounds"] + batch["errors"]
                rss.append(f"{rss_mb(service.pid):.0f} MB after {mark:,}")
            rows.append(("RSS after new sessions (MAX_SESSIONS=10000)", ", ".join(rss), "one round per session"))
        finally:
            service.stop()

        # --- B2: the session store stays bounded (expiry) ------------------------------------------------
        rows.append(store_soak(otlp.endpoint, 20 if quick else 60, args.latency_ms))

        # --- B3: a flooding client and a quiet one (fair admission) --------------------------------------
        rows.append(fairness(otlp.endpoint, 10 if quick else 20, args.latency_ms))

        # --- C: shutdown with the Collector unreachable, rounds in flight ---------------------------------
        slow = FakeLLM(args.latency_ms)
        try:
            stop_s, statuses = asyncio.run(in_flight_then_stop(Service(slow, dead_collector())))
            rows.append(("shutdown (SIGTERM) with the Collector unreachable",
                         f"{stop_s:.1f} s", f"8 rounds in flight finished with {sorted(set(statuses))}"))
        finally:
            slow.stop()

        if not args.skip_scaling:
            rows.extend(scaling(args.latency_ms, otlp.endpoint, 8 if quick else 15))

    table = ["| measurement | result | detail |", "| --- | --- | --- |"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    header = (f"## {dt.date.today().isoformat()} — {platform.node() or 'host'}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, one uvicorn worker{' (--quick)' if quick else ''}\n")
    text = header + "\n" + "\n".join(table) + "\n"
    print(text)
    out = ROOT / "bench" / "results" / f"{dt.date.today().isoformat()}{'-quick' if quick else ''}.md"
    out.write_text(text)
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
