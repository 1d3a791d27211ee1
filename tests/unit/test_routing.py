"""Routing is a pure function: table tests for the tier choice and the plan."""

from __future__ import annotations

import pytest

from gateway.errors import ClientError, UnknownTier
from gateway.routing.plan import (
    Action,
    Budget,
    choose_tier,
    parse_fallback_header,
    plan_request,
)
from gateway.settings import Settings, load_settings
from gateway.warmth.types import WarmthView

ENV = {"GATEWAY_TIER_DEV_URL": "http://dev.test", "GATEWAY_TIER_PROD_URL": "http://prod.test"}


@pytest.fixture
def settings() -> Settings:
    return load_settings(environ=ENV)


@pytest.mark.parametrize(
    ("header", "model", "env", "expected"),
    [
        ("prod", None, None, ("prod", "header")),
        ("PROD", None, None, ("prod", "header")),
        (" dev ", None, "prod", ("dev", "header")),
        ("dev", "prod", "prod", ("dev", "header")),  # header beats model and env
        (None, "prod", "dev", ("prod", "model")),  # model beats env
        (None, "Qwen/Qwen2.5-32B-Instruct", None, ("prod", "model")),  # a tier's model name
        (None, "Qwen/Qwen2.5-7B-Instruct", "prod", ("dev", "model")),
        (None, None, "prod", ("prod", "env")),
        (None, None, "dev", ("dev", "env")),
        (None, None, None, ("dev", "default")),
    ],
)
def test_choose_tier(
    settings: Settings,
    header: str | None,
    model: str | None,
    env: str | None,
    expected: tuple[str, str],
) -> None:
    choice = choose_tier(header=header, model=model, env=env, settings=settings)
    assert (choice.tier, choice.source) == expected


@pytest.mark.parametrize(("header", "model"), [("staging", None), (None, "gpt-4o"), ("", None)])
def test_unknown_names_are_400_with_the_valid_ones(
    settings: Settings, header: str | None, model: str | None
) -> None:
    with pytest.raises(UnknownTier) as info:
        choose_tier(header=header, model=model, env=None, settings=settings)
    assert info.value.status == 400
    assert "dev" in info.value.members["valid"]


def test_fallback_header(settings: Settings) -> None:
    prod = settings.tiers["prod"]
    assert parse_fallback_header(None, prod) == "allow"  # prod's default, from config
    assert parse_fallback_header(None, settings.tiers["dev"]) == "wait"
    assert parse_fallback_header("DENY", prod) == "deny"
    with pytest.raises(ClientError):
        parse_fallback_header("sometimes", prod)


def test_budget_from_tier_and_client(settings: Settings) -> None:
    prod = settings.tiers["prod"]
    assert Budget.for_tier(prod, None) == Budget(deadline_s=120.0, cold_s=600.0)
    assert Budget.for_tier(prod, 30.0) == Budget(deadline_s=30.0, cold_s=30.0)
    assert Budget.for_tier(prod, 300.0) == Budget(deadline_s=120.0, cold_s=300.0)
    assert Budget.for_tier(prod, 9999.0) == Budget(deadline_s=120.0, cold_s=600.0)


WARM = WarmthView(state="warm", usable=True)
COLD_PROD = WarmthView(state="cold", usable=True, eta_s=424.0)
COLD_DEV = WarmthView(state="cold", usable=True, eta_s=60.0)
DEV_SOON = WarmthView(state="cold", usable=True, eta_s=30.0)
DOWN = WarmthView(state="down", usable=False)
# Down, next trial in 42 s; down with its trial due (a scale-to-zero tier: half-open).
DOWN_42 = WarmthView(state="down", usable=False, retry_after_s=42.0)
DOWN_DEV_TRIAL = WarmthView(state="down", usable=True, eta_s=60.0, trial=True)
DOWN_PROD_TRIAL = WarmthView(state="down", usable=True, eta_s=424.0, trial=True)
B = Budget(deadline_s=120.0, cold_s=600.0)


