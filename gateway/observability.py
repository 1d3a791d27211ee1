"""Metrics, request ids and one JSON log line per completion request.

Handlers only write facts into their ``Call`` (``tier_requested``, ``tier_served``,
``fallback_reason``, ``upstream_s``); the completion lane (``gateway.lane``) turns them into
Prometheus series and a log line with this module's helpers. Litestar's routes get the
request id from ``request_id_middleware``; probes and scrapes are neither counted nor logged.

With several worker processes (``gateway serve --workers N``) the series are kept in
prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``), so a
scrape of any worker sees the sum of all of them. Tier state is read at scrape time from the
shared warmth store, which is already the one truth across workers.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from gateway.routes.common import Call

log = logging.getLogger("gateway.request")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
STATES = ("unknown", "cold", "warming", "warm", "down", "unconfigured")

# Latency buckets (s): the gateway's own overhead is sub-millisecond; a cold 32B tier is 424 s.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
COLD_START_BUCKETS = (5, 15, 30, 60, 90, 120, 180, 300, 420, 600, 900)


class TierStateCollector:
    """``gateway_tier_state{tier,state}`` = 1 for each tier's current state, at scrape time."""

    def __init__(self, states: Callable[[], dict[str, str]]) -> None:
        self._states = states

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "gateway_tier_state", "1 for the tier's current warmth state", labels=["tier", "state"]
        )
        for tier, current in self._states().items():
            for state in STATES:
                family.add_metric([tier, state], 1.0 if state == current else 0.0)
        yield family


class Metrics:
    """The gateway's series. One per app (no global registry)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        # In multiprocess mode values live in files; the registry that *collects* reads them.
        store = None if self.multiprocess else self.registry
        kw: dict[str, Any] = {"registry": store}
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by tier requested/served, status and fallback reason",
            ["route", "tier_requested", "tier_served", "status", "fallback_reason"],
            **kw,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Whole request, as the client saw it",
            ["route"],
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.upstream = Histogram(
            "gateway_upstream_duration_seconds",
            "Time spent waiting for the tier, redirects included",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "The gateway's own time: whole request minus the tier's",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            **kw,
        )
        self.cold_start = Histogram(
            "gateway_cold_start_seconds",
            "Observed cold-start durations (warm-up start to healthy)",
            ["tier"],
            buckets=COLD_START_BUCKETS,
            **kw,
        )
        self.warmups = Counter(
            "gateway_warmups_started", "Warm-ups started (single-flight)", ["tier"], **kw
        )
        self.store_errors = Counter(
            "gateway_store_errors",
            "Calls to the shared warmth store (Redis) that failed or timed out; local state "
            "answered them",
            **kw,
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests",
            "Requests being served now",
            multiprocess_mode="livesum",
            **kw,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        if self.multiprocess:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]

    def watch_states(self, tier_states: Callable[[], dict[str, str]]) -> None:
        """Report each tier's warmth state, read at scrape time."""
        self.registry.register(TierStateCollector(tier_states))

    def counts(self) -> dict[str, dict[str, Any]]:
        """Requests and fallbacks by reason, per tier requested, summed over all workers."""
        out: dict[str, dict[str, Any]] = {}
        for family in self.registry.collect():
            if family.name != "gateway_requests":
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                row = out.setdefault(
                    sample.labels["tier_requested"], {"requests": 0, "fallbacks": {}}
                )
                row["requests"] += int(sample.value)
                reason = sample.labels["fallback_reason"]
                if reason:
                    row["fallbacks"][reason] = row["fallbacks"].get(reason, 0) + int(sample.value)
        return out

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe_call(self, route: str, status: int, call: Call, elapsed: float) -> None:
        served = call.tier_served or ""
        requested = call.tier_requested or ""
        reason = call.fallback_reason or ""
        self._child(self.requests, route, requested, served, str(status), reason).inc()
        self._child(self.duration, route).observe(elapsed)
        upstream = call.upstream_s
        if upstream is not None:
            self._child(self.upstream, served).observe(upstream)
            self._child(self.overhead, route).observe(max(elapsed - upstream, 0.0))

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: each call of ``labels`` takes a lock."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


_ID_PREFIX = uuid.uuid4().hex[:16]  # per process: ids stay unique across workers and restarts
_ids = itertools.count(1)


def _new_prefix() -> None:
    global _ID_PREFIX, _ids
    _ID_PREFIX, _ids = uuid.uuid4().hex[:16], itertools.count(1)


os.register_at_fork(after_in_child=_new_prefix)  # a forked worker must not repeat its parent


def request_id_from(sent: bytes | None) -> str:
    """The client's ``X-Request-Id`` when it is sane, else a new one (a per-process random
    prefix and a counter: unique, and cheaper than a uuid4 per request)."""
    if sent is not None:
        text = sent.decode("latin-1")
        if _REQUEST_ID.match(text):
            return text
    return f"{_ID_PREFIX}{next(_ids):016x}"  # 32 hex digits, as a uuid4 hex


def log_request(call: Call, method: str, status: int, elapsed: float) -> None:
    """The request's one log line, with the tier decisions (no bodies, no headers)."""
    if log.isEnabledFor(logging.INFO):
        log.info(
            "request",
            extra={
                "request_id": call.request_id,
                "method": method,
                "path": call.path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "tier_requested": call.tier_requested,
                "tier_served": call.tier_served,
                "fallback_reason": call.fallback_reason,
                "upstream_ms": _ms(call.upstream_s),
                "problem": call.problem,
            },
        )


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """For the routes Litestar serves: the request id in the scope's state and on the
    answer. (The completion lane does this, metrics and the log line itself.)"""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = request_id_from(dict(scope["headers"]).get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        await app(scope, receive, send_wrapped)

    return middleware


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
