"""Metrics, request ids and one JSON log line per request: ``edge_middleware``, the one
Litestar middleware every route passes through.

The middleware gives each request its id (the client's ``X-Request-Id`` when it is sane, else
a new one), puts a ``RequestFacts`` in the scope's state, and when the answer has gone out
turns it into Prometheus series and the log line. Handlers and problem handlers only write
facts into it (``tier_requested``, ``tier_served``, ``fallback_reason``, ``upstream_s``,
``problem``). Probes and scrapes (``/health``, ``/ready``, ``/metrics``) are counted like any
route but logged at DEBUG: a load balancer polling every second would otherwise be most of
the log.

The middleware also watches the connection once the body is read (from ``WATCH_AFTER_S`` on):
a client that hangs up before its answer cancels the handler, and with it the tier call it
was waiting on (a request abandoned by its client must not hold a GPU tier's connection for
its whole budget). It is logged and counted with status 499 (nginx's word for it; nothing is
sent).

With several worker processes (``gateway serve --workers N``) the series are kept in
prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by ``serve``), so a
scrape of any worker sees the sum of all of them. Tier state is read at scrape time from the
shared warmth store, which is already the one truth across workers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, get_args

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.warmth.types import WarmthState

if TYPE_CHECKING:
    from gateway.errors import OutputInvalid

log = logging.getLogger("gateway.request")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
STATES = (*get_args(WarmthState), "unconfigured")  # every value the state gauge may take

# Latency buckets (s): the gateway's own overhead is sub-millisecond; a cold 32B tier is 424 s.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
COLD_START_BUCKETS = (5, 15, 30, 60, 90, 120, 180, 300, 420, 600, 900)


class WarmthStateCollector:
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
        # Lowered schemas (docs/structured-output.md): samples retried after output broke a
        # lowered keyword, and the breaks still there when the retries ran out (a 502).
        self.schema_retries = Counter(
            "gateway_schema_retries",
            "Retries after output broke a lowered schema keyword, by tier and keyword",
            ["tier", "keyword"],
            **kw,
        )
        self.schema_violations = Counter(
            "gateway_schema_violations",
            "Outputs of lowered schemas still breaking a keyword after the retries (502)",
            ["tier", "keyword"],
            **kw,
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

    def watch_states(self, warmth_states: Callable[[], dict[str, str]]) -> None:
        """Report each tier's warmth state, read at scrape time."""
        self.registry.register(WarmthStateCollector(warmth_states))

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

    def observe(self, route: str, facts: RequestFacts, elapsed: float) -> None:
        served = facts.tier_served or ""
        requested = facts.tier_requested or ""
        reason = facts.fallback_reason or ""
        status = str(facts.status)
        self._child(self.requests, route, requested, served, status, reason).inc()
        self._child(self.duration, route).observe(elapsed)
        upstream = facts.upstream_s
        if upstream is not None:
            self._child(self.upstream, served).observe(upstream)
            self._child(self.overhead, route).observe(max(elapsed - upstream, 0.0))

    def observe_schema_break(self, error: OutputInvalid, *, final: bool) -> None:
        """One output that broke the (original) schema: a retry, or the final 502."""
        metric = self.schema_violations if final else self.schema_retries
        tier = str(error.members.get("tier", ""))
        for keyword in {str(e.get("keyword")) for e in error.members.get("errors", [])}:
            self._child(metric, tier, keyword).inc()

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


FACTS = "gateway.facts"  # the key of a request's RequestFacts in the scope's state
# Polled by load balancers and Prometheus: logged at DEBUG so they do not drown the log.
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


class RequestFacts:
    """What one request's metric and log line say. The middleware creates it; handlers and
    problem handlers fill it in (``gateway.http.routes.common.facts_of``)."""

    __slots__ = (
        "fallback_reason",
        "key",
        "problem",
        "request_id",
        "status",
        "tier_requested",
        "tier_served",
        "upstream_s",
    )

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.status = 500  # until an answer starts: an exception that escaped everything
        self.tier_requested: str | None = None
        self.tier_served: str | None = None
        self.fallback_reason: str | None = None
        self.upstream_s: float | None = None
        self.problem: str | None = None
        self.key: str | None = None  # the API key's name, "unknown" for a refused one (auth)


