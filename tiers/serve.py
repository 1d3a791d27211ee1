"""Run a tier's vLLM server on this machine, with exactly the command Modal runs.

    python -m tiers.serve dev            # exec `vllm serve ...` (needs a GPU and vLLM)
    python -m tiers.serve prod --print   # show the command, run nothing
    python -m tiers.serve dev --port 9000

Point the gateway at it with GATEWAY_TIER_DEV_URL=http://<host>:<port> and
GATEWAY_TIER_DEV_KIND=openai (no Modal proxy headers).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TextIO

from gateway.tierspec import TierSpecError
from tiers import layout
from tiers.vllm_command import UnpinnedRevision, check_pinned, vllm_command


def main(
    argv: list[str] | None = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiers.serve", description=__doc__)
    parser.add_argument("tier", help="a tier of config/tiers.toml, e.g. dev or prod")
    parser.add_argument("--config", type=Path, default=layout.TIERS_FILE, help="tiers file")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=None, help="default: the tier's port")
    parser.add_argument("--print", action="store_true", help="print the command and exit")
    args = parser.parse_args(argv)

    try:
        spec = layout.load_tier(args.tier, args.config)
        check_pinned(args.tier, spec)
    except (TierSpecError, UnpinnedRevision) as exc:
        print(f"tiers.serve: {exc}", file=err)
        return 2
    command = vllm_command(spec, host=args.host, port=args.port)
    if args.print:
        print(shlex.join(command), file=out)
        return 0
    executable = shutil.which(command[0])
    if executable is None:
        print(
            f"tiers.serve: `{command[0]}` is not on PATH; install vllm=={spec.vllm_version} "
            f"(it pins xgrammar=={spec.xgrammar_version}) on a machine with a GPU",
            file=err,
        )
        return 2
    print(shlex.join(command), file=err, flush=True)
    os.execv(executable, command)  # noqa: S606 - replace this process: signals reach vLLM


if __name__ == "__main__":
    raise SystemExit(main())
