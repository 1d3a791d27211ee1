"""Calling a tier: the one place that maps transport failures onto the error tree.

>>> client = TierClient(settings.tiers["prod"], settings)
>>> reply = await client.complete(payload, budget_s=120.0, request_id="abc")
>>> reply.completion.choices[0].message.content

Every tier is an OpenAI-compatible server (vLLM, or the embedded CPU tier). A ``modal`` tier
adds Modal's proxy-auth headers and may answer ``303 See Other`` to a result URL after
holding a request for 150 s (a cold 32B boot takes ~7 minutes), so redirects are followed by
hand for ``modal`` tiers only, within the request's budget, the tier's hop limit and the
tier's own origin (scheme, host, port): a 303 becomes a GET without the body, a 307/308
repeats the POST. Other tiers' 3xx answers are 502s.

Mapping (by exception type and status code, never by message text):

=============================  =======================================
connect error / connect timeout  503 TierUnavailable (Retry-After)
budget used up, read timeout     504 TierTimeout (names the budget)
more 303 hops than allowed       504 TierTimeout
foreign or malformed Location    502 BadUpstreamResponse
other transport errors, caps     502 BadUpstreamResponse
2xx with an unreadable body      502 BadUpstreamResponse (shape, UTF-8, nesting)
400, 404, 413, 422 from the tier its status, UpstreamRejected (tier's reason)
401, 403 from the tier           502 BadUpstreamResponse (gateway's credentials)
408                              504 TierTimeout
429, 503                         503 TierUnavailable (tier's Retry-After, sanitized)
other 5xx                        502 BadUpstreamResponse
=============================  =======================================
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from gateway.redact import Redactor
from gateway.routing.tier_http import (
    AnswerTimeout,
    BadAnswer,
    ConnectFailed,
    Exchanger,
    RawRequest,
    RawResponse,
    RawStream,
    exchanger_for,
)
from gateway.schemas import ChatCompletion
from gateway.settings import MODAL_HOLD_S, Settings, Tier
from gateway.tierspec import tier_env_var

CHAT_PATH = "/v1/chat/completions"
HEALTH_PATH = "/health"
PROBE_CONNECT_S = 5.0  # a health answer is instant once up
PROBE_S = 10.0
# A Modal endpoint holds a request while its container boots, then answers 303: a probe of a
# modal tier waits out the hold (that held request is what keeps the boot going).
MODAL_PROBE_CONNECT_S = 10.0
MODAL_PROBE_S = MODAL_HOLD_S + 10.0
UNAVAILABLE_RETRY_S = 5  # Retry-After when a tier refused the connection: a restart, usually
MAX_RETRY_AFTER_S = 3600  # a tier asking for more than an hour is not a tier to wait for
STREAM_IDLE_S = 60.0  # the longest gap between two chunks of a stream (a long prefill)
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# The errors a tier's body can raise while it is decoded: wrong shape, invalid UTF-8,
# nesting past msgspec's depth limit. Each is the tier's fault: a 502 naming it.
UNREADABLE = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)


class TierReply(msgspec.Struct, frozen=True, kw_only=True):
    body: bytes  # the tier's JSON, untouched (the OpenAI surface forwards it as is)
    completion: ChatCompletion
    latency_s: float


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


def sanitize_retry_after(value: str | None, default: int) -> str:
    """A tier's ``Retry-After`` as the gateway passes it on: delay-seconds only (ASCII digits,
    at most ``MAX_RETRY_AFTER_S``); an HTTP-date, a non-ASCII or an odd value becomes
    ``default`` (the gateway keeps no wall clock to convert a date against)."""
    value = (value or "").strip()
    if not value or not value.isascii() or not value.isdigit():
        return str(default)
    return str(min(int(value[:6]), MAX_RETRY_AFTER_S))  # 6 digits already exceed the cap


class TierStream(msgspec.Struct, frozen=True, kw_only=True):
    """A 2xx answer whose body is still coming: ``async for chunk in stream.chunks()``.

    Chunks are decoded bytes; a gap longer than the idle timeout, or the call's budget
    running out, raises ``TierTimeout``; a cut, oversized or badly framed body raises
    ``BadUpstreamResponse``. Leaving ``open_stream``'s block early aborts the request."""

    status: int
    headers: tuple[tuple[str, str], ...]
    raw: RawStream
    tier: str
    budget_s: float
    deadline: float  # loop time

    def header(self, name: str) -> str | None:
        return self.raw.header(name)

    async def chunks(self) -> AsyncIterator[bytes]:
        source = self.raw.chunks()
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(self.deadline):
                    chunk = await anext(source)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if loop.time() >= self.deadline:
                    raise _budget_used(self.tier, self.budget_s) from None
                raise  # not ours: a caller's own timeout
            except AnswerTimeout as exc:
                raise TierTimeout(
                    f"tier {self.tier} stopped sending: {exc}", tier=self.tier
                ) from None
            except BadAnswer as exc:
                raise BadUpstreamResponse(
                    f"tier {self.tier} broke off its answer: {exc}", tier=self.tier
                ) from None
            yield chunk