def facts_in(scope: Scope) -> RequestFacts:
    """The request's facts; a fresh one where the middleware did not run (a 404 or 405 is
    answered by Litestar's router before any route middleware)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    facts: RequestFacts | None = state.get(FACTS)
    if facts is None:
        sent = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        facts = state[FACTS] = RequestFacts(request_id_from(sent))
    return facts


def log_request(facts: RequestFacts, method: str, path: str, elapsed: float) -> None:
    """The request's one log line, with the tier decisions (no bodies, no headers)."""
    level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
    if log.isEnabledFor(level):
        log.log(
            level,
            "request",
            extra={
                "request_id": facts.request_id,
                "method": method,
                "path": path,
                "status": facts.status,
                "duration_ms": round(elapsed * 1000, 3),
                "tier_requested": facts.tier_requested,
                "tier_served": facts.tier_served,
                "fallback_reason": facts.fallback_reason,
                "upstream_ms": _ms(facts.upstream_s),
                "problem": facts.problem,
                "key": facts.key,
            },
        )


CLIENT_GONE = 499  # nginx's status for a request whose client hung up before the answer
# A request still unanswered this long after its body arrived gets a task watching for its
# client to hang up. Sooner would cost every request that task (≈ 0.03 ms of CPU, 10 % of
# a request to an instant tier, measured in-process); later would leave an abandoned tier call
# running longer. Nothing is worth cancelling in a call that ends within 50 ms.
WATCH_AFTER_S = 0.05


def edge_middleware(app: ASGIApp) -> ASGIApp:
    """Every route's request id, metric and log line, and cancellation when the client goes.

    Registered as Litestar middleware, so it runs around each route's stack: allowed hosts,
    the exception handlers (a problem is seen here as the response it became) and the handler.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        facts = facts_in(scope)
        runtime = getattr(scope["litestar_app"].state, "runtime", None)
        metrics: Metrics | None = None if runtime is None else runtime.metrics
        handler = asyncio.current_task()
        watcher: asyncio.Task[None] | None = None
        timer: asyncio.TimerHandle | None = None
        answering = False  # the answer has started: a hang-up no longer cancels anything
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass  # a server sends nothing else after the body; be lenient all the same
            if not answering and handler is not None:
                gone = True
                handler.cancel()

        def start_watching() -> None:
            nonlocal watcher
            if not answering:
                watcher = asyncio.create_task(watch())

        async def receive_watched() -> ReceiveMessage:
            nonlocal timer, gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True  # before the body was whole: Litestar answers; nobody hears it
            elif not message.get("more_body", False) and timer is None:
                # The body is whole: from now on receive() only says the client has gone.
                timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
            return message

        async def send_stamped(message: Message) -> None:
            nonlocal answering
            if message["type"] == "http.response.start":
                answering = True
                facts.status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", facts.request_id.encode()),
                ]
            await send(message)

        if metrics is not None:
            metrics.in_flight.inc()
        try:
            await app(scope, receive_watched, send_stamped)
        except asyncio.CancelledError:
            if not gone or handler is None:
                raise  # the server is cancelling us (shutdown): not ours to swallow
            handler.uncancel()
        finally:
            if timer is not None:
                timer.cancel()
            if watcher is not None:
                watcher.cancel()
            if gone:  # whatever was answered (Litestar's 500 for a cut body), nobody heard it
                facts.status = CLIENT_GONE
            elapsed = time.perf_counter() - started
            if metrics is not None:
                metrics.in_flight.dec()
                metrics.observe(scope["route_handler"].handler_name, facts, elapsed)
            log_request(facts, scope["method"], scope["path"], elapsed)

    return middleware


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
