"""The HTTP transport under every ``TierClient``: httpx's API over aiohttp's HTTP/1.1 client.

>>> client = httpx.AsyncClient(transport=default_transport())

Why: profiled at 16 requests in flight through the gateway, httpx's default transport
(httpcore on anyio, with h11 parsing in pure Python) took most of the gateway's CPU; aiohttp
parses with its C extension (llhttp) on the running loop and cost far less per request
(figures in docs/benchmarks.md). ``httpx.AsyncClient`` stays the interface, so
``TierClient`` (timeouts, redirects followed by hand, error mapping) is unchanged, and tests
still hand ``create_app(..., transport=...)`` a mock transport instead.

aiohttp's exceptions are translated here into httpx's, by type, most specific first, so
``gateway.upstream`` keeps mapping one exception tree. Behaviour that differs from httpx's
transport, on purpose: proxy variables are not read (``gateway.settings`` is the only reader
of the environment), and aiohttp keeps no cookie jar of its own (httpx's client has one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx

# What a tier pool needs: 512 requests in flight to one tier is far past what the GPU tiers
# take at once (16 per container, config/tiers.toml); past it, requests queue for a socket.
DEFAULT_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128)

# (aiohttp type, httpx type): the first match wins, so subclasses come before their bases.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # unparsable status/headers
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx.ReadError),
    (aiohttp.ClientError, httpx.NetworkError),
)


@contextmanager
def _mapped(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(f"{type(exc).__name__}: {exc}", request=request) from exc
        raise  # unreachable: ClientError is the last row


class _Body(httpx.AsyncByteStream):
    """The response body, read as httpx asks for it; the socket goes back to the pool once
    the body is read to the end, and is closed if the caller stops early."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One ``aiohttp.ClientSession`` (created on first use, inside the running loop)."""

    def __init__(self, limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._ssl = httpx.create_ssl_context()  # httpx's CA bundle: same trust as before
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,  # 0: no limit, as httpx's None
            keepalive_timeout=self._limits.keepalive_expiry or 0,
            ssl=self._ssl,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # httpx decodes content-encoding itself
            trust_env=False,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open()
        timeout = request.extensions.get("timeout", {})
        try:
            data: bytes | httpx.AsyncByteStream | None = request.content or None
        except httpx.RequestNotRead:  # a streamed upload
            data = request.stream  # type: ignore[assignment]
            request.headers.pop("transfer-encoding", None)  # aiohttp chunks it itself
        with _mapped(request):
            response = await self._session.request(
                request.method,
                str(request.url),
                # raw: the names as the caller spelt them (multi_items() lower-cases them)
                headers=[
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                ],
                data=data,
                allow_redirects=False,  # TierClient follows redirects itself
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("ascii", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def default_transport(limits: httpx.Limits = DEFAULT_LIMITS) -> httpx.AsyncBaseTransport:
    """The transport ``TierClient`` uses when none is injected."""
    return AiohttpTransport(limits)
