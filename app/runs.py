"""Rounds that outlive their connection: played apart from the request that asked, kept with their stream's
events in the session store, retried with an idempotency key, resumed from any replica, cancelled from any.

A round runs as a task of the process that admitted it (``Runner.start``), not as part of the request: the
request — and any later one — follows it (``Runner.follow``: the stream; ``Runner.outcome``: the JSON
answer). Its record (``app.sessions.RoundRuns``) says who plays it (``holder``), how it ended and, for a
stream, every event it sent, numbered. So:

- **A dropped stream loses nothing.** Each event's SSE ``id`` is ``<attempt>.<seq>``; a client that reconnects
  with ``Last-Event-ID`` gets what it missed, then the rest live — on any replica of a Postgres store (the
  events are rows, and ``LISTEN``/``NOTIFY`` says when there are more), in this process on memory and SQLite.
- **A retry never plays twice.** With an ``Idempotency-Key`` (IETF draft-ietf-httpapi-idempotency-key-header-07)
  the round's id is made of the principal and the key, so a retry — on any replica, during or after the
  round, for ``ROUND_RETENTION_S`` — finds it and follows it instead of playing another. The draft answers a
  retry during the round with 409; this service waits for the round and answers with its outcome, which is
  what the client wanted. The same key with another request is 422 ``idempotency-key-reused`` (§2.7).
- **A round can be stopped.** ``cancel`` flags the record and tells the holder at once (``NOTIFY``, or in
  process); the holder cancels the task, which closes the LLM connection mid-call, leaves the session as it
  was (the graph writes its checkpoint only at the end: ``durability="exit"``), ends the stream with a
  cancelled event and releases the round's place and lease.
- **A dead replica holds nothing for long.** The holder renews the session's lease and the record every
  third of ``ROUND_LEASE_TTL_S`` (a heartbeat). After SIGKILL both expire within that time: followers are
  told ``round-lost`` (503, retryable), and a retry with the same key takes the round over (``attempt`` + 1,
  on a replica that is up) and plays it once — or, when the holder died after saving the round and before
  ending its record, finds it saved (the checkpoint's metadata names the run that wrote it) and answers with
  it (``RoundService.prepare``): a session never gains a round its client did not ask for. On SIGTERM the
  process finishes its rounds within ``GRACEFUL_SHUTDOWN_S`` (``Runner.close``); those still playing end as
  ``round-lost``, their leases released.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from app.errors import (
    IdempotencyKeyReused,
    QuizError,
    RoundCancelled,
    RoundLost,
    RoundNotFound,
    SessionStoreUnavailable,
)
from app.sessions import CANCEL, Outcome, RunRecord, SessionStore

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 5.0  # how long a cancel waits for the round to stop before answering 202


@dataclass(frozen=True)
class Frame:
    """One event of a round's stream: ``data``, the bytes the protocol sends for it (without an SSE ``id``);
    on the round's last event, ``outcome``: how it ended, as a JSON answer."""

    data: bytes
    outcome: Outcome | None = None


# How a protocol ends a round it did not finish (cancelled, lost): the last frame for that error.
Stopped = Callable[[QuizError], Frame]


def run_id_of(principal: str, key: str | None) -> str:
    """The id of a round: made of the principal and its idempotency ``key`` (so every replica finds the same
    round for a retry; 32 hex digits of SHA-256), or 128 random bits without a key."""
    if key is None:
        return secrets.token_hex(16)
    return hashlib.sha256(f"{principal}\0{key}".encode()).hexdigest()[:32]


