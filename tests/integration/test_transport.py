"""gateway.routing.tier_http against real loopback sockets: what the aiohttp exchanger sends and
reads, how its pool behaves, and how TierClient maps each failure. A small asyncio server
plays the tier, one scripted answer per test (the hostile faults are in
test_hostile_tier.py)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from gateway.errors import BadUpstreamResponse, TierTimeout, TierUnavailable
from gateway.routing.tier_http import (
    AiohttpExchanger,
    BadAnswer,
    ConnectFailed,
    RawRequest,
    RawResponse,
)
from tests.hostile_tier import tier_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
COMPLETION = (
    b'{"id":"x","model":"dev","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"{}"},"finish_reason":"stop"}]}'
)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length) if length else b""


def answer(status: str, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


class Client:
    """The exchanger with httpx-like verbs, for short tests."""

    def __init__(self, exchanger: AiohttpExchanger) -> None:
        self.exchanger = exchanger

    async def post(self, url: str, body: bytes = b"{}", *headers: tuple[str, str]) -> RawResponse:
        request = RawRequest("POST", url, tuple(headers), body)
        return await self.exchanger.exchange(request, connect_timeout=5.0)

    async def get(self, url: str) -> RawResponse:
        return await self.exchanger.exchange(RawRequest("GET", url, ()), connect_timeout=5.0)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    exchanger = AiohttpExchanger()
    yield Client(exchanger)
    await exchanger.aclose()


async def test_post_reaches_the_server_and_the_answer_comes_back(serve, client) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(answer("201 Created", b'{"ok":true}', "x-tier: dev", "set-cookie: a=b"))
        await writer.drain()
        writer.close()

    url = await serve(handler)
    response = await client.post(url + "/v1/chat/completions", b'{"q":1}', ("Modal-Key", "k1"))
    assert response.status == 201
    assert response.body == b'{"ok":true}'
    assert response.header("x-tier") == "dev"
    head, body = seen[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nModal-Key: k1\r\n" in head  # the name as spelt: some servers care
    assert b"cookie" not in head.lower()
    assert body == b'{"q":1}'


async def test_keep_alive_reuses_one_connection(serve, client) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await read_request(reader)
                writer.write(answer("200 OK", b"{}"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    url = await serve(handler)
    for _ in range(3):
        assert (await client.post(url + "/x")).status == 200
    assert connections == 1


async def test_redirects_are_left_to_the_caller(serve, client) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer("303 See Other", b"", "location: /result/1"))
        await writer.drain()
        writer.close()

    url = await serve(handler)
    response = await client.post(url + "/x")
    assert response.status == 303
    assert response.header("location") == "/result/1"


async def closed_port() -> str:
    """A loopback URL nobody listens on: bind a port, close it, reuse its number."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return f"http://127.0.0.1:{port}"


async def test_refused_connection_and_early_hang_up_are_told_apart(serve, client) -> None:
    requests = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1
        writer.close()

    with pytest.raises(ConnectFailed):
        await client.get(await closed_port() + "/x")
    with pytest.raises(BadAnswer):
        await client.post(await serve(hang_up) + "/x")
    assert requests == 1  # a fresh socket hung up on: that is the answer, never repeated


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate"])
async def test_tier_client_asks_for_identity_and_decodes_what_comes_anyway(
    serve, encoding: str
) -> None:
    # a proxy on the way may compress even unasked: the tier client decodes, with a cap
    sent = {"identity": COMPLETION, "gzip": gzip.compress(COMPLETION)}.get(encoding)
    if sent is None:
        import zlib

        sent = zlib.compress(COMPLETION)
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append((await read_request(reader))[0])
        writer.write(answer("200 OK", sent, f"content-encoding: {encoding}"))
        await writer.drain()
        writer.close()

    tier = tier_client(await serve(handler))
    try:
        reply = await tier.complete(b"{}", budget_s=5.0)
    finally:
        await tier.aclose()
    assert reply.body == COMPLETION
    assert reply.completion.choices[0].message.content == "{}"
    assert b"\r\naccept-encoding: identity\r\n" in heads[0].lower()


async def test_tier_client_maps_transport_failures(serve) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # say nothing until the client gives up and hangs up
        writer.close()

    cases: list[tuple[str, type[Exception], float]] = [
        (await closed_port(), TierUnavailable, 5.0),
        (await serve(hang_up), BadUpstreamResponse, 5.0),
        (await serve(silent), TierTimeout, 0.3),
    ]
    for url, error, budget in cases:
        tier = tier_client(url)
        try:
            with pytest.raises(error) as caught:
                await tier.complete(b"{}", budget_s=budget)
        finally:
            await tier.aclose()
        assert caught.value.members["tier"] == "dev"


