"""The data of warmth: a tier's warmth settings, its state, and what the tracker reports of it.
Pure msgspec Structs, shared by the store, the tracker and their users.

One type per concept (the stored row, ``WarmthRecord``, lives with the stores)::

    WarmthState       the state machine's state: unknown, cold, warming, warm, down
    TierWarmthConfig  one tier's warmth settings, built from its resolved settings
    WarmthView        what routing needs to know of a tier's warmth at this instant
    WarmthReport      one tier's warmth as ``GET /status`` shows it (the wire shape)
"""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.settings import Tier
from gateway.warmth.schedule import OFF, Schedule

WarmthState = Literal["unknown", "cold", "warming", "warm", "down"]

# Recovery of a down tier (docs/operations.md, "Down, backoff and recovery").
TRIAL_RETRY_S = 60.0  # a trial on Modal may boot a GPU (~$0.05 a boot): at most once a minute
TRIAL_RETRY_MAX_S = 900.0  # 15 min: a tier down for hours costs four boots an hour, no more
FREE_PROBE_RETRY_S = 5.0  # a /health probe costs nothing: a 10 s restart is seen in ~15 s
FREE_PROBE_RETRY_MAX_S = 60.0  # a dead server is still looked at once a minute
DOWN_BACKOFF_FACTOR = 2.0  # each failed trial doubles the wait: 5, 10, 20, 40, 60, 60 ...
RECOVERY_TICK_S = 1.0  # a due trial starts within 1 s; a tick costs a cache read per tier

# ``failures_to_down`` failures in a row make a tier down only if it has not answered for
# this long. Answers of concurrent requests interleave, so at c=16 a tier failing 10 % of
# its answers at random strung three failures together about once a minute (the fault soak,
# bench/results/fault-soak.md: 29,784 of 87,433 answers 503). A tier that answered in the
# last 5 s is not out; a dead one still goes down at its third failure once 5 s have passed
# since its last answer. 5 s is several times the 1 s cache through which workers see each
# other's records, so another worker's success counts; it is also the longest an outage
# right after a success is still called (each request gets the tier's own 502/503/504)
# rather than refused at once as down.
DOWN_AFTER_SILENCE_S = 5.0

# The embedded CPU tier has no entry in tiers.toml: its facts, measured (bench/results/).
LOCAL_EXPECTED_COLD_START_S = 30.0  # first start converts GGUF (~30 s); later starts ~5 s
LOCAL_STARTUP_TIMEOUT_S = 300.0  # a loaded 2-core machine can take minutes to import torch
NEVER_SCALES_DOWN_S = 365 * 24 * 3600.0


class TierWarmthConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One tier's warmth settings; ``for_tier`` builds them from the tier's settings."""

    kind: Literal["modal", "openai", "local"]
    scales_to_zero: bool
    scaledown_window_s: float
    expected_cold_start_s: float  # seeds the learned mean (dev 60 s, prod 424 s measured)
    startup_timeout_s: float  # a warm-up still unhealthy after this marks the tier down
    failures_to_down: int = 3  # one failure is noise, three in a row is an outage ...
    down_after_silence_s: float = DOWN_AFTER_SILENCE_S  # ... if nothing answered meanwhile
    ewma_alpha: float = 0.3  # weight of the newest cold start: ~3 warm-ups to follow a change
    keep_warm: Schedule = OFF
    # A down tier's next trial comes this long after it went down, then twice as long after
    # each failed trial, up to ``down_retry_max_s`` (``down_backoff_s``). The defaults are a
    # trial's: one that may wake a GPU; ``for_tier`` gives tiers whose probes are free their
    # own (FREE_PROBE_RETRY_S), and gateway.toml may set both per tier.
    down_retry_after_s: float = TRIAL_RETRY_S
    down_retry_max_s: float = TRIAL_RETRY_MAX_S
    already_warm_below_s: float = 5.0  # healthy this fast means it was up: not a cold start
    probe_backoff_initial_s: float = 1.0
    probe_backoff_max_s: float = 15.0  # a booting vLLM answers 503 fast; 15 s keeps load tiny

    @classmethod
    def for_tier(cls, tier: Tier) -> TierWarmthConfig:
        """The one place a tier's warmth settings are built: tiers.toml's facts for a remote
        tier it describes, the embedded tier's measured ones otherwise; the keep-warm schedule
        settings parsed; the down backoff by kind and the silence before down unless
        gateway.toml sets them."""
        if tier.spec is not None and tier.kind != "local":
            scales_to_zero = tier.kind == "modal" and tier.spec.min_containers == 0
            scaledown_window_s = tier.spec.scaledown_window_s
            expected_cold_start_s = tier.spec.expected_cold_start_s
            startup_timeout_s = tier.spec.startup_timeout_s
        else:
            scales_to_zero = False
            scaledown_window_s = NEVER_SCALES_DOWN_S
            expected_cold_start_s = LOCAL_EXPECTED_COLD_START_S
            startup_timeout_s = LOCAL_STARTUP_TIMEOUT_S
        # A down tier's backoff: free probes may come often, a trial that boots a GPU may not.
        first, cap = TRIAL_RETRY_S, TRIAL_RETRY_MAX_S
        if not scales_to_zero:  # its probes are free (``probe_is_free``)
            first, cap = FREE_PROBE_RETRY_S, FREE_PROBE_RETRY_MAX_S
        return cls(
            kind=tier.kind,
            scales_to_zero=scales_to_zero,
            scaledown_window_s=scaledown_window_s,
            expected_cold_start_s=expected_cold_start_s,
            startup_timeout_s=startup_timeout_s,
            keep_warm=tier.keep_warm,
            down_retry_after_s=tier.down_retry_after_s or first,
            down_retry_max_s=tier.down_retry_max_s or cap,
            down_after_silence_s=tier.down_after_silence_s or DOWN_AFTER_SILENCE_S,
        )

    def down_backoff_s(self, trials: int) -> float:
        """The wait before the next trial of a down tier, after ``trials`` failed ones."""
        return min(
            self.down_retry_after_s * DOWN_BACKOFF_FACTOR ** min(trials, 64), self.down_retry_max_s
        )

    @property
    def probe_is_free(self) -> bool:
        """Whether a probe only looks: never true of a scale-to-zero tier, where a probe boots
        a GPU. The gateway probes such a tier only to warm it."""
        return not self.scales_to_zero


class WarmthView(msgspec.Struct, frozen=True, kw_only=True):
    """What routing needs to know of one tier's warmth at this instant: the tracker derives
    it from the stored record (``WarmthTracker.state``), the planner decides on it.

    >>> await tracker.state("prod")
    WarmthView(state='cold', usable=True, eta_s=424.0, since=1764493200.0, ...)
    """

    state: WarmthState  # an unconfigured tier reads as "unknown" (and not usable)
    usable: bool  # configured and not known to be down (or down, and this may be its trial)
    # Seconds until warm if called now: 0 when warm, a boot's for a down tier whose trial a
    # request may be, None when unknown or otherwise down.
    eta_s: float | None = None
    since: float | None = None  # epoch seconds: when ``state`` was entered
    last_success: float | None = None  # epoch seconds
    failures: int = 0  # consecutive failures
    # Down only: seconds until the next trial may start (0: it may start now), and whether
    # one is under way (a probe, a warm-up's first probe, or a trial request).
    next_trial_s: float | None = None
    trial_running: bool = False
    trial: bool = False  # down, and its next trial is due: a request may be that trial
    # Down only: seconds until it may serve again, as a client's Retry-After: the next trial,
    # at least one recovery tick away.
    retry_after_s: float | None = None

    @property
    def warm(self) -> bool:
        return self.state == "warm"


class KeepWarmReport(msgspec.Struct, frozen=True, kw_only=True):
    schedule: str
    in_window: bool
    next_touch: str | None  # ISO-8601 UTC


class WarmthReport(msgspec.Struct, frozen=True, kw_only=True):
    """One tier's warmth in ``GET /status`` (docs/api.md). Add counters (requests,
    fallbacks) as fields here."""

    state: WarmthState
    since: str  # ISO-8601 UTC
    eta_s: float | None
    last_success: str | None
    last_latency_s: float | None
    last_error: str | None
    consecutive_failures: int
    down_since: str | None  # ISO-8601 UTC, while down (through its trials)
    next_trial: str | None  # ISO-8601 UTC, while down: when it is tried again
    trials: int  # trials since it went down
    warmups: int
    mean_cold_start_s: float
    keep_warm: KeepWarmReport
