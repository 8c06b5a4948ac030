"""One round at a time per session: a lease, held in the session store itself, while a round plays.

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

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow
    from psycopg_pool import AsyncConnectionPool

TABLE = "quiz_round_leases"


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


class RoundLeases(Protocol):
    """Exclusive, expiring leases on session ids. Store errors propagate (``app.errors.STORE_ERRORS``)."""

    async def acquire(self, session_id: str, owner: str, ttl_s: float) -> bool:
        """Take the lease for ``ttl_s`` seconds; ``False`` when another owner holds an unexpired one."""
        ...

    async def release(self, session_id: str, owner: str) -> None:
        """Give the lease back; nothing happens if ``owner`` no longer holds it."""
        ...


class MemoryLeases:
    """Leases in this process, for the in-memory session store. ``clock``: seconds, monotonic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._held: dict[str, tuple[str, float]] = {}
        self._clock = clock

    async def acquire(self, session_id: str, owner: str, ttl_s: float) -> bool:
        """See ``RoundLeases.acquire``."""
        now = self._clock()
        held = self._held.get(session_id)
        if held is not None and held[1] > now:
            return False
        self._held[session_id] = (owner, now + ttl_s)
        return True

    async def release(self, session_id: str, owner: str) -> None:
        """See ``RoundLeases.release``."""
        if self._held.get(session_id, ("", 0.0))[0] == owner:
            del self._held[session_id]


class SqliteLeases:
    """Leases in the SQLite session file, through the saver's own connection and lock (wall clock)."""

    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self._saver = saver

    async def setup(self) -> None:
        """Create the lease table if it does not exist; drop leases that expired (their holders died)."""
        await sqlite_write(
            self._saver,
            (f"CREATE TABLE IF NOT EXISTS {TABLE} (session_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
             "expires_at REAL NOT NULL)", ()),
            (f"DELETE FROM {TABLE} WHERE expires_at < ?", (time.time(),)))

    async def acquire(self, session_id: str, owner: str, ttl_s: float) -> bool:
        """See ``RoundLeases.acquire``."""
        now = time.time()
        inserted = await sqlite_write(self._saver, (
            f"INSERT INTO {TABLE} (session_id, owner, expires_at) VALUES (?, ?, ?) "
            f"ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
            f"WHERE {TABLE}.expires_at < ?", (session_id, owner, now + ttl_s, now)))
        return inserted == 1

    async def release(self, session_id: str, owner: str) -> None:
        """See ``RoundLeases.release``."""
        await sqlite_write(self._saver, (f"DELETE FROM {TABLE} WHERE session_id = ? AND owner = ?",
                                         (session_id, owner)))


class PostgresLeases:
    """Leases in the Postgres session database, timed by the database's clock (replicas' clocks may differ)."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self._pool = pool

    async def setup(self) -> None:
        """Create the lease table if it does not exist (idempotent, like the saver's migrations); drop
        leases that expired (their holders died), so the table holds only rounds in progress."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (session_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                "expires_at TIMESTAMPTZ NOT NULL)")
            await conn.execute(f"DELETE FROM {TABLE} WHERE expires_at < now()")

    async def acquire(self, session_id: str, owner: str, ttl_s: float) -> bool:
        """See ``RoundLeases.acquire``. One autocommitted statement: concurrent callers serialise on the row."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"INSERT INTO {TABLE} (session_id, owner, expires_at) "
                "VALUES (%s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (session_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at "
                f"WHERE {TABLE}.expires_at < now() RETURNING owner", (session_id, owner, ttl_s))
            return await cursor.fetchone() is not None

    async def release(self, session_id: str, owner: str) -> None:
        """See ``RoundLeases.release``."""
        async with self._pool.connection() as conn:
            await conn.execute(f"DELETE FROM {TABLE} WHERE session_id = %s AND owner = %s", (session_id, owner))
