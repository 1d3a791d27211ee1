"""Per-key limits on a real Redis: two Quotas (two workers, or two replicas) count one key
together; the windows' end and the OpenAI headers come from the shared count."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from gateway.access.keys import KeyRecord
from gateway.access.quotas import Quotas
from gateway.errors import RateLimited
from gateway.settings import Secret
from tests.redis_server import RedisServer


@pytest.fixture
async def quotas(redis_server: RedisServer) -> AsyncIterator[Callable[[str], Quotas]]:
    made: list[Quotas] = []

    def make(prefix: str) -> Quotas:
        made.append(Quotas(Secret(redis_server.url), prefix=prefix))
        return made[-1]

    yield make
    for each in made:
        await each.aclose()


def key(**limits: int) -> KeyRecord:
    return KeyRecord(name="team-a", hash="0" * 64, tiers=("dev",), **limits)


async def test_two_processes_share_one_rpm_count(quotas: Callable[[str], Quotas]) -> None:
    one, two = quotas("t1"), quotas("t1")
    record = key(rpm=3)
    await one.admit(record)
    headers = dict(await two.admit(record))
    assert headers[b"x-ratelimit-remaining-requests"] == b"1"  # the other one's request counted
    await one.admit(record)
    with pytest.raises(RateLimited) as info:
        await two.admit(record)
    assert 1 <= int(info.value.headers["Retry-After"]) <= 60


async def test_tokens_charged_by_one_are_seen_by_the_other_at_its_next_charge(
    quotas: Callable[[str], Quotas],
) -> None:
    one, two = quotas("t2"), quotas("t2")
    record = key(tpm=100)
    await one.charge(record, tokens=80, gpu_s=0)
    await two.admit(record)  # two has not counted yet: admitted (documented: one more each)
    await two.charge(record, tokens=30, gpu_s=0)  # the shared count is now 110
    with pytest.raises(RateLimited, match="tokens per minute"):
        await two.admit(record)


async def test_prefixes_keep_deployments_apart(quotas: Callable[[str], Quotas]) -> None:
    a, b = quotas("deploy-a"), quotas("deploy-b")
    record = key(rpm=1)
    await a.admit(record)
    await b.admit(record)  # another deployment's count: not this one's
    with pytest.raises(RateLimited):
        await a.admit(record)


async def test_a_down_redis_admits_uncounted_and_says_so(
    redis_server: RedisServer, quotas: Callable[[str], Quotas], caplog: pytest.LogCaptureFixture
) -> None:
    limited = quotas("t3")
    record = key(rpm=1)
    await limited.admit(record)
    redis_server.stop()
    assert await limited.admit(record) != []  # fail open: served, with headers
    assert limited.errors == 1
    assert "limits store failed, key team-a admitted uncounted" in caplog.text
    assert redis_server.url not in caplog.text  # a Redis URL may carry a password
