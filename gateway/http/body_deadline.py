"""A time limit on reading a request's body, at the seam between the server and the app.

uvicorn has no limit on how long a body may take to arrive: a client sending one byte a
second holds a connection, and a task, for as long as it likes. This wraps the ASGI
``receive`` so that the whole body must arrive within ``limit_s`` of the first read; past
it ``receive`` raises :class:`~gateway.errors.BodyTimeout`, which the app renders like every
other problem (408, ``Connection: close``) on every route, the completion lane included.

>>> app = BodyDeadline(create_app(settings), limit_s=30.0)

Only the body is timed: once its last chunk is in, ``receive`` (which then only waits for a
disconnect) is the server's own again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from gateway.errors import BodyTimeout


class BodyDeadline:
    def __init__(self, app: ASGIApp, *, limit_s: float) -> None:
        self.app = app
        self.limit_s = limit_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # the app's attributes (state, routes) stay reachable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]  # a str at runtime
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        body_done = False

        async def timed_receive() -> ReceiveMessage:
            nonlocal deadline, body_done
            if body_done:
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.limit_s
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(
                    f"the request body did not arrive within {self.limit_s:g} s",
                    headers={"connection": "close"},
                    limit_s=self.limit_s,
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)
