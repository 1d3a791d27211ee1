"""What each key spent: GPU-seconds and dollars per answer, as Prometheus series by key name
(never the key) and as rows in ``GET /status``.

An answer's GPU time is estimated, not metered: the tier's measured latency for it, divided
by the requests one container serves at once (``max_concurrency`` in config/tiers.toml), since
a GPU answering 16 requests together spends a sixteenth of its time on each. Dollars are those
GPU-seconds at the GPU's hourly price (``gpu_usd_per_hour``). The embedded CPU tier costs no
GPU time. It is an estimate in both directions: a container answering fewer requests at once
costs each of them more than this says, and idle time and cold starts are nobody's request.

>>> gpu_seconds(settings.tiers["prod"], latency_s=3.2)    # 3.2 s / 16 at once
0.2
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter

from gateway.settings import Tier

SECONDS_PER_HOUR = 3600


def gpu_seconds(tier: Tier, latency_s: float) -> float:
    if tier.kind == "local" or tier.spec is None:
        return 0.0
    return latency_s / tier.spec.max_concurrency


def cost_usd(tier: Tier, gpu_s: float) -> float:
    price = tier.spec.gpu_usd_per_hour if tier.spec is not None else None
    return gpu_s * price / SECONDS_PER_HOUR if price else 0.0


class KeySpend:
    """The per-key series. ``registry`` is the app's (``Metrics.registry``); with several
    workers (``PROMETHEUS_MULTIPROC_DIR``) the values go to prometheus_client's files and
    that registry's collector sums them, as for every other series."""

    def __init__(self, registry: CollectorRegistry, *, multiprocess: bool) -> None:
        kw: dict[str, Any] = {"registry": None if multiprocess else registry}
        labels = ["key", "tier"]
        self.requests = Counter(
            "gateway_key_requests", "Answers served, by key name and tier", labels, **kw
        )
        self.tokens = Counter(
            "gateway_key_tokens", "Tokens (prompt + completion), by key name and tier", labels, **kw
        )
        self.gpu_seconds = Counter(
            "gateway_key_gpu_seconds",
            "Estimated GPU-seconds (latency / concurrency), by key name and tier",
            labels,
            **kw,
        )
        self.cost = Counter(
            "gateway_key_cost_usd",
            "Estimated GPU cost in US dollars (GPU-seconds x hourly price), by key name and tier",
            labels,
            **kw,
        )
        self.refused = Counter(
            "gateway_key_refused",
            "Requests refused by auth or limits: key name ('unknown' without a live key), status",
            ["key", "status"],
            **kw,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        # (key name, tier) -> its four series: one look-up per answer, not four (``labels``
        # takes a lock and builds the label tuple each time)
        self._answers: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def record(self, key: str, tier: str, *, tokens: int, gpu_s: float, usd: float) -> None:
        series = self._answers.get((key, tier))
        if series is None:
            series = self._answers[(key, tier)] = (
                self.requests.labels(key, tier),
                self.tokens.labels(key, tier),
                self.gpu_seconds.labels(key, tier),
                self.cost.labels(key, tier),
            )
        requests, tokens_total, gpu_total, cost_total = series
        requests.inc()
        if tokens:
            tokens_total.inc(tokens)
        if gpu_s:
            gpu_total.inc(gpu_s)
            cost_total.inc(usd)

    def refuse(self, key: str, status: int) -> None:
        self._child(self.refused, key, str(status)).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


_FIELDS = {
    "gateway_key_requests": "requests",
    "gateway_key_tokens": "tokens",
    "gateway_key_gpu_seconds": "gpu_seconds",
    "gateway_key_cost_usd": "cost_usd",
}


def spend_by_tier(registry: CollectorRegistry) -> dict[str, dict[str, dict[str, float]]]:
    """``{tier: {key name: {requests, tokens, gpu_seconds, cost_usd}}}``, summed over workers."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for family in registry.collect():
        field = _FIELDS.get(family.name)
        if field is None:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            row = out.setdefault(sample.labels["tier"], {}).setdefault(
                sample.labels["key"], dict.fromkeys(_FIELDS.values(), 0.0)
            )
            row[field] += sample.value
    return out
