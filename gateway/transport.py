"""The HTTP/1.1 client under every ``TierClient``: a keep-alive pool on asyncio protocols,
parsed by httptools (llhttp, the parser uvicorn uses), that is also an httpx transport.

>>> transport = H1Transport()
>>> reply = await transport.exchange(RawRequest.to("POST", url, headers, body))  # hot path
>>> client = httpx.AsyncClient(transport=transport)                              # httpx API

Why not httpx's own transport, or aiohttp under httpx: measured through the gateway at 16
requests in flight, httpx's default transport (httpcore and h11 in pure Python) took most of
the gateway's CPU; aiohttp under httpx was ~3.7x better, and still ~0.22 ms of CPU per call
more than this client (docs/benchmarks.md). A tier call is one POST with a small JSON body
and a JSON answer, so the client is small: one request per connection at a time, bodies
buffered, redirects left to the caller (``TierClient`` follows them within its budget).

Behaviour worth knowing:

- ``exchange`` is the hot path; ``handle_async_request`` wraps it for ``httpx.AsyncClient``,
  so httpx decodes any content-encoding there. ``exchange`` does not ask for compression.
- A *reused* keep-alive connection that the server closes before any byte of the answer is
  retried once on a fresh connection: that is a server's idle timer racing the request
  (vLLM's uvicorn closes idle sockets after 5 s). A completion has no side effects, so the
  repeat is safe; a fresh connection that fails is never retried.
- Failures are raised as httpx's exceptions, by cause: ``ConnectError``/``ConnectTimeout``
  (nothing listening, TLS refused), ``ReadTimeout``, ``RemoteProtocolError`` (closed early,
  unparsable, too large), ``PoolTimeout``. Proxy variables are not read
  (``gateway.settings`` is the only reader of the environment) and no cookies are kept.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple, Protocol

import httptools
import httpx

# What a tier pool needs: 512 requests in flight to one tier is far past what the GPU tiers
# take at once (16 per container, config/tiers.toml); past it, requests queue for a socket.
# Idle sockets are dropped after 4 s, before the 5 s idle timer of vLLM's server fires.
DEFAULT_LIMITS = httpx.Limits(
    max_connections=512, max_keepalive_connections=128, keepalive_expiry=4.0
)
MAX_BODY_BYTES = 64 * 1024 * 1024  # a chat completion is kilobytes; this is a runaway guard
DEFAULT_PORTS = {"http": 80, "https": 443}


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


class RawRequest(NamedTuple):
    method: str
    url: str  # as the caller gave it (what errors and other transports see)
    origin: Origin
    target: str  # path and query, as sent on the request line
    headers: tuple[tuple[str, str], ...]  # host and content-length are added
    body: bytes = b""

    @classmethod
    def to(
        cls,
        method: str,
        url: str | httpx.URL,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> RawRequest:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        if method == "HEAD":  # its answer has a length but no body: the parser can't tell
            raise httpx.UnsupportedProtocol("HEAD is not supported by this transport")
        if parsed.scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {parsed.scheme!r}")
        origin = Origin(parsed.scheme, parsed.host, parsed.port or DEFAULT_PORTS[parsed.scheme])
        target = parsed.raw_path.decode("ascii") or "/"
        return cls(method, str(url), origin, target, tuple(headers), body)


class RawResponse(NamedTuple):
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]  # as received; names in their original case
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None


def encode_head(request: RawRequest) -> bytes:
    """The request line and headers. Values travel as given: callers pass headers that
    httpx has validated, or constants of their own."""
    origin = request.origin
    host = (
        origin.host
        if origin.port == DEFAULT_PORTS[origin.scheme]
        else (f"{origin.host}:{origin.port}")
    )
    if ":" in origin.host:  # an IPv6 literal
        host = f"[{origin.host}]" + ("" if host == origin.host else f":{origin.port}")
    lines = [f"{request.method} {request.target} HTTP/1.1", f"Host: {host}"]
    for name, value in request.headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise httpx.LocalProtocolError(f"illegal characters in header {name!r}")
        lines.append(f"{name}: {value}")
    if request.body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One socket, one exchange at a time; httptools calls the ``on_*`` methods."""

    def __init__(self, origin: Origin, max_body: int) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.max_body = max_body
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._waiter: asyncio.Future[RawResponse] | None = None
        self._reset()

    def _reset(self) -> None:
        self._got_bytes = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._headers_done = False
        self._until_close = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection is not reusable
            return
        self._got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:  # callbacks' errors come wrapped in it
            if self._size > self.max_body:
                self._fail(httpx.RemoteProtocolError(f"answer body over {self.max_body} bytes"))
            else:
                self._fail(httpx.RemoteProtocolError(f"unparsable answer: {exc}"))

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost finishes the story

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and self._until_close:  # body delimited by the close
            self._complete()
            return
        error = _Closed(
            "the server closed the connection without answering",
            before_answer=not self._got_bytes,
        )
        waiter.set_exception(error)

    # httptools
    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        names = {name.lower(): value for name, value in self._headers}
        chunked = b"chunked" in names.get(b"transfer-encoding", b"").lower()
        status = self.parser.get_status_code()
        self._until_close = (
            b"content-length" not in names
            and not chunked
            and status >= 200
            and status not in (204, 304)
        )

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body:
            raise httpx.RemoteProtocolError("too large")  # stops the parser (see above)
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete()

    # the pool's side
    def send(self, head: bytes, body: bytes) -> asyncio.Future[RawResponse]:
        assert self.transport is not None
        self._reset()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.writelines((head, body))
        return self._waiter

    @property
    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if not self.parser.should_keep_alive() or self._until_close:
            self.close()
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        waiter.set_result(
            RawResponse(self.parser.get_status_code(), self._reason, self._headers, body)
        )

    def _fail(self, error: Exception) -> None:
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)


