"""Serving one request: plan it, call the tier, fall back or wait as the client asked, and
check the output. Handlers build the payload and the output check; this module owns time.

>>> outcome = await dispatcher.serve(job)
>>> outcome.served, outcome.reason
('dev', 'cold-start')

Failures of the primary that allow a fallback (under ``allow``, once, within what is left of
the deadline): unreachable or 503 (``unavailable``), timeout or redirect chain exhausted
(``timeout``), other 5xx or garbage (``upstream-error``), output cut at max_tokens or breaking
the schema (``truncated`` / ``schema``). A 4xx from the tier is the request's fault and is
never retried elsewhere.

With API keys on (``gateway.http.auth``), the job carries the request's ``Grant``: a tier the key
may not use is refused with 403 before anything is planned, and fallback only ever considers
the key's tiers (docs/operations.md, "Keys").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from gateway.access.keys import Grant
from gateway.errors import (
    BadUpstreamResponse,
    Forbidden,
    GatewayError,
    OutputInvalid,
    TierTimeout,
    TierUnavailable,
    UpstreamError,
)
from gateway.routing.plan import Action, Budget, Plan, plan_request
from gateway.routing.tier_client import TierClient, TierReply
from gateway.routing.tier_stream import OpenedStream, open_stream
from gateway.schemas import ChatCompletion
from gateway.settings import FallbackMode, Settings, Tier
from gateway.warmth.types import WarmthView

EMPTY = ChatCompletion()  # a stream's reply: its answer is read later, by the relay


class Warmth(Protocol):
    """What dispatch needs of warmth (``gateway.routing.warmth_service.WarmthService``)."""

    async def view(self, tier: str) -> WarmthView: ...
    def record_success(self, tier: str, latency_s: float) -> None: ...
    def record_failure(self, tier: str, error: str) -> None: ...
    def trigger_warm_up(self, tier: str) -> None: ...
    async def wait_warm(self, tier: str, timeout_s: float) -> bool: ...
    async def claim_trial(self, tier: str, budget_s: float) -> bool: ...
    def end_trial(self, tier: str) -> None: ...
    def retry_after(self, tier: str) -> float | None: ...


class Job(msgspec.Struct, frozen=True, kw_only=True):
    requested: str
    mode: FallbackMode
    client_timeout_s: float | None
    payload: Callable[[Tier], bytes]  # the upstream body for a given tier
    check: Callable[[TierReply], Any] | None = None  # parse + validate; raises OutputInvalid
    request_id: str | None = None
    # Keywords of the schema are checked only after generation (lowered or unenforced):
    # output that breaks one is sampled again on the same tier (the tier's
    # ``schema_retries`` times, each with a new seed, while the deadline holds another answer).
    retry_on_violation: bool = False
    on_retry: Callable[[OutputInvalid], None] | None = None  # metrics: one call per retry
    grant: Grant | None = None  # the API key's (None: keys off)
    stream: bool = False  # open a stream: served once its first bytes are in (no check here)


def reseeded(body: bytes, attempt: int) -> bytes:
    """The upstream body with a fresh ``seed`` for retry ``attempt`` (the client's seed plus
    ``attempt``): a new sample, reproducible from the client's seed."""
    payload = msgspec.json.decode(body)
    base = payload.get("seed")
    payload["seed"] = (base if isinstance(base, int) else 0) + attempt
    return msgspec.json.encode(payload)


def _greedy(body: bytes) -> bool:
    """Temperature 0 answers the same whatever the seed: a retry would repeat the output."""
    return bool(msgspec.json.decode(body).get("temperature") == 0)


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    reply: TierReply  # for a stream: empty, its latency the time to first bytes
    output: Any  # what ``check`` returned (None without a check)
    requested: str
    served: str
    reason: str | None  # X-Fallback-Reason when served != requested (or a retry served)
    stream: OpenedStream | None = None  # Job.stream: open, its first bytes in


