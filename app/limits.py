"""Request body size limit, as a pure ASGI middleware (Starlette has none built in).

A body larger than ``max_bytes`` gets ``413`` with a problem body, whether the client sent a
``Content-Length`` or streamed it chunked; the app never buffers more than ``max_bytes`` of it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BodyTooLarge, problem_for


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = BodyTooLarge(f"The request body is larger than {self.max_bytes} bytes (MAX_BODY_BYTES). "
                             "Send a smaller body.")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await problem_for(error)(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await problem_for(error)(scope, receive, send)


class _TooLarge(Exception):
    pass
