#!/usr/bin/env bash
# The gateway overhead benchmark, one command (see docs/benchmarks.md):
#   bench/gateway_bench.sh --duration 20 --repeat 2 --servers
# Installs what it needs when missing: nginx and wrk (Debian packages), LiteLLM in
# bench/.venv-litellm, matplotlib in bench/.venv-plot (both gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || scripts/bootstrap local  # the gateway as the README installs it
LITELLM_VERSION=1.108.7

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk
    # the package starts a system nginx on :80; the benchmark runs its own instances
    if command -v systemctl >/dev/null; then systemctl stop nginx 2>/dev/null || true; fi
fi
if [[ " $* " != *" --no-litellm "* && ! -x bench/.venv-litellm/bin/litellm ]]; then
    "$PY" -m venv bench/.venv-litellm
    bench/.venv-litellm/bin/pip install -q "litellm[proxy]==$LITELLM_VERSION"
fi
if [[ ! -x bench/.venv-plot/bin/python ]]; then
    "$PY" -m venv bench/.venv-plot
    bench/.venv-plot/bin/pip install -q matplotlib
fi
"$PY" bench/gateway_bench/main.py "$@"
