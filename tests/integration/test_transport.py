"""gateway.transport against real loopback sockets: what httpx sees, how the pool behaves,
and how TierClient maps each failure. A small asyncio server plays the tier, one scripted
answer per test."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trustme

from gateway.errors import BadUpstreamResponse, TierTimeout, TierUnavailable
from gateway.settings import load_settings
from gateway.transport import H1Transport, RawRequest, default_transport, encode_head
from gateway.upstream import TierClient

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


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=default_transport()) as c:
        yield c


async def test_post_reaches_the_server_and_the_answer_comes_back(serve, client) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(answer("201 Created", b'{"ok":true}', "x-tier: dev", "set-cookie: a=b"))
        await writer.drain()
        writer.close()

    url = await serve(handler)
    response = await client.post(
        url + "/v1/chat/completions", content=b'{"q":1}', headers={"Modal-Key": "k1"}
    )
    assert response.status_code == 201
    assert response.json() == {"ok": True}
    assert response.headers["x-tier"] == "dev"
    assert response.reason_phrase == "Created"
    head, body = seen[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nModal-Key: k1\r\n" in head  # the name as spelt: some servers care
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
        assert (await client.post(url + "/x", content=b"{}")).status_code == 200
    assert connections == 1


async def test_gzip_body_is_decoded_once_by_httpx(serve, client) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer("200 OK", gzip.compress(b'{"a":1}'), "content-encoding: gzip"))
        await writer.drain()
        writer.close()

    url = await serve(handler)
    assert (await client.get(url + "/x")).json() == {"a": 1}


async def test_redirects_are_left_to_the_caller(serve, client) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer("303 See Other", b"", "location: /result/1"))
        await writer.drain()
        writer.close()

    url = await serve(handler)
    response = await client.post(url + "/x", content=b"{}")
    assert response.status_code == 303
    assert response.headers["location"] == "/result/1"


async def closed_port() -> str:
    """A loopback URL nobody listens on: bind a port, close it, reuse its number."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return f"http://127.0.0.1:{port}"


async def test_refused_connection_is_a_connect_error(client) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.get(await closed_port() + "/x")


async def test_disconnect_before_answering_is_a_protocol_error(serve, client) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    url = await serve(handler)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(url + "/x", content=b"{}")


async def test_silence_past_the_read_timeout_is_a_read_timeout(serve, client) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # say nothing until the client gives up and hangs up
        writer.close()

    url = await serve(handler)
    with pytest.raises(httpx.ReadTimeout):
        await client.post(url + "/x", content=b"{}", timeout=httpx.Timeout(5.0, read=0.2))


def tier_client(url: str) -> TierClient:
    settings = load_settings(
        environ={
            "GATEWAY_TIER_DEV_URL": url,
            "GATEWAY_TIER_DEV_KIND": "openai",
            "GATEWAY_LOCAL_TIER": "off",
        }
    )
    return TierClient(settings.tiers["dev"], settings)  # no transport: the default one


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_tier_client_uses_the_default_transport_end_to_end(serve, encoding: str) -> None:
    # a proxy on the way may compress even unasked: the tier client decodes
    sent = gzip.compress(COMPLETION) if encoding == "gzip" else COMPLETION

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
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
            with pytest.raises(error):
                await tier.complete(b"{}", budget_s=budget)
        finally:
            await tier.aclose()


# ---- H1Transport's own behaviour: framing, keep-alive, limits, TLS ----


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

    assert (await client.get(await serve(chunked) + "/x")).json() == {"a": 1}
    assert (await client.get(await serve(until_close) + "/x")).json() == {"b": 2}


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
        assert (await client.post(url + "/x", content=b"{}")).status_code == 200
    assert state["connections"] == 3


async def test_a_reused_socket_closed_before_the_answer_is_retried_once(serve, client) -> None:
    # The server takes the second request on the kept-alive socket and hangs up on it, as an
    # idle timer racing the request does: the client repeats it on a fresh connection.
    handler, state = counting_server(drop_request=2)
    url = await serve(handler)
    assert (await client.post(url + "/x", content=b"{}")).status_code == 200
    assert (await client.post(url + "/x", content=b"{}")).status_code == 200
    assert state == {"connections": 2, "requests": 3}


async def test_garbage_and_oversized_answers_are_protocol_errors(serve) -> None:
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

    transport = H1Transport(max_body_bytes=1000)
    async with httpx.AsyncClient(transport=transport) as small:
        with pytest.raises(httpx.RemoteProtocolError, match="unparsable"):
            await small.get(await serve(garbage) + "/x")
        with pytest.raises(httpx.RemoteProtocolError, match="over 1000 bytes"):
            await small.get(await serve(big) + "/x")


async def test_pool_limit_queues_then_times_out(serve) -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await release.wait()
        writer.write(answer("200 OK", b"{}"))
        await writer.drain()
        writer.close()

    url = await serve(slow)
    transport = H1Transport(httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=transport) as one:
        first = asyncio.create_task(one.get(url + "/x"))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await one.get(url + "/x", timeout=httpx.Timeout(5.0, pool=0.1))
        second = asyncio.create_task(one.get(url + "/x"))  # waits for the first's slot
        await asyncio.sleep(0.05)
        assert not second.done()
        release.set()
        assert (await first).status_code == 200
        assert (await second).status_code == 200


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
    with pytest.raises(httpx.ReadTimeout):
        await client.post(url + "/x", content=b"{}", timeout=httpx.Timeout(5.0, read=0.1))
    assert (await client.post(url + "/x", content=b"{}")).status_code == 200
    assert state["connections"] == 2  # the second request did not reuse the spent socket


async def test_what_it_does_not_speak_is_refused_before_any_socket() -> None:
    for method, url in (("HEAD", "http://127.0.0.1:9/x"), ("GET", "ftp://127.0.0.1:9/x")):
        with pytest.raises(httpx.UnsupportedProtocol):
            RawRequest.to(method, url)


async def test_header_values_cannot_smuggle_lines() -> None:
    request = RawRequest.to("GET", "http://127.0.0.1:9/x", [("x-a", "1\r\nx-b: 2")])
    with pytest.raises(httpx.LocalProtocolError):
        encode_head(request)


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
    try:
        async with httpx.AsyncClient(transport=H1Transport(ssl_context=trusting)) as good:
            assert (await good.get(url)).json() == {"tls": True}
        async with httpx.AsyncClient(transport=H1Transport()) as strict:  # public CAs only
            with pytest.raises(httpx.ConnectError):
                await strict.get(url)
    finally:
        server.close()
        await server.wait_closed()
