"""Request body limits, as a pure ASGI middleware (Starlette has none built in): size, and how slowly it may come.

A body larger than ``max_bytes`` (or a path's own limit in ``per_path``) gets ``413`` with a problem body,
whether the client declared a ``Content-Length`` or streamed it chunked. A body that arrives too slowly gets
``408`` with a problem body and ``Connection: close``, so a client trickling a body (slowloris on the body)
holds a connection for seconds, not forever. The body is read here, at most the limit of it, and replayed to
the app, so the app never sees a partial body and never waits on a client while it holds a round's place.

How slowly is too slowly is Apache ``mod_reqtimeout``'s rule (``RequestReadTimeout body=…,MinRate=…``,
https://httpd.apache.org/docs/2.4/mod/mod_reqtimeout.html): the body may take ``grace_s`` seconds plus one
second per ``min_rate_bytes_s`` bytes received, and never more than ``read_timeout_s`` in all — that is, after
the grace period at least ``min_rate_bytes_s`` bytes per second on average have come. The clock starts when
the app is called, once uvicorn has parsed the request's headers; the headers' own time is not covered
(uvicorn has no setting for it).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BodyTooLarge, BodyTooSlow
from app.http.problems import Problems


class BodySizeLimit:
    """ASGI middleware: refuse an HTTP request body over ``max_bytes`` bytes with 413 ``body-too-large``, and
    one that arrives too slowly (module docstring) with 408 ``body-too-slow`` and ``Connection: close``.

    Methods without a body (GET, HEAD, OPTIONS) and non-HTTP scopes pass untouched. A declared
    ``Content-Length`` over the limit is refused before reading; otherwise the body is read (never more than
    ``max_bytes`` + one chunk) and replayed. A client that disconnects mid-body gets nothing.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, problems: Problems,
                 per_path: dict[str, tuple[int, str]] | None = None, read_timeout_s: float | None = None,
                 min_rate_bytes_s: float = 0, grace_s: float = 0) -> None:
        """``per_path``: exact path → (its limit, the setting that sets it), for bodies that grow by design.
        ``read_timeout_s``: longest a whole body may take, seconds (``None``: no limit); ``min_rate_bytes_s``:
        the least average rate after ``grace_s`` seconds, bytes per second (``0``: no minimum)."""
        self.app = app
        self.max_bytes = max_bytes
        self.problems = problems
        self.per_path = per_path or {}
        self.read_timeout_s = read_timeout_s
        self.min_rate_bytes_s = min_rate_bytes_s
        self.grace_s = grace_s

    def _reject(self, limit: int, setting: str) -> ASGIApp:
        return self.problems.response(BodyTooLarge(
            f"The request body is larger than {limit} bytes ({setting}). Send a smaller body."))

    def _allowed_s(self, received: int) -> float | None:
        """How long, in all, a body of which ``received`` bytes have come may take, seconds (``None``: for ever)."""
        limits = [] if self.read_timeout_s is None else [self.read_timeout_s]
        if self.min_rate_bytes_s:
            limits.append(self.grace_s + received / self.min_rate_bytes_s)
        return min(limits, default=None)

    def _too_slow(self, allowed_s: float | None) -> ASGIApp:
        if allowed_s == self.read_timeout_s:
            detail = f"The request body did not arrive within {allowed_s:g} s (BODY_READ_TIMEOUT_S)."
        else:
            detail = (f"The request body arrived slower than {self.min_rate_bytes_s:g} bytes/s after its first "
                      f"{self.grace_s:g} s (BODY_MIN_RATE_BYTES_S, BODY_READ_GRACE_S).")
        return self.problems.response(BodyTooSlow(f"{detail} Send the whole body at once; the connection is "
                                                  "closed.", {"Connection": "close"}))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (see the class docstring)."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit, setting = self.per_path.get(scope["path"], (self.max_bytes, "MAX_BODY_BYTES"))
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject(limit, setting)(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        chunks: list[bytes] = []
        size = 0
        while True:
            allowed_s = self._allowed_s(size)
            try:
                async with asyncio.timeout_at(None if allowed_s is None else started + allowed_s):
                    message = await receive()
            except TimeoutError:
                await self._too_slow(allowed_s)(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._reject(limit, setting)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
