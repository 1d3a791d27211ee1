"""The completion lane: ``POST /generate`` and ``POST /v1/chat/completions``, served on raw
ASGI in front of Litestar's router.

Why: these two routes are the gateway's traffic, and with the upstream client made cheap
(``gateway.transport``), Litestar's request/response machinery (router, exception
middleware, ``Request``, signature model, ``Response``) was the largest remaining cost, about
0.15 ms of CPU of ~0.7 ms per request (py-spy, c=16; docs/benchmarks.md). Every other route
(``/health``, ``/ready``, ``/status``, ``/warmup``, ``/metrics``, ``/v1/models``, ``/docs``)
stays a Litestar handler, and the lane's routes are still in the OpenAPI document.

The lane does for its routes what Litestar and the observability middleware do for the
others: reads the body within the size limit, gives the request an id (the client's
``X-Request-Id`` when it is sane), renders every error as a problem (``gateway.problems``),
answers a wrong method with 405, counts the request in the metrics and writes its log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from litestar.types import HTTPScope, Receive, Send

from gateway.errors import GatewayError, PayloadTooLarge
from gateway.observability import log_request, request_id_from
from gateway.problems import (
    gateway_problem,
    http_problem,
    internal_problem,
    log_internal,
    render,
)
from gateway.routes.common import ROUTING_HEADERS, Answer, Call
from gateway.runtime import Runtime

Handler = Callable[[Runtime, Call], Awaitable[Answer]]

_JSON = (b"content-type", b"application/json")


def _rendered(
    problem: dict[str, Any], path: str, headers: dict[str, str] | None = None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body, out = render(problem, path, headers)
    return int(problem["status"]), [(k.lower().encode(), v.encode()) for k, v in out.items()], body


async def _relay(body: AsyncGenerator[bytes], receive: Receive, send: Send) -> None:
    """Send a stream's pieces as they come. A client that hangs up cancels the stream, whose
    generator closes the tier's response (so the tier stops generating for nobody)."""

    async def pump() -> None:
        async for piece in body:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def hung_up() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.ensure_future(pump())
    gone = asyncio.ensure_future(hung_up())
    try:
        await asyncio.wait([pumping, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not pumping.done():
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
        await body.aclose()
    if not pumping.cancelled():
        pumping.result()


class ClientGone(Exception):
    """The client hung up before its body arrived: there is nobody to answer."""


class Lane:
    """``routes``: path -> (the route's name in metrics and logs, handler)."""

    def __init__(self, routes: dict[str, tuple[str, Handler]], *, max_body_bytes: int) -> None:
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.runtime: Runtime | None = None  # set by the app's lifespan

    async def __call__(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        name, handler = self.routes[path]
        started = time.perf_counter()
        wanted: dict[bytes, bytes] = {}
        sent_id = length = None
        for key, value in scope["headers"]:
            if key in ROUTING_HEADERS:
                wanted[key] = value
            elif key == b"x-request-id":
                sent_id = value
            elif key == b"content-length":
                length = value
        call = Call(path, wanted, b"", request_id_from(sent_id))
        runtime = self.runtime
        metrics = runtime.metrics if runtime is not None else None
        status = 500
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            status, headers, body = await self._answer(
                runtime, handler, call, scope, receive, length
            )
            headers.append((b"x-request-id", call.request_id.encode()))
            if not isinstance(body, bytes):  # a stream (SSE): sent as it comes, no length
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await _relay(body, receive, send)
                return
            headers.append((b"content-length", b"%d" % len(body)))
            start: Any = {"type": "http.response.start", "status": status, "headers": headers}
            await send(start)
            end: Any = {"type": "http.response.body", "body": body}
            await send(end)
        except ClientGone:
            status = 499  # nginx's word for it; nothing was sent
        finally:
            elapsed = time.perf_counter() - started
            if metrics is not None:
                metrics.in_flight.dec()
                metrics.observe_call(name, status, call, elapsed)
            log_request(call, scope["method"], status, elapsed)

    async def _answer(
        self,
        runtime: Runtime | None,
        handler: Handler,
        call: Call,
        scope: HTTPScope,
        receive: Receive,
        length: bytes | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes | AsyncGenerator[bytes]]:
        path = call.path
        try:
            if scope["method"] != "POST":
                return _rendered(
                    http_problem(405, f"{path} takes POST", path), path, {"allow": "POST"}
                )
            if runtime is None:  # a request before the lifespan ran: servers don't send one
                problem = http_problem(503, "the gateway is starting", path)
                return _rendered(problem, path, {"retry-after": "1"})
            call.body = await self._read_body(receive, length)
            answer = await handler(runtime, call)
            if answer.stream is not None:
                return 200, answer.headers, answer.stream
            return 200, [_JSON, *answer.headers], answer.body
        except GatewayError as exc:
            call.problem = exc.slug
            headers = dict(exc.headers)
            if call.tier_requested is not None:
                headers["x-model-tier-requested"] = call.tier_requested
            return _rendered(gateway_problem(exc, path, call.request_id), path, headers)
        except ClientGone:
            raise
        except Exception as exc:  # noqa: BLE001  a bug: logged with its traceback, answered without it
            log_internal(scope["method"], path, exc)
            call.problem = "internal"
            return _rendered(internal_problem(path), path)

    async def _read_body(self, receive: Receive, length: bytes | None) -> bytes:
        """The whole body, counted as it arrives (a chunked upload has no length to check)."""
        limit = self.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Any = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            if not message.get("more_body", False):
                return b"".join([*chunks, chunk]) if chunks else chunk
            chunks.append(chunk)

    def _too_large(self) -> PayloadTooLarge:
        limit = self.max_body_bytes
        return PayloadTooLarge(f"the body is over the limit of {limit} bytes", limit=limit)
