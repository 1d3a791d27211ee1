"""The benchmark's request and answer bodies: one source for the Lua scripts and the stub.

The schema is a realistic extraction target (support-ticket triage, 7 fields: enum, bounded
integer and number, pattern, length limit, boolean, bounded array), so the gateway's schema
preflight and output validation do real work; the stub's answer satisfies it.
"""

from __future__ import annotations

import json
from typing import Any

MODEL = "dev"  # the gateway's tier name, LiteLLM's model_name, ignored by the stub
MASTER_KEY = "sk-bench-master"  # LiteLLM's; the gateway and nginx ignore the header

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "feature", "account", "other"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 4},
        "summary": {"type": "string", "minLength": 10, "maxLength": 200},
        "customer_id": {"type": "string", "pattern": "^C[0-9]{6}$"},
        "sentiment": {"type": "number", "minimum": -1, "maximum": 1},
        "needs_human": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": [
        "category",
        "priority",
        "summary",
        "customer_id",
        "sentiment",
        "needs_human",
        "tags",
    ],
    "additionalProperties": False,
}

OUTPUT: dict[str, Any] = {
    "category": "billing",
    "priority": 2,
    "summary": "Customer was charged twice for the March invoice and asks for a refund of the "
    "duplicate payment.",
    "customer_id": "C004217",
    "sentiment": -0.4,
    "needs_human": True,
    "tags": ["refund", "duplicate-charge", "invoice"],
}

TICKET = (
    "Hi, I'm writing about invoice INV-2026-0311. My card was charged twice on March 3rd "
    "(two payments of 149.00 EUR), and I only have one subscription. Please refund the "
    "duplicate charge. My customer number is C004217. This is the second time this happens "
    "and I'm getting frustrated. Thanks, Dana"
)
SYSTEM = "Triage the support ticket. Answer with one JSON object that matches the schema."


def chat_request() -> bytes:
    """What an OpenAI client sends: two messages and a strict json_schema response_format."""
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": TICKET},
        ],
        "max_tokens": 512,
        "temperature": 0.2,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "ticket_triage", "schema": SCHEMA, "strict": True},
        },
    }
    return json.dumps(body).encode()


def generate_request() -> bytes:
    """The native ``/generate`` contract: prompt + schema."""
    body = {"prompt": f"{SYSTEM}\n\n{TICKET}", "schema": SCHEMA, "max_tokens": 512}
    return json.dumps(body).encode()


def chat_completion(content: str | None = None) -> bytes:
    """A vLLM-shaped chat.completion whose content satisfies SCHEMA (what the stub answers),
    or is ``content``."""
    body = {
        "id": "chatcmpl-bench-7f3c2a9e4b1d",
        "object": "chat.completion",
        "created": 1764230400,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": json.dumps(OUTPUT) if content is None else content,
                    "reasoning_content": None,
                    "tool_calls": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            }
        ],
        "usage": {"prompt_tokens": 312, "total_tokens": 371, "completion_tokens": 59},
        "prompt_logprobs": None,
    }
    return json.dumps(body).encode()
