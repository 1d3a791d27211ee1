"""Calling a tier: the one place that catches httpx errors and maps them onto the error tree.

>>> client = TierClient(settings.tiers["prod"], settings)
>>> reply = await client.complete(payload, budget_s=120.0, request_id="abc")
>>> reply.completion.choices[0].message.content

Every tier is an OpenAI-compatible server (vLLM, or the embedded CPU tier). A ``modal`` tier
adds Modal's proxy-auth headers and may answer ``303 See Other`` to a result URL after
holding a request for 150 s (a cold 32B boot takes ~7 minutes), so redirects are followed by
hand, within the request's budget and the tier's hop limit, and credentials go only to the
tier's own origin.

Mapping (by exception type and status code, never by message text):

=============================  =======================================
connect error / connect timeout  503 TierUnavailable (Retry-After)
budget used up, read timeout     504 TierTimeout (names the budget)
more 303 hops than allowed       504 TierTimeout
other transport errors           502 BadUpstreamResponse
2xx with an unreadable body      502 BadUpstreamResponse
400, 404, 413, 422 from the tier its status, UpstreamRejected (tier's reason)
401, 403 from the tier           502 BadUpstreamResponse (gateway's credentials)
408                              504 TierTimeout
429, 503                         503 TierUnavailable (tier's Retry-After)
other 5xx                        502 BadUpstreamResponse
=============================  =======================================
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import msgspec

from gateway.errors import (
    BadUpstreamResponse,
    GatewayError,
    TierTimeout,
    TierUnavailable,
    UpstreamRejected,
)
from gateway.schemas import ChatCompletion
from gateway.settings import MODAL_HOLD_S, Settings, Tier
from gateway.transport import (
    RawRequest,
    RawResponse,
    decode_content,
    default_transport,
    exchanger_for,
)

CHAT_PATH = "/v1/chat/completions"
HEALTH_PATH = "/health"
PROBE_TIMEOUT = httpx.Timeout(10.0, connect=5.0)  # a health answer is instant once up
# A Modal endpoint holds a request while its container boots, then answers 303: a probe of a
# modal tier waits out the hold (that held request is what keeps the boot going).
MODAL_PROBE_TIMEOUT = httpx.Timeout(MODAL_HOLD_S + 10.0, connect=10.0)
UNAVAILABLE_RETRY_S = 5  # Retry-After when a tier refused the connection: a restart, usually
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Streams hold a connection for a whole generation: as many as the tier pool allows.
STREAM_LIMITS = httpx.Limits(
    max_connections=512, max_keepalive_connections=64, keepalive_expiry=4.0
)
EMPTY = ChatCompletion()


class TierStream:
    """A tier's SSE answer, opened: the status was 200 and its first bytes are in.

    ``chunks()`` yields the bytes as they come, the first ones included; a stall past the
    idle budget is a ``TierTimeout``, a reset or a broken body a ``BadUpstreamResponse``.
    ``aclose()`` hangs up on the tier, which stops its generation (vLLM aborts a request whose
    client went away)."""

    def __init__(
        self, tier: str, response: httpx.Response, first: bytes, rest: AsyncIterator[bytes],
        idle_s: float,
    ) -> None:  # fmt: skip
        self.tier = tier
        self.first = first
        self._response = response
        self._rest = rest
        self._idle_s = idle_s

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.first:
            yield self.first
        name = self.tier
        while True:
            try:
                async with asyncio.timeout(self._idle_s):
                    chunk = await anext(self._rest, None)
            except TimeoutError:
                raise TierTimeout(
                    f"tier {name} stalled: nothing for {self._idle_s:g} s mid-stream",
                    tier=name,
                    budget_s=self._idle_s,
                ) from None
            except httpx.HTTPError as exc:
                raise BadUpstreamResponse(
                    f"tier {name} broke off the stream ({type(exc).__name__})", tier=name
                ) from None
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class TierReply(msgspec.Struct, frozen=True, kw_only=True):
    body: bytes  # the tier's JSON, untouched (the OpenAI surface forwards it as is)
    completion: ChatCompletion
    latency_s: float
    stream: TierStream | None = None  # a streamed answer, opened (body and completion empty)


class _UpstreamErrorBody(msgspec.Struct):
    """vLLM's error envelope: ``{"error": {"message": ...}}`` (current) or the flat form."""

    error: dict[str, Any] | None = None
    message: str | None = None
    detail: Any = None


