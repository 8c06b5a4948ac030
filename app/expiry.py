"""Idle sessions expire on every store, not only in memory: ``SESSION_TTL_S`` after their last round.

``memory://`` expires by itself (``graphs.checkpoint.BoundedMemorySaver``). For SQLite and Postgres the
service records when each session last finished a round (table ``quiz_session_activity``, beside the
checkpoints and the round leases) and sweeps every ``SESSION_SWEEP_INTERVAL_S``: a session idle for longer is
deleted with every checkpoint of it (``BaseCheckpointSaver.adelete_thread``). Safe with several replicas: each
session is deleted under its round lease (``app.leases``), so a round in progress keeps it, two sweepers never
both delete it, and it is checked again under the lease before anything goes.

Order under the lease: checkpoints first, then the activity row — a sweeper that dies in between leaves a row
that the next sweep finishes. Sessions a store held before this table existed are given a row at start
(``setup``), so they expire too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver

from app.errors import STORE_ERRORS
from app.leases import RoundLeases, sqlite_write

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)
TABLE = "quiz_session_activity"


class SessionActivity(Protocol):
    """When each session last finished a round. Store errors propagate (``app.errors.STORE_ERRORS``)."""

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


class SqliteActivity:
    """Activity in the SQLite session file, through the saver's own connection and lock (wall clock)."""

    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self._saver = saver

    async def setup(self) -> None:
        """Create the table; give every stored session without a row one (it expires from now)."""
        await sqlite_write(
            self._saver,
            (f"CREATE TABLE IF NOT EXISTS {TABLE} (session_id TEXT PRIMARY KEY, last_played REAL NOT NULL)", ()),
            (f"INSERT INTO {TABLE} (session_id, last_played) SELECT DISTINCT thread_id, ? FROM checkpoints "
             "WHERE true ON CONFLICT (session_id) DO NOTHING", (time.time(),)))

    async def touch(self, session_id: str) -> None:
        """See ``SessionActivity.touch``."""
        await sqlite_write(self._saver, (f"INSERT INTO {TABLE} (session_id, last_played) VALUES (?, ?) "
                                         "ON CONFLICT (session_id) DO UPDATE SET last_played = excluded.last_played",
                                         (session_id, time.time())))

    async def idle(self, idle_s: float, limit: int) -> list[str]:
        """See ``SessionActivity.idle``."""
        async with self._saver.lock, self._saver.conn.execute(
                f"SELECT session_id FROM {TABLE} WHERE last_played < ? ORDER BY last_played LIMIT ?",
                (time.time() - idle_s, limit)) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    async def still_idle(self, session_id: str, idle_s: float) -> bool:
        """See ``SessionActivity.still_idle``."""
        async with self._saver.lock, self._saver.conn.execute(
                f"SELECT 1 FROM {TABLE} WHERE session_id = ? AND last_played < ?",
                (session_id, time.time() - idle_s)) as cursor:
            return await cursor.fetchone() is not None

    async def forget(self, session_id: str) -> None:
        """See ``SessionActivity.forget``."""
        await sqlite_write(self._saver, (f"DELETE FROM {TABLE} WHERE session_id = ?", (session_id,)))


class PostgresActivity:
    """Activity in the Postgres session database, timed by the database's clock."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self._pool = pool

    async def setup(self) -> None:
        """Create the table (idempotent); give every stored session without a row one (it expires from now)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (session_id TEXT PRIMARY KEY, last_played TIMESTAMPTZ NOT NULL)")
            await conn.execute(f"INSERT INTO {TABLE} (session_id, last_played) SELECT DISTINCT thread_id, now() "
                               "FROM checkpoints ON CONFLICT (session_id) DO NOTHING")

    async def touch(self, session_id: str) -> None:
        """See ``SessionActivity.touch``."""
        async with self._pool.connection() as conn:
            await conn.execute(f"INSERT INTO {TABLE} (session_id, last_played) VALUES (%s, now()) "
                               "ON CONFLICT (session_id) DO UPDATE SET last_played = EXCLUDED.last_played",
                               (session_id,))

    async def idle(self, idle_s: float, limit: int) -> list[str]:
        """See ``SessionActivity.idle``."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT session_id FROM {TABLE} WHERE last_played < now() - make_interval(secs => %s) "
                "ORDER BY last_played LIMIT %s", (idle_s, limit))
            return [row["session_id"] for row in await cursor.fetchall()]

    async def still_idle(self, session_id: str, idle_s: float) -> bool:
        """See ``SessionActivity.still_idle``."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT 1 FROM {TABLE} WHERE session_id = %s AND last_played < now() - make_interval(secs => %s)",
                (session_id, idle_s))
            return await cursor.fetchone() is not None

    async def forget(self, session_id: str) -> None:
        """See ``SessionActivity.forget``."""
        async with self._pool.connection() as conn:
            await conn.execute(f"DELETE FROM {TABLE} WHERE session_id = %s", (session_id,))


async def delete_session(checkpointer: BaseCheckpointSaver, activity: SessionActivity, session_id: str) -> None:
    """Delete every checkpoint of ``session_id``, then its activity row (call it under the session's lease).
    In this order, a deletion cut short leaves a row, and the next sweep finishes it."""
    await checkpointer.adelete_thread(session_id)
    await activity.forget(session_id)


async def sweep(checkpointer: BaseCheckpointSaver, leases: RoundLeases, activity: SessionActivity,
                idle_s: float, lease_s: float, limit: int = 200) -> int:
    """Delete up to ``limit`` sessions idle for more than ``idle_s`` seconds; returns how many went.

    Each under its round lease (held up to ``lease_s``): a session whose round is playing, or that another
    replica is sweeping, is skipped; one that finished a round since it was listed is kept.
    """
    removed = 0
    for session_id in await activity.idle(idle_s, limit):
        owner = secrets.token_hex(8)
        if not await leases.acquire(session_id, owner, lease_s):
            continue
        try:
            if not await activity.still_idle(session_id, idle_s):  # played meanwhile: keep it
                continue
            await delete_session(checkpointer, activity, session_id)
            removed += 1
        finally:
            await leases.release(session_id, owner)
    return removed


async def expire_idle_sessions(checkpointer: BaseCheckpointSaver, leases: RoundLeases,
                               activity: SessionActivity, idle_s: float, lease_s: float,
                               interval_s: float) -> None:
    """Run ``sweep`` every ``interval_s`` seconds until cancelled; a store that is down is retried next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            removed = await sweep(checkpointer, leases, activity, idle_s, lease_s)
        except STORE_ERRORS as exc:
            log.warning("session expiry: the session store is unavailable (%s: %s); retrying in %.0f s",
                        type(exc).__name__, exc, interval_s)
            continue
        if removed:
            log.info("session expiry: %d idle session(s) deleted", removed)
