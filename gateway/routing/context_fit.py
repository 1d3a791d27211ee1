"""Does a request fit the tier's context window? Checked before the tier is called, so a prompt
plus schema plus ``max_tokens`` that cannot fit is a 400 naming the fields, not a woken GPU
answering vLLM's own 400 (or a silently shortened ``max_tokens``).

>>> from gateway.settings import load_settings
>>> tier = load_settings(environ={"GATEWAY_TIER_DEV_URL": "http://dev.test"}).tiers["dev"]
>>> check_fits(tier, text_bytes=1_000, max_tokens=512)  # fits: nothing happens
>>> check_fits(tier, text_bytes=80_000, max_tokens=2048)
Traceback (most recent call last):
gateway.errors.InvalidRequest: the prompt and schema take at least 10000 tokens ...

No tokenizer is loaded (the gateway imports no model): the count is a LOWER bound, bytes of
prompt and schema divided by ``BYTES_PER_TOKEN_MAX``. Qwen2.5's and SmolLM2's BPE vocabularies
average 3.5-4.5 bytes a token on English text and JSON; 8 is beyond what real text reaches
(only long runs of one repeated character merge further), so a refused request would
certainly not have fit, and a request near the limit goes through to the tier's exact check.
"""

from __future__ import annotations

from typing import Final

from gateway.errors import InvalidRequest
from gateway.settings import Tier

BYTES_PER_TOKEN_MAX: Final = 8  # see the module docstring: a lower bound of the token count


def context_window(tier: Tier) -> int | None:
    """The tier's ``max_model_len`` (config/tiers.toml); None where the gateway does not know
    it: a tier tiers.toml does not describe, or the embedded CPU tier, which runs with its own
    smaller window (tiers/local) and answers its own 400 at no GPU cost."""
    if tier.spec is None or tier.kind == "local":
        return None
    return tier.spec.max_model_len


def check_fits(
    tier: Tier,
    *,
    text_bytes: int,
    max_tokens: int | None,
    fields: tuple[str, ...] = ("$.prompt", "$.schema"),
) -> None:
    """Raise ``InvalidRequest`` (400) when ``text_bytes`` of prompt and schema plus
    ``max_tokens`` certainly exceed the tier's context window; ``fields``: where the text
    came from in the request, named in the errors."""
    window = context_window(tier)
    if window is None:
        return
    least = -(-text_bytes // BYTES_PER_TOKEN_MAX)
    wanted = max_tokens or 0
    if least + wanted <= window:
        return
    limit = ["$.max_tokens"] if least < window else []
    raise InvalidRequest(
        f"the prompt and schema take at least {least} tokens and max_tokens asks for {wanted}: "
        f"more than tier {tier.name}'s {window}-token context; shorten them or lower max_tokens",
        errors=[
            {"path": path, "message": f"prompt + schema (>= {least} tokens) + max_tokens "
             f"({wanted}) exceed the tier's context of {window} tokens"}
            for path in [*fields, *limit]
        ],
    )  # fmt: skip
