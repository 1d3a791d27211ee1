"""Streaming on the embedded tier: vLLM's ``chat.completion.chunk`` events over SSE.

>>> first, rest = await open_stream(scheduler, run)   # waits for the first text (or the end)
>>> Stream(sse(chunks(first, rest, ...)))

The status line is decided once the first piece of text exists: a full queue is still a 429
and a stopping server a 503, as without streaming. After that, pieces go out as the engine
settles them (``Engine.generate``'s ``on_text``); a failure mid-way is an error event in
vLLM's shape, then ``[DONE]``. A client that hangs up cancels the job at its next token.
Tool calls are sent whole, in one chunk at the end (vLLM streams their arguments; a 135M
model's calls are short).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from tiers.local.jobs import Completion

DONE = b"data: [DONE]\n\n"
Run = Callable[[Callable[[str], None]], Awaitable[Completion]]


class Opened:
    """A started job: the text it has settled so far arrives on ``pieces``; ``job`` ends
    with the completion."""

    def __init__(self, pieces: asyncio.Queue[str], job: asyncio.Future[Completion]) -> None:
        self.pieces = pieces
        self.job = job

    async def rest(self) -> AsyncIterator[str]:
        """Every piece, in order, until the job ends (its exception is raised here)."""
        while True:
            if not self.pieces.empty():
                yield self.pieces.get_nowait()
                continue
            if self.job.done():
                self.job.result()
                return
            getter = asyncio.ensure_future(self.pieces.get())
            try:
                await asyncio.wait([getter, self.job], return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()

    def cancel(self) -> None:
        self.job.cancel()  # the scheduler sets the job's cancel event


async def open_stream(run: Run) -> Opened:
    """Start ``run`` (it gets the ``on_text`` callback to hand to the engine) and return once
    the first piece is settled or the job ended; errors before that are raised here."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str] = asyncio.Queue()
    arrived = asyncio.Event()

    def on_text(piece: str) -> None:  # on the generation thread
        loop.call_soon_threadsafe(_put, pieces, arrived, piece)

    job = asyncio.ensure_future(run(on_text))
    waiter = asyncio.ensure_future(arrived.wait())
    try:
        await asyncio.wait([job, waiter], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        job.cancel()
        raise
    finally:
        waiter.cancel()
    if job.done():
        job.result()  # raises QueueFull, ShuttingDown, ... before any byte
    return Opened(pieces, job)


def _put(pieces: asyncio.Queue[str], arrived: asyncio.Event, piece: str) -> None:
    pieces.put_nowait(piece)
    arrived.set()


class ChunkWriter:
    """vLLM's chunk shape for one stream: id, created and model repeated on every chunk."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        body: dict[str, Any] = {**self.base, "choices": [choice]}
        if self.include_usage:
            body["usage"] = None
        return event(body)

    def usage(self, done: Completion) -> bytes:
        total = done.prompt_tokens + done.completion_tokens
        usage = {"prompt_tokens": done.prompt_tokens, "completion_tokens":
                 done.completion_tokens, "total_tokens": total}  # fmt: skip
        return event({**self.base, "choices": [], "usage": usage})


def event(body: Any) -> bytes:
    return b"data: " + msgspec.json.encode(body) + b"\n\n"
