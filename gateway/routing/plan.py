"""Which tier serves a request, and the plan for calling it: pure functions, no I/O.

>>> choose_tier(header="prod", model=None, env=None, settings=settings).tier
'prod'

Tier choice, first match wins: the ``X-Model-Tier`` header, then the OpenAI ``model`` field,
then ``GATEWAY_ENV``, then the config's ``default_tier``.

A plan (``plan_request``) decides, from the tier's warmth and the request's deadline, whether
to call the requested tier, serve from its fallback at once, hold the request until the tier
is warm, or refuse with ``Retry-After``; and splits the deadline so that a hung primary can
never eat the fallback's budget.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Literal

import msgspec

from gateway.errors import ClientError, UnknownTier
from gateway.settings import FallbackMode, Settings, Tier
from gateway.warmth.types import WarmthView

ChoiceSource = Literal["header", "model", "env", "default"]


class Choice(msgspec.Struct, frozen=True):
    tier: str
    source: ChoiceSource


def choose_tier(
    *, header: str | None, model: str | None, env: str | None, settings: Settings
) -> Choice:
    tiers = settings.tiers
    if header is not None:
        name = header.strip().lower()
        if name not in tiers:
            raise UnknownTier(
                f"X-Model-Tier names no tier: {header!r}; valid: {', '.join(tiers)}",
                valid=list(tiers),
            )
        return Choice(name, "header")
    if model is not None:
        for tier in tiers.values():
            if model in tier.aliases:
                return Choice(tier.name, "model")
        valid = sorted({alias for t in tiers.values() for alias in t.aliases})
        raise UnknownTier(f"model names no tier: {model!r}; valid: {', '.join(valid)}", valid=valid)
    if env is not None:
        return Choice(env, "env")
    return Choice(settings.default_tier, "default")


def parse_fallback_header(value: str | None, tier: Tier) -> FallbackMode:
    if value is None:
        return tier.fallback_mode
    mode = value.strip().lower()
    if mode not in ("allow", "deny", "wait"):
        raise ClientError(
            f"X-Tier-Fallback must be allow, deny or wait, not {value!r}",
            errors=[{"path": "header:X-Tier-Fallback", "message": "expected allow|deny|wait"}],
        )
    return mode  # type: ignore[return-value]  # checked just above


def parse_timeout_header(value: str | None) -> float | None:
    """``X-Request-Timeout``: seconds, may shorten the tier's budget, never lengthen it."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ClientError(
            f"X-Request-Timeout must be a positive number of seconds, not {value!r}",
            errors=[{"path": "header:X-Request-Timeout", "message": "expected seconds > 0"}],
        )
    return seconds


class Action(Enum):
    CALL = "call"  # call the requested tier now
    FALLBACK = "fallback"  # serve from the fallback at once, warm the requested tier
    WAIT = "wait"  # hold until the requested tier is warm, then call it
    REFUSE = "refuse"  # 503 with Retry-After = the ETA


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    action: Action
    primary: str  # the tier requested
    fallback: str | None  # tried if the primary is skipped or fails (mode `allow` only)
    primary_budget_s: float  # what the primary may use; the rest stays the fallback's
    reason: str | None = None  # X-Fallback-Reason when action is FALLBACK
    warm_up: bool = False  # start the primary's warm-up (single-flight) as part of the plan
    retry_after_s: float | None = None  # REFUSE: when a tier could serve this request
    warm_fallbacks: tuple[str, ...] = ()  # REFUSE under allow: fallbacks to warm up too
    trial: bool = False  # CALL of a down tier: the call is its trial, if it wins the claim


# With a fallback behind it, the primary may use this share of the request's deadline; the
# rest is the fallback's, so a hung primary never eats it (LiteLLM's most reported failure:
# a 20 s timeout that fell back only after a minute).
PRIMARY_SHARE = 0.75


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """A request's time. ``deadline_s``: what the client waits for an answer from a warm
    tier (its X-Request-Timeout, else the tier's warm timeout). ``cold_s``: what a call that
    must first boot the tier may take (the tier's cold timeout, capped by X-Request-Timeout)."""

    deadline_s: float
    cold_s: float

    @classmethod
    def for_tier(cls, tier: Tier, client_s: float | None) -> Budget:
        if client_s is None:
            return cls(deadline_s=tier.timeouts.warm, cold_s=tier.timeouts.cold)
        return cls(
            deadline_s=min(client_s, tier.timeouts.warm), cold_s=min(client_s, tier.timeouts.cold)
        )


def plan_request(
    *,
    tier: Tier,
    mode: FallbackMode,
    budget: Budget,
    view: WarmthView,
    fallbacks: dict[str, WarmthView],
) -> Plan:
    """Decide how to serve one request; ``fallbacks`` holds the views of ``tier.fallback``.

    A fallback is only ever used under ``allow``, and only one that is usable and either warm
    or able to boot inside the deadline.
    """
    name = tier.name
    candidates = [(n, fallbacks[n]) for n in tier.fallback if n in fallbacks]
    # A down tier's trial is a request that names it, never a fallback's.
    candidates = [(n, v) for n, v in candidates if v.usable and not v.trial]
    candidates = candidates if mode == "allow" else []
    in_time = [n for n, v in candidates if v.warm or (v.eta_s or 0.0) <= budget.deadline_s]
    fallback = in_time[0] if in_time else None

    if view.warm or (view.usable and mode != "wait" and (view.eta_s or 0.0) <= budget.deadline_s):
        # Warm, or it boots inside the deadline (a Modal tier holds the call while it boots).
        total = budget.deadline_s if view.warm else budget.cold_s
        share = total * PRIMARY_SHARE if fallback else total
        return Plan(
            action=Action.CALL,
            primary=name,
            fallback=fallback,
            primary_budget_s=share,
            trial=view.trial,
        )
    if view.usable and mode == "wait":
        return Plan(
            action=Action.WAIT,
            primary=name,
            fallback=None,
            primary_budget_s=budget.cold_s,
            warm_up=True,
        )
    if fallback:
        return Plan(
            action=Action.FALLBACK,
            primary=name,
            fallback=fallback,
            primary_budget_s=0.0,
            reason="cold-start" if view.usable and not view.trial else "unavailable",
            warm_up=view.usable,
        )
    # Refuse: say when to come back, from the soonest tier that could then serve.
    etas = [view.eta_s] if view.usable and view.eta_s is not None else []
    etas += [view.retry_after_s] if not view.usable and view.retry_after_s is not None else []
    etas += [v.eta_s for _, v in candidates if v.eta_s is not None]
    return Plan(
        action=Action.REFUSE,
        primary=name,
        fallback=None,
        primary_budget_s=0.0,
        warm_up=view.usable,
        retry_after_s=min(etas) if etas else None,
        warm_fallbacks=tuple(n for n, v in candidates if not v.warm),
    )