async def test_chunked_and_close_delimited_bodies_are_read_whole(serve, client) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b'{"a":', b"1}"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"b":')
        await writer.drain()
        writer.write(b"2}")
        writer.close()

    assert (await client.get(await serve(chunked) + "/x")).body == b'{"a":1}'
    assert (await client.get(await serve(until_close) + "/x")).body == b'{"b":2}'


def counting_server(*, close_after: int | None = None, drop_request: int | None = None):
    """Answers {} on one connection per client; ``close_after``: answer with
    ``connection: close`` from that request on; ``drop_request``: hang up, unanswered, on that
    request (counting from 1 over the server's life)."""
    state = {"connections": 0, "requests": 0}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        try:
            while True:
                await read_request(reader)
                state["requests"] += 1
                if state["requests"] == drop_request:
                    break
                closing = close_after is not None and state["requests"] >= close_after
                writer.write(answer("200 OK", b"{}", *(["connection: close"] if closing else [])))
                await writer.drain()
                if closing:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    return handler, state


async def test_connection_close_is_honoured(serve, client) -> None:
    handler, state = counting_server(close_after=1)
    url = await serve(handler)
    for _ in range(3):
        assert (await client.post(url + "/x")).status == 200
    assert state["connections"] == 3


async def test_a_reused_socket_closed_before_the_answer_is_retried_once(serve, client) -> None:
    # The server takes the second request on the kept-alive socket and hangs up on it, as an
    # idle timer racing the request does: the client repeats it on a fresh connection.
    handler, state = counting_server(drop_request=2)
    url = await serve(handler)
    assert (await client.post(url + "/x")).status == 200
    assert (await client.post(url + "/x")).status == 200
    assert state == {"connections": 2, "requests": 3}


async def test_garbage_and_oversized_answers_are_bad_answers(serve) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SPDY/9 banana\r\n\r\n")
        await writer.drain()
        writer.close()

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer("200 OK", b"x" * 5000))
        await writer.drain()
        writer.close()

    async def big_gzip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer("200 OK", gzip.compress(b"x" * 5000), "content-encoding: gzip"))
        await writer.drain()
        writer.close()

    exchanger = AiohttpExchanger(max_body_bytes=1024)
    small = Client(exchanger)
    try:
        with pytest.raises(BadAnswer, match="unparsable"):
            await small.get(await serve(garbage) + "/x")
        with pytest.raises(BadAnswer, match="over 1024 bytes"):
            await small.get(await serve(big) + "/x")
        with pytest.raises(BadAnswer, match="decoded answer is over 1024 bytes"):
            await small.get(await serve(big_gzip) + "/x")
    finally:
        await exchanger.aclose()


async def test_pool_limit_queues(serve) -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await release.wait()
        writer.write(answer("200 OK", b"{}"))
        await writer.drain()
        writer.close()

    url = await serve(slow)
    exchanger = AiohttpExchanger(max_connections=1)
    one = Client(exchanger)
    try:
        first = asyncio.create_task(one.get(url + "/x"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(one.get(url + "/x"))  # waits for the first's socket
        await asyncio.sleep(0.05)
        assert not second.done()
        release.set()
        assert (await first).status == 200
        assert (await second).status == 200
    finally:
        await exchanger.aclose()


async def test_a_cancelled_exchange_never_leaves_its_socket_in_the_pool(serve, client) -> None:
    handler, state = counting_server(drop_request=None)
    silent_once = {"done": False}

    async def first_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not silent_once["done"]:
            silent_once["done"] = True
            state["connections"] += 1
            await read_request(reader)
            await reader.read()  # never answers; the client gives up
            writer.close()
            return
        await handler(reader, writer)

    url = await serve(first_silent)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await client.post(url + "/x")
    assert (await client.post(url + "/x")).status == 200
    assert state["connections"] == 2  # the second request did not reuse the spent socket


async def test_header_values_cannot_smuggle_lines(serve, client) -> None:
    handler, state = counting_server()
    url = await serve(handler)
    with pytest.raises((BadAnswer, ValueError)):
        await client.post(url + "/x", b"{}", ("x-a", "1\r\nx-b: 2"))
    assert state["requests"] == 0


async def test_https_with_a_trusted_and_an_untrusted_certificate() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer("200 OK", b'{"tls":true}'))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_context)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    good, strict = AiohttpExchanger(ssl_context=trusting), AiohttpExchanger()  # public CAs
    try:
        assert (await Client(good).get(url)).body == b'{"tls":true}'
        with pytest.raises(ConnectFailed):
            await Client(strict).get(url)
    finally:
        await good.aclose()
        await strict.aclose()
        server.close()
        await server.wait_closed()


async def test_silence_is_left_to_the_callers_deadline(serve, client) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()
        writer.close()

    url = await serve(silent)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.post(url + "/x")