def upstream_reason(body: bytes) -> str:
    """The tier's own words about a refusal, or a short excerpt of the body."""
    try:
        err = msgspec.json.decode(body, type=_UpstreamErrorBody)
    except msgspec.MsgspecError:
        return body[:300].decode("utf-8", "replace")
    if err.error and isinstance(err.error.get("message"), str):
        return str(err.error["message"])
    if err.message:
        return err.message
    if err.detail is not None:
        return str(err.detail)[:300]
    return body[:300].decode("utf-8", "replace")


def _retry_after(response: RawResponse, default: int) -> str:
    value = response.header("retry-after") or ""
    return value if value.isdigit() else str(default)


class TierClient:
    """One connection pool per tier, owned by the app's lifespan.

    Requests go to the transport as ``RawRequest``s: no ``httpx.AsyncClient`` layers (auth,
    cookies, redirects, event hooks, URL merging), which this client does not need and which
    cost about a sixth of the gateway's CPU per request (py-spy, c=16). An injected httpx
    transport (respx, ``httpx.MockTransport``, a cassette) is reached through
    ``HttpxExchanger``, so tests keep httpx's API."""

    def __init__(
        self,
        tier: Tier,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.tier = tier
        headers = {"user-agent": "tier-gateway/0.1"}
        if tier.kind == "modal" and settings.modal_key and settings.modal_secret:
            headers["Modal-Key"] = settings.modal_key.reveal()
            headers["Modal-Secret"] = settings.modal_secret.reveal()
        self._auth = frozenset(k for k in headers if k.startswith("Modal-"))
        self._headers = tuple(headers.items())
        self._origin = _origin(tier.url) if tier.url else None
        json_post = (*self._headers, ("content-type", "application/json"))
        self._chat = RawRequest.to("POST", tier.url + CHAT_PATH, json_post) if tier.url else None
        self._health = (
            RawRequest.to("GET", tier.url + HEALTH_PATH, self._headers) if tier.url else None
        )
        self._transport = transport or default_transport()  # tests inject theirs
        self._injected = transport
        self._streaming: httpx.AsyncClient | None = None  # made by the first stream
        self._exchanger = exchanger_for(self._transport)

    async def aclose(self) -> None:
        await self._transport.aclose()
        if self._streaming is not None:
            await self._streaming.aclose()

    async def open_stream(
        self, payload: bytes, *, budget_s: float, idle_s: float, request_id: str | None = None
    ) -> TierReply:
        """POST a streaming chat completion and wait, within ``budget_s`` (the time to first
        token), for the status and the first bytes; map failures as ``complete`` does.

        Streams go through httpx's own pool, not the buffering HTTP/1.1 client under
        ``complete``. Redirects are not followed: a Modal tier that answers 303 is still
        booting, which is a 503 with Retry-After (or a fallback) before any byte went out."""
        if self._chat is None:
            raise self._unconfigured()
        name = self.tier.name
        if self._streaming is None:
            self._streaming = httpx.AsyncClient(
                transport=self._injected or httpx.AsyncHTTPTransport(limits=STREAM_LIMITS),
                # Reads are timed here (first token, then idle), per stream, not by httpx.
                timeout=httpx.Timeout(None, connect=self.tier.timeouts.connect),
            )
        headers = dict(self._chat.headers)
        headers["accept"] = "text/event-stream"
        if request_id:
            headers["x-request-id"] = request_id
        started = time.perf_counter()
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(budget_s):
                request = self._streaming.build_request(
                    "POST", self._chat.url, content=payload, headers=headers
                )
                response = await self._streaming.send(request, stream=True)
                if response.status_code != 200:
                    await response.aread()
                    raw = RawResponse(
                        response.status_code, b"", response.headers.raw, response.content
                    )
                    if response.status_code in REDIRECTS:
                        raise TierUnavailable(
                            f"tier {name} is still booting (it redirected the stream)",
                            tier=name,
                            headers={"Retry-After": str(UNAVAILABLE_RETRY_S)},
                        )
                    self._raise_for_status(raw)
                if response.is_stream_consumed:  # an in-memory transport read it all (respx)
                    first, rest = response.content, _no_more()
                else:
                    rest = response.aiter_raw()
                    first = b""
                    while not first:  # the first bytes of the body: the tier has begun
                        chunk = await anext(rest, None)
                        if chunk is None:
                            break
                        first = chunk
        except TimeoutError:
            if response is not None:
                await response.aclose()
            raise TierTimeout(
                f"tier {name} sent no first token within {budget_s:g} s",
                tier=name,
                budget_s=round(budget_s, 3),
            ) from None
        except httpx.ConnectError:
            raise self._connect_failed() from None
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise self._connect_failed() from None
            raise TierTimeout(
                f"tier {name} sent no first token within {budget_s:g} s",
                tier=name,
                budget_s=round(budget_s, 3),
            ) from None
        except httpx.HTTPError as exc:
            if response is not None:
                await response.aclose()
            raise BadUpstreamResponse(
                f"tier {name} broke off the exchange ({type(exc).__name__})", tier=name
            ) from None
        except GatewayError:
            if response is not None:
                await response.aclose()
            raise
        stream = TierStream(name, response, first, rest, idle_s)
        latency = time.perf_counter() - started
        return TierReply(body=b"", completion=EMPTY, latency_s=latency, stream=stream)

    def _unconfigured(self) -> TierUnavailable:
        setting = f"GATEWAY_TIER_{self.tier.name.upper()}_URL"
        return TierUnavailable(
            f"tier {self.tier.name} is not configured: set {setting}",
            tier=self.tier.name,
            state="unconfigured",
            missing_setting=setting,
        )

    async def complete(
        self, payload: bytes, *, budget_s: float, request_id: str | None = None
    ) -> TierReply:
        """POST a chat completion; follow redirects; answer the parsed reply or raise."""
        if self._chat is None:
            raise self._unconfigured()
        name = self.tier.name
        started = time.perf_counter()
        request = self._chat._replace(body=payload)
        if request_id:
            request = request._replace(headers=(*request.headers, ("x-request-id", request_id)))
        try:
            async with asyncio.timeout(budget_s):
                response = await self._send_following(
                    request,
                    started=started,
                    budget_s=budget_s,
                )
        except TimeoutError:
            raise TierTimeout(
                f"tier {name} did not answer within its {budget_s:g} s budget",
                tier=name,
                budget_s=round(budget_s, 3),
            ) from None
        except httpx.TimeoutException as exc:  # connect timeout: nobody is there
            if isinstance(exc, httpx.ConnectTimeout):
                raise self._connect_failed() from None
            raise TierTimeout(
                f"tier {name} stopped answering within its {budget_s:g} s budget",
                tier=name,
                budget_s=round(budget_s, 3),
            ) from None
        except httpx.ConnectError:
            raise self._connect_failed() from None
        except httpx.TransportError as exc:
            raise BadUpstreamResponse(
                f"tier {name} broke off the exchange ({type(exc).__name__})", tier=name
            ) from None
        latency = time.perf_counter() - started
        self._raise_for_status(response)
        try:
            body = decode_content(response)
            completion = msgspec.json.decode(body, type=ChatCompletion)
        except (msgspec.MsgspecError, httpx.DecodingError):
            raise BadUpstreamResponse(
                f"tier {name} answered {response.status} with a body that is not a chat completion",
                tier=name,
            ) from None
        if not completion.choices:
            raise BadUpstreamResponse(f"tier {name} answered with no choices", tier=name)
        return TierReply(body=body, completion=completion, latency_s=latency)

    async def _send_following(
        self, request: RawRequest, *, started: float, budget_s: float
    ) -> RawResponse:
        hops = 0
        connect = self.tier.timeouts.connect
        while True:
            left = max(budget_s - (time.perf_counter() - started), 0.001)
            response = await self._exchanger.exchange(
                request, connect_timeout=min(connect, left), read_timeout=left, pool_timeout=left
            )
            location = response.header("location") if response.status in REDIRECTS else None
            if location is None:
                return response
            hops += 1
            if hops > self.tier.max_redirects:
                raise TierTimeout(
                    f"tier {self.tier.name} was still booting after {hops - 1} redirects "
                    f"(Modal holds each for 150 s); its limit is {self.tier.max_redirects}",
                    tier=self.tier.name,
                    budget_s=round(budget_s, 3),
                    redirects=hops - 1,
                )
            target = urljoin(request.url, location)
            same_origin = _origin(target) == self._origin
            # 303 turns the call into a GET of the result URL; 307/308 repeat the POST.
            method = "GET" if response.status in (301, 302, 303) else request.method
            # never hand proxy-auth tokens to another host
            headers = self._headers if same_origin else self._headers_without_auth()
            if method == "POST":
                headers = (*headers, ("content-type", "application/json"))
            body = request.body if method == "POST" else b""
            request = RawRequest.to(method, target, headers, body)

    def _headers_without_auth(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in self._headers if k not in self._auth)

    def _connect_failed(self) -> TierUnavailable:
        name = self.tier.name
        return TierUnavailable(
            f"tier {name} could not be reached",
            tier=name,
            headers={"Retry-After": str(UNAVAILABLE_RETRY_S)},
        )

    def _raise_for_status(self, response: RawResponse) -> None:
        status = response.status
        if 200 <= status < 300:
            return
        name = self.tier.name
        error: GatewayError
        if status in (400, 404, 413, 422):
            reason = upstream_reason(response.body)
            error = UpstreamRejected(
                f"tier {name} rejected the request: {reason}",
                status=status,
                tier=name,
                upstream_status=status,
                upstream_reason=reason,
            )
        elif status in (401, 403):
            error = BadUpstreamResponse(
                f"tier {name} refused the gateway's credentials ({status}); check "
                "GATEWAY_MODAL_KEY / GATEWAY_MODAL_SECRET",
                tier=name,
                upstream_status=status,
            )
        elif status == 408:
            error = TierTimeout(f"tier {name} timed the request out", tier=name)
        elif status in (429, 503):
            error = TierUnavailable(
                f"tier {name} is not taking requests now ({status})",
                tier=name,
                upstream_status=status,
                headers={"Retry-After": _retry_after(response, UNAVAILABLE_RETRY_S)},
            )
        elif status == 504:
            error = TierTimeout(f"tier {name}'s edge timed out", tier=name, upstream_status=504)
        else:
            error = BadUpstreamResponse(
                f"tier {name} answered {status}", tier=name, upstream_status=status
            )
        raise error

    async def probe(self) -> bool:
        """``GET /health``: True when the tier says it is up. Never a completion."""
        if self._health is None:
            return False
        timeout = MODAL_PROBE_TIMEOUT if self.tier.kind == "modal" else PROBE_TIMEOUT
        try:
            async with asyncio.timeout(timeout.read):
                response = await self._exchanger.exchange(
                    self._health,
                    connect_timeout=timeout.connect,
                    read_timeout=timeout.read,
                    pool_timeout=timeout.pool,
                )
        except (httpx.HTTPError, TimeoutError):
            return False
        return response.status == 200


async def _no_more() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that ends at once


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc
