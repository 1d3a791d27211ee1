"""What API keys and limits cost a request: the auth middleware (``gateway.http.auth.Gate``) in
front of an ASGI app that answers at once, 16 requests in flight, CPU time per request.

Run: PYTHONPATH=$PWD .venv/bin/python bench/auth_hot_path.py
Prints CPU µs per request for each case, the median of 5 runs (each run's in brackets), and
the gate's own cost: the case minus the bare app. The target (issue 16): at most 50 µs.

Cases: the bare app; a key without limits (hash, lookup, grant, headers); a key with an rpm
limit only; a key with
rpm + tpm + GPU-seconds/day limits counted in memory, whose request is charged one tier
answer (the spend series, three limit windows read, two charged).
"""

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.access.keys import KeyRecord, add_key, hash_key, new_key
from gateway.access.quotas import Quotas
from gateway.access.spend import KeySpend
from gateway.http.auth import Gate, grant_of
from gateway.settings import load_settings

C = 16  # requests in flight, as the overhead benchmark's c=16
REQUESTS = 20_000
HUGE = 10**9  # limits that are counted but never reached in a run


async def answer(scope: Any, receive: Any, send: Any) -> None:
    grant = grant_of(scope)
    if grant is not None and scope["path"] == "/v1/chat/completions":
        grant.answered("prod", 1.2, 300)  # what the dispatcher notes for one prod answer
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    pass


def scope(key: str | None) -> dict[str, Any]:
    headers = [(b"host", b"gateway"), (b"content-type", b"application/json")]
    if key is not None:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}


async def cpu_us_per_request(app: Any, key: str | None) -> float:
    queue = iter(range(REQUESTS))

    async def worker() -> None:
        for _ in queue:
            await app(scope(key), receive, send)

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(C)))
    return (time.process_time() - started) / REQUESTS * 1e6


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keys.json"
        plain, rpm_only, limited = new_key(), new_key(), new_key()
        add_key(path, KeyRecord(name="plain", hash=hash_key(plain), tiers=("dev", "prod")))
        add_key(path, KeyRecord(name="rpm", hash=hash_key(rpm_only), tiers=("prod",), rpm=HUGE))
        record = KeyRecord(
            name="limited",
            hash=hash_key(limited),
            tiers=("dev", "prod"),
            rpm=HUGE,
            tpm=HUGE,
            gpu_seconds_per_day=HUGE,
        )
        add_key(path, record)
        settings = load_settings(environ={"GATEWAY_KEYS_FILE": str(path)})
        gate = Gate(settings)
        gate.spend = KeySpend(CollectorRegistry(), multiprocess=False)
        gate.quotas = Quotas(None)
        gated = gate.middleware(answer)

        cases = [
            ("bare app (no gate)", answer, None),
            ("key, no limits", gated, plain),
            ("key, rpm only", gated, rpm_only),
            ("key, rpm+tpm+gpu limits, charged", gated, limited),
        ]
        medians = {}
        for name, app, key in cases:
            runs = [await cpu_us_per_request(app, key) for _ in range(5)]
            medians[name] = statistics.median(runs)
            each = ", ".join(f"{r:.1f}" for r in runs)
            print(f"{name:36s} {medians[name]:7.1f} µs CPU/request  [{each}]")
        bare = medians["bare app (no gate)"]
        for name, _, _key in cases[1:]:
            print(f"gate cost, {name:25s} {medians[name] - bare:7.1f} µs (target <= 50)")


if __name__ == "__main__":
    asyncio.run(main())
