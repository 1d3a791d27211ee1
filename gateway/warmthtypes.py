"""The data of warmth: a tier's warmth settings and what the tracker reports of it.
Pure msgspec Structs, shared by ``gateway.warmth`` (the tracker) and its users."""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.keepwarm import OFF, Schedule, parse_schedule
from gateway.tierspec import TierSpec
from gateway.warmstore import State


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
    down_retry_after_s: float = 60.0  # a down tier is warmed again at most once a minute
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
    warmups: int
    mean_cold_start_s: float
    keep_warm: KeepWarmStatus
