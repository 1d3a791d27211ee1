"""Medians over the interleaved rounds, the targets the issue sets, and the markdown table."""

from __future__ import annotations

import statistics
from typing import Any

Row = dict[str, Any]


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def aggregate(rows: list[Row]) -> dict[tuple[str, int], Row]:
    """Per (target, c): medians over rounds; added latency is paired with direct per round."""
    direct = {(r["c"], r["round"]): r for r in rows if r["target"] == "direct"}
    groups: dict[tuple[str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["c"]), []).append(r)
    out: dict[tuple[str, int], Row] = {}
    for key, rs in groups.items():
        added = [
            (r["p50_us"] - direct[(r["c"], r["round"])]["p50_us"]) / 1000
            for r in rs
            if (r["c"], r["round"]) in direct
        ]
        rps = [r["rps"] for r in rs]
        out[key] = {
            "rps": _med(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "p50_ms": _med([r["p50_us"] / 1000 for r in rs]),
            "p90_ms": _med([r["p90_us"] / 1000 for r in rs]),
            "p99_ms": _med([r["p99_us"] / 1000 for r in rs]),
            "added_p50_ms": _med(added),
            "cpu_ms": _med([r["cpu_ms_per_req"] for r in rs]),
            "errors": sum(r["errors"] for r in rs),
            "requests": sum(r["requests"] for r in rs),
            "rounds": len(rs),
        }
    return out


def table(agg: dict[tuple[str, int], Row]) -> str:
    lines = [
        "| target | c | req/s (median; min-max) | p50 ms | p90 ms | p99 ms | added p50 ms "
        "| CPU ms/req | errors / requests |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for (target, c), a in sorted(agg.items(), key=lambda kv: (kv[0][1], _order(kv[0][0]))):
        lines.append(
            f"| {target} | {c} | {a['rps']:,.0f} ({a['rps_min']:,.0f}-{a['rps_max']:,.0f}) "
            f"| {a['p50_ms']:.2f} | {a['p90_ms']:.2f} | {a['p99_ms']:.2f} "
            f"| {a['added_p50_ms']:+.2f} | {a['cpu_ms']:.3f} "
            f"| {a['errors']:g} / {a['requests']:,} |"
        )
    return "\n".join(lines)


def _order(target: str) -> int:
    known = ["direct", "nginx", "gateway", "gateway-nocheck"]
    known += ["gateway /generate", "litellm"]
    return known.index(target) if target in known else len(known)


def targets(agg: dict[tuple[str, int], Row], hold: Row | None) -> list[str]:
    """The issue's targets as checked lines (ratios from this run only)."""
    lines: list[str] = []

    def get(target: str, c: int) -> Row | None:
        return agg.get((target, c))

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    for c in (16, 64):
        gw, llm = get("gateway", c), get("litellm", c)
        if gw and llm:
            ratio = gw["rps"] / llm["rps"]
            lines.append(
                f"- throughput c={c}: gateway / LiteLLM = {ratio:.1f}x (≥ 20x: {mark(ratio >= 20)})"
            )
    cpu_gw = [a["cpu_ms"] for (t, _), a in agg.items() if t == "gateway"]
    cpu_llm = [a["cpu_ms"] for (t, _), a in agg.items() if t == "litellm"]
    cpu_ng = [a["cpu_ms"] for (t, _), a in agg.items() if t == "nginx"]
    if cpu_gw and cpu_llm:
        g, m = _med(cpu_gw), _med(cpu_llm)
        floor = f"; nginx proxy (floor) {_med(cpu_ng):.3f} ms" if cpu_ng else ""
        lines.append(
            f"- CPU per request (median over c): gateway {g:.3f} ms, LiteLLM {m:.3f} ms "
            f"= 1/{m / g:.0f}{floor} (≤ 1/40: {mark(m / g >= 40)})"
        )
    gw, llm = get("gateway", 1), get("litellm", 1)
    if gw and llm and gw["added_p50_ms"] > 0:
        ratio = llm["added_p50_ms"] / gw["added_p50_ms"]
        lines.append(
            f"- added p50 at c=1: gateway {gw['added_p50_ms']:.2f} ms, LiteLLM "
            f"{llm['added_p50_ms']:.2f} ms = 1/{ratio:.0f} (≤ 1/15: {mark(ratio >= 15)})"
        )
    for c in (16, 64):
        on, off = get("gateway", c), get("gateway-nocheck", c)
        if on and off:
            drop = 1 - on["rps"] / off["rps"]
            lines.append(
                f"- schema checks on vs off, c={c}: {on['rps']:,.0f} vs {off['rps']:,.0f} req/s "
                f"= {100 * drop:.1f} % lower with checks on (≤ 15 %: {mark(drop <= 0.15)})"
            )
    if hold:
        lines.append(
            f"- peak RSS with {hold['held']} requests in flight (upstream saw "
            f"{hold['upstream_peak_inflight']} at once): {hold['peak_rss_mb']:.0f} MB sampled "
            f"(PSS {hold.get('peak_pss_mb', 0):.0f} MB), "
            f"{hold['vmhwm_sum_mb']:.0f} MB sum of VmHWM, idle {hold['idle_rss_mb']:.0f} MB "
            f"(< 150 MB: {mark(hold['vmhwm_sum_mb'] < 150)})"
        )
    return lines


def markdown(data: Row) -> str:
    agg = aggregate(data["rows"])
    v = data["versions"]
    parts = [
        f"# Gateway overhead — {data['when']}",
        "",
        f"Command: `{data['command']}`  ",
        f"Machine: {v.get('cpus')} CPUs ({v.get('cpu')}), Linux {v.get('kernel')}  ",
        "Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items() if k not in ("cpu", "cpus", "kernel")),
        "",
        f"{data['args']['duration']:g} s per point, {data['args']['repeat']} interleaved "
        f"round(s), {data['args']['workers']} worker(s) for the gateway, LiteLLM and the nginx "
        "proxy; wrk -t1, closed loop (at saturation the percentiles are queueing ≈ c ÷ req/s). "
        "Added p50 = p50 minus direct's p50 in the same round. CPU = utime+stime of the "
        "target's process tree (children included) per request. Startup to ready (s): "
        + ", ".join(f"{k} {s}" for k, s in data["startup_s"].items()),
        "",
        table(agg),
        "",
        "## Targets",
        "",
        *targets(agg, data.get("hold")),
        "- gateway peak RSS during the load (sum of VmHWM): "
        f"{data['peak']['gateway_vmhwm_sum_mb']:.0f} MB",
    ]
    if data.get("servers"):
        parts += [
            "",
            "## ASGI server comparison (gateway app, same load)",
            "",
            table(aggregate(data["servers"])),
        ]
    return "\n".join(parts) + "\n"
