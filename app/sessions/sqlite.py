"""The ``sqlite:///path.db`` session store: ``langgraph-checkpoint-sqlite``'s ``AsyncSqliteSaver``, with the
round leases (``quiz_round_leases``) and session activity (``quiz_session_activity``) in the same file,
written through the saver's own connection and lock. For one node; survives restarts.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.sqlite.aio import AsyncSqliteStore

from app.sessions import ACTIVITY, LEASES, RATINGS, USAGE, Rated, SessionStore, learner_ttl
from app.sessions.memory import MemoryRuns
from app.settings import Settings

# What this store raises when its file cannot be used (locked, gone, read-only).
ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)


async def sqlite_write(saver: AsyncSqliteSaver, *statements: tuple[str, tuple[object, ...]]) -> int:
    """Run ``statements`` (SQL, parameters) on the saver's own connection under its lock and commit them
    together; returns the row count of the last. The session tables beside the checkpoints share it."""
    async with saver.lock:
        rowcount = 0
        for sql, parameters in statements:
            cursor = await saver.conn.execute(sql, parameters)
            rowcount = cursor.rowcount
        await saver.conn.commit()
        return rowcount


class SqliteLeases:
    """Leases in the SQLite session file, through the saver's own connection and lock (wall clock)."""

    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self._saver = saver

    async def setup(self) -> None:
        """Create the lease table if it does not exist; drop leases that expired (their holders died)."""
        await sqlite_write(
            self._saver,
            (f"CREATE TABLE IF NOT EXISTS {LEASES} (session_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
             "expires_at REAL NOT NULL)", ()),
            (f"DELETE FROM {LEASES} WHERE expires_at < ?", (time.time(),)))

    async def acquire(self, session_id: str, owner: str, ttl_s: float, succeed: str | None = None) -> bool:
        """See ``app.sessions.RoundLeases.acquire``."""
        now = time.time()
        inserted = await sqlite_write(self._saver, (
            f"INSERT INTO {LEASES} (session_id, owner, expires_at) VALUES (?, ?, ?) "
            f"ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
            f"WHERE {LEASES}.expires_at < ? OR {LEASES}.owner = ?", (session_id, owner, now + ttl_s, now, succeed)))
        return inserted == 1

    async def release(self, session_id: str, owner: str) -> None:
        """See ``app.sessions.RoundLeases.release``."""
        await sqlite_write(self._saver, (f"DELETE FROM {LEASES} WHERE session_id = ? AND owner = ?",
                                         (session_id, owner)))

    async def renew(self, session_id: str, owner: str, ttl_s: float) -> bool:
        """See ``app.sessions.RoundLeases.renew``."""
        return await sqlite_write(self._saver, (
            f"UPDATE {LEASES} SET expires_at = ? WHERE session_id = ? AND owner = ?",
            (time.time() + ttl_s, session_id, owner))) == 1


class SqliteActivity:
    """Activity in the SQLite session file, through the saver's own connection and lock (wall clock)."""

    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self._saver = saver

    async def setup(self) -> None:
        """Create the table; give every stored session without a row one (it expires from now)."""
        await sqlite_write(
            self._saver,
            (f"CREATE TABLE IF NOT EXISTS {ACTIVITY} (session_id TEXT PRIMARY KEY, last_played REAL NOT NULL)", ()),
            (f"INSERT INTO {ACTIVITY} (session_id, last_played) SELECT DISTINCT thread_id, ? FROM checkpoints "
             "WHERE true ON CONFLICT (session_id) DO NOTHING", (time.time(),)))

    async def touch(self, session_id: str) -> None:
        """See ``app.sessions.SessionActivity.touch``."""
        await sqlite_write(self._saver, (f"INSERT INTO {ACTIVITY} (session_id, last_played) VALUES (?, ?) "
                                         "ON CONFLICT (session_id) DO UPDATE SET last_played = excluded.last_played",
                                         (session_id, time.time())))

    async def idle(self, idle_s: float, limit: int) -> list[str]:
        """See ``app.sessions.SessionActivity.idle``."""
        async with self._saver.lock, self._saver.conn.execute(
                f"SELECT session_id FROM {ACTIVITY} WHERE last_played < ? ORDER BY last_played LIMIT ?",
                (time.time() - idle_s, limit)) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    async def still_idle(self, session_id: str, idle_s: float) -> bool:
        """See ``app.sessions.SessionActivity.still_idle``."""
        async with self._saver.lock, self._saver.conn.execute(
                f"SELECT 1 FROM {ACTIVITY} WHERE session_id = ? AND last_played < ?",
                (session_id, time.time() - idle_s)) as cursor:
            return await cursor.fetchone() is not None

    async def forget(self, session_id: str) -> None:
        """See ``app.sessions.SessionActivity.forget``."""
        await sqlite_write(self._saver, (f"DELETE FROM {ACTIVITY} WHERE session_id = ?", (session_id,)))


