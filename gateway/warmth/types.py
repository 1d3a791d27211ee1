"""The data of warmth: a tier's warmth settings and what the tracker reports of it.
Pure msgspec Structs, shared by ``gateway.warmth.tracker`` (the tracker) and its users."""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.tierspec import TierSpec
from gateway.warmth.schedule import OFF, Schedule, parse_schedule
from gateway.warmth.store import State

# Recovery of a down tier (docs/operations.md, "Down, backoff and recovery").
TRIAL_RETRY_S = 60.0  # a trial on Modal may boot a GPU (~$0.05 a boot): at most once a minute
TRIAL_RETRY_MAX_S = 900.0  # 15 min: a tier down for hours costs four boots an hour, no more
FREE_PROBE_RETRY_S = 5.0  # a /health probe costs nothing: a 10 s restart is seen in ~15 s
FREE_PROBE_RETRY_MAX_S = 60.0  # a dead server is still looked at once a minute
DOWN_BACKOFF_FACTOR = 2.0  # each failed trial doubles the wait: 5, 10, 20, 40, 60, 60 ...


class TierWarmthConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One tier's warmth settings; ``from_spec`` fills them from ``config/tiers.toml``."""

    kind: Literal["modal", "openai", "local"]
    scales_to_zero: bool
    scaledown_window_s: float
    expected_cold_start_s: float  # seeds the learned mean (dev 60 s, prod 424 s measured)
    startup_timeout_s: float  # a warm-up still unhealthy after this marks the tier down
    failures_to_down: int = 3  # one failure is noise, three in a row is an outage
    ewma_alpha: float = 0.3  # weight of the newest cold start: ~3 warm-ups to follow a change
    keep_warm: Schedule = OFF
    # A down tier's next trial comes this long after it went down, then twice as long after
    # each failed trial, up to ``down_retry_max_s`` (``down_backoff_s``). The defaults are a
    # trial's: one that may wake a GPU; ``tierstate.warmth_config`` gives tiers whose probes
    # are free their own (FREE_PROBE_RETRY_S), and gateway.toml may set both per tier.
    down_retry_after_s: float = TRIAL_RETRY_S
    down_retry_max_s: float = TRIAL_RETRY_MAX_S
    already_warm_below_s: float = 5.0  # healthy this fast means it was up: not a cold start
    probe_backoff_initial_s: float = 1.0
    probe_backoff_max_s: float = 15.0  # a booting vLLM answers 503 fast; 15 s keeps load tiny

    @classmethod
    def from_spec(
        cls, spec: TierSpec, *, kind: Literal["modal", "openai", "local"], keep_warm: str
    ) -> TierWarmthConfig:
        return cls(
            kind=kind,
            scales_to_zero=kind == "modal" and spec.min_containers == 0,
            scaledown_window_s=spec.scaledown_window_s,
            expected_cold_start_s=spec.expected_cold_start_s,
            startup_timeout_s=spec.startup_timeout_s,
            keep_warm=parse_schedule(keep_warm),
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


class TierState(msgspec.Struct, frozen=True, kw_only=True):
    state: State
    since: float  # epoch seconds
    eta_s: float | None  # seconds until warm: 0 when warm, None when unknown or down
    last_success: float | None
    failures: int
    # Down only: seconds until the next trial may start (0: it may start now), and whether
    # one is under way (a probe, a warm-up's first probe, or a trial request).
    next_trial_s: float | None = None
    trial_running: bool = False


class KeepWarmStatus(msgspec.Struct, frozen=True, kw_only=True):
    schedule: str
    in_window: bool
    next_touch: str | None  # ISO-8601 UTC


class TierStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One tier in ``GET /status``. Add counters (requests, fallbacks) as fields here."""

    state: State
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
    keep_warm: KeepWarmStatus
