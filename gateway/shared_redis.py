"""How the gateway talks to Redis: the warmth store, the shared keys and the limits' counts.

Every call is bounded by the caller's timeout (socket timeouts as well, so a half-open
connection fails instead of hanging) and never retried inside redis-py: each caller decides
what a failure means (the warmth store answers from its local copy, the keys follower keeps
the keys it last read, limits fail open)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

__all__ = ["StoreFailure", "bounded_redis"]

# What a failed Redis call may raise: its own errors, OSError from the socket, our timeout.
StoreFailure = (RedisError, OSError, TimeoutError)


def bounded_redis(url: str, timeout_s: float) -> Redis:
    """A client whose every call fails within ``timeout_s`` rather than waiting or retrying."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
