"""The warmth service: binds the warmth tracker to the configured tiers (their probes, the
store they share, the keep-warm and recovery loops) and answers for them: their views for
the planner, ``/ready`` and their rows in ``GET /status``. This is what dispatch (its
``Warmth`` protocol) and the handlers see.

>>> warmth = WarmthService.build(settings, clients, clock=SystemClock())
>>> await warmth.view("prod")
WarmthView(state='cold', usable=True, eta_s=424.0, ...)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from gateway.clock import Clock, cancel_and_wait, within
from gateway.redact import Redactor
from gateway.routing.tier_client import TierClient
from gateway.settings import Settings
from gateway.tierspec import tier_env_var
from gateway.warmth.loops import run_keepwarm, run_recovery
from gateway.warmth.redis_store import RedisStore, StoreHealth
from gateway.warmth.store import MemoryStore, SqliteStore, WarmStore
from gateway.warmth.tracker import Probe, WarmthTracker
from gateway.warmth.types import TierWarmthConfig, WarmthReport, WarmthView

log = logging.getLogger(__name__)

# A shared wait (see wait_warm) is renewed this often: one left behind by requests that all
# timed out stops polling within a minute.
SHARED_WAIT_S = 60.0
STARTUP_CHECK_S = 2.0  # how long start-up waits for a remote tier's first health answer


class WarmthService:
    """Implements ``gateway.routing.dispatch.Warmth`` over a ``WarmthTracker``."""

    def __init__(
        self,
        settings: Settings,
        tracker: WarmthTracker,
        store: WarmStore,
        probes: dict[str, Probe],
    ) -> None:
        self.settings = settings
        self.tracker = tracker
        self.store = store
        self.probes = probes
        self.redactor = Redactor.for_settings(settings)
        self._keepwarm: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._waits: dict[str, asyncio.Task[bool]] = {}

    @classmethod
    def build(
        cls,
        settings: Settings,
        clients: dict[str, TierClient],
        *,
        clock: Clock,
        on_warm_up: Callable[[str], None] | None = None,
        on_cold_start: Callable[[str, float], None] | None = None,
        on_store_error: Callable[[], None] | None = None,
    ) -> WarmthService:
        configured = {name: t for name, t in settings.tiers.items() if t.configured}
        store: WarmStore
        if settings.state is not None:  # several replicas: one Redis
            store = RedisStore(
                settings.state.reveal(),
                prefix=settings.state_prefix,
                timeout_s=settings.state_timeout_s,
                clock=clock,
                on_error=on_store_error,
            )
        elif settings.warmth_db:  # the workers of one machine: one SQLite file
            store = SqliteStore(Path(settings.warmth_db))
        else:
            store = MemoryStore()
        tracker = WarmthTracker(
            {name: TierWarmthConfig.for_tier(t) for name, t in configured.items()},
            store,
            clock,
            lease_ttl_s=settings.warmup_lease_s,
            on_warm_up=on_warm_up,
            on_cold_start=on_cold_start,
        )
        probes: dict[str, Probe] = {name: clients[name].probe for name in configured}
        return cls(settings, tracker, store, probes)

    async def start(self) -> None:
        """Warm up what may be probed for free (the embedded tier, plain OpenAI servers), so
        their state and cold start are learned; start the keep-warm loop.

        A remote tier's first probe is awaited, for up to ``STARTUP_CHECK_S``: while it is
        in flight the tier reads as ``warming`` with the ETA of a cold start, so a request
        arriving then would fall back from a tier that is up. The embedded tier is not
        awaited: it was just started, its boot is real, and `gateway serve` answers at once.
        """
        checks = []
        for name in self.probes:
            config = self.tracker.config(name)
            if config.probe_is_free:
                self.tracker.trigger_warm_up(name, self.probes[name])
                if config.kind != "local":
                    checks.append(
                        asyncio.create_task(self.tracker.wait_warm(name, STARTUP_CHECK_S))
                    )
        if checks:  # bounded in real time too: a test's manual clock never advances by itself
            _, late = await asyncio.wait(checks, timeout=STARTUP_CHECK_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*checks, return_exceptions=True)
        self._keepwarm = asyncio.create_task(run_keepwarm(self.tracker, self.probes))
        free = {
            name: p for name, p in self.probes.items() if self.tracker.config(name).probe_is_free
        }
        self._recovery = asyncio.create_task(run_recovery(self.tracker, free))

    async def aclose(self) -> None:
        await cancel_and_wait(*self._waits.values(), self._keepwarm, self._recovery)
        await self.tracker.aclose()
        await self.store.aclose()

    async def view(self, tier: str) -> WarmthView:
        if tier not in self.probes:  # not configured: nothing to call
            return WarmthView(state="unknown", usable=False)
        return await self.tracker.state(tier)

    async def claim_trial(self, tier: str, budget_s: float) -> bool:
        """Make this request the trial of a down tier (False: another took it)."""
        return tier in self.probes and await self.tracker.claim_trial(tier, budget_s)

    def end_trial(self, tier: str) -> None:
        """A request's trial ended with neither success nor failure: the next may start."""
        if tier in self.probes:
            self.tracker.end_trial(tier)

    def retry_after(self, tier: str) -> float | None:
        """Seconds until a down tier's next trial (from this worker's cache); None if not
        down."""
        if tier not in self.probes:
            return None
        return self.tracker.peek(tier).retry_after_s

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``GET /ready``: ready while a configured tier is not down. Per tier: its state,
        and while down since when and when it is tried next (ISO-8601 UTC); and the shared
        store's health."""
        snapshot = await self.tracker.snapshot()
        tiers: dict[str, Any] = {}
        for name in self.settings.tiers:
            row = snapshot.get(name)
            if row is None:
                tiers[name] = {"usable": False, "warm": False, "state": "unconfigured"}
                continue
            tiers[name] = {"usable": row.state != "down", "warm": row.state == "warm"}
            tiers[name]["state"] = row.state
            if row.state == "down":
                tiers[name].update(down_since=row.down_since, next_trial=row.next_trial)
        ready = any(t["usable"] for t in tiers.values())
        body = {
            "status": "ready" if ready else "unavailable",
            "tiers": tiers,
            "store": msgspec.to_builtins(self.store_health()),  # degraded: still ready
        }
        return ready, body

    def record_success(self, tier: str, latency_s: float) -> None:
        if tier in self.probes:
            self.tracker.record_success(tier, latency_s)

    def record_failure(self, tier: str, error: str) -> None:
        if tier in self.probes:  # shown in /status: a tier's words lose our secrets first
            self.tracker.record_failure(tier, self.redactor.text(error))

    def trigger_warm_up(self, tier: str) -> None:
        if tier in self.probes:
            self.tracker.trigger_warm_up(tier, self.probes[tier])

    async def wait_warm(self, tier: str, timeout_s: float) -> bool:
        """The tracker's ``wait_warm``, shared: every request of this worker waiting for a
        tier awaits one waiting task, which polls the store; a held request costs one timer,
        not a wake-up a second (10,000 held clients: bench/results/hold-10k.md)."""
        if tier not in self.probes:
            return False
        clock = self.tracker.clock
        deadline = clock.monotonic() + timeout_s
        while (left := deadline - clock.monotonic()) > 0:
            shared = self._waits.get(tier)
            if shared is None or shared.done():
                shared = asyncio.create_task(self.tracker.wait_warm(tier, SHARED_WAIT_S))
                self._waits[tier] = shared
            done, warm = await within(clock, asyncio.shield(shared), left)
            if not done or warm:
                return bool(warm)
            if self.tracker.peek(tier).state == "down":
                return False
            # the shared wait ran out its SHARED_WAIT_S: a new one, for those still waiting
        return False

    async def status(self, counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """``GET /status``: the tracker's rows, plus the unconfigured tiers and counters."""
        snapshot: dict[str, WarmthReport] = await self.tracker.snapshot()
        store = msgspec.to_builtins(self.store_health())
        out: dict[str, Any] = {}
        for name, tier in self.settings.tiers.items():
            row: dict[str, Any]
            if name in snapshot:
                row = msgspec.to_builtins(snapshot[name])
            else:
                row = {
                    "state": "unconfigured",
                    "missing_setting": tier_env_var(name, "URL"),
                }
            row["kind"] = tier.kind
            row["model"] = tier.model
            if name in self.probes:  # how long a warm-up may take before the tier is down
                row["startup_timeout_s"] = self.tracker.config(name).startup_timeout_s
            row.update(counts.get(name, {"requests": 0, "fallbacks": {}}))
            row["store"] = store  # whether this row is shared truth or this replica's own
            out[name] = row
        return out

    def store_health(self) -> StoreHealth:
        """The shared store's condition: a degraded Redis means local state, not an outage."""
        if isinstance(self.store, RedisStore):
            return self.store.health()
        return StoreHealth(backend="sqlite" if self.settings.warmth_db else "memory", status="ok")

    def states(self) -> dict[str, str]:
        """Each tier's state from this worker's cache (no I/O), for the metrics gauge."""
        return {
            name: self.tracker.peek(name).state if name in self.probes else "unconfigured"
            for name in self.settings.tiers
        }