class _Closed(httpx.RemoteProtocolError):
    def __init__(self, message: str, *, before_answer: bool) -> None:
        super().__init__(message)
        self.before_answer = before_answer


class H1Transport(httpx.AsyncBaseTransport):
    """A keep-alive pool per origin; created idle, sockets opened on first use."""

    def __init__(
        self,
        limits: httpx.Limits = DEFAULT_LIMITS,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._limits = limits
        self._ssl_context = ssl_context
        self._max_body = max_body_bytes
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = httpx.create_ssl_context()  # httpx's CA bundle: same trust as before
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    async def exchange(
        self,
        request: RawRequest,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        pool_timeout: float | None = None,
    ) -> RawResponse:
        """Send ``request``, answer the whole response. Timeouts in seconds, None: no limit
        (callers that hold a deadline of their own wrap this call in ``asyncio.timeout``)."""
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        head = encode_head(request)
        slots = self._slots
        if slots is None:
            slots = self._slots = asyncio.Semaphore(self._limits.max_connections or 2**31)
        if slots.locked():
            try:
                async with asyncio.timeout(pool_timeout):
                    await slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no connection came free in time") from None
        else:
            await slots.acquire()
        try:
            connection = await self._connection(request.origin, connect_timeout)
            try:
                return await self._send(connection, head, request.body, read_timeout)
            except _Closed as exc:
                if not (connection.reused and exc.before_answer):
                    raise
            # a reused socket the server had already given up on: once more, on a fresh one
            connection = await self._connection(request.origin, connect_timeout, fresh=True)
            return await self._send(connection, head, request.body, read_timeout)
        finally:
            slots.release()

    async def _send(
        self, connection: _Connection, head: bytes, body: bytes, read_timeout: float | None
    ) -> RawResponse:
        done = False
        try:
            waiter = connection.send(head, body)
            if read_timeout is None:
                response = await waiter
            else:
                try:
                    async with asyncio.timeout(read_timeout):
                        response = await waiter
                except TimeoutError:
                    raise httpx.ReadTimeout(
                        f"no answer within the read timeout ({read_timeout:g} s)"
                    ) from None
            done = True
        finally:
            if not done:  # failed, timed out or cancelled mid-exchange: the socket is spent
                connection.close()
        if connection.reusable:
            self._release(connection)
        return response

    async def _connection(
        self, origin: Origin, connect_timeout: float | None, *, fresh: bool = False
    ) -> _Connection:
        idle = self._idle.get(origin)
        if idle and not fresh:
            expiry = self._limits.keepalive_expiry
            now = time.monotonic()
            while idle:
                connection = idle.pop()  # the most recently used: the least likely to be stale
                if connection.reusable and (expiry is None or now - connection.idle_since < expiry):
                    connection.reused = True
                    return connection
                connection.close()
        loop = asyncio.get_running_loop()
        tls = origin.scheme == "https"
        try:
            async with asyncio.timeout(connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin, self._max_body),
                    origin.host,
                    origin.port,
                    ssl=self._ssl() if tls else None,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"could not connect to {origin.host}:{origin.port} within {connect_timeout:g} s"
            ) from None
        except OSError as exc:  # refused, unreachable, name not found, TLS refused
            raise httpx.ConnectError(
                f"could not connect to {origin.host}:{origin.port}: {exc}"
            ) from None
        return connection

    def _release(self, connection: _Connection) -> None:
        assert connection.transport is not None
        idle = self._idle.setdefault(connection.origin, deque())
        keep = self._limits.max_keepalive_connections
        if self._closed or (keep is not None and len(idle) >= keep):
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    # httpx's API
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streamed upload: buffered, tier bodies are small
            body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
        headers = tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in (b"host", b"content-length", b"transfer-encoding", b"connection")
        )
        raw = RawRequest.to(request.method, request.url, headers, body)
        try:
            response = await self.exchange(
                raw,
                connect_timeout=timeout.get("connect"),
                read_timeout=timeout.get("read"),
                pool_timeout=timeout.get("pool"),
            )
        except httpx.TransportError as exc:
            exc.request = request
            raise
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=httpx.ByteStream(response.body),  # httpx decodes content-encoding
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason},
        )

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()


