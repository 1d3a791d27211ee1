"""The HTTP seam under every ``TierClient``: aiohttp (llhttp) on the hot path, any httpx
transport for tests and users, and what neither library guarantees on its own.

>>> exchanger = AiohttpExchanger(max_body_bytes=64 * MIB)
>>> response = await exchanger.exchange(RawRequest("POST", url, headers, body), connect_timeout=10)
>>> async with exchanger.open_stream(request, connect_timeout=10, idle_timeout=30) as stream:
...     async for chunk in stream.chunks():
...         ...

Why aiohttp called directly: a tier call is one POST with a JSON body; httpx's
``Request``/``Response`` objects alone cost ~0.1 ms per call (docs/benchmarks.md), and the
hand-written HTTP/1.1 client this replaces was a parser on a trust boundary. An injected httpx
transport (respx, ``httpx.MockTransport``, the record/replay cassettes) goes through
``HttpxExchanger``, which answers the same types.

What the seam guarantees, whichever library is under it (tests/integration/test_hostile_tier.py):

- 1xx answers are never final: aiohttp skips 100-199 (but 101) while reading the head, so
  the final answer is read for the request that asked for it; a 101 is a final non-2xx
  answer and its connection is never reused (aiohttp marks it upgraded).
- the response head is bounded (``MAX_FIELD_BYTES`` per line, ``MAX_HEADERS`` lines), the
  body by ``max_body_bytes`` (Content-Length checked first, then counted chunk by chunk);
- ``Accept-Encoding: identity`` is sent and aiohttp does not decompress; a tier that
  compresses anyway is unpacked here, chunk by chunk, never past ``max_body_bytes``;
- a connection goes back to the pool only when exactly one whole message was read from it:
  any failure, early close or unread body closes it (``response.close()``), aiohttp closes
  a connection holding parsed bytes past the message on release, and ``_OneMessageConnector``
  refuses a pooled connection that received bytes while idle (an unasked-for answer);
- no cookies, no proxies from the environment, no redirects (``TierClient`` follows them,
  by its own rules), no retries.

Deadlines are the caller's: ``TierClient`` wraps the whole exchange, body included, in
``asyncio.timeout``; ``open_stream`` adds an idle timeout per chunk.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import weakref
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import aiohttp
import httpx

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

MIB = 1024 * 1024
MAX_BODY_BYTES = 64 * MIB  # a chat completion is kilobytes; this is a runaway guard
# aiohttp's defaults, named: 8 KiB per header line is what nginx and uvicorn accept; 100
# header lines is far past what vLLM (6) or Modal's edge (~12) send, so a head is < 1 MiB.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 100
# 512 requests in flight to one tier is far past what the GPU tiers take at once (16 per
# container, config/tiers.toml); past it, requests queue for a socket. Idle sockets are
# dropped after 4 s, before the 5 s idle timer of vLLM's server fires.
MAX_CONNECTIONS = 512
KEEPALIVE_S = 4.0
READ_CHUNK = 64 * 1024  # aiohttp's read buffer: a typical answer arrives in one chunk
DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})
# Per task: where the connector notes whether the current attempt got a reused socket. A
# holder the caller owns, so the note survives aiohttp running connect in a copied context.
_ATTEMPT: contextvars.ContextVar[list[bool]] = contextvars.ContextVar("tier_http_attempt")


class ExchangeError(Exception):
    """The exchange failed; ``TierClient`` maps the subclass onto the error tree."""


class ConnectFailed(ExchangeError):
    """Nobody answered the connection (refused, unreachable, TLS refused, connect timeout)."""


class AnswerTimeout(ExchangeError):
    """Connected, but the answer (or the next chunk of a stream) did not come in time."""


class BadAnswer(ExchangeError):
    """An answer the seam will not use: unparsable, too large, cut short, badly encoded."""


class RawRequest(NamedTuple):
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


class RawResponse(NamedTuple):
    status: int
    headers: tuple[tuple[str, str], ...]  # as received; content-encoding already undone
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


class RawStream(NamedTuple):
    """An answer whose body is read as it comes: ``chunks()`` yields decoded bytes."""

    status: int
    headers: tuple[tuple[str, str], ...]
    chunks_of: Callable[[], AsyncIterator[bytes]]  # use ``chunks()``

    def header(self, name: str) -> str | None:
        return RawResponse(self.status, self.headers, b"").header(name)

    def chunks(self) -> AsyncIterator[bytes]:
        return self.chunks_of()

    async def read(self) -> bytes:
        """The whole (remaining) body, within the exchanger's cap."""
        return b"".join([chunk async for chunk in self.chunks()])


