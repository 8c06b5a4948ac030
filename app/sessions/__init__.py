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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver

if TYPE_CHECKING:
    from app.settings import Settings

LEASES = "quiz_round_leases"  # table of the round leases (SQLite and Postgres)
ACTIVITY = "quiz_session_activity"  # table of when each session last finished a round (SQLite and Postgres)
USAGE = "quiz_usage"  # table of each principal's rounds and tokens per fixed window (app.limits)
RATINGS = "quiz_ratings"  # table of each principal's rating of each round (feedback, once per round)
Rated = Literal["new", "changed", "same"]  # what a rating did: a first one, a change of mind, nothing

class RoundLeases(Protocol):
    """Exclusive, expiring leases on session ids. Store errors propagate (the store's ``SessionStore.errors``)."""

    async def acquire(self, session_id: str, owner: str, ttl_s: float) -> bool:
        """Take the lease for ``ttl_s`` seconds; ``False`` when another owner holds an unexpired one."""
        ...

    async def release(self, session_id: str, owner: str) -> None:
        """Give the lease back; nothing happens if ``owner`` no longer holds it."""
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


@dataclass(frozen=True)
class SessionStore:
    """Where sessions live: the LangGraph checkpointer, the round leases, activity, usage counts and ratings
    kept beside it, and the exceptions the store raises when its database cannot be reached (``errors``:
    caught as 503 ``session-store-unavailable``)."""

    checkpointer: BaseCheckpointSaver
    leases: RoundLeases
    activity: SessionActivity
    usage: Usage
    ratings: Ratings
    errors: tuple[type[BaseException], ...] = ()


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