def failure_reason(error: GatewayError) -> str | None:
    """The X-Fallback-Reason a failure earns, or None when it must not fall back."""
    if isinstance(error, OutputInvalid):
        return "truncated" if error.members.get("reason") == "truncated" else "schema"
    if isinstance(error, TierUnavailable):
        return "unavailable"
    if isinstance(error, TierTimeout):
        return "timeout"
    if isinstance(error, UpstreamError):
        return "upstream-error"
    return None  # the client's fault: a fallback would fail the same way


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        clients: dict[str, TierClient],
        warmth: Warmth,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.warmth = warmth
        self.clock = clock

    async def plan(self, job: Job) -> tuple[Plan, Budget]:
        tier = self.settings.tiers[job.requested]
        budget = Budget.for_tier(tier, job.client_timeout_s)
        grant = job.grant
        if grant is not None and not grant.may_use(tier.name):
            raise Forbidden(
                f"key {grant.key.name!r} may not use tier {tier.name}; "
                f"its tiers: {', '.join(grant.key.tiers) or 'none'}",
                tier=tier.name,
                key=grant.key.name,
                allowed=list(grant.key.tiers),
            )
        # A fallback the key may not use is not a fallback: the planner never sees it.
        allowed = [n for n in tier.fallback if grant is None or grant.may_use(n)]
        views = {name: await self.warmth.view(name) for name in allowed}
        plan = plan_request(
            tier=tier,
            mode=job.mode,
            budget=budget,
            view=await self.warmth.view(tier.name),
            fallbacks=views,
        )
        return plan, budget

    async def serve(self, job: Job) -> Outcome:
        started = self.clock()
        plan, budget = await self.plan(job)
        if plan.warm_up:
            self.warmth.trigger_warm_up(plan.primary)
        for name in plan.warm_fallbacks:
            self.warmth.trigger_warm_up(name)

        if plan.action is Action.REFUSE:
            raise await self._refusal(plan)
        if plan.trial and not await self.warmth.claim_trial(plan.primary, plan.primary_budget_s):
            # Down, and another request is its trial: as for any down tier, its fallback
            # serves, or the client is told when the next trial may come.
            if plan.fallback is None:
                raise await self._refusal(plan)
            left = budget.deadline_s - (self.clock() - started)
            return await self._call(job, plan.fallback, left, reason="unavailable")
        if plan.action is Action.FALLBACK:
            assert plan.fallback is not None
            left = budget.deadline_s - (self.clock() - started)
            return await self._call(job, plan.fallback, left, reason=plan.reason)
        if plan.action is Action.WAIT:
            if not await self.warmth.wait_warm(plan.primary, plan.primary_budget_s):
                eta = (await self.warmth.view(plan.primary)).eta_s
                raise TierTimeout(
                    f"tier {plan.primary} was not warm within {plan.primary_budget_s:g} s",
                    tier=plan.primary,
                    budget_s=round(plan.primary_budget_s, 3),
                    eta_s=None if eta is None else round(eta, 1),
                )
            left = plan.primary_budget_s - (self.clock() - started)
            return await self._call(job, plan.primary, left, reason=None)

        try:
            return await self._call(
                job, plan.primary, plan.primary_budget_s, reason=None, trial=plan.trial
            )
        except GatewayError as error:
            reason = failure_reason(error)
            if plan.fallback is None or reason is None:
                raise
            left = budget.deadline_s - (self.clock() - started)
            if left <= 0:
                raise
            return await self._call(job, plan.fallback, left, reason=reason)

    async def _call(
        self, job: Job, name: str, budget_s: float, *, reason: str | None, trial: bool = False
    ) -> Outcome:
        """Call one tier and record the outcome. ``trial``: the call is a down tier's trial;
        an end that is neither success nor failure (a 4xx, the client gone) gives it back."""
        tier = self.settings.tiers[name]
        if budget_s <= 0:
            raise TierTimeout(f"no time was left to call tier {name}", tier=name, budget_s=0.0)
        started = self.clock()
        body = job.payload(tier)
        stream = None
        # A stream is checked by its relay, at its end: it is never sampled again here.
        retries = (
            tier.schema_retries
            if job.retry_on_violation and not job.stream and not _greedy(body)
            else 0
        )
        for attempt in range(retries + 1):
            settled = False
            try:
                if job.stream:
                    stream = await self._open_stream(job, tier, budget_s)
                    reply = TierReply(body=b"", completion=EMPTY, latency_s=stream.latency_s)
                else:
                    reply = await self.clients[name].complete(
                        reseeded(body, attempt) if attempt else body,
                        budget_s=budget_s - (self.clock() - started),
                        request_id=job.request_id,
                    )
                settled = True
            except (TierUnavailable, TierTimeout, BadUpstreamResponse) as error:
                settled = True
                self.warmth.record_failure(name, error.detail)
                retry_s = self.warmth.retry_after(name)
                if isinstance(error, TierUnavailable) and retry_s is not None:
                    # This failure left the tier down: come back when it is next tried.
                    error.headers["Retry-After"] = _seconds(retry_s)
                    error.members["state"] = "down"
                raise
            finally:
                if trial and not settled:
                    self.warmth.end_trial(name)
            self.warmth.record_success(name, reply.latency_s)
            if job.grant is not None:  # the key pays for every answer, used or not
                usage = reply.completion.usage
                job.grant.answered(name, reply.latency_s, usage.total_tokens if usage else 0)
            if stream is not None:
                output = None
                break
            try:
                output = job.check(reply) if job.check is not None else None
                break
            except OutputInvalid as error:
                error.members.setdefault("tier", name)
                again = error.members.get("reason") == "schema-violation" and attempt < retries
                # a retry costs about what this answer did: only when that still fits
                if not again or budget_s - (self.clock() - started) < reply.latency_s:
                    if attempt:
                        error.members["attempts"] = attempt + 1
                    raise
                if job.on_retry is not None:
                    job.on_retry(error)
            except RecursionError:  # output nested past the JSON decoder's depth limit
                bad = BadUpstreamResponse(
                    f"tier {name}'s output nests deeper than the gateway decodes", tier=name
                )
                self.warmth.record_failure(name, bad.detail)
                raise bad from None
        return Outcome(
            reply=reply,
            output=output,
            requested=job.requested,
            served=name,
            reason=reason,
            stream=stream,
        )

    async def _open_stream(self, job: Job, tier: Tier, budget_s: float) -> OpenedStream:
        """A warm tier owes its first token within ``first_token``; a cold one boots first,
        within the call's budget. Either way the stream is open (or failed, and may fall
        back) before the client has a byte."""
        first_s = budget_s
        if (await self.warmth.view(tier.name)).warm:
            first_s = min(budget_s, tier.timeouts.first_token)
        return await open_stream(
            self.clients[tier.name],
            job.payload(tier),
            budget_s=budget_s,
            first_token_s=first_s,
            idle_s=tier.timeouts.stream_idle,
            request_id=job.request_id,
        )

    async def _refusal(self, plan: Plan) -> TierUnavailable:
        tier = self.settings.tiers[plan.primary]
        view = await self.warmth.view(plan.primary)
        retry_s = plan.retry_after_s
        if view.state == "down":  # the next trial, even if a fallback could boot sooner
            retry_s = view.retry_after_s or self.warmth.retry_after(plan.primary) or retry_s
        headers = {}
        if retry_s is not None:
            headers["Retry-After"] = _seconds(retry_s)
        if not tier.configured:
            return self.clients[tier.name].unconfigured(headers)
        eta = None if retry_s is None else round(retry_s, 1)
        if view.state == "down":
            # Said as it is: down, and when it is tried again (not "ready in" anything).
            when = f"; it is tried again in about {eta:g} s" if eta else ""
            return TierUnavailable(
                f"tier {tier.name} is down{when}",
                tier=tier.name,
                state="down",
                next_trial_s=eta,
                headers=headers,
            )
        # Its real state: an `openai` tier is never "cold", it may be warming or unknown.
        return TierUnavailable(
            f"tier {tier.name} is {view.state}" + (f"; ready in about {eta:g} s" if eta else ""),
            tier=tier.name,
            state=view.state,
            eta_s=eta,
            headers=headers,
        )


def _seconds(value: float) -> str:
    """A Retry-After value: whole seconds, at least 1 (RFC 9110 delay-seconds)."""
    return str(max(1, math.ceil(value)))
