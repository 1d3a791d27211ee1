"""A tier's stream, opened before the client sees a byte: the first bytes within the tier's
time-to-first-token budget, so that routing, warm-up and any fallback are decided while the
client's status line can still say what happened (``Dispatcher`` for a ``Job.stream``).
What happens to the bytes after that is the edge's (``gateway.http.streaming``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway.errors import TierTimeout
from gateway.routing.tier_client import TierClient


class OpenedStream:
    """A tier's stream whose first bytes are in: ``chunks()`` yields them, then the rest as
    the tier sends it (``TierClient.open_stream``'s errors: a stall, a cut); ``aclose()``
    hangs up on the tier."""

    def __init__(
        self,
        tier: str,
        first: bytes,
        rest: AsyncIterator[bytes],
        close: Callable[[], Awaitable[Any]],
        latency_s: float,
    ) -> None:
        self.tier = tier
        self.first = first
        self.latency_s = latency_s  # the time to the first bytes
        self._rest = rest
        self._close = close

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.first:
            yield self.first
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        await self._close()


async def open_stream(
    client: TierClient,
    payload: bytes,
    *,
    budget_s: float,
    first_token_s: float,
    idle_s: float,
    request_id: str | None,
) -> OpenedStream:
    """Open the tier's stream (``TierClient.open_stream``: status, redirects, the error
    mapping) and wait for its first bytes within ``first_token_s``; the stream stays open,
    within ``budget_s`` in all, until the relay closes it."""
    started = time.perf_counter()
    opened = client.open_stream(
        payload, budget_s=budget_s, request_id=request_id, idle_timeout_s=idle_s
    )
    stream = await opened.__aenter__()
    try:
        rest = stream.chunks()
        first = b""
        async with asyncio.timeout(first_token_s):
            while not first:  # the first bytes of the body: the tier has begun
                chunk = await anext(rest, None)
                if chunk is None:
                    break
                first = chunk
    except TimeoutError:
        await opened.__aexit__(None, None, None)
        raise TierTimeout(
            f"tier {stream.tier} sent no first token within {first_token_s:g} s",
            tier=stream.tier,
            budget_s=round(first_token_s, 3),
        ) from None
    except BaseException:
        await opened.__aexit__(None, None, None)
        raise

    async def close() -> None:
        await opened.__aexit__(None, None, None)

    return OpenedStream(stream.tier, first, rest, close, time.perf_counter() - started)
