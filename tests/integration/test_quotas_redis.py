"""Per-key limits on a real Redis: two Quotas (two workers, or two replicas) count one key
together; the windows' end and the OpenAI headers come from the shared count."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis

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


async def test_tokens_charged_by_one_are_seen_by_the_other_at_its_next_flush(
    quotas: Callable[[str], Quotas],
) -> None:
    one, two = quotas("t2"), quotas("t2")
    record = key(tpm=100)
    one.charge(record, tokens=80, gpu_s=0)
    await one.flush()
    await two.admit(record)  # two has not counted yet: admitted (documented: one more each)
    two.charge(record, tokens=30, gpu_s=0)  # held: two counts 30
    await two.admit(record)
    await two.flush()  # the shared count is now 110, and two has it back
    with pytest.raises(RateLimited, match="tokens per minute"):
        await two.admit(record)


async def test_charges_are_held_and_written_with_one_call_per_limit(
    redis_server: RedisServer, quotas: Callable[[str], Quotas]
) -> None:
    worker = quotas("t4")
    record = key(tpm=1000, gpu_seconds_per_day=10)
    for _ in range(3):
        worker.charge(record, tokens=100, gpu_s=1.5)
    headers = dict(await worker.admit(record))  # its own held charges count at once
    assert headers[b"x-ratelimit-remaining-tokens"] == b"700"
    assert headers[b"x-ratelimit-remaining-gpu-seconds"] == b"5"
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.keys("t4:limits*gateway-tpm*") == []  # nothing written yet
        await worker.flush()
        [tokens_key] = client.keys("t4:limits*gateway-tpm*")
        [gpu_key] = client.keys("t4:limits*gateway-gpu*")
        assert int(client.get(tokens_key) or 0) == 300
        assert int(client.get(gpu_key) or 0) == 4500  # GPU milliseconds
        assert 0 < client.ttl(tokens_key) <= 60
    finally:
        client.close()
    other = quotas("t4")
    other.charge(record, tokens=1, gpu_s=0)
    await other.flush()
    headers = dict(await other.admit(record))
    assert headers[b"x-ratelimit-remaining-tokens"] == b"699"  # the first worker's, and its own


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
