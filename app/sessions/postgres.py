"""The ``postgresql://user@host:5432/db`` session store: ``langgraph-checkpoint-postgres``'s
``AsyncPostgresSaver`` on a connection pool, with the round leases and session activity in the same database,
timed by the database's clock (replicas' clocks may differ). For several replicas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.sessions import ACTIVITY, LEASES, RATINGS, USAGE, CheckpointerUnavailable, Rated, SessionStore
from app.settings import Settings, redact

# What this store raises when the database cannot be reached (down, connection lost, pool exhausted).
ERRORS: tuple[type[BaseException], ...] = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


class PostgresLeases:
    """Leases in the Postgres session database, timed by the database's clock (replicas' clocks may differ)."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self._pool = pool

    async def setup(self) -> None:
        """Create the lease table if it does not exist (idempotent, like the saver's migrations); drop
        leases that expired (their holders died), so the table holds only rounds in progress."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {LEASES} (session_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                "expires_at TIMESTAMPTZ NOT NULL)")
            await conn.execute(f"DELETE FROM {LEASES} WHERE expires_at < now()")

    async def acquire(self, session_id: str, owner: str, ttl_s: float) -> bool:
        """See ``app.sessions.RoundLeases.acquire``. One autocommitted statement: concurrent callers serialise
        on the row."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"INSERT INTO {LEASES} (session_id, owner, expires_at) "
                "VALUES (%s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (session_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at "
                f"WHERE {LEASES}.expires_at < now() RETURNING owner", (session_id, owner, ttl_s))
            return await cursor.fetchone() is not None

    async def release(self, session_id: str, owner: str) -> None:
        """See ``app.sessions.RoundLeases.release``."""
        async with self._pool.connection() as conn:
            await conn.execute(f"DELETE FROM {LEASES} WHERE session_id = %s AND owner = %s", (session_id, owner))


class PostgresActivity:
    """Activity in the Postgres session database, timed by the database's clock."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self._pool = pool

    async def setup(self) -> None:
        """Create the table (idempotent); give every stored session without a row one (it expires from now)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {ACTIVITY} (session_id TEXT PRIMARY KEY, "
                "last_played TIMESTAMPTZ NOT NULL)")
            await conn.execute(f"INSERT INTO {ACTIVITY} (session_id, last_played) SELECT DISTINCT thread_id, now() "
                               "FROM checkpoints ON CONFLICT (session_id) DO NOTHING")

    async def touch(self, session_id: str) -> None:
        """See ``app.sessions.SessionActivity.touch``."""
        async with self._pool.connection() as conn:
            await conn.execute(f"INSERT INTO {ACTIVITY} (session_id, last_played) VALUES (%s, now()) "
                               "ON CONFLICT (session_id) DO UPDATE SET last_played = EXCLUDED.last_played",
                               (session_id,))

    async def idle(self, idle_s: float, limit: int) -> list[str]:
        """See ``app.sessions.SessionActivity.idle``."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT session_id FROM {ACTIVITY} WHERE last_played < now() - make_interval(secs => %s) "
                "ORDER BY last_played LIMIT %s", (idle_s, limit))
            return [row["session_id"] for row in await cursor.fetchall()]

    async def still_idle(self, session_id: str, idle_s: float) -> bool:
        """See ``app.sessions.SessionActivity.still_idle``."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT 1 FROM {ACTIVITY} WHERE session_id = %s AND last_played < now() - make_interval(secs => %s)",
                (session_id, idle_s))
            return await cursor.fetchone() is not None

    async def forget(self, session_id: str) -> None:
        """See ``app.sessions.SessionActivity.forget``."""
        async with self._pool.connection() as conn:
            await conn.execute(f"DELETE FROM {ACTIVITY} WHERE session_id = %s", (session_id,))