class Exchanger(Protocol):
    """What ``TierClient`` sends through."""

    async def exchange(self, request: RawRequest, *, connect_timeout: float) -> RawResponse:
        """Send ``request`` and answer the whole response (1xx skipped, body capped)."""
        ...

    def open_stream(
        self, request: RawRequest, *, connect_timeout: float, idle_timeout: float
    ) -> AbstractAsyncContextManager[RawStream]:
        """The answer's status and head; its body through ``RawStream.chunks()``."""
        ...

    async def aclose(self) -> None: ...


class _Decoder:
    """Undoes a content-encoding a tier sent unasked, never past ``limit`` bytes out."""

    def __init__(self, encoding: str, limit: int) -> None:
        encoding = encoding.strip().lower()
        if encoding not in DECODABLE:
            raise BadAnswer(f"the answer has an unsupported content-encoding {encoding!r}")
        self.encoding = encoding
        self.limit = limit
        self.out = 0
        self.raw_deflate = False
        # 32 + 15: a gzip or a zlib header, detected; a raw deflate stream is retried below
        self._z = zlib.decompressobj(wbits=47)
        self._started = False

    def feed(self, data: bytes) -> bytes:
        parts: list[bytes] = []
        try:
            while data:
                room = self.limit - self.out + 1  # one byte past the cap tells us it is over
                try:
                    part = self._z.decompress(data, room)
                except zlib.error:
                    if self.encoding != "deflate" or self._started:
                        raise
                    self._z = zlib.decompressobj(wbits=-15)  # raw deflate, as some servers send
                    self._started = True
                    continue
                self._started = True
                self.out += len(part)
                if self.out > self.limit:
                    raise BadAnswer(f"the decoded answer is over {self.limit} bytes")
                parts.append(part)
                data = self._z.unconsumed_tail
        except zlib.error:
            raise BadAnswer(f"the answer is not valid {self.encoding}") from None
        return b"".join(parts)

    def finish(self) -> bytes:
        if not self._z.eof:
            raise BadAnswer(f"the answer's {self.encoding} stream is cut short")
        return b""