class SqliteUsage:
    """Usage counts in the SQLite session file (wall clock), through the saver's connection and lock."""

    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self._saver = saver

    async def setup(self) -> None:
        """Create the table (idempotent)."""
        await sqlite_write(self._saver, (
            f"CREATE TABLE IF NOT EXISTS {USAGE} (principal TEXT NOT NULL, policy TEXT NOT NULL, window_end REAL "
            "NOT NULL, used INTEGER NOT NULL, PRIMARY KEY (principal, policy, window_end))", ()))

    async def add(self, principal: str, policy: str, window_s: int, amount: int) -> tuple[int, int]:
        """See ``app.sessions.Usage.add``."""
        now = time.time()
        window_end = (now // window_s + 1) * window_s
        async with self._saver.lock:
            cursor = await self._saver.conn.execute(
                f"INSERT INTO {USAGE} (principal, policy, window_end, used) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (principal, policy, window_end) DO UPDATE SET used = used + excluded.used "
                "RETURNING used", (principal, policy, window_end, amount))
            (used,) = await cursor.fetchone() or (amount,)
            await self._saver.conn.commit()
        return int(used), max(1, math.ceil(window_end - now))

    async def prune(self) -> None:
        """See ``app.sessions.Usage.prune``."""
        await sqlite_write(self._saver, (f"DELETE FROM {USAGE} WHERE window_end < ?", (time.time(),)))


class SqliteRatings:
    """Ratings in the SQLite session file, through the saver's connection and lock (one writer: atomic)."""

    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self._saver = saver

    async def setup(self) -> None:
        """Create the table (idempotent)."""
        await sqlite_write(self._saver, (
            f"CREATE TABLE IF NOT EXISTS {RATINGS} (session_id TEXT NOT NULL, round INTEGER NOT NULL, principal "
            "TEXT NOT NULL, rating TEXT NOT NULL, comment TEXT, PRIMARY KEY (session_id, round, principal))", ()))

    async def rate(self, session_id: str, round_no: int, principal: str, rating: str, comment: str | None) -> Rated:
        """See ``app.sessions.Ratings.rate``."""
        key = (session_id, round_no, principal)
        async with self._saver.lock:
            async with self._saver.conn.execute(
                    f"SELECT rating, comment FROM {RATINGS} WHERE session_id = ? AND round = ? AND principal = ?",
                    key) as cursor:
                earlier = await cursor.fetchone()
            if earlier is not None and tuple(earlier) == (rating, comment):
                return "same"
            await self._saver.conn.execute(
                f"INSERT INTO {RATINGS} (session_id, round, principal, rating, comment) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (session_id, round, principal) DO UPDATE SET rating = excluded.rating, "
                "comment = excluded.comment", (*key, rating, comment))
            await self._saver.conn.commit()
        return "new" if earlier is None else "changed"

    async def forget(self, session_id: str) -> None:
        """See ``app.sessions.Ratings.forget``."""
        await sqlite_write(self._saver, (f"DELETE FROM {RATINGS} WHERE session_id = ?", (session_id,)))


def path_of(url: str) -> str:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL; ``ValueError`` without one."""
    path = url.removeprefix("sqlite://").removeprefix("/") if url.startswith("sqlite:///") else ""
    if not path:
        raise ValueError(f"CHECKPOINTER_URL={url!r}: use sqlite:///relative.db or sqlite:////absolute/path.db")
    return path


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[SessionStore]:
    """Open the file (creating its folder and tables), yield the store, close it on exit."""
    path = path_of(settings.checkpointer_url)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        await saver.setup()
        leases = SqliteLeases(saver)
        await leases.setup()
        activity = SqliteActivity(saver)
        await activity.setup()
        usage = SqliteUsage(saver)
        await usage.setup()
        ratings = SqliteRatings(saver)
        await ratings.setup()
        # Learners in LangGraph's SQLite store, on a connection of its own to the same file (each keeps its own
        # transactions), expired by its TTL sweeper.
        async with AsyncSqliteStore.from_conn_string(path, ttl=learner_ttl()) as learners:
            await learners.setup()
            await learners.start_ttl_sweeper()
            try:
                # Rounds in progress and their events stay in this process: a client reconnects to the same node.
                yield SessionStore(saver, leases, activity, usage, ratings, MemoryRuns(settings.max_sessions),
                                   learners, ERRORS)
            finally:
                await learners.stop_ttl_sweeper()
