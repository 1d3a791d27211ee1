"""``cancel_and_wait`` stops a loop that loses a cancel (as one around a redis-py call does on
Python 3.11), where a single ``cancel()`` leaves it running."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.clock import cancel_and_wait


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def loop_that_loses_its_first_cancel(beats: list[int]) -> None:
    lost = False
    while True:
        beats.append(1)
        try:
            await asyncio.sleep(0)  # one loop turn: no time passes in these tests
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True  # returned a result instead of raising, as wait_for may on 3.11


async def test_a_single_cancel_leaves_such_a_loop_running() -> None:
    """The fault being guarded against, shown: one cancel and the loop beats on."""
    beats: list[int] = []
    task = asyncio.create_task(loop_that_loses_its_first_cancel(beats))
    await turns(3)
    task.cancel()
    await turns(10)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_cancel_and_wait_stops_it() -> None:
    beats: list[int] = []
    task = asyncio.create_task(loop_that_loses_its_first_cancel(beats))
    await turns(3)
    await cancel_and_wait(task, None)
    assert task.cancelled()
    count = len(beats)
    await turns(10)
    assert len(beats) == count  # no beat after it returned


async def test_a_failed_task_is_stopped_quietly() -> None:
    async def fails() -> None:
        raise RuntimeError("already ended")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)  # its exception is retrieved, not raised or logged
    assert isinstance(task.exception(), RuntimeError)