class _OneMessageConnector(aiohttp.TCPConnector):
    """A pooled connection that holds bytes nobody asked for (a late or unsolicited answer
    that arrived while it sat idle) is closed, never handed to the next request: that
    answer would be read as the next request's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._served: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> aiohttp.connector.Connection:
        while True:
            connection = await super().connect(req, traces, timeout)
            protocol = connection.protocol
            if protocol is None or not protocol.should_close:
                attempt = _ATTEMPT.get(None)
                if attempt is not None:  # tell _start whether this socket served before
                    attempt.append(protocol in self._served)
                if protocol is not None:
                    self._served.add(protocol)
                return connection
            connection.close()  # a fresh connection never holds bytes: the loop ends


class AiohttpExchanger:
    """One ``aiohttp.ClientSession`` (and connection pool), created on first use in the
    running loop and closed by ``aclose`` (the app's lifespan, through ``TierClient``)."""

    def __init__(
        self,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _open_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ConnectFailed("the tier client is closed")
        if self._session is None:
            connector = _OneMessageConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE_S,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # a tier's cookies go nowhere
                trust_env=False,  # gateway.settings is the only reader of the environment
                auto_decompress=False,  # done here, with a cap (_Decoder)
                skip_auto_headers=("User-Agent",),  # TierClient sends its own
                timeout=aiohttp.ClientTimeout(total=None),  # the caller's deadline rules
                read_bufsize=READ_CHUNK,
                max_line_size=MAX_LINE_BYTES,
                max_field_size=MAX_FIELD_BYTES,
                max_headers=MAX_HEADERS,
                raise_for_status=False,
            )
        return self._session

    async def _start(self, request: RawRequest, connect_timeout: float) -> aiohttp.ClientResponse:
        session = self._open_session()
        attempt: list[bool] = []  # filled by _OneMessageConnector: was the socket reused?
        _ATTEMPT.set(attempt)
        try:
            try:
                return await self._send(session, request, connect_timeout)
            except aiohttp.ServerDisconnectedError:
                # Closed before any byte of an answer: on a kept-alive socket that is the
                # server's idle timer racing the request (vLLM's uvicorn closes idle sockets
                # after 5 s). A completion has no side effects: once more, on a fresh socket.
                # A fresh socket that fails is the tier's answer: never repeated.
                if not (attempt and attempt[-1]):
                    raise
                return await self._send(session, request, connect_timeout)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise ConnectFailed(f"could not connect: {exc}") from None
        except aiohttp.ServerTimeoutError as exc:
            raise AnswerTimeout(str(exc) or "no answer in time") from None
        except (aiohttp.ClientError, ValueError) as exc:  # bad head, early close, bad URL
            raise BadAnswer(_describe(exc)) from None

    async def _send(
        self, session: aiohttp.ClientSession, request: RawRequest, connect_timeout: float
    ) -> aiohttp.ClientResponse:
        return await session.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body if request.body or request.method == "POST" else None,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, connect=None),
        )

    def _check_length(self, response: aiohttp.ClientResponse) -> None:
        length = response.content_length
        if length is not None and length > self.max_body_bytes:
            raise BadAnswer(f"the answer's body is over {self.max_body_bytes} bytes ({length})")

    async def _body_chunks(
        self, response: aiohttp.ClientResponse, idle_timeout: float | None
    ) -> AsyncIterator[bytes]:
        """The body, decoded and capped; ends only at the message's own end."""
        cap = self.max_body_bytes
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        decoder = None if encoding == "identity" else _Decoder(encoding, cap)
        size = 0
        content = response.content
        try:
            while True:
                if idle_timeout is None:
                    chunk = await content.readany()
                else:
                    async with asyncio.timeout(idle_timeout):
                        chunk = await content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise BadAnswer(f"the answer's body is over {cap} bytes")
                if decoder is not None:
                    chunk = decoder.feed(chunk)
                    if not chunk:
                        continue
                yield chunk
        except TimeoutError:
            raise AnswerTimeout(f"no byte of the answer for {idle_timeout:g} s") from None
        except aiohttp.ClientError as exc:  # cut short, bad chunking, reset
            raise BadAnswer(_describe(exc)) from None
        if decoder is not None:
            decoder.finish()

    async def exchange(self, request: RawRequest, *, connect_timeout: float) -> RawResponse:
        response = await self._start(request, connect_timeout)
        whole = False
        try:
            self._check_length(response)
            if response.content_length is not None and "content-encoding" not in response.headers:
                # the common answer: a length within the cap, not encoded; read in one call
                body = await _read_payload(response)
            else:
                body = b"".join([chunk async for chunk in self._body_chunks(response, None)])
            whole = True
        finally:
            _finish(response, whole)
        return RawResponse(response.status, _headers(response), body)

    @asynccontextmanager
    async def open_stream(
        self, request: RawRequest, *, connect_timeout: float, idle_timeout: float
    ) -> AsyncIterator[RawStream]:
        """The answer's status and head now, its body as it comes. Leaving the block before
        the body's end (or on any error) closes the connection: the tier sees the request
        aborted, and the socket never returns to the pool mid-message."""
        response = await self._start(request, connect_timeout)
        state = {"whole": False}

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in self._body_chunks(response, idle_timeout):
                yield chunk
            state["whole"] = True

        try:
            self._check_length(response)
            yield RawStream(response.status, _headers(response), chunks)
        finally:
            _finish(response, state["whole"])

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_payload(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await response.content.read()
    except aiohttp.ClientError as exc:  # cut short, reset
        raise BadAnswer(_describe(exc)) from None


def _finish(response: aiohttp.ClientResponse, whole: bool) -> None:
    """Back to the pool only after exactly one whole message (aiohttp also closes it if
    bytes past the message were parsed); anything else closes the connection."""
    if whole:
        response.release()
    else:
        response.close()


def _headers(response: aiohttp.ClientResponse) -> tuple[tuple[str, str], ...]:
    return tuple(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in response.raw_headers
        if name.lower() != b"content-encoding"  # undone here
    )


def _describe(exc: BaseException) -> str:
    """An aiohttp error in a few words, without the tier's bytes (they may echo secrets)."""
    if isinstance(exc, aiohttp.ClientResponseError):  # a head aiohttp could not parse
        return f"unparsable answer ({exc.status})" if exc.status else "unparsable answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer's body was cut short or badly framed"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the tier closed the connection without a whole answer"
    return type(exc).__name__


class HttpxExchanger:
    """The seam over any ``httpx.AsyncBaseTransport`` (respx, ``httpx.MockTransport``, a
    cassette): the same types, caps and error classes as ``AiohttpExchanger``."""

    def __init__(
        self, transport: httpx.AsyncBaseTransport, *, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.transport = transport
        self.max_body_bytes = max_body_bytes

    async def _start(self, request: RawRequest, connect_timeout: float) -> httpx.Response:
        outgoing = httpx.Request(
            request.method,
            request.url,
            headers=list(request.headers),
            content=request.body if request.method != "GET" else None,
            extensions={"timeout": {"connect": connect_timeout}},
        )
        try:
            return await self.transport.handle_async_request(outgoing)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ConnectFailed(str(exc)) from None
        except httpx.TimeoutException as exc:
            raise AnswerTimeout(str(exc)) from None
        except httpx.TransportError as exc:
            raise BadAnswer(type(exc).__name__) from None

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        decoder = None if encoding == "identity" else _Decoder(encoding, self.max_body_bytes)
        size = 0
        # a response built in a test (``httpx.Response(200, json=...)``) holds its body
        # already; one from a real transport streams it
        source = _one(response.content) if response.is_stream_consumed else response.aiter_raw()
        try:
            async for chunk in source:
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise BadAnswer(f"the answer's body is over {self.max_body_bytes} bytes")
                yield decoder.feed(chunk) if decoder is not None else chunk
        except httpx.TimeoutException as exc:
            raise AnswerTimeout(str(exc)) from None
        except httpx.TransportError as exc:
            raise BadAnswer(type(exc).__name__) from None
        if decoder is not None:
            decoder.finish()

    async def exchange(self, request: RawRequest, *, connect_timeout: float) -> RawResponse:
        response = await self._start(request, connect_timeout)
        try:
            body = b"".join([chunk async for chunk in self._chunks(response)])
        finally:
            await response.aclose()
        return RawResponse(response.status_code, _httpx_headers(response), body)

    @asynccontextmanager
    async def open_stream(
        self, request: RawRequest, *, connect_timeout: float, idle_timeout: float
    ) -> AsyncIterator[RawStream]:
        response = await self._start(request, connect_timeout)

        async def chunks() -> AsyncIterator[bytes]:
            source = self._chunks(response)
            while True:
                try:
                    async with asyncio.timeout(idle_timeout):
                        chunk = await anext(source)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise AnswerTimeout(f"no byte of the answer for {idle_timeout:g} s") from None
                yield chunk

        try:
            yield RawStream(response.status_code, _httpx_headers(response), chunks)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _httpx_headers(response: httpx.Response) -> tuple[tuple[str, str], ...]:
    return tuple(
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in response.headers.raw
        if k.lower() != b"content-encoding"
    )


def exchanger_for(
    transport: httpx.AsyncBaseTransport | None, *, max_body_bytes: int = MAX_BODY_BYTES
) -> AiohttpExchanger | HttpxExchanger:
    """aiohttp unless a test or a user injected an httpx transport."""
    if transport is None:
        return AiohttpExchanger(max_body_bytes=max_body_bytes)
    return HttpxExchanger(transport, max_body_bytes=max_body_bytes)