@pytest.mark.parametrize(
    ("mode", "view", "dev", "action", "fallback", "reason", "warm_up", "retry_after"),
    [
        # warm primary: call it; under allow keep a fallback and a share of the deadline
        ("allow", WARM, WARM, Action.CALL, "dev", None, False, None),
        ("deny", WARM, WARM, Action.CALL, None, None, False, None),
        ("wait", WARM, WARM, Action.CALL, None, None, False, None),
        # cold primary whose ETA exceeds the deadline
        ("allow", COLD_PROD, WARM, Action.FALLBACK, "dev", "cold-start", True, None),
        ("deny", COLD_PROD, WARM, Action.REFUSE, None, None, True, 424.0),
        ("wait", COLD_PROD, WARM, Action.WAIT, None, None, True, None),
        # cold primary, fallback cold but boots inside the deadline: serve from it
        ("allow", COLD_PROD, DEV_SOON, Action.FALLBACK, "dev", "cold-start", True, None),
        # both cold beyond the deadline under allow: refuse with the smaller ETA
        (
            "allow",
            COLD_PROD,
            WarmthView(state="cold", usable=True, eta_s=200.0),
            Action.REFUSE,
            None,
            None,
            True,
            200.0,
        ),
        # primary down or unconfigured
        ("allow", DOWN, WARM, Action.FALLBACK, "dev", "unavailable", False, None),
        ("deny", DOWN, WARM, Action.REFUSE, None, None, False, None),
        ("allow", DOWN, DOWN, Action.REFUSE, None, None, False, None),
        # down: a refusal says when the next trial comes (the soonest of the tiers)
        ("deny", DOWN_42, WARM, Action.REFUSE, None, None, False, 42.0),
        ("allow", DOWN_42, DOWN_42, Action.REFUSE, None, None, False, 42.0),
        # down with its trial due: planned as the cold tier it may be; its fallback
        # reason is `unavailable`, and a down tier is never another's fallback
        ("deny", DOWN_PROD_TRIAL, WARM, Action.REFUSE, None, None, True, 424.0),
        ("allow", DOWN_PROD_TRIAL, WARM, Action.FALLBACK, "dev", "unavailable", True, None),
        ("wait", DOWN_PROD_TRIAL, WARM, Action.WAIT, None, None, True, None),
        ("allow", COLD_PROD, DOWN_DEV_TRIAL, Action.REFUSE, None, None, True, 424.0),
        # cold primary that boots inside the deadline: call it, a Modal tier holds the call
        ("deny", COLD_DEV, WARM, Action.CALL, None, None, False, None),
    ],
)
def test_plan_table(
    settings: Settings,
    mode: str,
    view: WarmthView,
    dev: WarmthView,
    action: Action,
    fallback: str | None,
    reason: str | None,
    warm_up: bool,
    retry_after: float | None,
) -> None:
    plan = plan_request(
        tier=settings.tiers["prod"],
        mode=mode,
        budget=B,
        view=view,
        fallbacks={"dev": dev},  # type: ignore[arg-type]
    )
    assert plan.action is action
    assert plan.fallback == fallback
    assert plan.reason == reason
    assert plan.warm_up is warm_up
    assert plan.retry_after_s == retry_after


def test_a_warm_primary_leaves_the_fallback_its_share(settings: Settings) -> None:
    plan = plan_request(
        tier=settings.tiers["prod"], mode="allow", budget=B, view=WARM, fallbacks={"dev": WARM}
    )
    assert plan.primary_budget_s == pytest.approx(90.0)  # 75 % of 120 s; dev keeps 30 s
    alone = plan_request(
        tier=settings.tiers["prod"], mode="deny", budget=B, view=WARM, fallbacks={"dev": WARM}
    )
    assert alone.primary_budget_s == 120.0


def test_a_cold_call_gets_the_cold_budget(settings: Settings) -> None:
    plan = plan_request(
        tier=settings.tiers["dev"],
        mode="deny",
        budget=Budget(deadline_s=120.0, cold_s=180.0),
        view=COLD_DEV,
        fallbacks={},
    )
    assert (plan.action, plan.primary_budget_s) == (Action.CALL, 180.0)


def test_a_call_of_a_down_tier_whose_trial_is_due_is_marked_as_the_trial(
    settings: Settings,
) -> None:
    plan = plan_request(
        tier=settings.tiers["dev"],
        mode="deny",
        budget=Budget(deadline_s=120.0, cold_s=180.0),
        view=DOWN_DEV_TRIAL,
        fallbacks={},
    )
    assert (plan.action, plan.trial, plan.primary_budget_s) == (Action.CALL, True, 180.0)
