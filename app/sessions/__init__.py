"""Where sessions live: one LangGraph checkpointer per process, chosen by one setting (``CHECKPOINTER_URL``),
with the round leases and the session activity kept beside it. One module per backend builds all three and
names its own errors:

| URL | module | saver | for |
| --- | --- | --- | --- |
| ``memory://`` (default) | ``app.sessions.memory`` | ``BoundedMemorySaver`` (TTL, cap) | one process, lost on restart |
| ``sqlite:///data/sessions.db`` | ``app.sessions.sqlite`` | ``AsyncSqliteSaver`` | one node, survives restarts |
| ``postgresql://user@host:5432/db`` | ``app.sessions.postgres`` | ``AsyncPostgresSaver`` | several replicas |

Idle sessions are swept by ``app.sessions.sweeper``.

One round at a time per session: a lease, held in the session store itself, while a round plays.

The policy is LangGraph Platform's ``multitask_strategy="reject"`` for double-texting
(https://docs.langchain.com/langgraph-platform/double-texting): a second round on a session whose round is
still playing is refused at once with 409 ``round-in-progress`` and ``Retry-After``. Rejecting — not queueing,
not interrupting — because a quiz round is one question and its grade: queueing would play a round the
client never asked to see twice (a double-click, a retry), and interrupting would throw away a round whose
LLM calls are already paid for. The client retries after the first round has finished, and then sees it.

The lease lives where the sessions live, so it holds across processes and replicas:

| store | lease | atomicity |
| --- | --- | --- |
| ``memory://`` | a dict in the process (the sessions are in the process too) | one event loop |
| ``sqlite://`` | table ``quiz_round_leases`` in the same file | one ``INSERT … ON CONFLICT … WHERE`` statement |
| ``postgresql://`` | table ``quiz_round_leases`` in the same database | the same, on the database's clock |

A lease expires after ``ttl_s`` seconds, so a process that dies mid-round cannot lock its session forever;
each start drops the expired rows, so the tables hold little more than the rounds in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore, TTLConfig

if TYPE_CHECKING:
    from app.settings import Settings

LEASES = "quiz_round_leases"  # table of the round leases (SQLite and Postgres)
ACTIVITY = "quiz_session_activity"  # table of when each session last finished a round (SQLite and Postgres)
USAGE = "quiz_usage"  # table of each principal's rounds and tokens per fixed window (app.limits)
RATINGS = "quiz_ratings"  # table of each principal's rating of each round (feedback, once per round)
RUNS = "quiz_rounds"  # table of the rounds played or playing: idempotency, holder, outcome (app.runs)
RUN_EVENTS = "quiz_round_events"  # table of each round's stream events, for a client that reconnects
CANCEL = "!"  # the prefix of the news topic that tells a round's holder to stop it (RoundRuns.changed)
RUN_CHANNEL = "quiz_rounds"  # Postgres NOTIFY channel: a round's id, when it has news (an event, its end, a cancel)
Rated = Literal["new", "changed", "same"]  # what a rating did: a first one, a change of mind, nothing


class News:
    """This process's waiters for news of a topic (a round's id, or ``CANCEL`` + it): ``wait`` until the topic
    is woken or ``timeout_s`` passes, ``wake`` every waiter of a topic. A topic's event lives only while someone
    holds it (a weak-valued map): a round's heartbeat is cancelled, not woken, when the round ends, and a
    follower may watch a round that never has news again; neither leaves an event behind."""

    def __init__(self) -> None:
        self._events: weakref.WeakValueDictionary[str, asyncio.Event] = weakref.WeakValueDictionary()

    def watch(self, topic: str) -> asyncio.Event:
        """The event the next ``wake(topic)`` sets (the same one for every watcher until then); hold it while
        waiting on it."""
        news = self._events.get(topic)
        if news is None:
            news = self._events[topic] = asyncio.Event()
        return news

    async def wait(self, topic: str, timeout_s: float) -> None:
        """Return when ``topic`` is woken, or after ``timeout_s`` seconds (no error: look again)."""
        news = self.watch(topic)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await news.wait()

    def wake(self, topic: str) -> None:
        """Wake every waiter of ``topic`` now."""
        news = self._events.pop(topic, None)
        if news is not None:
            news.set()

    def topics(self) -> int:
        """How many topics someone waits on or holds now."""
        return len(self._events)


class RoundLeases(Protocol):
    """Exclusive, expiring leases on session ids. Store errors propagate (the store's ``SessionStore.errors``)."""

    async def acquire(self, session_id: str, owner: str, ttl_s: float, succeed: str | None = None) -> bool:
        """Take the lease for ``ttl_s`` seconds; ``False`` when another owner holds an unexpired one — unless
        that owner is ``succeed``: the holder of a round whose heartbeat has stopped, which a retry takes over
        (``app.runs``) without waiting for the lease to run out too."""
        ...

    async def release(self, session_id: str, owner: str) -> None:
        """Give the lease back; nothing happens if ``owner`` no longer holds it."""
        ...

    async def renew(self, session_id: str, owner: str, ttl_s: float) -> bool:
        """Extend ``owner``'s lease to ``ttl_s`` seconds from now (the holder's heartbeat); ``False`` when
        ``owner`` no longer holds it (it expired and was taken, or was released)."""
        ...


class SessionActivity(Protocol):
    """When each session last finished a round. Store errors propagate (the store's ``SessionStore.errors``)."""

    async def touch(self, session_id: str) -> None:
        """Record that ``session_id`` finished a round now."""
        ...

    async def idle(self, idle_s: float, limit: int) -> list[str]:
        """Up to ``limit`` sessions whose last round finished more than ``idle_s`` seconds ago, oldest first."""
        ...

    async def still_idle(self, session_id: str, idle_s: float) -> bool:
        """Whether ``session_id`` finished no round in the last ``idle_s`` seconds (and has a row)."""
        ...

    async def forget(self, session_id: str) -> None:
        """Drop the session's row (it was deleted)."""
        ...


class Usage(Protocol):
    """Each principal's use per policy and fixed window, shared by every replica on the same store (the limits
    of ``app.limits``). Store errors propagate (the store's ``SessionStore.errors``)."""

    async def add(self, principal: str, policy: str, window_s: int, amount: int) -> tuple[int, int]:
        """Add ``amount`` (0: only read) to ``principal``'s count under ``policy`` in the current window of
        ``window_s`` seconds, aligned to the epoch on the store's clock, in one atomic step; return the count
        now and the whole seconds until the window ends (≥ 1)."""
        ...

    async def prune(self) -> None:
        """Drop the counts of windows that have ended."""
        ...


class Ratings(Protocol):
    """Each principal's rating of a kept round: one per (session, round, principal). Store errors propagate."""

    async def rate(self, session_id: str, round_no: int, principal: str, rating: str, comment: str | None) -> Rated:
        """Keep this rating, replacing the principal's earlier one of the round, atomically: ``"new"`` (the
        first), ``"changed"`` (rating or comment differ from the earlier one) or ``"same"`` (nothing changed)."""
        ...

    async def forget(self, session_id: str) -> None:
        """Drop every rating of the session (it was deleted)."""
        ...


RunState = Literal["running", "finished", "failed", "cancelled", "lost"]


@dataclass(frozen=True)
class Outcome:
    """How a round ended, as its answer to a JSON request: ``state`` (never ``running``), the HTTP
    ``status``, the JSON ``body`` (the round, or a problem) and the response ``headers`` (``Retry-After``)."""

    state: RunState
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    """A round as the store keeps it (``app.runs``): ``run_id`` (unique), its session, the principal it plays
    for, the client's idempotency ``key`` (``None``: none sent) and the request's ``fingerprint``; ``attempt``
    (1, then +1 each time a retry takes over a round whose holder died), the ``holder`` (a token of the process
    playing it), ``state``, whether its holder's heartbeat is fresh (``alive``), whether a cancel was asked
    (``cancel``) and, once ended, its ``outcome``."""

    run_id: str
    session_id: str
    principal: str
    key: str | None
    fingerprint: str
    attempt: int
    holder: str
    state: RunState
    alive: bool
    cancel: bool = False
    outcome: Outcome | None = None


class RoundRuns(Protocol):
    """The rounds played or playing, each with its stream's events, shared by every replica on the same store
    (``memory://`` and ``sqlite://``: this process only). Kept ``retention_s`` after they end (idempotency keys
    answer with the first round's outcome that long). Store errors propagate."""

    async def begin(self, run: RunRecord, ttl_s: float) -> RunRecord:
        """Record ``run`` as running, held by ``run.holder`` for ``ttl_s`` seconds, in one atomic step, unless
        ``run.run_id`` is kept already (a round with an idempotency key has an id made of it: ``app.runs``):
        then that round, unchanged — or taken over (``attempt`` + 1, its events dropped, ``holder`` now
        ``run.holder``) when it is still running and its holder's heartbeat has expired (the holder died).
        It is ours when its ``holder`` is ``run.holder``."""
        ...

    async def get(self, run_id: str) -> RunRecord | None:
        """The round ``run_id`` (``None``: none kept)."""
        ...

    async def latest(self, session_id: str) -> RunRecord | None:
        """The session's most recent round (``None``: none kept)."""
        ...

    async def append(self, run_id: str, attempt: int, seq: int, frame: bytes) -> None:
        """Keep event ``seq`` (1, 2, …) of the round's ``attempt``: ``frame``, the stream bytes sent for it."""
        ...

    async def events(self, run_id: str, attempt: int, after: int) -> list[tuple[int, bytes]]:
        """The round's events of ``attempt`` numbered above ``after``, in order, as ``(seq, frame)``."""
        ...

    async def end(self, run_id: str, attempt: int, outcome: Outcome) -> None:
        """Record the round's ``outcome`` (if ``attempt`` is still the round's: a holder that was taken over
        records nothing)."""
        ...

    async def heartbeat(self, run_id: str, attempt: int, ttl_s: float) -> RunRecord | None:
        """Extend the holder's hold by ``ttl_s`` seconds; the record as it is now (``cancel`` asked?), or
        ``None`` when ``attempt`` is no longer the round's or it has ended."""
        ...

    async def cancel(self, run_id: str) -> None:
        """Ask the holder of a running round to stop it: the flag on the record, and news on ``CANCEL + run_id``."""
        ...

    async def changed(self, topic: str, timeout_s: float) -> None:
        """Wait until ``topic`` has news or ``timeout_s`` seconds pass (a hint, not a promise: read again after
        it returns). Topics: a round's id (an event, its end, a take-over) and ``CANCEL`` + its id (a cancel)."""
        ...

    def watch(self, topic: str) -> asyncio.Event:
        """An event set at ``topic``'s next news: take it *before* reading what the news would be about, then
        wait on it, so that news arriving in between is not missed (``changed`` can miss it)."""
        ...

    async def prune(self, retention_s: float) -> None:
        """Drop the rounds (and their events) that ended more than ``retention_s`` seconds ago."""
        ...


@dataclass(frozen=True)
class SessionStore:
    """Where sessions live: the LangGraph checkpointer, the round leases, activity, usage counts, ratings, rounds
    and LangGraph's store of learners kept beside it, and the exceptions the store raises when its database
    cannot be reached (``errors``: caught as 503 ``session-store-unavailable``)."""

    checkpointer: BaseCheckpointSaver
    leases: RoundLeases
    activity: SessionActivity
    usage: Usage
    ratings: Ratings
    runs: RoundRuns
    # LangGraph's long-term store, beside the checkpoints: learners and question calibrations (app.learners).
    learners: BaseStore
    errors: tuple[type[BaseException], ...] = ()


def learner_ttl() -> TTLConfig:
    """LangGraph's store TTL settings for the learners (``app.learners`` puts each learner with ``LEARNER_TTL_S``,
    calibrations without a TTL): expired items swept hourly."""
    return TTLConfig(sweep_interval_minutes=60, refresh_on_read=False)


class CheckpointerUnavailable(RuntimeError):
    """The session store named by ``CHECKPOINTER_URL`` cannot be opened at start-up."""


def describe(url: str) -> str:
    """The checkpointer kind without credentials (for logs and ``/health``)."""
    return url.split(":", 1)[0]


@asynccontextmanager
async def open_session_store(settings: Settings) -> AsyncIterator[SessionStore]:
    """Open the store ``settings.checkpointer_url`` names and close it on exit. Only that backend's driver is
    imported. Raises ``ValueError`` for a ``sqlite:`` URL without a path and ``CheckpointerUnavailable``
    (naming the host, never the password) when the database cannot be reached at start-up."""
    scheme = describe(settings.checkpointer_url)
    if scheme == "memory":
        from app.sessions.memory import open_store
    elif scheme == "sqlite":
        from app.sessions.sqlite import open_store
    else:  # postgres:// or postgresql:// (Settings refuses any other scheme)
        from app.sessions.postgres import open_store
    async with open_store(settings) as store:
        yield store
