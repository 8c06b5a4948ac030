"""The ``postgresql://user@host:5432/db`` session store: ``langgraph-checkpoint-postgres``'s
``AsyncPostgresSaver`` on a connection pool, with the round leases and session activity in the same database,
timed by the database's clock (replicas' clocks may differ). For several replicas.

With ``POSTGRES_ENTRA_AUTH`` every new connection signs in with a Microsoft Entra ID access token as its
password, as Azure Database for PostgreSQL flexible server accepts it
(https://learn.microsoft.com/azure/postgresql/flexible-server/how-to-configure-sign-in-azure-ad-authentication):
the pool's connection parameters are a callable (psycopg_pool ≥ 3.3,
https://www.psycopg.org/psycopg3/docs/api/pool.html — ``kwargs`` "can be a callable") that asks
``DefaultAzureCredential`` for a token each time. The credential caches it and fetches a new one before it
expires, so connections opened an hour apart carry different tokens while open ones keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import DefaultAzureCredential
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.store.postgres.aio import AsyncPostgresStore
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.sessions import (
    ACTIVITY,
    CANCEL,
    LEASES,
    RATINGS,
    RUN_CHANNEL,
    RUN_EVENTS,
    RUNS,
    USAGE,
    CheckpointerUnavailable,
    News,
    Outcome,
    Rated,
    RunRecord,
    SessionStore,
    learner_ttl,
)
from app.settings import Settings, redact

log = logging.getLogger(__name__)

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

    async def acquire(self, session_id: str, owner: str, ttl_s: float, succeed: str | None = None) -> bool:
        """See ``app.sessions.RoundLeases.acquire``. One autocommitted statement: concurrent callers serialise
        on the row."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"INSERT INTO {LEASES} (session_id, owner, expires_at) "
                "VALUES (%s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (session_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at "
                f"WHERE {LEASES}.expires_at < now() OR {LEASES}.owner = %s RETURNING owner",
                (session_id, owner, ttl_s, succeed))
            return await cursor.fetchone() is not None

    async def release(self, session_id: str, owner: str) -> None:
        """See ``app.sessions.RoundLeases.release``."""
        async with self._pool.connection() as conn:
            await conn.execute(f"DELETE FROM {LEASES} WHERE session_id = %s AND owner = %s", (session_id, owner))

    async def renew(self, session_id: str, owner: str, ttl_s: float) -> bool:
        """See ``app.sessions.RoundLeases.renew``."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"UPDATE {LEASES} SET expires_at = now() + make_interval(secs => %s) "
                "WHERE session_id = %s AND owner = %s", (ttl_s, session_id, owner))
            return cursor.rowcount == 1


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


_RUN_COLUMNS = ("run_id, session_id, principal, idem_key, fingerprint, attempt, holder, state, cancel, "
                "expires_at > now() AS alive, status, body, headers")


def _record(row: DictRow) -> RunRecord:
    outcome = None if row["status"] is None else Outcome(row["state"], row["status"], bytes(row["body"]),
                                                         dict(row["headers"] or {}))
    return RunRecord(row["run_id"], row["session_id"], row["principal"], row["idem_key"], row["fingerprint"],
                     row["attempt"], row["holder"], row["state"], bool(row["alive"]) and row["state"] == "running",
                     row["cancel"], outcome)


class PostgresRuns:
    """Rounds and their events in the Postgres session database, shared by every replica: a client that
    reconnects to another replica reads the events there, and hears new ones through ``LISTEN``/``NOTIFY``
    on channel ``quiz_rounds`` (payload: the round's id), on one connection per process kept apart from the
    pool (``listen()``). Timed by the database's clock."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        self._pool = pool
        self._news = News()

    async def setup(self) -> None:
        """Create the tables (idempotent)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {RUNS} (run_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, "
                "principal TEXT NOT NULL, idem_key TEXT, fingerprint TEXT NOT NULL, attempt INTEGER NOT NULL, "
                "holder TEXT NOT NULL, state TEXT NOT NULL, cancel BOOLEAN NOT NULL DEFAULT false, "
                "expires_at TIMESTAMPTZ NOT NULL, started_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
                "ended_at TIMESTAMPTZ, status INTEGER, body BYTEA, headers JSONB)")
            await conn.execute(f"CREATE INDEX IF NOT EXISTS {RUNS}_session ON {RUNS} (session_id, started_at)")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {RUN_EVENTS} (run_id TEXT NOT NULL, attempt INTEGER NOT NULL, "
                "seq INTEGER NOT NULL, frame BYTEA NOT NULL, PRIMARY KEY (run_id, attempt, seq))")

    async def listen(self, conninfo: str, kwargs: dict[str, Any] | EntraPassword) -> None:
        """Hear every replica's news on ``quiz_rounds`` and wake this process's waiters, until cancelled; a
        lost connection is opened again (meanwhile waiters fall back to their timeouts). ``kwargs``: the
        connection's parameters, or an ``EntraPassword`` that gives them with a fresh token."""
        while True:
            try:
                params = await kwargs() if isinstance(kwargs, EntraPassword) else kwargs
                conn = await psycopg.AsyncConnection.connect(conninfo, **{**params, "autocommit": True})
                async with conn:
                    await conn.execute(f"LISTEN {RUN_CHANNEL}")
                    async for notice in conn.notifies():
                        self._wake(notice.payload)
            except (psycopg.Error, ClientAuthenticationError) as exc:
                log.warning("round news: lost the LISTEN connection (%s: %s); reconnecting in 1 s",
                            type(exc).__name__, exc.args[0] if exc.args else "")
                await asyncio.sleep(1)

    def _wake(self, topic: str) -> None:
        self._news.wake(topic)

    async def begin(self, run: RunRecord, ttl_s: float) -> RunRecord:
        """See ``app.sessions.RoundRuns.begin``: one autocommitted upsert decides between replicas (one round
        trip for a new round); a taken-over round's earlier events are dropped after it (readers ask for an
        attempt's events only, so they never see them meanwhile)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"INSERT INTO {RUNS} (run_id, session_id, principal, idem_key, fingerprint, attempt, holder, state, "
                "expires_at) VALUES (%(run_id)s, %(session_id)s, %(principal)s, %(key)s, %(fingerprint)s, 1, "
                "%(holder)s, 'running', now() + make_interval(secs => %(ttl)s)) "
                f"ON CONFLICT (run_id) DO UPDATE SET attempt = {RUNS}.attempt + 1, "
                "holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at, cancel = false "
                f"WHERE {RUNS}.state = 'running' AND {RUNS}.expires_at < now() RETURNING {_RUN_COLUMNS}",
                {"run_id": run.run_id, "session_id": run.session_id, "principal": run.principal, "key": run.key,
                 "fingerprint": run.fingerprint, "holder": run.holder, "ttl": ttl_s})
            row = await cursor.fetchone()
            if row is None:  # the id names a round that is not ours to take
                cursor = await conn.execute(f"SELECT {_RUN_COLUMNS} FROM {RUNS} WHERE run_id = %s", (run.run_id,))
                row = await cursor.fetchone()
                assert row is not None  # the conflict was on this row, and rows are deleted only once ended
            elif row["attempt"] > 1:
                await conn.execute(f"DELETE FROM {RUN_EVENTS} WHERE run_id = %s", (row["run_id"],))
                await conn.execute("SELECT pg_notify(%s, %s)", (RUN_CHANNEL, row["run_id"]))
        return _record(row)

    async def _one(self, sql: str, params: tuple[Any, ...]) -> RunRecord | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            row = await cursor.fetchone()
        return _record(row) if row else None

    async def get(self, run_id: str) -> RunRecord | None:
        """See ``app.sessions.RoundRuns.get``."""
        return await self._one(f"SELECT {_RUN_COLUMNS} FROM {RUNS} WHERE run_id = %s", (run_id,))

    async def latest(self, session_id: str) -> RunRecord | None:
        """See ``app.sessions.RoundRuns.latest``."""
        return await self._one(f"SELECT {_RUN_COLUMNS} FROM {RUNS} WHERE session_id = %s "
                               "ORDER BY started_at DESC LIMIT 1", (session_id,))

    async def append(self, run_id: str, attempt: int, seq: int, frame: bytes) -> None:
        """See ``app.sessions.RoundRuns.append``: the row and its notice in one statement."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"WITH kept AS (INSERT INTO {RUN_EVENTS} (run_id, attempt, seq, frame) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING) SELECT pg_notify(%s, %s)", (run_id, attempt, seq, frame, RUN_CHANNEL, run_id))

    async def events(self, run_id: str, attempt: int, after: int) -> list[tuple[int, bytes]]:
        """See ``app.sessions.RoundRuns.events``."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT seq, frame FROM {RUN_EVENTS} WHERE run_id = %s AND attempt = %s AND seq > %s ORDER BY seq",
                (run_id, attempt, after))
            return [(row["seq"], bytes(row["frame"])) for row in await cursor.fetchall()]

    async def end(self, run_id: str, attempt: int, outcome: Outcome) -> None:
        """See ``app.sessions.RoundRuns.end``."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"WITH ended AS (UPDATE {RUNS} SET state = %s, status = %s, body = %s, headers = %s, ended_at = now() "
                "WHERE run_id = %s AND attempt = %s AND state = 'running') SELECT pg_notify(%s, %s)",
                (outcome.state, outcome.status, outcome.body, Jsonb(outcome.headers), run_id, attempt,
                 RUN_CHANNEL, run_id))

    async def heartbeat(self, run_id: str, attempt: int, ttl_s: float) -> RunRecord | None:
        """See ``app.sessions.RoundRuns.heartbeat``."""
        return await self._one(
            f"UPDATE {RUNS} SET expires_at = now() + make_interval(secs => %s) WHERE run_id = %s AND attempt = %s "
            f"AND state = 'running' RETURNING {_RUN_COLUMNS}", (ttl_s, run_id, attempt))

    async def cancel(self, run_id: str) -> None:
        """See ``app.sessions.RoundRuns.cancel``."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"WITH asked AS (UPDATE {RUNS} SET cancel = true WHERE run_id = %s AND state = 'running') "
                "SELECT pg_notify(%s, %s)", (run_id, RUN_CHANNEL, CANCEL + run_id))

    async def changed(self, topic: str, timeout_s: float) -> None:
        """See ``app.sessions.RoundRuns.changed``."""
        await self._news.wait(topic, timeout_s)

    def watch(self, topic: str) -> asyncio.Event:
        """See ``app.sessions.RoundRuns.watch``."""
        return self._news.watch(topic)

    async def prune(self, retention_s: float) -> None:
        """See ``app.sessions.RoundRuns.prune``."""
        async with self._pool.connection() as conn:
            await conn.execute(
                f"WITH gone AS (DELETE FROM {RUNS} WHERE ended_at < now() - make_interval(secs => %s) "
                f"RETURNING run_id) DELETE FROM {RUN_EVENTS} WHERE run_id IN (SELECT run_id FROM gone)", (retention_s,))


ENTRA_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"  # Azure Database for PostgreSQL's token scope


class EntraPassword:
    """Connection parameters whose ``password`` is an Entra ID access token for Azure Database for PostgreSQL
    (``ENTRA_SCOPE``), asked of ``credential`` at each call — each new connection. ``last``: the token handed
    out last, so that an error message can be cleaned of it. Raises ``ClientAuthenticationError`` when no
    token can be had."""

    def __init__(self, credential: DefaultAzureCredential, base: dict[str, Any]) -> None:
        self.credential = credential
        self.base = base
        self.last = ""

    async def __call__(self) -> dict[str, Any]:
        """The parameters of a new connection, ``password`` a token valid for a while yet."""
        token = await self.credential.get_token(ENTRA_SCOPE)
        self.last = token.token
        return {**self.base, "password": token.token}

    def clean(self, text: str) -> str:
        """``text`` without the token (a driver's message should never hold it, but a log line never will)."""
        return text.replace(self.last, "***") if self.last else text


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[SessionStore]:
    """Open the pool and run the (idempotent) migrations; ``CheckpointerUnavailable`` naming the host, never the
    password or token, when the database cannot be reached or refuses to sign in at start-up, or (with
    ``POSTGRES_ENTRA_AUTH``) no Entra ID token can be had."""
    url = settings.checkpointer_url
    parts = urlsplit(url)
    where = f"CHECKPOINTER_URL={redact(url)}: cannot open the Postgres session store at {parts.hostname}:" \
            f"{parts.port or 5432}"
    base: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    credential = DefaultAzureCredential() if settings.postgres_entra_auth else None
    entra = EntraPassword(credential, base) if credential is not None else None
    # A pool, not one connection: rounds of different sessions run in parallel, and a connection that
    # died with a Postgres restart is replaced on checkout (check_connection) instead of failing forever.
    # Connection settings as the langgraph-checkpoint-postgres documentation asks for.
    pool = AsyncConnectionPool(url, min_size=1, max_size=settings.postgres_pool_size, open=False,
                               timeout=settings.postgres_timeout_s, check=AsyncConnectionPool.check_connection,
                               connection_class=psycopg.AsyncConnection[DictRow], kwargs=entra or base)
    async with contextlib.AsyncExitStack() as closing:  # the pool, then the credential: on every way out
        if credential is not None:
            closing.push_async_callback(credential.close)
        closing.push_async_callback(pool.close)
        try:
            if entra is not None:  # sign in once first, so that a refused token is said as such, not as a timeout
                try:
                    async with await psycopg.AsyncConnection.connect(url, **await entra()):
                        pass
                except ClientAuthenticationError as exc:
                    reason = " ".join((exc.message or type(exc).__name__).split())[:800]
                    raise CheckpointerUnavailable(
                        f"{where}: no Entra ID token for Postgres could be had from DefaultAzureCredential "
                        f"(POSTGRES_ENTRA_AUTH=true): {reason} — check the pod's Workload Identity (its service "
                        "account and federated credential).") from None
                except psycopg.OperationalError as exc:
                    raise CheckpointerUnavailable(
                        f"{where}: {entra.clean(str(exc)).strip()} — with POSTGRES_ENTRA_AUTH=true the server must "
                        f"accept Entra ID sign-in and know {parts.username!r} as an Entra principal "
                        "(pgaadauth_create_principal; see docs/how-to/scale-out.md, Postgres with Entra ID).") from None
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
            runs = PostgresRuns(pool)
            await runs.setup()
            learners = AsyncPostgresStore(pool, ttl=learner_ttl())  # LangGraph's store, on the same pool
            await learners.setup()  # idempotent migrations
        except (psycopg.Error, PoolTimeout) as exc:
            reason = str(exc).replace(parts.password, "***") if parts.password else str(exc)
            raise CheckpointerUnavailable(
                f"{where}: {entra.clean(reason).strip() if entra else reason.strip()} — check that the server is "
                "up and reachable, and that the user and database exist.") from None
        listen: dict[str, Any] | EntraPassword = (EntraPassword(credential, {"prepare_threshold": 0})
                                                  if credential is not None else {"prepare_threshold": 0})
        listener = asyncio.create_task(runs.listen(url, listen), name="round-news")
        await learners.start_ttl_sweeper()
        try:
            yield SessionStore(saver, leases, activity, usage, ratings, runs, learners, ERRORS)
        finally:
            await learners.stop_ttl_sweeper()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