class TierClient:
    """One connection pool per tier, owned by the app's lifespan (``aclose``).

    Tier calls go through ``gateway.routing.tier_http``: aiohttp by default; an injected httpx
    transport (respx, ``httpx.MockTransport``, a cassette) through ``HttpxExchanger``."""

    def __init__(
        self,
        tier: Tier,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        exchanger: Exchanger | None = None,
    ) -> None:
        self.tier = tier
        # identity: a tier that compresses anyway is unpacked with a cap (gateway.routing.tier_http)
        headers = {"user-agent": "tier-gateway/0.1", "accept-encoding": "identity"}
        if tier.kind == "modal" and settings.modal_key and settings.modal_secret:
            headers["Modal-Key"] = settings.modal_key.reveal()
            headers["Modal-Secret"] = settings.modal_secret.reveal()
        self._redactor = Redactor.for_settings(settings)  # a tier may echo our headers back
        self._headers = tuple(headers.items())
        self._origin = _origin(tier.url) if tier.url else None
        self._json_post = (*self._headers, ("content-type", "application/json"))
        self._exchanger: Exchanger = exchanger or exchanger_for(
            transport, max_body_bytes=settings.max_answer_bytes
        )

    async def aclose(self) -> None:
        await self._exchanger.aclose()

    def unconfigured(self, headers: dict[str, str] | None = None) -> TierUnavailable:
        """The 503 for a tier without a URL, naming the setting that gives it one."""
        setting = tier_env_var(self.tier.name, "URL")
        return TierUnavailable(
            f"tier {self.tier.name} is not configured: set {setting}",
            tier=self.tier.name,
            state="unconfigured",
            missing_setting=setting,
            headers=headers,
        )

    def _chat_request(self, payload: bytes, request_id: str | None) -> RawRequest:
        if self.tier.url is None:
            raise self.unconfigured()
        headers = self._json_post
        if request_id:
            headers = (*headers, ("x-request-id", request_id))
        return RawRequest("POST", self.tier.url + CHAT_PATH, headers, payload)

    async def complete(
        self, payload: bytes, *, budget_s: float, request_id: str | None = None
    ) -> TierReply:
        """POST a chat completion; follow redirects; answer the parsed reply or raise."""
        request = self._chat_request(payload, request_id)
        name = self.tier.name
        started = time.perf_counter()
        try:
            async with asyncio.timeout(budget_s):  # the whole call, every body byte included
                response = await self._send_following(request, started=started, budget_s=budget_s)
        except TimeoutError:
            raise _budget_used(name, budget_s) from None
        except ExchangeFailure as failure:
            raise self._translate(failure.error, budget_s) from None
        latency = time.perf_counter() - started
        self._raise_for_status(response)
        return self.reply_of(response.status, response.body, latency)

    def reply_of(self, status: int, body: bytes, latency_s: float) -> TierReply:
        """A 2xx body as a ``TierReply``, or a 502 naming the tier."""
        name = self.tier.name
        try:
            completion = msgspec.json.decode(body, type=ChatCompletion)
            body.decode("utf-8")  # the OpenAI route forwards it whole: it must be text
        except UNREADABLE:
            raise BadUpstreamResponse(
                f"tier {name} answered {status} with a body that is not a chat completion",
                tier=name,
            ) from None
        if not completion.choices:
            raise BadUpstreamResponse(f"tier {name} answered with no choices", tier=name)
        return TierReply(body=body, completion=completion, latency_s=latency_s)

    @asynccontextmanager
    async def open_stream(
        self,
        payload: bytes,
        *,
        budget_s: float,
        request_id: str | None = None,
        idle_timeout_s: float = STREAM_IDLE_S,
    ) -> AsyncIterator[TierStream]:
        """POST ``payload`` (e.g. with ``"stream": true``) and yield the 2xx answer as it
        comes; a non-2xx answer raises as ``complete`` would. The budget covers the whole
        stream; leaving the block early closes the connection (the tier sees an abort).

        >>> async with client.open_stream(payload, budget_s=120.0) as stream:
        ...     async for chunk in stream.chunks():
        ...         forward(chunk)
        """
        request = self._chat_request(payload, request_id)
        name = self.tier.name
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        hops = 0
        while True:
            left = max(deadline - loop.time(), 0.001)
            try:
                async with asyncio.timeout_at(deadline):
                    opened = self._exchanger.open_stream(
                        request,
                        connect_timeout=min(self.tier.timeouts.connect, left),
                        idle_timeout=idle_timeout_s,
                    )
                    raw = await opened.__aenter__()
            except TimeoutError:
                raise _budget_used(name, budget_s) from None
            except (ConnectFailed, AnswerTimeout, BadAnswer) as exc:
                raise self._translate(exc, budget_s) from None
            try:
                location = raw.header("location") if raw.status in REDIRECTS else None
                if location is None or self.tier.kind != "modal":
                    if not 200 <= raw.status < 300:
                        try:
                            async with asyncio.timeout_at(deadline):
                                body = await raw.read()
                        except TimeoutError:
                            raise _budget_used(name, budget_s) from None
                        except (AnswerTimeout, BadAnswer) as exc:
                            raise self._translate(exc, budget_s) from None
                        self._raise_for_status(RawResponse(raw.status, raw.headers, body))
                    yield TierStream(
                        status=raw.status,
                        headers=raw.headers,
                        raw=raw,
                        tier=name,
                        budget_s=budget_s,
                        deadline=deadline,
                    )
                    return
                hops += 1
                request = self._next_hop(request, raw.status, location, hops, budget_s)
            finally:
                await opened.__aexit__(None, None, None)

    async def _send_following(
        self, request: RawRequest, *, started: float, budget_s: float
    ) -> RawResponse:
        hops = 0
        connect = self.tier.timeouts.connect
        while True:
            left = max(budget_s - (time.perf_counter() - started), 0.001)
            try:
                response = await self._exchanger.exchange(
                    request, connect_timeout=min(connect, left)
                )
            except (ConnectFailed, AnswerTimeout, BadAnswer) as exc:
                raise ExchangeFailure(exc) from None
            location = response.header("location") if response.status in REDIRECTS else None
            # Only Modal answers a held request with a redirect to its result; any other
            # tier's 3xx is an answer the gateway cannot use (502, _raise_for_status).
            if location is None or self.tier.kind != "modal":
                return response
            hops += 1
            request = self._next_hop(request, response.status, location, hops, budget_s)

    def _next_hop(
        self, request: RawRequest, status: int, location: str, hops: int, budget_s: float
    ) -> RawRequest:
        """The request a redirect asks for, within the tier's own origin and hop budget."""
        name = self.tier.name
        if hops > self.tier.max_redirects:
            raise TierTimeout(
                f"tier {name} was still booting after {hops - 1} redirects "
                f"(Modal holds each for 150 s); its limit is {self.tier.max_redirects}",
                tier=name,
                budget_s=round(budget_s, 3),
                redirects=hops - 1,
            )
        try:
            target = urljoin(request.url, location)
            same_origin = _origin(target) == self._origin
        except ValueError:  # e.g. http://[::1/x: urllib cannot even split it
            same_origin = False
            target = ""
        if not same_origin or not target.isascii() or any(c in target for c in "\r\n "):
            raise BadUpstreamResponse(
                f"tier {name} redirected outside its own origin or to an unusable URL; "
                "the gateway follows redirects only within the tier's scheme, host and port",
                tier=name,
                upstream_status=status,
            )
        if status in (307, 308):  # repeat the request as it was: same origin, same body
            return request._replace(url=target)
        # 301/302/303: a GET of the result URL, without the body (the request id stays)
        headers = tuple(h for h in request.headers if h[0] != "content-type")
        return RawRequest("GET", target, headers)

    def _translate(self, exc: Exception, budget_s: float) -> GatewayError:
        name = self.tier.name
        if isinstance(exc, ConnectFailed):
            return self._connect_failed()
        if isinstance(exc, AnswerTimeout):
            return TierTimeout(
                f"tier {name} stopped answering within its {budget_s:g} s budget",
                tier=name,
                budget_s=round(budget_s, 3),
            )
        return BadUpstreamResponse(f"tier {name} gave an unusable answer: {exc}", tier=name)

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
            reason = self._redactor.text(upstream_reason(response.body))
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
            retry = sanitize_retry_after(response.header("retry-after"), UNAVAILABLE_RETRY_S)
            error = TierUnavailable(
                f"tier {name} is not taking requests now ({status})",
                tier=name,
                upstream_status=status,
                headers={"Retry-After": retry},
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
        if self.tier.url is None:
            return False
        modal = self.tier.kind == "modal"
        request = RawRequest("GET", self.tier.url + HEALTH_PATH, self._headers)
        try:
            async with asyncio.timeout(MODAL_PROBE_S if modal else PROBE_S):
                response = await self._exchanger.exchange(
                    request, connect_timeout=MODAL_PROBE_CONNECT_S if modal else PROBE_CONNECT_S
                )
        except (ConnectFailed, AnswerTimeout, BadAnswer, TimeoutError):
            return False
        return response.status == 200


class ExchangeFailure(Exception):
    """Carries a seam error out of the ``asyncio.timeout`` block to ``_translate``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _budget_used(name: str, budget_s: float) -> TierTimeout:
    return TierTimeout(
        f"tier {name} did not answer within its {budget_s:g} s budget",
        tier=name,
        budget_s=round(budget_s, 3),
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port