def decode_content(response: RawResponse) -> bytes:
    """The body with gzip/deflate undone (``exchange`` does not ask for either, but a proxy
    on the way may compress anyway)."""
    encoding = (response.header("content-encoding") or "identity").strip().lower()
    if encoding == "identity":
        return response.body
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            return zlib.decompress(response.body, wbits=47)  # 32 + 15: gzip or zlib header
        except zlib.error:
            if encoding == "deflate":  # raw deflate, as some servers send it
                try:
                    return zlib.decompress(response.body, wbits=-15)
                except zlib.error:
                    pass
            raise httpx.DecodingError(f"the body is not valid {encoding}") from None
    raise httpx.DecodingError(f"unsupported content-encoding {encoding!r}")


class Exchanger(Protocol):
    """What ``TierClient`` sends through: ``H1Transport`` itself, or any httpx transport
    behind ``HttpxExchanger`` (tests inject respx, ``httpx.MockTransport`` or a cassette)."""

    async def exchange(
        self,
        request: RawRequest,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        pool_timeout: float | None = None,
    ) -> RawResponse: ...


class HttpxExchanger:
    """``exchange`` over any ``httpx.AsyncBaseTransport``: the request becomes an
    ``httpx.Request``, the answer is read whole (and decoded, so the content-encoding header
    is dropped from what is returned)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def exchange(
        self,
        request: RawRequest,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        pool_timeout: float | None = None,
    ) -> RawResponse:
        outgoing = httpx.Request(
            request.method,
            request.url,
            headers=list(request.headers),
            content=request.body if request.method != "GET" else None,
            extensions={
                "timeout": {
                    "connect": connect_timeout,
                    "read": read_timeout,
                    "write": read_timeout,
                    "pool": pool_timeout,
                }
            },
        )
        response = await self.transport.handle_async_request(outgoing)
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        headers = [(k, v) for k, v in response.headers.raw if k.lower() != b"content-encoding"]
        reason = response.extensions.get("reason_phrase", b"")
        return RawResponse(response.status_code, reason, headers, body)


def exchanger_for(transport: httpx.AsyncBaseTransport) -> Exchanger:
    return transport if isinstance(transport, H1Transport) else HttpxExchanger(transport)


def default_transport(limits: httpx.Limits = DEFAULT_LIMITS) -> H1Transport:
    """The transport ``TierClient`` uses when none is injected."""
    return H1Transport(limits)
