"""Request body size limit, as a pure ASGI middleware (Starlette has none built in).

A body larger than ``max_bytes`` (or a path's own limit in ``per_path``) gets ``413`` with a problem body,
whether the client declared a ``Content-Length`` or streamed it chunked. The body is read here, at most the
limit of it, and replayed to the app, so the app never sees a partial body.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BodyTooLarge
from app.http.problems import Problems


class BodySizeLimit:
    """ASGI middleware: refuse an HTTP request body over ``max_bytes`` bytes with 413 ``body-too-large``.

    Methods without a body (GET, HEAD, OPTIONS) and non-HTTP scopes pass untouched. A declared
    ``Content-Length`` over the limit is refused before reading; otherwise the body is read (never more than
    ``max_bytes`` + one chunk) and replayed. A client that disconnects mid-body gets nothing.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, problems: Problems,
                 per_path: dict[str, tuple[int, str]] | None = None) -> None:
        """``per_path``: exact path → (its limit, the setting that sets it), for bodies that grow by design."""
        self.app = app
        self.max_bytes = max_bytes
        self.problems = problems
        self.per_path = per_path or {}

    def _reject(self, limit: int, setting: str) -> ASGIApp:
        return self.problems.response(BodyTooLarge(
            f"The request body is larger than {limit} bytes ({setting}). Send a smaller body."))

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
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
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
