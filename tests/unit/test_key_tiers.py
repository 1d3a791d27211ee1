"""A key's tiers bound its requests: the tier asked for must be one of them (403), and
fallback never moves a request to a tier the key lacks. The dispatcher with a fixed warmth
view and the tiers behind a respx router at the transport seam."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from gateway.access.keys import Grant, KeyRecord
from gateway.errors import Forbidden, TierUnavailable
from gateway.routing.dispatch import Dispatcher, Job
from gateway.routing.tier_client import TierClient
from gateway.settings import Settings, load_settings
from gateway.warmth.types import WarmthView
from tests.conftest import BASE_ENV, DEV_URL, PROD_URL, completion


class FixedWarmth:
    """What the dispatcher reads of warmth, fixed: prod cold (7 min away), dev warm."""

    def __init__(self, views: dict[str, WarmthView]) -> None:
        self.views = views
        self.warmed: list[str] = []

    async def view(self, tier: str) -> WarmthView:
        return self.views[tier]

    def record_success(self, tier: str, latency_s: float) -> None:
        pass

    def record_failure(self, tier: str, error: str) -> None:
        pass

    def trigger_warm_up(self, tier: str) -> None:
        self.warmed.append(tier)

    async def wait_warm(self, tier: str, timeout_s: float) -> bool:
        return False

    async def claim_trial(self, tier: str, budget_s: float) -> bool:
        return True  # a down tier's trial: these tiers are never down

    def end_trial(self, tier: str) -> None:
        pass

    def retry_after(self, tier: str) -> float | None:
        return None


COLD_PROD = {
    "prod": WarmthView(state="cold", usable=True, eta_s=424.0),
    "dev": WarmthView(state="warm", usable=True),
}


@pytest.fixture
def settings() -> Settings:
    return load_settings(environ=BASE_ENV)


@pytest.fixture
def tiers() -> respx.MockRouter:
    # Both tiers answer in every test, because most of them show that one is never called
    # (each asserts the calls it expects): an unused route is the point, not a mistake.
    router = respx.MockRouter(assert_all_called=False)
    router.post(DEV_URL + "/v1/chat/completions", name="dev").respond(json=completion())
    router.post(PROD_URL + "/v1/chat/completions", name="prod").respond(
        json=completion(model="prod")
    )
    return router


def dispatcher(settings: Settings, router: respx.MockRouter, views: Any) -> Dispatcher:
    transport = httpx.MockTransport(router.async_handler)
    clients = {n: TierClient(t, settings, transport=transport) for n, t in settings.tiers.items()}
    return Dispatcher(settings, clients, FixedWarmth(views))


def job(tier: str, *tiers: str) -> Job:
    grant = Grant(KeyRecord(name="team-a", hash="0" * 64, tiers=tiers))
    return Job(
        requested=tier,
        mode="allow",
        client_timeout_s=None,
        payload=lambda t: b'{"model": "%s", "messages": []}' % t.model.encode(),
        grant=grant,
    )


async def test_a_tier_the_key_lacks_is_403_and_calls_nothing(
    settings: Settings, tiers: respx.MockRouter
) -> None:
    with pytest.raises(Forbidden) as info:
        await dispatcher(settings, tiers, COLD_PROD).serve(job("prod", "dev"))
    assert info.value.status == 403
    assert info.value.members == {"tier": "prod", "key": "team-a", "allowed": ["dev"]}
    assert tiers.calls.call_count == 0  # not quietly served by dev either


async def test_cold_prod_falls_back_to_dev_when_the_key_has_both(
    settings: Settings, tiers: respx.MockRouter
) -> None:
    the_job = job("prod", "dev", "prod")
    outcome = await dispatcher(settings, tiers, COLD_PROD).serve(the_job)
    assert (outcome.served, outcome.reason) == ("dev", "cold-start")
    assert the_job.grant is not None
    assert [(t, tokens) for t, _, tokens in the_job.grant.calls] == [("dev", 21)]


async def test_cold_prod_never_falls_back_to_a_tier_the_key_lacks(
    settings: Settings, tiers: respx.MockRouter
) -> None:
    with pytest.raises(TierUnavailable) as info:
        await dispatcher(settings, tiers, COLD_PROD).serve(job("prod", "prod"))
    assert info.value.members["tier"] == "prod"  # an honest 503 with the ETA, not dev's answer
    assert info.value.headers["Retry-After"] == "424"
    assert tiers.calls.call_count == 0


async def test_a_failing_prod_is_not_retried_on_a_tier_the_key_lacks(
    settings: Settings, tiers: respx.MockRouter
) -> None:
    tiers.routes["prod"].respond(503)
    warm = {
        "prod": WarmthView(state="warm", usable=True),
        "dev": WarmthView(state="warm", usable=True),
    }
    with pytest.raises(TierUnavailable):
        await dispatcher(settings, tiers, warm).serve(job("prod", "prod"))
    assert not tiers.routes["dev"].called
    outcome = await dispatcher(settings, tiers, warm).serve(job("prod", "prod", "dev"))
    assert (outcome.served, outcome.reason) == ("dev", "unavailable")
