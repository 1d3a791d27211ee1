"""Draw results JSON as a PNG next to it (run with bench/.venv-plot, which has matplotlib).

bench/.venv-plot/bin/python bench/gateway_bench/chart.py bench/results/gateway-overhead.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend must be chosen first

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report

ORDER = ["direct", "nginx", "gateway", "gateway-nocheck", "gateway /generate"]
ORDER += ["litellm"]
COLORS = {
    "direct": "#999999",
    "nginx": "#2b8cbe",
    "gateway": "#31a354",
    "gateway-nocheck": "#a1d99b",
    "gateway /generate": "#74c476",
    "litellm": "#de2d26",
}


def main(path: str) -> None:
    data = json.loads(Path(path).read_text())
    agg = report.aggregate(data["rows"])
    targets = [t for t in ORDER if any(k[0] == t for k in agg)]
    conc = sorted({c for _, c in agg})
    panels = [
        ("rps", "requests/s (log)", "log"),
        ("added_p50_ms", "added p50 latency, ms (symlog)", "symlog"),
        ("cpu_ms", "CPU ms per request (log)", "log"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / len(targets)
    for ax, (key, label, log) in zip(axes, panels, strict=True):
        for i, t in enumerate(targets):
            xs = [j + i * width for j in range(len(conc))]
            ys = [agg[(t, c)][key] if (t, c) in agg else 0 for c in conc]
            if key == "added_p50_ms" and t == "direct":
                continue
            ax.bar(xs, ys, width, label=t, color=COLORS.get(t))
        ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(conc))])
        ax.set_xticklabels([f"c={c}" for c in conc])
        ax.set_title(label)
        if log == "symlog":
            ax.set_yscale("symlog", linthresh=1.0)
        else:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Gateway overhead, {data['when']} ({data['versions'].get('cpus')} CPUs; "
        f"{data['args']['workers']} worker(s))"
    )
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
