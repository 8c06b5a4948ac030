"""The ``memory://`` session store: a bounded in-memory LangGraph checkpointer, leases in a dict, and no
activity table (the saver expires idle sessions itself). For one process; lost on restart.

A bounded in-memory LangGraph checkpointer: idle sessions expire, the number of sessions is capped.

LangGraph's ``InMemorySaver`` keeps every checkpoint of every thread forever, and its ``delete_thread``
scans every key of every thread. ``BoundedMemorySaver`` keeps only the latest checkpoint of a thread
(what the next round resumes from), drops a thread after ``ttl_s`` idle seconds or when more than
``max_threads`` exist (least recently written first), and deletes a thread in time proportional to its
own size. For state that survives restarts or is shared by replicas, use the SQLite or Postgres savers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.base import Op, PutOp, Result
from langgraph.store.memory import InMemoryStore

from app.sessions import CANCEL, News, Outcome, Rated, RunRecord, SessionStore
from app.settings import Settings


class BoundedMemorySaver(InMemorySaver):
    """``InMemorySaver`` with an idle TTL (seconds) and a cap on threads (sessions)."""

    def __init__(self, *, max_threads: int = 10_000, ttl_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_threads < 1 or ttl_s <= 0:
            raise ValueError("max_threads must be >= 1 and ttl_s > 0")
        super().__init__()
        self.max_threads = max_threads
        self.ttl_s = ttl_s
        self._clock = clock
        self._last_write: OrderedDict[str, float] = OrderedDict()  # LRU order, oldest first

    def thread_count(self) -> int:
        """Number of live threads (sessions). (Not ``__len__``: LangGraph tests a checkpointer's truth value.)"""
        self._evict()
        return len(self._last_write)

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        """Save ``checkpoint`` as the thread's only one (older ones and their blobs are dropped), mark the
        thread as just written, and evict expired or surplus threads."""
        thread_id = str(config["configurable"]["thread_id"])
        ns = config["configurable"]["checkpoint_ns"]
        before = self._versions(thread_id, ns)
        saved = super().put(config, checkpoint, metadata, new_versions)
        self._keep_latest(thread_id, ns, checkpoint, before)
        self._last_write[thread_id] = self._clock()
        self._last_write.move_to_end(thread_id)
        self._evict()
        return saved

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The thread's checkpoint, or ``None`` when it never existed, expired or was evicted."""
        self._evict()
        return super().get_tuple(config)

    def delete_thread(self, thread_id: str) -> None:
        """Forget a thread: its checkpoints, writes and blobs, in time proportional to its own size."""
        thread_id = str(thread_id)
        for ns in list(self.storage.get(thread_id, {})):
            for channel, version in self._versions(thread_id, ns).items():
                self.blobs.pop((thread_id, ns, channel, version), None)
        for ns, checkpoints in self.storage.pop(thread_id, {}).items():
            for checkpoint_id in checkpoints:
                self.writes.pop((thread_id, ns, checkpoint_id), None)
        self._last_write.pop(thread_id, None)

    def _versions(self, thread_id: str, ns: str) -> dict[str, Any]:
        """The channel versions of the thread's checkpoint in ``ns`` (``{}``: none): the keys of its blobs, which
        are all the blobs the thread has (``_keep_latest``). Read from the stored checkpoint rather than kept
        beside it: an index of blob keys per thread cost 3.7 KB a session (tracemalloc, 1,000 sessions)."""
        checkpoints = self.storage.get(thread_id, {}).get(ns)
        if not checkpoints:
            return {}
        versions: dict[str, Any] = self.serde.loads_typed(next(reversed(checkpoints.values()))[0])["channel_versions"]
        return versions

    def _keep_latest(self, thread_id: str, ns: str, checkpoint: Checkpoint, before: dict[str, Any]) -> None:
        """Drop the thread's checkpoints but ``checkpoint`` with their writes, and the blobs of ``before`` (the
        channel versions of the checkpoint it replaces) that ``checkpoint`` no longer uses."""
        checkpoints = self.storage[thread_id][ns]
        for old in [cid for cid in checkpoints if cid != checkpoint["id"]]:
            del checkpoints[old]
            self.writes.pop((thread_id, ns, old), None)
        live = checkpoint["channel_versions"]
        for channel, version in before.items():
            if live.get(channel) != version:
                self.blobs.pop((thread_id, ns, channel, version), None)

    def _evict(self) -> None:
        horizon = self._clock() - self.ttl_s
        while self._last_write:
            thread_id, written = next(iter(self._last_write.items()))
            if written > horizon and len(self._last_write) <= self.max_threads:
                break
            self.delete_thread(thread_id)


class ExpiringMemoryStore(InMemoryStore):
    """LangGraph's ``InMemoryStore`` with time to live and a cap: an item put with a ``ttl`` (minutes, LangGraph's
    unit) is dropped once it has not been written for that long, and past ``max_items`` such items the least
    recently written go first. Items put without a ``ttl`` stay (what they hold must be bounded by its keys).
    ``clock``: seconds, monotonic."""

    supports_ttl = True

    def __init__(self, max_items: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.max_items = max_items
        self._clock = clock
        self._expires: OrderedDict[tuple[tuple[str, ...], str], float] = OrderedDict()  # oldest written first

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` (LangGraph's store operations) after dropping what expired; track the puts' lifetimes."""
        results = await super().abatch(self._track(ops))
        self._sweep()
        return results

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """As ``abatch``, synchronously."""
        results = super().batch(self._track(ops))
        self._sweep()
        return results

    def _track(self, ops: Iterable[Op]) -> list[Op]:
        """Drop what expired, then note each put's expiry (a delete, or a put without ``ttl``, has none)."""
        ops = list(ops)
        self._sweep()
        now = self._clock()
        for op in ops:
            if isinstance(op, PutOp):
                where = (op.namespace, op.key)
                self._expires.pop(where, None)
                if op.value is not None and op.ttl is not None:
                    self._expires[where] = now + op.ttl * 60
        return ops

    def _sweep(self) -> None:
        now = self._clock()
        while self._expires:
            (namespace, key), expires = next(iter(self._expires.items()))
            if expires > now and len(self._expires) <= self.max_items:
                return
            del self._expires[namespace, key]
            self._data[namespace].pop(key, None)
            if not self._data[namespace]:
                del self._data[namespace]


class MemoryLeases:
    """Leases in this process, for the in-memory session store. ``clock``: seconds, monotonic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._held: dict[str, tuple[str, float]] = {}
        self._clock = clock

    async def acquire(self, session_id: str, owner: str, ttl_s: float, succeed: str | None = None) -> bool:
        """See ``app.sessions.RoundLeases.acquire``."""
        now = self._clock()
        held = self._held.get(session_id)
        if held is not None and held[1] > now and held[0] != succeed:
            return False
        self._held[session_id] = (owner, now + ttl_s)
        return True

    async def release(self, session_id: str, owner: str) -> None:
        """See ``app.sessions.RoundLeases.release``."""
        if self._held.get(session_id, ("", 0.0))[0] == owner:
            del self._held[session_id]

    async def renew(self, session_id: str, owner: str, ttl_s: float) -> bool:
        """See ``app.sessions.RoundLeases.renew``."""
        held = self._held.get(session_id)
        if held is None or held[0] != owner:
            return False
        self._held[session_id] = (owner, self._clock() + ttl_s)
        return True


class NoActivity:
    """``memory://``: the in-memory saver expires idle sessions itself."""

    async def touch(self, session_id: str) -> None:
        """Nothing to record."""

    async def idle(self, idle_s: float, limit: int) -> list[str]:
        """Never any: see the class."""
        return []

    async def still_idle(self, session_id: str, idle_s: float) -> bool:
        """Never: see the class."""
        return False

    async def forget(self, session_id: str) -> None:
        """Nothing to drop."""


class MemoryUsage:
    """Counts in this process (``memory://``: each replica counts on its own). ``clock``: epoch seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}  # (principal, policy) → (window number, count)
        self._clock = clock

    async def add(self, principal: str, policy: str, window_s: int, amount: int) -> tuple[int, int]:
        """See ``app.sessions.Usage.add``."""
        now = self._clock()
        window = int(now // window_s)
        held = self._counts.get((principal, policy))
        count = (held[1] if held is not None and held[0] == window else 0) + amount
        self._counts[(principal, policy)] = (window, count)
        return count, max(1, math.ceil((window + 1) * window_s - now))

    async def prune(self) -> None:
        """Nothing to do: a principal keeps one count per policy, replaced when its window ends."""


class MemoryRatings:
    """Ratings in this process, of the ``max_sessions`` sessions most recently rated (sessions are evicted on
    their own; their ratings go with the least recently rated)."""

    def __init__(self, max_sessions: int) -> None:
        self._sessions: OrderedDict[str, dict[tuple[int, str], tuple[str, str | None]]] = OrderedDict()
        self._max_sessions = max_sessions

    async def rate(self, session_id: str, round_no: int, principal: str, rating: str, comment: str | None) -> Rated:
        """See ``app.sessions.Ratings.rate``."""
        ratings = self._sessions.setdefault(session_id, {})
        self._sessions.move_to_end(session_id)
        earlier = ratings.get((round_no, principal))
        ratings[(round_no, principal)] = (rating, comment)
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return "new" if earlier is None else "same" if earlier == (rating, comment) else "changed"

    async def forget(self, session_id: str) -> None:
        """See ``app.sessions.Ratings.forget``."""
        self._sessions.pop(session_id, None)


@dataclass
class _Run:
    record: RunRecord
    expires: float  # the holder's hold, clock seconds
    ended: float | None = None  # when it ended, clock seconds
    events: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, frame), seq ascending


class MemoryRuns:
    """Rounds in this process (``memory://`` and ``sqlite://``: a client reconnects to the same process), at
    most ``max_runs`` of them (the oldest ended go first). ``clock``: seconds, monotonic."""

    def __init__(self, max_runs: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._runs: OrderedDict[str, _Run] = OrderedDict()  # run id → run, oldest first
        self._news = News()
        self._sessions: dict[str, str] = {}  # session id → its latest run id
        self._max_runs = max_runs
        self._clock = clock

    def _view(self, run: _Run) -> RunRecord:
        alive = run.record.state == "running" and run.expires > self._clock()
        return replace(run.record, alive=alive) if alive != run.record.alive else run.record

    async def begin(self, run: RunRecord, ttl_s: float) -> RunRecord:
        """See ``app.sessions.RoundRuns.begin``."""
        now = self._clock()
        held = self._runs.get(run.run_id)
        if held is not None:
            if held.record.state != "running" or held.expires > now:
                return self._view(held)
            held.record = replace(held.record, attempt=held.record.attempt + 1, holder=run.holder, cancel=False)
            held.expires, held.events = now + ttl_s, []
            self._wake(run.run_id)
            return self._view(held)
        self._runs[run.run_id] = _Run(replace(run, attempt=1, state="running", alive=True), now + ttl_s)
        self._sessions[run.session_id] = run.run_id
        self._trim()
        return self._view(self._runs[run.run_id])

    def _trim(self) -> None:
        while len(self._runs) > self._max_runs:
            oldest = next((rid for rid, r in self._runs.items() if r.ended is not None), None)
            if oldest is None:
                return
            self._drop(oldest)

    def _drop(self, run_id: str) -> None:
        run = self._runs.pop(run_id)
        if self._sessions.get(run.record.session_id) == run_id:
            del self._sessions[run.record.session_id]

    async def get(self, run_id: str) -> RunRecord | None:
        """See ``app.sessions.RoundRuns.get``."""
        run = self._runs.get(run_id)
        return self._view(run) if run else None

    async def latest(self, session_id: str) -> RunRecord | None:
        """See ``app.sessions.RoundRuns.latest``."""
        run = self._runs.get(self._sessions.get(session_id, ""))
        return self._view(run) if run else None

    async def append(self, run_id: str, attempt: int, seq: int, frame: bytes) -> None:
        """See ``app.sessions.RoundRuns.append``."""
        run = self._runs.get(run_id)
        if run is not None and run.record.attempt == attempt and (not run.events or seq > run.events[-1][0]):
            run.events.append((seq, frame))
            self._wake(run_id)

    async def events(self, run_id: str, attempt: int, after: int) -> list[tuple[int, bytes]]:
        """See ``app.sessions.RoundRuns.events``."""
        run = self._runs.get(run_id)
        if run is None or run.record.attempt != attempt:
            return []
        return [(seq, frame) for seq, frame in run.events if seq > after]

    async def end(self, run_id: str, attempt: int, outcome: Outcome) -> None:
        """See ``app.sessions.RoundRuns.end``."""
        run = self._runs.get(run_id)
        if run is not None and run.record.attempt == attempt and run.record.state == "running":
            run.record = replace(run.record, state=outcome.state, alive=False, outcome=outcome)
            run.ended = self._clock()
            self._wake(run_id)

    async def heartbeat(self, run_id: str, attempt: int, ttl_s: float) -> RunRecord | None:
        """See ``app.sessions.RoundRuns.heartbeat``."""
        run = self._runs.get(run_id)
        if run is None or run.record.attempt != attempt or run.record.state != "running":
            return None
        run.expires = self._clock() + ttl_s
        return self._view(run)

    async def cancel(self, run_id: str) -> None:
        """See ``app.sessions.RoundRuns.cancel``."""
        run = self._runs.get(run_id)
        if run is not None and run.record.state == "running":
            run.record = replace(run.record, cancel=True)
            self._wake(CANCEL + run_id)

    async def changed(self, topic: str, timeout_s: float) -> None:
        """See ``app.sessions.RoundRuns.changed``."""
        await self._news.wait(topic, timeout_s)

    def watch(self, topic: str) -> asyncio.Event:
        """See ``app.sessions.RoundRuns.watch``."""
        return self._news.watch(topic)

    def _wake(self, topic: str) -> None:
        self._news.wake(topic)

    async def prune(self, retention_s: float) -> None:
        """See ``app.sessions.RoundRuns.prune``."""
        horizon = self._clock() - retention_s
        for run_id in [rid for rid, r in self._runs.items() if r.ended is not None and r.ended < horizon]:
            self._drop(run_id)


# The in-memory store never fails to reach itself.
ERRORS: tuple[type[BaseException], ...] = ()


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[SessionStore]:
    """The bounded saver (``MAX_SESSIONS``, ``SESSION_TTL_S``), leases, usage counts and ratings in this process,
    no activity table."""
    yield SessionStore(BoundedMemorySaver(max_threads=settings.max_sessions, ttl_s=settings.session_ttl_s),
                       MemoryLeases(), NoActivity(), MemoryUsage(),
                       MemoryRatings(settings.max_sessions), MemoryRuns(settings.max_sessions),
                       ExpiringMemoryStore(settings.max_sessions), ERRORS)
