"""An httpx transport that records real answers into a cassette and replays them offline.

Two places to put it, one class:

- **inside the gateway** (``scope="tier"``): ``create_app(settings, transport=t)``; every call
  the gateway makes to a tier goes through it, so a replayed answer travels the same code path
  as a live one: routing, fallback, output validation, the ``X-Model-Tier-*`` headers;
- **in your own client** (``scope="gateway"``): ``httpx.Client(transport=t)`` (or the openai
  client's ``http_client=``) pointed at a running gateway; it records what the gateway
  answered, headers included, and replays it with no gateway running.

>>> t = CassetteTransport(Cassette.load(path), mode="record", tiers={"dev": "http://127.0.0.1:8001"})
>>> app = create_app(settings, transport=t)
>>> ...                                         # run the requests
>>> t.finish()                                  # write the cassette (record and refresh modes)

Modes: ``replay`` answers only from the cassette and never opens a socket; a request it has
no answer for raises ``CassetteMissing`` naming the request, the cassette and how to record
it. ``record`` answers what the cassette has and calls the real server for the rest, then
writes what was used. ``refresh`` calls the real server for everything and rewrites.

A tier whose server is started only when needed (the embedded CPU tier while recording) is
given in ``on_demand``: the first request that must reach it live starts it and waits until
it is up; until then its liveness probes are answered "up" without starting it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

import httpx

from gateway.testing.cassette import Cassette, Interaction, Scope, decode_body, request_key, utc_now
from gateway.testing.redact import Redactor

Mode = Literal["replay", "record", "refresh"]
MODES: tuple[Mode, ...] = ("replay", "record", "refresh")
# Liveness probes: answered "up" in replay and never recorded; how often a warmth tracker
# polls them is a matter of timing, not of the test.
PROBE_PATHS = frozenset({"/health", "/ping"})
DROP_ON_FORWARD = frozenset({"content-length", "transfer-encoding", "content-encoding"})
# Request headers httpx adds on its own: noise in a file meant to be read.
NOISE_HEADERS = frozenset(
    {"host", "accept", "accept-encoding", "connection", "content-length", "user-agent"}
)


class CassetteMissing(Exception):  # reads as what happened; not an httpx error
    """A replayed request has no recording. Deliberately not an ``httpx.TransportError``:
    the gateway would turn that into a 502 and the message would be lost."""


class OnDemand(Protocol):
    """A tier's server started by the first request that needs it (``EmbeddedTier``)."""

    @property
    def started(self) -> bool: ...
    def ensure_up(self) -> str: ...
    async def aensure_up(self) -> str: ...


class CassetteTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    def __init__(
        self,
        cassette: Cassette,
        *,
        mode: Mode = "replay",
        scope: Scope | None = None,
        tiers: Mapping[str, str] | None = None,
        redactor: Redactor | None = None,
        record_hint: str = "record it with RECORD_FIXTURES=true",
        on_miss: Callable[[str], None] | None = None,
        on_demand: Mapping[str, OnDemand] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.cassette = cassette
        self.mode = mode
        self.scope: Scope = scope or cassette.scope
        cassette.scope = self.scope
        # tier base URL -> tier name, longest first so a path prefix wins over its origin
        self._tiers = sorted(
            ((url.rstrip("/"), name) for name, url in (tiers or {}).items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self.redactor = redactor or Redactor.from_environment()
        self.record_hint = record_hint
        self.on_miss = on_miss  # e.g. pytest.fail: stop the test at the call, with the message
        self.misses: list[str] = []
        self.on_demand = dict(on_demand or {})  # tier name -> its server, started when needed
        # An on-demand server that failed to start: raised here, the gateway makes it a 500,
        # so the pytest plugin raises it again in the test (as it does with ``misses``).
        self.start_errors: list[Exception] = []
        self.recorded: list[Interaction] = []
        self._used: list[Interaction] = []
        self._calls: dict[str, int] = {}
        self._sync: httpx.HTTPTransport | None = None
        self._async: httpx.AsyncHTTPTransport | None = None

    # --- identifying a request ----------------------------------------------------------

    def _tier_and_path(self, request: httpx.Request) -> tuple[str | None, str]:
        url = str(request.url.copy_with(query=None, fragment=None))
        if self.scope == "tier":
            for base, name in self._tiers:
                if url == base or url.startswith(base + "/"):
                    return name, url[len(base) :] or "/"
            return request.url.host, request.url.path
        tier = request.headers.get("x-model-tier")
        return (tier.strip().lower() if tier else None), request.url.path

    def key_of(self, request: httpx.Request) -> tuple[str, str | None, str]:
        tier, path = self._tier_and_path(request)
        route = {}
        if self.scope == "gateway" and "x-tier-fallback" in request.headers:
            route["fallback"] = request.headers["x-tier-fallback"].strip().lower()
        key = request_key(
            tier=tier, method=request.method, path=path, body=request.content, route=route
        )
        return key, tier, path

    # --- answering ------------------------------------------------------------------------

    def _from_cassette(self, request: httpx.Request) -> httpx.Response | None:
        """The recorded answer, a probe answer, or None when the real server must answer."""
        key, tier, path = self.key_of(request)
        if self.scope == "tier" and request.method == "GET" and path in PROBE_PATHS:
            server = self.on_demand.get(tier or "")
            # A probe must not start an on-demand server: the request that needs it will.
            if self.mode == "replay" or (server is not None and not server.started):
                return httpx.Response(200, json={"status": "ok"}, request=request)
            return None
        n = self._calls.get(key, 0)
        self._calls[key] = n + 1
        recorded = self.cassette.find(key) if self.mode != "refresh" else []
        if recorded and (self.mode == "replay" or n < len(recorded)):
            hit = recorded[min(n, len(recorded) - 1)]
            if all(hit is not used for used in self._used):
                self._used.append(hit)
            status, headers, content = hit.response_parts()
            return httpx.Response(status, headers=headers, content=content, request=request)
        if self.mode == "replay":
            where = f"tier {tier}, " if tier else ""
            message = (
                f"no recorded answer for {request.method} {path} ({where}key {key}) in cassette "
                f"{self.cassette.path}"
                + ("" if self.cassette.exists else " (the file does not exist)")
                + f"; {self.record_hint}"
            )
            self.misses.append(message)
            if self.on_miss is not None:
                self.on_miss(message)
            raise CassetteMissing(message)
        return None

    def _keep(self, request: httpx.Request, response: httpx.Response, latency_s: float) -> None:
        key, tier, path = self.key_of(request)
        if self.scope == "tier" and request.method == "GET" and path in PROBE_PATHS:
            return
        if self.scope == "gateway":
            tier = response.headers.get("x-model-tier-served", tier)
        sent, sent_json = decode_body(request.content)
        got, got_json = decode_body(response.content)
        r = self.redactor
        interaction = Interaction(
            key=key,
            tier=tier,
            request={
                "method": request.method,
                "url": r.url(str(request.url)),
                "headers": r.headers(
                    (k, v) for k, v in request.headers.multi_items() if k not in NOISE_HEADERS
                ),
                ("json" if sent_json else "text"): r.json(sent)
                if sent_json
                else r.text(sent, excerpt=False),
            },
            response={
                "status": response.status_code,
                "headers": r.headers(response.headers.multi_items()),
                ("json" if got_json else "text"): (
                    r.json(got) if got_json else r.text(got, excerpt=False)
                ),
            },
            latency_ms=latency_s * 1000,
            recorded_at=utc_now(),
        )
        self.recorded.append(interaction)
        self._used.append(interaction)

    @staticmethod
    def _forwarded(response: httpx.Response, request: httpx.Request) -> httpx.Response:
        headers = [(k, v) for k, v in response.headers.multi_items() if k not in DROP_ON_FORWARD]
        return httpx.Response(
            response.status_code, headers=headers, content=response.content, request=request
        )

    def _server_for(self, request: httpx.Request) -> OnDemand | None:
        if not self.on_demand or self.scope != "tier":
            return None
        tier, _ = self._tier_and_path(request)
        return self.on_demand.get(tier or "")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        replayed = self._from_cassette(request)
        if replayed is not None:
            return replayed
        if (server := self._server_for(request)) is not None:
            try:
                server.ensure_up()
            except Exception as exc:
                self.start_errors.append(exc)
                raise
        if self._sync is None:
            self._sync = httpx.HTTPTransport()
        started = time.perf_counter()
        response = self._sync.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        self._keep(request, response, time.perf_counter() - started)
        return self._forwarded(response, request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        replayed = self._from_cassette(request)
        if replayed is not None:
            return replayed
        if (server := self._server_for(request)) is not None:
            try:
                await server.aensure_up()
            except Exception as exc:
                self.start_errors.append(exc)
                raise
        if self._async is None:
            self._async = httpx.AsyncHTTPTransport()
        started = time.perf_counter()
        response = await self._async.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        self._keep(request, response, time.perf_counter() - started)
        return self._forwarded(response, request)

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        # Each tier's client closes its transport; a later request opens a fresh pool.
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    def finish(self) -> bool:
        """Write the cassette when recording changed it; True when a file was written."""
        if self.mode == "replay" or not self._used:
            return False
        unchanged = not self.recorded and len(self._used) == len(self.cassette.interactions)
        if unchanged:
            return False
        self.cassette.interactions = list(self._used)
        self.cassette.save(self.redactor)
        return True
