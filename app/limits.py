"""Fair limits per principal (``app.auth``): rounds per minute and LLM tokens per day, counted in the session
store so every replica sees the same counts, and a fair share of the rounds in progress in each process.

| limit | setting | counted | over it |
| --- | --- | --- | --- |
| rounds per minute | ``RATE_LIMIT_ROUNDS_PER_MINUTE`` | each ``/ask``, AG-UI run, in the store | 429 before the round |
| tokens per UTC day | ``RATE_LIMIT_TOKENS_PER_DAY`` | a round's tokens as it ends, in the store | 429 at the next |
| fair share | ``MAX_CONCURRENT_ROUNDS``, ``FAIR_SHARE_WINDOW_S`` | rounds in progress, in the process | 429 |

The counters are fixed windows aligned to the epoch (the minute, the UTC day), each one atomic statement on
the store (``app.sessions.Usage``): a refused attempt counts too, so a flood buys no extra room. Every answer
of a limited route says where the principal stands, in the fields of the IETF draft *RateLimit header fields
for HTTP* (draft-ietf-httpapi-ratelimit-headers-09, §3–4)::

    RateLimit-Policy: "rounds";q=60;w=60, "tokens";q=2000000;w=86400;qu="llm-tokens"
    RateLimit: "rounds";r=41;t=17, "tokens";r=1999120;t=39600

(``qu="llm-tokens"`` is this service's quota unit, not one of the draft's registered ones.) A refusal is 429
``rate-limited`` with ``Retry-After``: the seconds until the window that ran out starts over.

Fair admission: without a queue, a principal that floods would take every place the moment one frees, and
everyone else would see 503. So the places are shared: a principal *active* in the last ``FAIR_SHARE_WINDOW_S``
(it asked for a round, admitted or not) counts, and each active principal may hold
``MAX_CONCURRENT_ROUNDS // active`` rounds at once (at least one). Alone, a client may use every place; when
a second shows up, the first is held to half as its rounds end. Over its share: 429 (its own doing); all places
taken while under it: 503 ``overloaded`` (nobody's fault). A share is per process, as the places are.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from app.errors import Overloaded, RateLimited

ROUNDS = "rounds"  # the policy names, as RateLimit fields and the quiz.limit label spell them
TOKENS = "tokens"
FAIR_SHARE = "fair_share"
CAPACITY = "capacity"
ROUND_WINDOW_S = 60
TOKEN_WINDOW_S = 86_400


@dataclass(frozen=True)
class Policy:
    """A quota: ``quota`` units per fixed ``window_s`` seconds, named ``name``; ``unit`` as RateLimit's ``qu``
    (``None``: requests, the draft's default)."""

    name: str
    quota: int
    window_s: int
    unit: str | None = None

    def field(self) -> str:
        """This policy as an item of ``RateLimit-Policy``."""
        return f'"{self.name}";q={self.quota};w={self.window_s}' + (f';qu="{self.unit}"' if self.unit else "")


@dataclass(frozen=True)
class Standing:
    """Where a principal stands in a policy's current window: ``used`` units, ``reset_s`` seconds left."""

    policy: Policy
    used: int
    reset_s: int

    @property
    def remaining(self) -> int:
        """Units left in the window (never negative)."""
        return max(0, self.policy.quota - self.used)

    def field(self) -> str:
        """This standing as an item of ``RateLimit``."""
        return f'"{self.policy.name}";r={self.remaining};t={self.reset_s}'


def rate_limit_headers(standings: list[Standing]) -> dict[str, str]:
    """The ``RateLimit-Policy`` and ``RateLimit`` fields for ``standings`` (none: no fields)."""
    if not standings:
        return {}
    return {"RateLimit-Policy": ", ".join(s.policy.field() for s in standings),
            "RateLimit": ", ".join(s.field() for s in standings)}


def window_reset_s(now: float, window_s: int) -> int:
    """Whole seconds until the fixed window of ``window_s`` that holds ``now`` (epoch seconds) ends (≥ 1)."""
    return max(1, math.ceil((math.floor(now / window_s) + 1) * window_s - now))


class FairAdmission:
    """The process's ``capacity`` places for rounds, shared fairly between active principals (module docstring).

    ``window_s``: how long a principal stays active after it last asked; ``clock``: monotonic seconds. One event
    loop calls it, so plain dicts are exact.
    """

    def __init__(self, capacity: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.window_s = window_s
        self._clock = clock
        self.held: dict[str, int] = {}
        self.in_flight = 0  # places held by every principal
        self._seen: OrderedDict[str, float] = OrderedDict()  # principal → when it last asked, oldest first

    def share(self, principal: str) -> int:
        """How many places ``principal`` may hold now: the capacity over the active principals (≥ 1)."""
        active = len(self._seen.keys() | self.held.keys() | {principal})
        return max(1, self.capacity // active)

    @contextmanager
    def place(self, principal: str) -> Iterator[None]:
        """Hold one place for ``principal`` while the body runs. Raises ``RateLimited`` (429, ``Retry-After: 1``)
        when it holds its share and others are active, ``Overloaded`` (503) when every place is taken."""
        now = self._clock()
        self._seen[principal] = now
        self._seen.move_to_end(principal)
        while self._seen and next(iter(self._seen.values())) < now - self.window_s:
            self._seen.popitem(last=False)
        held = self.held.get(principal, 0)
        share = self.share(principal)
        if held >= share and share < self.capacity:
            raise RateLimited(f"This client already has {held} rounds in progress, its fair share of this "
                              f"instance's {self.capacity} while other clients are playing. Retry when one has "
                              "finished.", {"Retry-After": "1"})
        if self.in_flight >= self.capacity:
            raise Overloaded(f"{self.in_flight} rounds are in progress on this instance (MAX_CONCURRENT_ROUNDS). "
                             "Retry in a second.", {"Retry-After": "1"})
        self.held[principal] = held + 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            left = self.held[principal] - 1
            if left:
                self.held[principal] = left
            else:
                del self.held[principal]
