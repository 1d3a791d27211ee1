"""What API keys cost end to end: ``gateway serve`` with keys off, and with keys on (a key
without limits, one with an rpm limit, one whose three limits are all counted), interleaved,
against the nginx stub of the overhead benchmark, wrk at c=16; CPU per request of the gateway
process (its threads included).

Run (needs nginx and wrk, as bench/gateway_bench.sh installs them):
    .venv/bin/python bench/auth_overhead.py --duration 8 --repeat 3

The gate's cost is each keyed target's median minus the keys-off median. Short runs on a
shared 2-core machine: the spread of each target's runs is printed beside the median; read
the difference against it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gateway_bench"))
sys.path.insert(0, str(HERE.parent))

import measure  # noqa: E402  # the overhead benchmark's helpers, beside it
import payloads  # noqa: E402
import services  # noqa: E402

from gateway.access.keys import KeyRecord, add_key, hash_key, new_key  # noqa: E402

HUGE = 10**9  # limits that are counted but never reached


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        work = Path(tmp)
        body = work / "chat.json"
        body.write_bytes(payloads.chat_request())
        keys_file = work / "keys.json"
        chat = "/v1/chat/completions"
        loads = {"keys off": measure.Load("post.lua", chat, body)}
        for name, limits in [
            ("key, no limits", {}),
            ("key, rpm", {"rpm": HUGE}),
            ("key, rpm+tpm+gpu", {"rpm": HUGE, "tpm": HUGE, "gpu_seconds_per_day": HUGE}),
        ]:
            key = new_key()
            record = KeyRecord(name=name, hash=hash_key(key), tiers=("dev",), **limits)
            add_key(keys_file, record)
            loads[name] = measure.Load("post.lua", chat, body, key)
        started: list[services.Service] = []
        try:
            port = services.free_port()
            stub = services.start_nginx("stub", services.stub_conf(work, port), port, work)
            started.append(stub)
            stub.wait_ready()
            off = services.start_gateway(work, stub.url, 1, name="gateway-open")
            started.append(off)
            on = services.start_gateway(
                work,
                stub.url,
                1,
                name="gateway-keys",
                extra_env={"GATEWAY_KEYS_FILE": str(keys_file)},
            )
            started.append(on)
            targets = {name: (on if name != "keys off" else off) for name in loads}
            for svc in (off, on):
                svc.wait_ready()
            for name, svc in targets.items():  # warm: imports, pools, the tier's first answer
                measure.wrk(svc.url, loads[name], connections=8, duration_s=2)
            cpu: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(args.repeat):
                for name, svc in targets.items():
                    result, cpu_s, _ = measure.measured(
                        svc.proc.pid,
                        lambda svc=svc, name=name: measure.wrk(
                            svc.url,
                            loads[name],
                            connections=args.concurrency,
                            duration_s=args.duration,
                        ),
                    )
                    assert result["errors"] == 0, result
                    cpu[name].append(1000 * cpu_s / result["requests"])
        finally:
            for svc in reversed(started):
                svc.stop()
    medians = {name: statistics.median(runs) for name, runs in cpu.items()}
    for name, runs in cpu.items():
        each = ", ".join(f"{r:.3f}" for r in runs)
        print(f"{name:18s} {medians[name]:.3f} ms CPU/request  [{each}]")
    for name in list(loads)[1:]:
        gate = (medians[name] - medians["keys off"]) * 1000
        print(f"gate cost, {name:18s} {gate:5.0f} µs CPU/request at c={args.concurrency}")


if __name__ == "__main__":
    main()
