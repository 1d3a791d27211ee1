"""The CLI verbs that talk to a running gateway: ``status`` and ``warmup``. With API keys on,
both need an admin key, taken from ``GATEWAY_API_KEY`` (never an argument: those show in
``ps``)."""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
import msgspec

POLL_S = 2.0  # how often `warmup --wait` asks for the tier's state
BAR = 30


def _get_status(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/status")
    response.raise_for_status()
    data: dict[str, Any] = msgspec.json.decode(response.content)
    return data


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def show_status(url: str, *, as_json: bool, api_key: str | None = None) -> int:
    try:
        with httpx.Client(base_url=url, timeout=10.0, headers=_auth(api_key)) as client:
            data = _get_status(client)
    except httpx.HTTPError as exc:
        print(f"gateway status: cannot reach {url}: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(msgspec.json.format(msgspec.json.encode(data)).decode())
        return 0
    head = ("tier", "state", "eta", "cold start", "warm-ups", "requests")
    print(
        f"{head[0]:8} {head[1]:12} {head[2]:>6} {head[3]:>10} {head[4]:>8} {head[5]:>8}  last error"
    )
    for name, tier in data.items():
        eta = tier.get("eta_s")
        mean = tier.get("mean_cold_start_s")
        print(
            f"{name:8} {tier.get('state', '?'):12} "
            f"{'-' if eta is None else f'{eta:.0f}s':>6} "
            f"{'-' if mean is None else f'{mean:.0f}s':>10} "
            f"{tier.get('warmups', 0):>8} {tier.get('requests', 0):>8}  "
            f"{tier.get('last_error') or tier.get('missing_setting') or ''}"
        )
    return 0


def _progress(elapsed: float, eta: float | None, state: str) -> str:
    if not eta:
        return f"\r{state:8} {elapsed:6.0f}s"
    total = elapsed + eta
    done = min(int(BAR * elapsed / total), BAR) if total > 0 else BAR
    return f"\r{state:8} [{'#' * done}{'.' * (BAR - done)}] {elapsed:5.0f}s / ~{total:.0f}s"


def warm_up(
    url: str, tier: str, *, wait: bool, timeout_s: float | None, api_key: str | None = None
) -> int:
    started = time.monotonic()
    try:
        with httpx.Client(base_url=url, timeout=30.0, headers=_auth(api_key)) as client:
            body: dict[str, Any] = {"tier": tier}
            response = client.post("/warmup", json=body)
            if response.status_code >= 400:
                print(f"gateway warmup: {response.text}", file=sys.stderr)
                return 2
            state: dict[str, Any] = response.json()
            if not wait:
                print(f"{tier}: {state.get('state')} (eta {state.get('eta_s')})")
                return 0
            deadline = started + (timeout_s or float(state.get("startup_timeout_s") or 900))
            while state.get("state") != "warm":
                if time.monotonic() >= deadline:
                    print(f"\ngateway warmup: {tier} not warm by its deadline", file=sys.stderr)
                    return 1
                sys.stderr.write(
                    _progress(time.monotonic() - started, state.get("eta_s"), state["state"])
                )
                sys.stderr.flush()
                time.sleep(POLL_S)
                state = _get_status(client)[tier]
    except httpx.HTTPError as exc:
        print(f"\ngateway warmup: cannot reach {url}: {exc}", file=sys.stderr)
        return 2
    print(f"\n{tier}: warm after {time.monotonic() - started:.0f}s")
    return 0