def fingerprint(*parts: bytes | str) -> str:
    """What identifies a request for an idempotency key: SHA-256 of its route and body (hex)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


KEY_PATTERN = r"^[!-~][ -~]{0,254}$"  # an Idempotency-Key: 1–255 visible ASCII characters, spaces inside


def parse_key(header: str | None) -> str | None:
    """An ``Idempotency-Key`` header's value (``KEY_PATTERN``, checked by the route): an sf-string ``"…"``, as
    the draft defines it, is unquoted; a bare token is taken as it is; ``None`` when absent."""
    if header is not None and len(header) >= 3 and header[0] == header[-1] == '"':
        return header[1:-1]
    return header


def to_play(record: RunRecord | None) -> bool:
    """Whether a request for the round ``record`` (``None``: none kept under its key) plays it: when there is
    none, or its holder died mid-round (its heartbeat stopped) and this request takes it over. Otherwise it
    follows the round, or gets its outcome."""
    return record is None or (record.state == "running" and not record.alive)


def parse_last_event_id(header: str | None) -> tuple[int, int]:
    """``Last-Event-ID`` (``<attempt>.<seq>``, as ``Runner.follow`` numbers events) → ``(attempt, seq)``;
    ``(0, 0)``: from the start (absent or not ours)."""
    if not header:
        return 0, 0
    attempt, _, seq = header.strip().partition(".")
    return (int(attempt), int(seq)) if attempt.isdigit() and seq.isdigit() else (0, 0)


@dataclass
class Holding:
    """What a round holds while it plays, released when it ends: its ``resources`` (its place among the rounds
    in progress, its session's lease) and that lease as ``(session id, owner)`` for the heartbeat to renew
    (``None`` until known: a new session has none, an AG-UI run takes it once its stream has begun). An AG-UI
    run takes the lease as ``owner`` (its holder's token), ``succeed``-ing the holder of a lost round it
    replays (``RoundService.prepare``)."""

    resources: AsyncExitStack
    lease: tuple[str, str] | None = None
    owner: str | None = None
    succeed: str | None = None


@dataclass
class _Local:
    """A round this process plays: its task, its events so far (followers here read them without the store)
    and why it is being stopped (``None``: it is not)."""

    record: RunRecord
    task: asyncio.Task[None] | None = None
    frames: list[bytes] = field(default_factory=list)
    outcome: Outcome | None = None
    stopping: QuizError | None = None
    news: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self.news.set()
        self.news = asyncio.Event()


class Runner:
    """Plays rounds apart from their requests and lets any request follow them (module docstring).

    ``store``: the session store (its ``runs``, ``leases`` and ``errors``); ``lease_ttl_s``: how long a
    holder's heartbeat lasts (``ROUND_LEASE_TTL_S``); ``retention_s``: how long an ended round is kept.
    """

    def __init__(self, store: SessionStore, lease_ttl_s: float, retention_s: float) -> None:
        self.store = store
        self.lease_ttl_s = lease_ttl_s
        self.retention_s = retention_s
        self._local: dict[str, _Local] = {}

    @contextlib.asynccontextmanager
    async def _reachable(self) -> AsyncIterator[None]:
        """The store's errors as ``SessionStoreUnavailable`` (503), logged."""
        try:
            yield
        except self.store.errors as exc:
            log.warning("session store unavailable (%s: %s)", type(exc).__name__, exc)
            raise SessionStoreUnavailable() from exc

    @property
    def beat_s(self) -> float:
        """How often a holder renews its hold, and how often a follower looks for a dead holder, seconds."""
        return self.lease_ttl_s / 3

    async def existing(self, run_id: str, fingerprint_: str) -> RunRecord | None:
        """The round ``run_id`` if it is kept, checked to be the same request (``IdempotencyKeyReused`` if not)."""
        local = self._local.get(run_id)
        async with self._reachable():
            record = local.record if local is not None else await self.store.runs.get(run_id)
        if record is not None and record.fingerprint != fingerprint_:
            raise IdempotencyKeyReused("This Idempotency-Key was sent before with a different request (another "
                                       "body, route or session). Use a new key for a new request.")
        return record

    async def start(self, record: RunRecord, frames: Callable[[Holding], AsyncIterator[Frame]],
                    stopped: Stopped, holding: Holding, *, stream: bool) -> RunRecord:
        """Play ``record`` (``holder``: a fresh token) unless its id is taken: then release ``holding`` and
        return the round that holds it (follow it). Otherwise spawn the task that runs ``frames(holding)`` —
        the protocol's events, the last with its ``outcome`` — keeps them (every one if ``stream``, else the
        last), renews the lease and the record while it plays, and releases ``holding`` when it ends.
        ``stopped`` builds the last frame of a cancelled or lost round. Raises the store's errors
        ``SessionStoreUnavailable``, ``holding`` released."""
        try:
            async with self._reachable():
                claimed = await self.store.runs.begin(record, self.lease_ttl_s)
        except BaseException:
            await holding.resources.aclose()
            raise
        if claimed.holder != record.holder:
            await holding.resources.aclose()
            return claimed
        local = _Local(claimed)
        self._local[claimed.run_id] = local
        local.task = asyncio.create_task(self._play(local, frames, stopped, holding, stream),
                                         name=f"round-{claimed.run_id[:8]}")
        return claimed

    async def _play(self, local: _Local, frames: Callable[[Holding], AsyncIterator[Frame]], stopped: Stopped,
                    holding: Holding, stream: bool) -> None:
        record = local.record
        runs = self.store.runs
        heart = asyncio.create_task(self._heartbeat(local, holding), name=f"heartbeat-{record.run_id[:8]}")
        outcome: Outcome | None = None
        try:
            async with holding.resources:
                try:
                    async for frame in frames(holding):
                        await self._keep(local, frame, stream)
                        outcome = frame.outcome or outcome
                except asyncio.CancelledError:
                    why = local.stopping or RoundLost()
                    if outcome is None:  # stopped before its end: the session is as it was
                        frame = stopped(why)
                        await self._keep(local, frame, stream)
                        outcome = frame.outcome
                    if local.stopping is None:
                        raise
        except self.store.errors as exc:
            log.warning("round %s: the session store failed while keeping its events (%s: %s)",
                        record.run_id[:8], type(exc).__name__, exc)
        finally:
            heart.cancel()
            local.outcome = outcome or Outcome("lost", RoundLost.status, b"{}", {"Retry-After": "1"})
            local.wake()
            with contextlib.suppress(*self.store.errors):
                await asyncio.shield(runs.end(record.run_id, record.attempt, local.outcome))
            self._local.pop(record.run_id, None)

    async def _keep(self, local: _Local, frame: Frame, stream: bool) -> None:
        """Keep ``frame`` as the round's next event: here for followers in this process, in the store for the
        others (a JSON round keeps only its last). Its outcome is announced once the round has released what
        it holds (``_play``), so a client told the round ended can play the next one at once."""
        local.frames.append(frame.data)
        local.wake()
        if stream or frame.outcome is not None:
            await self.store.runs.append(local.record.run_id, local.record.attempt, len(local.frames), frame.data)

    async def _heartbeat(self, local: _Local, holding: Holding) -> None:
        """Renew the hold every ``beat_s``; stop the round when a cancel is asked (heard at once through the
        store's news, or seen on the record) or when the hold was lost (a retry took the round over)."""
        record, runs = local.record, self.store.runs
        while True:
            await runs.changed(CANCEL + record.run_id, self.beat_s)
            try:
                held = await runs.heartbeat(record.run_id, record.attempt, self.lease_ttl_s)
                if holding.lease is not None:
                    await self.store.leases.renew(*holding.lease, self.lease_ttl_s)
            except self.store.errors as exc:  # the store is down: the round may still end well
                log.warning("round %s: heartbeat failed (%s: %s)", record.run_id[:8], type(exc).__name__, exc)
                continue
            if held is None or held.cancel:
                self._stop(local, RoundCancelled("The round was cancelled (DELETE /sessions/{id}/round) before "
                                                 "it ended; the session is as it was before it.")
                           if held is not None else RoundLost())
                return

    def _stop(self, local: _Local, why: QuizError) -> None:
        if local.stopping is None and local.task is not None:
            local.stopping = why
            local.task.cancel()

    async def follow(self, record: RunRecord, last_event_id: str | None,
                     stopped: Stopped) -> AsyncIterator[bytes]:
        """The round's events as SSE bytes, each with its ``id`` (``<attempt>.<seq>``), after
        ``last_event_id`` (``None``: all), then the rest as they come, until its last; a round whose holder
        died ends with ``stopped(RoundLost())``, and one whose store cannot be reached with
        ``stopped(SessionStoreUnavailable())``. Reads this process's copy when it plays the round here, the
        store's otherwise."""
        try:
            async for data in self._follow(record, last_event_id, stopped):
                yield data
        except self.store.errors as exc:
            log.warning("session store unavailable while following a round (%s: %s)", type(exc).__name__, exc)
            yield stopped(SessionStoreUnavailable()).data

    async def _follow(self, record: RunRecord, last_event_id: str | None,
                      stopped: Stopped) -> AsyncIterator[bytes]:
        attempt, seq = parse_last_event_id(last_event_id)
        if attempt != record.attempt:
            attempt, seq = record.attempt, 0
        run_id = record.run_id
        while True:
            local = self._local.get(run_id)
            if local is not None and local.record.attempt != attempt:  # taken over here: start again
                attempt, seq = local.record.attempt, 0
            watched = None
            if local is not None:
                news = local.news
                fresh = list(enumerate(local.frames[seq:], start=seq + 1))
                done = local.outcome is not None
            else:
                watched = self.store.runs.watch(run_id)  # before reading: news meanwhile is not missed
                fresh = await self.store.runs.events(run_id, attempt, seq)
                done = False
            for seq, data in fresh:
                yield b"id: %d.%d\n%s" % (attempt, seq, data)
            if done:
                return
            if local is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.beat_s):
                        await news.wait()
                continue
            now = await self.store.runs.get(run_id)
            if now is None:
                return
            if now.attempt != attempt:  # a retry took it over: its events start again
                attempt, seq = now.attempt, 0
                continue
            if now.state != "running":
                for last, data in await self.store.runs.events(run_id, attempt, seq):
                    yield b"id: %d.%d\n%s" % (attempt, last, data)
                return
            if not now.alive:
                yield b"id: %d.%d\n%s" % (attempt, seq + 1, stopped(RoundLost()).data)
                return
            if not fresh and watched is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.beat_s):
                        await watched.wait()

    async def outcome(self, record: RunRecord) -> Outcome:
        """How the round ended, waiting for its end: the outcome kept. Raises ``RoundLost`` when its holder
        died and ``SessionStoreUnavailable``."""
        async with self._reachable():
            return await self._outcome(record)

    async def _outcome(self, record: RunRecord) -> Outcome:
        run_id = record.run_id
        while True:
            local = self._local.get(run_id)
            if local is not None:
                if local.outcome is not None:
                    return local.outcome
                news = local.news
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.beat_s):
                        await news.wait()
                continue
            now = await self.store.runs.get(run_id)
            if now is not None and now.outcome is not None:
                return now.outcome
            if now is None or (now.state == "running" and not now.alive):
                raise RoundLost()
            await self.store.runs.changed(run_id, self.beat_s)

    async def cancel(self, session_id: str, principal: str) -> Outcome | None:
        """Stop the session's round in progress, on whichever replica plays it; its outcome once it has
        stopped (``None``: still stopping after ``CANCEL_WAIT_S``). Raises ``RoundNotFound`` when no round of
        the session is in progress for ``principal`` (another principal's round is not found either)."""
        async with self._reachable():
            record = await self.store.runs.latest(session_id)
        if record is None or record.principal != principal or record.state != "running":
            raise RoundNotFound(f"No round of session {session_id!r} is in progress: it ended (see GET "
                                "/sessions/{id}) or never started.")
        local = self._local.get(record.run_id)
        if local is not None:
            self._stop(local, RoundCancelled("The round was cancelled (DELETE /sessions/{id}/round) before it "
                                             "ended; the session is as it was before it."))
        else:
            async with self._reachable():
                await self.store.runs.cancel(record.run_id)
        with contextlib.suppress(TimeoutError, RoundLost):
            async with asyncio.timeout(CANCEL_WAIT_S):
                return await self.outcome(record)
        return None

    @property
    def playing(self) -> int:
        """Rounds this process plays now."""
        return len(self._local)

    async def close(self, grace_s: float) -> None:
        """Stop: let the rounds this process plays end within ``grace_s`` seconds, then stop the rest as
        ``round-lost`` (their clients retry elsewhere), their leases released."""
        tasks = [local.task for local in self._local.values() if local.task is not None]
        if tasks:
            log.info("waiting up to %.0f s for %d round(s) in progress", grace_s, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for local in list(self._local.values()):
                self._stop(local, RoundLost())
            if pending:
                await asyncio.wait(pending, timeout=5)
