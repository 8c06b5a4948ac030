"""Choose the LangGraph checkpointer that keeps sessions, from one setting (``CHECKPOINTER_URL``).

| URL | saver | for |
| --- | --- | --- |
| ``memory://`` (default) | ``graphs.checkpoint.BoundedMemorySaver`` (TTL + cap) | one process; lost on restart |
| ``sqlite:///data/sessions.db`` | ``langgraph-checkpoint-sqlite`` ``AsyncSqliteSaver`` | one node, survives restarts |
| ``postgresql://user@host:5432/db`` | ``langgraph-checkpoint-postgres`` ``AsyncPostgresSaver`` | several replicas |
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from psycopg_pool import PoolTimeout

from app.expiry import NoActivity, PostgresActivity, SessionActivity, SqliteActivity
from app.leases import MemoryLeases, PostgresLeases, RoundLeases, SqliteLeases
from app.settings import Settings
from graphs.checkpoint import BoundedMemorySaver


@dataclass(frozen=True)
class SessionStore:
    """Where sessions live: the LangGraph checkpointer, and the round leases and activity kept beside it."""

    checkpointer: BaseCheckpointSaver
    leases: RoundLeases
    activity: SessionActivity


class CheckpointerUnavailable(RuntimeError):
    """The session store named by ``CHECKPOINTER_URL`` cannot be opened at start-up."""


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def describe(url: str) -> str:
    """The checkpointer kind without credentials (for logs and ``/health``)."""
    return url.split(":", 1)[0]


@asynccontextmanager
async def open_session_store(settings: Settings) -> AsyncIterator[SessionStore]:
    """Open the saver (and its lease table) for ``settings.checkpointer_url`` and close it on exit.

    Raises ``ValueError`` for a ``sqlite:`` URL without a path and ``CheckpointerUnavailable`` (naming the host,
    never the password) when the database cannot be reached at start-up.
    """
    url = settings.checkpointer_url
    scheme = describe(url)
    if scheme == "memory":
        yield SessionStore(BoundedMemorySaver(max_threads=settings.max_sessions, ttl_s=settings.session_ttl_s),
                           MemoryLeases(), NoActivity())
    elif scheme == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        path = url.removeprefix("sqlite://").removeprefix("/") if url.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"CHECKPOINTER_URL={url!r}: use sqlite:///relative.db or sqlite:////absolute/path.db")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        async with AsyncSqliteSaver.from_conn_string(path) as sqlite_saver:
            await sqlite_saver.setup()
            sqlite_leases = SqliteLeases(sqlite_saver)
            await sqlite_leases.setup()
            sqlite_activity = SqliteActivity(sqlite_saver)
            await sqlite_activity.setup()
            yield SessionStore(sqlite_saver, sqlite_leases, sqlite_activity)
    else:  # postgres:// or postgresql:// (Settings refuses any other scheme)
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import DictRow, dict_row
        from psycopg_pool import AsyncConnectionPool

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
        except (psycopg.Error, PoolTimeout) as exc:
            await pool.close()
            reason = str(exc).replace(parts.password, "***") if parts.password else str(exc)
            raise CheckpointerUnavailable(
                f"CHECKPOINTER_URL={redact(url)}: cannot open the Postgres session store at "
                f"{parts.hostname}:{parts.port or 5432}: {reason.strip()} — check that the server is up and "
                "reachable, and that the user and database exist.") from None
        try:
            yield SessionStore(saver, leases, activity)
        finally:
            await pool.close()
