"""A tier's Retry-After as the gateway passes it on (issue 14: '²' went out as non-ASCII
bytes, a 40-digit value passed through, an HTTP-date became 5)."""

from __future__ import annotations

import pytest

from gateway.routing.tier_client import MAX_RETRY_AFTER_S, sanitize_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", "30"),
        (" 7 ", "7"),
        ("0", "0"),
        ("²", "5"),
        ("1" * 40, str(MAX_RETRY_AFTER_S)),
        ("86400", str(MAX_RETRY_AFTER_S)),
        ("Wed, 21 Oct 2026 07:28:00 GMT", "5"),
        ("-3", "5"),
        ("1.5", "5"),
        ("", "5"),
        (None, "5"),
    ],
)
def test_retry_after_is_ascii_delay_seconds_and_bounded(value: str | None, expected: str) -> None:
    assert sanitize_retry_after(value, 5) == expected
