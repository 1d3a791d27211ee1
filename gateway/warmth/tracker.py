"""Per-tier warmth: a state machine, an ETA, and warm-ups that run once across all workers.

States, each with the time it was entered (``since``)::

    from             event                                              to
    unknown, cold    a success (a request, or a warm-up's healthy probe)  warm
    unknown, cold    warm_up takes the lease                              warming
    warming          the probe answers healthy, or a request succeeds     warm
    warming          the startup deadline passes                          down
    warming          its lease expires unreleased (the worker died)       cold*
    warm             the scale-down window passes with no success         cold (presumed)
    not warming      ``failures_to_down`` failures in a row, and no       down
                     success for ``down_after_silence_s``
    down             its trial succeeds (a probe, a request, a warm-up)   warm
    down             its trial fails                                      down (longer backoff)
    down             warm_up once the next trial is due                   warming (the trial)
                                              (* ``unknown`` if the tier never scales to zero)

A scale-to-zero tier starts presumed ``cold`` (outside keep-warm): on Modal a request to a
cold endpoint is held for the whole boot, so coldness is presumed, never learned by waiting.
A ``warm`` tier whose last success is older than its scale-down window reads as ``cold``.
``down`` (``failures_to_down`` consecutive failures with no success for
``down_after_silence_s``, or a warm-up that missed the startup deadline) is left by a
success. It is tried again by itself: the first trial is due
``down_retry_after_s`` after it went down, each failed one doubles the wait up to
``down_retry_max_s`` (``TierWarmthConfig.down_backoff_s``). A tier whose probes are free is
tried by one probe (``run_recovery`` calls ``trigger_trial``); a scale-to-zero tier, where a
probe boots a GPU, by the first request after the backoff (``claim_trial``: a circuit
breaker's half-open state), or the warm-up that request starts. One trial at a time across
all workers: it holds the tier's lease while it runs.

Use (the lead wires this into the app's lifespan and the request path)::

    store = SqliteStore(Path("/run/gateway/warmth.db"))        # or MemoryStore()
    tracker = WarmthTracker({"prod": TierWarmthConfig.for_tier(settings.tiers["prod"])}, store)
    st = await tracker.state("prod")          # WarmthView(state="cold", eta_s=424.0, ...)
    if st.state != "warm":
        tracker.trigger_warm_up("prod", probe)   # probe: async () -> bool, GET /health
        warm = await tracker.wait_warm("prod", timeout_s=30.0)
    tracker.record_success("prod", latency_s=2.1)   # or record_failure("prod", "timed out")
    tracker.peek("prod")                      # the same without I/O, from this worker's cache
    statuses = await tracker.snapshot()       # dict[str, WarmthReport] for GET /status
    keepwarm = asyncio.create_task(run_keepwarm(tracker, {"prod": probe}))  # loops.py
    keepwarm.cancel(); await tracker.aclose(); await store.aclose()        # at shutdown

Warm-ups are single-flight: in one process through one task per tier, across processes
through a lease in the tier's store row (renewed while the warm-up runs, so a crashed
worker's lease expires within ``lease_ttl_s``). Reads go through a cache of ``cache_ttl_s``
(one store read a second per tier, on the store's thread); successes on a warm tier are
written at most every ``success_write_interval_s``, behind the request: a request on a warm
tier never pays an fsync. Time comes only from the injected :class:`Clock`, so tests run on
:class:`ManualClock` without sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from msgspec.structs import replace

from gateway.clock import Clock, SystemClock, cancel_and_wait, within
from gateway.errors import GatewayError
from gateway.warmth.schedule import in_window, keepwarm_due, next_touch
from gateway.warmth.store import (
    Change,
    WarmStore,
    WarmthRecord,
    abandoned,
    claimed,
    effective,
    failed,
    gave_up,
    next_trial_at,
    succeeded,
    trial_claimed,
    trial_ended,
    trial_failed,
    warmed,
    went_cold,
)
from gateway.warmth.types import (
    RECOVERY_TICK_S,
    KeepWarmReport,
    TierWarmthConfig,
    WarmthReport,
    WarmthView,
)

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]
T = TypeVar("T")

ETA_FLOOR_S = 1.0  # a warm-up past its expected time is "any moment now", never 0 or negative
TRIAL_PROBE_S = 10.0  # a free tier's health answer is instant once up (upstream.PROBE_TIMEOUT)
TRIAL_OWNER_SUFFIX = "/trial"  # a request's trial holds the lease apart from the warm-ups'
MAX_ERROR_CHARS = 300  # last_error is for people reading /status, not a log


class WarmthTracker:
    def __init__(
        self,
        configs: Mapping[str, TierWarmthConfig],
        store: WarmStore,
        clock: Clock | None = None,
        *,
        cache_ttl_s: float = 1.0,  # workers agree within a second; one read/s/tier at most
        lease_ttl_s: float = 30.0,  # a crashed worker's warm-up is taken over within 30 s
        poll_interval_s: float = 1.0,  # waiters in other workers notice "warm" within 1 s
        success_write_interval_s: float = 15.0,  # << any scale-down window (300 s and up)
        owner: str | None = None,
        on_warm_up: Callable[[str], None] | None = None,
        on_cold_start: Callable[[str, float], None] | None = None,
    ) -> None:
        self._configs = dict(configs)
        self._store = store
        # Observers (metrics): a warm-up this worker runs starts; a cold start was measured.
        self._on_warm_up = on_warm_up or (lambda tier: None)
        self._on_cold_start = on_cold_start or (lambda tier, seconds: None)
        self.clock: Clock = clock or SystemClock()
        self._cache_ttl_s = cache_ttl_s
        self._lease_ttl_s = lease_ttl_s
        self._poll_interval_s = poll_interval_s
        self._success_write_interval_s = success_write_interval_s
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        now = self.clock.time()
        self._initial = {tier: self._initial_record(cfg, now) for tier, cfg in configs.items()}
        self._cache: dict[str, tuple[WarmthRecord, float]] = {}
        self._flushed_success: dict[str, float] = {}
        self._pending: dict[str, int] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._warmups: dict[str, asyncio.Task[WarmthView]] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()
        self._trial_ids = itertools.count()

    def config(self, tier: str) -> TierWarmthConfig:
        return self._configs[tier]

    # -- reading -------------------------------------------------------------------------

    async def state(self, tier: str, *, max_age_s: float | None = None) -> WarmthView:
        """The derived state, read through the cache (``max_age_s=0`` forces a store read)."""
        return self._derive(tier, await self._record(tier, max_age_s), self.clock.time())

    def peek(self, tier: str) -> WarmthView:
        """The state from this worker's cache alone: no I/O, for code that cannot await."""
        return self._derive(tier, self._cached(tier), self.clock.time())

    async def snapshot(self) -> dict[str, WarmthReport]:
        try:
            stored = await self._store.load_all()
        except Exception as exc:  # noqa: BLE001 - /status must answer even if the store cannot
            log.warning("warmth store unreadable, status from cache: %s", type(exc).__name__)
            stored = {}
        for tier, record in stored.items():
            if tier in self._configs and not self._pending.get(tier):
                self._remember(tier, record)
        return {tier: self._status(tier) for tier in self._configs}

    async def wait_warm(self, tier: str, timeout_s: float) -> bool:
        """True once the tier is warm; False at ``timeout_s``, or as soon as it is down with
        no warm-up of this worker under way. Starts nothing: pair it with
        ``trigger_warm_up``."""
        deadline = self.clock.monotonic() + timeout_s
        while True:
            current = await self.state(tier)
            if current.state == "warm":
                return True
            if current.state == "down" and tier not in self._warmups:
                return False
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                return False
            await self._wait_change(tier, min(self._poll_interval_s, remaining))

    async def keepwarm_due(self, tier: str) -> bool:
        cfg = self._configs[tier]
        if cfg.keep_warm.mode == "off" or tier in self._warmups:
            return False
        record = effective(cfg, await self._record(tier, 0.0), self.clock.time())
        # A touch keeps a tier up; it does not repair one. A down tier is retried by the
        # request path, paced by down_retry_after_s, or by an operator's warm-up.
        if record.state in ("warming", "down") or record.lease_held(self.clock.time()):
            return False
        return keepwarm_due(
            cfg.keep_warm,
            _dt(self.clock.time()),
            _dt_or_none(record.last_success),
            cfg.scaledown_window_s,
            lead_s=self._mean(cfg, record),
        )

    def mean_cold_start_s(self, tier: str) -> float:
        """The learned cold start (the configured seed until one is measured)."""
        return self._mean(self._configs[tier], self._cached(tier))

    async def trial_due(self, tier: str) -> bool:
        """Whether the tier is down, its probes are free, and its next trial is due with none
        under way: ``run_recovery`` then calls ``trigger_trial``."""
        if not self._configs[tier].probe_is_free or tier in self._warmups:
            return False
        current = await self.state(tier)
        return current.state == "down" and not current.trial_running and current.next_trial_s == 0

    def trigger_trial(self, tier: str, probe: Probe) -> None:
        """Try a down tier with one probe, if its trial is due (single-flight: the lease)."""
        task = self._warmups.get(tier)
        if task is None or task.done():
            task = asyncio.create_task(self._trial(tier, probe), name=f"trial {tier}")
            self._warmups[tier] = task
            task.add_done_callback(lambda done: self._warm_up_done(tier, done))

    async def claim_trial(self, tier: str, ttl_s: float) -> bool:
        """Take a down tier's trial for one request (True: this request is it). Its success
        or failure, recorded as for any request, ends the trial; if neither comes (the
        caller was cancelled), the lease lapses after ``ttl_s`` and the next trial is due."""
        cfg, now = self._configs[tier], self.clock.time()
        owner = f"{self.owner}{TRIAL_OWNER_SUFFIX}:{next(self._trial_ids)}"  # one per request
        change = trial_claimed(cfg, now, owner, ttl_s)
        try:
            record = await self._store.update(tier, change)
        except Exception as exc:  # noqa: BLE001 - the store failing must not fail requests
            log.warning("trial of %s: store unavailable (%s)", tier, type(exc).__name__)
            record = change(self._cached(tier))
        self._remember(tier, record)
        return record.lease_owner == owner and record.lease_held(now)

    def end_trial(self, tier: str) -> None:
        """A request's trial ended with no verdict (see ``trial_ended``); written behind."""
        change = trial_ended(self._configs[tier], self.clock.time())
        self._remember(tier, change(self._cached(tier)))
        self._write_behind(tier, change)

    # -- recording -----------------------------------------------------------------------

    def record_success(self, tier: str, latency_s: float) -> None:
        """A tier answered. Updates this worker at once; writes the store behind the request,
        and on a tier already warm at most every ``success_write_interval_s``."""
        cfg, now = self._configs[tier], self.clock.time()
        before = effective(cfg, self._cached(tier), now)
        change = succeeded(cfg, now, latency_s)
        self._remember(tier, change(self._cached(tier)))
        flushed = self._flushed_success.get(tier)
        if (
            before.state != "warm"
            or before.failures
            or flushed is None
            or now - flushed >= self._success_write_interval_s
        ):
            self._flushed_success[tier] = now
            self._write_behind(tier, change)

    def record_failure(self, tier: str, error: str) -> None:
        """A request to the tier failed. ``error`` is shown in /status: pass a text made for
        clients (a GatewayError's detail), never an exception message that may hold a URL."""
        cfg, now = self._configs[tier], self.clock.time()
        change = failed(cfg, now, error[:MAX_ERROR_CHARS], self._cached(tier).last_success)
        self._remember(tier, change(self._cached(tier)))
        self._write_behind(tier, change)

    # -- warming -------------------------------------------------------------------------

    async def warm_up(self, tier: str, probe: Probe) -> WarmthView:
        """Warm the tier (on a warm tier: one cheap touch) and return the state it ended in.
        Any number of concurrent calls, in any worker, share one probe sequence; a caller
        that is cancelled leaves the warm-up running for the others."""
        return await asyncio.shield(self._warm_up_task(tier, probe))

    def trigger_warm_up(self, tier: str, probe: Probe) -> None:
        """``warm_up`` without waiting; the task is kept and cancelled by ``aclose``."""
        self._warm_up_task(tier, probe)

    async def aclose(self) -> None:
        """Stop warm-ups (releasing their leases) and finish pending writes. The store is the
        caller's to close."""
        await cancel_and_wait(*self._warmups.values())
        await asyncio.gather(*list(self._writes), return_exceptions=True)

    def _warm_up_task(self, tier: str, probe: Probe) -> asyncio.Task[WarmthView]:
        task = self._warmups.get(tier)
        if task is None or task.done():
            task = asyncio.create_task(self._warm_up(tier, probe), name=f"warm-up {tier}")
            self._warmups[tier] = task
            task.add_done_callback(lambda done: self._warm_up_done(tier, done))
        return task

    def _warm_up_done(self, tier: str, task: asyncio.Task[WarmthView]) -> None:
        if self._warmups.get(tier) is task:
            del self._warmups[tier]
        self._notify(tier)  # waiters re-check: a refused warm-up changes no record

    async def _warm_up(self, tier: str, probe: Probe) -> WarmthView:
        cfg = self._configs[tier]
        while True:
            now = self.clock.time()
            change = claimed(cfg, self._initial[tier], now, self.owner, self._lease_ttl_s)
            try:
                record = await self._store.update(tier, change)
            except Exception as exc:  # noqa: BLE001 - the store failing must not fail requests
                log.warning("warm-up of %s: store unavailable (%s)", tier, type(exc).__name__)
                return self.peek(tier)
            self._remember(tier, record)
            if record.lease_owner == self.owner and record.lease_held(now):
                return await self._own(tier, cfg, probe, touch=record.state == "warm")
            if not record.lease_held(now):
                return self.peek(tier)  # refused: down, and retried too soon
            if await self._follow(tier, cfg):
                return self.peek(tier)
            # the lease expired under a crashed worker: take it over

    async def _trial(self, tier: str, probe: Probe) -> WarmthView:
        """One probe of a down tier: warm if healthy, else down for a longer backoff."""
        cfg, now = self._configs[tier], self.clock.time()
        try:
            record = await self._store.update(
                tier, trial_claimed(cfg, now, self.owner, self._lease_ttl_s)
            )
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            log.warning("trial of %s: store unavailable (%s)", tier, type(exc).__name__)
            return self.peek(tier)
        self._remember(tier, record)
        if record.lease_owner != self.owner or not record.lease_held(now):
            return self.peek(tier)  # not due, or another worker's trial is under way
        started = self.clock.monotonic()
        deadline = started + min(TRIAL_PROBE_S, self._lease_ttl_s)
        outcome: Change | None = None
        try:
            healthy, why = await self._probe_once(probe, deadline, None, _nothing)
            if healthy:
                elapsed = self.clock.monotonic() - started
                outcome = warmed(cfg, self.clock.time(), elapsed, self.owner)
                log.info("tier %s is back: its trial probe answered healthy", tier)
            else:
                outcome = trial_failed(cfg, self.clock.time(), f"trial probe: {why}", self.owner)
        finally:
            if outcome is None:  # cancelled (shutdown): the next trial may start at once
                outcome = trial_ended(cfg, self.clock.time())
            await self._finish(tier, outcome)
        after = self.peek(tier)
        if after.state == "down":
            log.warning("tier %s is still down; next trial in %.0f s", tier, after.next_trial_s)
        return after

    async def _follow(self, tier: str, cfg: TierWarmthConfig) -> bool:
        """Wait out another worker's warm-up. False when its lease expired unreleased."""
        deadline = self.clock.monotonic() + cfg.startup_timeout_s + self._lease_ttl_s
        while self.clock.monotonic() < deadline:
            record = await self._record(tier, 0.0)
            if record.lease_owner is None:
                return True
            if not record.lease_held(self.clock.time()):
                return False
            await self._wait_change(tier, self._poll_interval_s)
        return True

    async def _own(self, tier: str, cfg: TierWarmthConfig, probe: Probe, touch: bool) -> WarmthView:
        """Probe until healthy or the deadline. A ``touch`` (the tier was warm) that is not
        answered healthy within ``already_warm_below_s`` found the tier gone cold under us:
        it shows ``warming`` from then on, not ``warm`` for a whole boot."""
        started, started_at = self.clock.monotonic(), self.clock.time()
        deadline = started + cfg.startup_timeout_s
        self._on_warm_up(tier)
        stop_heartbeat = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(tier, stop_heartbeat))
        backoff, last_error = cfg.probe_backoff_initial_s, "no probe ran"
        outcome: Change | None = None

        async def not_warm_after_all() -> None:
            nonlocal touch
            if touch:
                touch = False
                await self._finish(tier, went_cold(started_at, self.owner))

        try:
            while deadline - self.clock.monotonic() > 0:
                slow_s = cfg.already_warm_below_s if touch else None
                healthy, last_error = await self._probe_once(
                    probe, deadline, slow_s, not_warm_after_all
                )
                if healthy:
                    elapsed = self.clock.monotonic() - started
                    outcome = warmed(cfg, self.clock.time(), elapsed, self.owner)
                    if elapsed >= cfg.already_warm_below_s:
                        self._on_cold_start(tier, elapsed)
                    break
                await not_warm_after_all()
                pause = min(backoff, max(0.0, deadline - self.clock.monotonic()))
                await self.clock.sleep(pause)
                backoff = min(backoff * 2, cfg.probe_backoff_max_s)
            else:
                log.warning("warm-up of %s missed its %.0f s deadline", tier, cfg.startup_timeout_s)
                outcome = gave_up(cfg, self.clock.time(), last_error, self.owner)
        finally:
            stop_heartbeat.set()  # never heartbeat.cancel(): see _heartbeat
            await asyncio.gather(heartbeat, return_exceptions=True)
            if outcome is None:
                outcome = abandoned(cfg, self.clock.time(), self.owner)
            await self._finish(tier, outcome)
        return self.peek(tier)

    async def _probe_once(
        self,
        probe: Probe,
        deadline: float,
        slow_s: float | None,
        on_slow: Callable[[], Awaitable[None]],
    ) -> tuple[bool, str]:
        """One probe, given until the deadline: (healthy, why not). ``on_slow`` runs if it
        is still unanswered after ``slow_s``; the probe itself goes on (on Modal, that held
        request is what boots the tier)."""
        task = asyncio.ensure_future(probe())
        try:
            if slow_s is not None:
                limit = min(slow_s, deadline - self.clock.monotonic())
                done, _ = await within(self.clock, asyncio.shield(task), limit)
                if not done:
                    await on_slow()
            done, healthy = await within(self.clock, task, deadline - self.clock.monotonic())
        except Exception as exc:  # noqa: BLE001 - any probe failure means "not yet"
            return False, _describe(exc)
        finally:
            if not task.done():
                task.cancel()
        if not done:
            return False, "no answer"
        return (True, "") if healthy else (False, "not healthy yet")

    async def _finish(self, tier: str, change: Change) -> None:
        try:
            self._remember(tier, await self._store.update(tier, change))
        except Exception as exc:  # noqa: BLE001 - the lease then expires on its own
            log.warning("warm-up of %s: result not stored (%s)", tier, type(exc).__name__)
            self._remember(tier, change(self._cached(tier)))

    async def _heartbeat(self, tier: str, stop: asyncio.Event) -> None:
        """Renew the warm-up's lease every third of its life until ``stop`` is set.

        Stopped by the event, not by a cancel: on Python 3.11, redis-py sends each command
        inside ``asyncio.wait_for``, which returns instead of raising when a cancel lands in
        the step its send finished in. A heartbeat that lost its cancel that way renewed the
        lease of a finished warm-up forever, and the warm-up, waiting for it to end, never
        stored ``warm``: every replica showed the tier warming for good (issue 17). A renewal
        in flight when ``stop`` is set ends within the store's own timeout."""

        def renew(old: WarmthRecord | None) -> WarmthRecord:
            record = old or self._initial[tier]
            if record.lease_owner != self.owner:
                return record
            return replace(record, lease_expires=self.clock.time() + self._lease_ttl_s)

        while True:
            stopped, _ = await within(self.clock, stop.wait(), self._lease_ttl_s / 3)
            if stopped:
                return
            try:
                record = await self._store.update(tier, renew)
            except Exception as exc:  # noqa: BLE001 - retried at the next beat
                log.warning("warm-up of %s: lease not renewed (%s)", tier, type(exc).__name__)
                continue
            self._remember(tier, record)
            if record.lease_owner != self.owner:
                log.warning("warm-up of %s: lease lost to %s", tier, record.lease_owner)

    # -- internals -----------------------------------------------------------------------

    def _initial_record(self, cfg: TierWarmthConfig, now: float) -> WarmthRecord:
        presumed_cold = cfg.scales_to_zero and not in_window(cfg.keep_warm, _dt(now))
        return WarmthRecord(state="cold" if presumed_cold else "unknown", since=now)

    def _cached(self, tier: str) -> WarmthRecord:
        entry = self._cache.get(tier)
        return entry[0] if entry else self._initial[tier]

    def _remember(self, tier: str, record: WarmthRecord) -> None:
        previous = self._cache.get(tier)
        self._cache[tier] = (record, self.clock.monotonic())
        if previous is None or previous[0] != record:
            self._notify(tier)

    def _notify(self, tier: str) -> None:
        event = self._changed.pop(tier, None)
        if event is not None:
            event.set()

    async def _record(self, tier: str, max_age_s: float | None) -> WarmthRecord:
        max_age = self._cache_ttl_s if max_age_s is None else max_age_s
        entry = self._cache.get(tier)
        fresh = entry is not None and self.clock.monotonic() - entry[1] < max_age
        if entry is not None and (fresh or self._pending.get(tier)):
            return entry[0]  # a write of ours is on its way: our cache is the newer truth
        try:
            stored = await self._store.load(tier)
        except Exception as exc:  # noqa: BLE001 - a stale answer beats a failed request
            log.warning("warmth store unreadable for %s: %s", tier, type(exc).__name__)
            return self._cached(tier)
        self._remember(tier, stored or self._cached(tier))
        return self._cached(tier)

    async def _wait_change(self, tier: str, seconds: float) -> None:
        event = self._changed.setdefault(tier, asyncio.Event())
        await within(self.clock, event.wait(), seconds)

    def _write_behind(self, tier: str, change: Change) -> None:
        self._pending[tier] = self._pending.get(tier, 0) + 1
        task = asyncio.create_task(self._write(tier, change))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, tier: str, change: Change) -> None:
        try:
            async with self._write_lock:  # FIFO: writes reach the store in the order made
                record = await self._store.update(tier, change)
            if self._pending[tier] == 1:
                self._remember(tier, record)
        except Exception as exc:  # noqa: BLE001 - this worker keeps its view; next write retries
            log.warning("warmth store write for %s failed: %s", tier, type(exc).__name__)
        finally:
            self._pending[tier] -= 1

    def _mean(self, cfg: TierWarmthConfig, record: WarmthRecord) -> float:
        return record.mean_cold_start_s or cfg.expected_cold_start_s

    def _derive(self, tier: str, record: WarmthRecord, now: float) -> WarmthView:
        cfg = self._configs[tier]
        record = effective(cfg, record, now)
        mean = self._mean(cfg, record)
        eta: float | None = None
        if record.state == "warm":
            eta = 0.0
        elif record.state == "cold":
            eta = mean
        elif record.state == "warming":
            eta = max(mean - (now - record.since), ETA_FLOOR_S)
        if record.state != "down":
            return WarmthView(
                state=record.state,
                usable=True,
                eta_s=eta,
                since=record.since,
                last_success=record.last_success,
                failures=record.failures,
            )
        running = record.lease_held(now)
        if running:  # if this trial fails, the next comes after the backoff it earned
            next_at = min(record.lease_expires or now, now + cfg.down_backoff_s(record.trials))
        else:
            next_at = next_trial_at(cfg, record)
        next_trial_s = max(0.0, next_at - now)
        # A down tier is not usable, except as its own trial: a scale-to-zero tier whose
        # backoff ran out lets the next request through (half-open), its ETA a boot's. A free
        # tier's due trial is run by the recovery loop within a tick.
        trial = next_trial_s == 0 and not running and not cfg.probe_is_free
        return WarmthView(
            state="down",
            usable=trial,
            eta_s=mean if trial else None,
            since=record.since,
            last_success=record.last_success,
            failures=record.failures,
            next_trial_s=next_trial_s,
            trial_running=running,
            trial=trial,
            retry_after_s=max(next_trial_s, RECOVERY_TICK_S),
        )

    def _status(self, tier: str) -> WarmthReport:
        cfg, now = self._configs[tier], self.clock.time()
        record = effective(cfg, self._cached(tier), now)
        derived = self._derive(tier, record, now)
        touch = next_touch(
            cfg.keep_warm,
            _dt(now),
            _dt_or_none(record.last_success),
            cfg.scaledown_window_s,
            lead_s=self._mean(cfg, record),
        )
        # A down tier's ETA is None here even when a request may be its trial (the view's
        # ETA then is a boot's, for the planner): /status says when it is tried next instead.
        eta_s = None if derived.eta_s is None or derived.state == "down" else derived.eta_s
        return WarmthReport(
            state=derived.state,
            since=_dt(record.since).isoformat(),
            eta_s=None if eta_s is None else round(eta_s, 1),
            last_success=None
            if record.last_success is None
            else _dt(record.last_success).isoformat(),
            last_latency_s=record.last_latency_s,
            last_error=record.last_error,
            consecutive_failures=record.failures,
            down_since=None if derived.state != "down" else derived_since(record),
            next_trial=None
            if derived.next_trial_s is None
            else _dt(now + derived.next_trial_s).isoformat(),
            trials=record.trials,
            warmups=record.warmups,
            mean_cold_start_s=round(self._mean(cfg, record), 1),
            keep_warm=KeepWarmReport(
                schedule=cfg.keep_warm.text,
                in_window=in_window(cfg.keep_warm, _dt(now)),
                next_touch=None if touch is None else touch.isoformat(),
            ),
        )


def derived_since(record: WarmthRecord) -> str:
    return _dt(record.down_since if record.down_since is not None else record.since).isoformat()


async def _nothing() -> None:
    return None


def _describe(exc: BaseException) -> str:
    # An exception's text may hold a URL or a header; only our own errors are written for
    # clients, so only their detail is shown. Anything else shows just its class name.
    if isinstance(exc, GatewayError):
        return exc.detail[:MAX_ERROR_CHARS]
    return type(exc).__name__


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _dt_or_none(epoch: float | None) -> datetime | None:
    return None if epoch is None else _dt(epoch)
