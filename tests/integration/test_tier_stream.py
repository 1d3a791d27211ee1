"""TierClient.open_stream over the shipping aiohttp client, against the hostile stand-in
tier: the body as it comes, the same caps and deadline as ``complete``, and a connection
that goes back to the pool only after a whole answer."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from gateway.errors import BadUpstreamResponse, TierTimeout, UpstreamRejected
from gateway.routing.tier_client import TierClient
from gateway.settings import load_settings
from tests.hostile_tier import HostileTier, tier_client


async def drain(tier: TierClient, budget_s: float, idle_timeout_s: float = 60.0) -> bytes:
    async with tier.open_stream(b"{}", budget_s=budget_s, idle_timeout_s=idle_timeout_s) as s:
        return b"".join([chunk async for chunk in s.chunks()])


async def test_a_stream_yields_its_chunks_and_its_connection_is_reused(
    hostile_tier: HostileTier,
) -> None:
    hostile_tier.script("stream", "ok")
    tier = tier_client(hostile_tier.url)
    try:
        async with tier.open_stream(b"{}", budget_s=5.0, request_id="s1") as stream:
            assert stream.status == 200
            assert stream.header("content-type") == "text/event-stream"
            body = b"".join([chunk async for chunk in stream.chunks()])
        assert body == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
        reply = await tier.complete(b"{}", budget_s=5.0, request_id="after")
    finally:
        await tier.aclose()
    assert b'\\"name\\": \\"after\\"' in reply.body
    assert hostile_tier.connections == 1  # the whole stream was read: the socket was reused


async def test_leaving_a_stream_early_aborts_it_and_never_reuses_its_socket(
    hostile_tier: HostileTier,
) -> None:
    hostile_tier.script("stream_stall", "ok")
    tier = tier_client(hostile_tier.url)
    try:
        async with tier.open_stream(b"{}", budget_s=5.0) as stream:
            async for chunk in stream.chunks():
                assert chunk == b"data: 1\n\n"
                break
        reply = await tier.complete(b"{}", budget_s=5.0, request_id="next")
    finally:
        await tier.aclose()
    assert b'\\"name\\": \\"next\\"' in reply.body
    assert hostile_tier.connections == 2


@pytest.mark.parametrize(("budget", "idle"), [(5.0, 0.2), (0.3, 60.0)])
async def test_a_stalled_stream_times_out_by_idle_gap_or_by_budget(
    hostile_tier: HostileTier, budget: float, idle: float
) -> None:
    hostile_tier.script("stream_stall")
    tier = tier_client(hostile_tier.url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(TierTimeout) as caught:
            await drain(tier, budget, idle)
    finally:
        await tier.aclose()
    assert caught.value.members["tier"] == "dev"
    assert loop.time() - started < 2.0


@pytest.mark.parametrize(
    ("fault", "error"), [("huge_chunked", BadUpstreamResponse), ("reset", BadUpstreamResponse)]
)
async def test_a_stream_past_the_cap_or_cut_short_is_a_502(
    hostile_tier: HostileTier, fault: str, error: type[Exception]
) -> None:
    hostile_tier.script(fault)
    settings = load_settings(
        environ={"GATEWAY_TIER_DEV_URL": hostile_tier.url, "GATEWAY_TIER_DEV_KIND": "openai"}
    )
    settings = msgspec.structs.replace(settings, max_answer_bytes=1024 * 1024)
    tier = TierClient(settings.tiers["dev"], settings)
    try:
        with pytest.raises(error):
            await drain(tier, 5.0)
    finally:
        await tier.aclose()


async def test_a_refusal_is_raised_before_the_stream_opens() -> None:
    refusal = b'{"message": "bad schema"}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 422 Unprocessable\r\ncontent-length: %d\r\n\r\n" % len(refusal))
        writer.write(refusal)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    tier = tier_client(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        with pytest.raises(UpstreamRejected) as caught:
            async with tier.open_stream(b"{}", budget_s=5.0):
                pytest.fail("a 422 opened a stream")
    finally:
        await tier.aclose()
        server.close()
        await server.wait_closed()
    assert caught.value.members["upstream_reason"] == "bad schema"
