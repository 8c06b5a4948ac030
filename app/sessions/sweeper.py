"""Idle sessions expire on every store, not only in memory: ``SESSION_TTL_S`` after their last round.

``memory://`` expires by itself (``app.sessions.memory.BoundedMemorySaver``). For SQLite and Postgres the
service records when each session last finished a round (table ``quiz_session_activity``, beside the
checkpoints and the round leases) and sweeps every ``SESSION_SWEEP_INTERVAL_S``: a session idle for longer is
deleted with every checkpoint of it (``BaseCheckpointSaver.adelete_thread``). Safe with several replicas: each
session is deleted under its round lease (``app.sessions.RoundLeases``), so a round in progress keeps it,
two sweepers never both delete it, and it is checked again under the lease before anything goes.

Order under the lease: checkpoints first, then the activity row — a sweeper that dies in between leaves a row
that the next sweep finishes. Sessions a store held before this table existed are given a row at start
(``setup``), so they expire too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from app.sessions import SessionStore

log = logging.getLogger(__name__)


async def delete_session(store: SessionStore, session_id: str) -> None:
    """Delete every checkpoint of ``session_id``, its ratings, then its activity row (call it under the session's
    lease). In this order, a deletion cut short leaves a row, and the next sweep finishes it."""
    await store.checkpointer.adelete_thread(session_id)
    await store.ratings.forget(session_id)
    await store.activity.forget(session_id)


async def sweep(store: SessionStore, idle_s: float, lease_s: float, limit: int = 200) -> int:
    """Delete up to ``limit`` sessions idle for more than ``idle_s`` seconds; returns how many went.

    Each under its round lease (held up to ``lease_s``): a session whose round is playing, or that another
    replica is sweeping, is skipped; one that finished a round since it was listed is kept.
    """
    removed = 0
    for session_id in await store.activity.idle(idle_s, limit):
        owner = secrets.token_hex(8)
        if not await store.leases.acquire(session_id, owner, lease_s):
            continue
        try:
            if not await store.activity.still_idle(session_id, idle_s):  # played meanwhile: keep it
                continue
            await delete_session(store, session_id)
            removed += 1
        finally:
            await store.leases.release(session_id, owner)
    return removed


async def expire_idle_sessions(store: SessionStore, idle_s: float, lease_s: float, interval_s: float,
                               round_retention_s: float = 3600.0) -> None:
    """Run ``sweep`` every ``interval_s`` seconds until cancelled, and drop ended windows of usage counts and
    rounds ended more than ``round_retention_s`` seconds ago; a store that is down is retried next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            removed = await sweep(store, idle_s, lease_s)
            await store.usage.prune()
            await store.runs.prune(round_retention_s)
        except store.errors as exc:
            log.warning("session expiry: the session store is unavailable (%s: %s); retrying in %.0f s",
                        type(exc).__name__, exc, interval_s)
            continue
        if removed:
            log.info("session expiry: %d idle session(s) deleted", removed)