class PostgresUsage:
    """Usage counts in the Postgres session database, timed by the database's clock: every replica counts in
    the same row, one atomic upsert per count."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self._pool = pool

    async def setup(self) -> None:
        """Create the table (idempotent)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {USAGE} (principal TEXT NOT NULL, policy TEXT NOT NULL, "
                "window_end TIMESTAMPTZ NOT NULL, used BIGINT NOT NULL, PRIMARY KEY (principal, policy, window_end))")

    async def add(self, principal: str, policy: str, window_s: int, amount: int) -> tuple[int, int]:
        """See ``app.sessions.Usage.add``."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"INSERT INTO {USAGE} (principal, policy, window_end, used) VALUES (%(principal)s, %(policy)s, "
                "to_timestamp((floor(extract(epoch FROM now()) / %(window)s) + 1) * %(window)s), %(amount)s) "
                f"ON CONFLICT (principal, policy, window_end) DO UPDATE SET used = {USAGE}.used + EXCLUDED.used "
                "RETURNING used, ceil(extract(epoch FROM window_end - now()))::bigint AS reset_s",
                {"principal": principal, "policy": policy, "window": window_s, "amount": amount})
            row = await cursor.fetchone()
            assert row is not None  # an upsert with RETURNING always returns its row
            return int(row["used"]), max(1, int(row["reset_s"]))

    async def prune(self) -> None:
        """See ``app.sessions.Usage.prune``."""
        async with self._pool.connection() as conn:
            await conn.execute(f"DELETE FROM {USAGE} WHERE window_end < now()")


class PostgresRatings:
    """Ratings in the Postgres session database: one upsert decides, across replicas, whether a rating is the
    principal's first of the round (``xmax = 0``: the row was inserted, not updated)."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self._pool = pool

    async def setup(self) -> None:
        """Create the table (idempotent)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {RATINGS} (session_id TEXT NOT NULL, round INTEGER NOT NULL, "
                "principal TEXT NOT NULL, rating TEXT NOT NULL, comment TEXT, "
                "PRIMARY KEY (session_id, round, principal))")

    async def rate(self, session_id: str, round_no: int, principal: str, rating: str, comment: str | None) -> Rated:
        """See ``app.sessions.Ratings.rate``: no row back means the rating was already this one."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"INSERT INTO {RATINGS} (session_id, round, principal, rating, comment) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (session_id, round, principal) DO UPDATE SET rating = EXCLUDED.rating, "
                f"comment = EXCLUDED.comment WHERE ({RATINGS}.rating, {RATINGS}.comment) IS DISTINCT FROM "
                "(EXCLUDED.rating, EXCLUDED.comment) RETURNING (xmax = 0) AS inserted",
                (session_id, round_no, principal, rating, comment))
            row = await cursor.fetchone()
        return "same" if row is None else "new" if row["inserted"] else "changed"

    async def forget(self, session_id: str) -> None:
        """See ``app.sessions.Ratings.forget``."""
        async with self._pool.connection() as conn:
            await conn.execute(f"DELETE FROM {RATINGS} WHERE session_id = %s", (session_id,))


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[SessionStore]:
    """Open the pool and run the (idempotent) migrations; ``CheckpointerUnavailable`` naming the host, never the
    password, when the database cannot be reached at start-up."""
    url = settings.checkpointer_url
    parts = urlsplit(url)
    # A pool, not one connection: rounds of different sessions run in parallel, and a connection that
    # died with a Postgres restart is replaced on checkout (check_connection) instead of failing forever.
    # Connection settings as the langgraph-checkpoint-postgres documentation asks for.
    pool = AsyncConnectionPool(url, min_size=1, max_size=settings.postgres_pool_size, open=False,
                               timeout=settings.postgres_timeout_s, check=AsyncConnectionPool.check_connection,
                               connection_class=psycopg.AsyncConnection[DictRow],
                               kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
    try:
        await pool.open(wait=True, timeout=settings.postgres_timeout_s)
        saver = AsyncPostgresSaver(pool)
        await saver.setup()  # idempotent migrations
        leases = PostgresLeases(pool)
        await leases.setup()
        activity = PostgresActivity(pool)
        await activity.setup()
        usage = PostgresUsage(pool)
        await usage.setup()
        ratings = PostgresRatings(pool)
        await ratings.setup()
    except (psycopg.Error, PoolTimeout) as exc:
        await pool.close()
        reason = str(exc).replace(parts.password, "***") if parts.password else str(exc)
        raise CheckpointerUnavailable(
            f"CHECKPOINTER_URL={redact(url)}: cannot open the Postgres session store at "
            f"{parts.hostname}:{parts.port or 5432}: {reason.strip()} — check that the server is up and "
            "reachable, and that the user and database exist.") from None
    try:
        yield SessionStore(saver, leases, activity, usage, ratings, ERRORS)
    finally:
        await pool.close()
