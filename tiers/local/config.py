"""The local tier's settings: command-line flags, each with an environment default.

>>> config = LocalTierConfig.from_argv(["--port", "8101"], environ={})
>>> config.port, config.max_queue
(8101, 8)

This is the only place the local tier reads ``os.environ`` for its own settings.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from tiers.local.model_store import default_cache_dir

MODEL_ID = "smollm2-135m-instruct"


class LocalTierConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8101
    model_cache: Path
    # Waiting requests allowed behind the running one. One structured answer takes ~5-10 s
    # on 2 cores, so 8 waiting is over a minute of backlog: past that a 429 is kinder.
    max_queue: int = 8
    # Decoding a 135M model is memory-bound: on an idle 2-core box one thread decodes as
    # fast as two (88 vs 92 ms a token), and on a busy one two threads spin against other
    # work and run 2-4x slower (240 vs 520 ms). One thread also leaves a core to the gateway.
    threads: int = 1
    # Prompt + completion tokens. SmolLM2 allows 8192, but on a CPU a long context costs
    # minutes; structured answers are short.
    max_model_len: int = 2048
    model_id: str = MODEL_ID
    log_level: str = "warning"
    # Seconds in-flight requests get to finish after SIGTERM before they are cut off.
    graceful_timeout_s: int = 5

    @classmethod
    def from_argv(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> LocalTierConfig:
        env = os.environ if environ is None else environ
        parser = argparse.ArgumentParser(
            prog="python -m tiers.local",
            description="SmolLM2-135M on the CPU behind an OpenAI-compatible (vLLM-shaped) API.",
        )
        parser.add_argument("--host", default=env.get("LOCAL_TIER_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(env.get("LOCAL_TIER_PORT", "8101")))
        parser.add_argument(
            "--model-cache",
            type=Path,
            default=Path(env.get("LOCAL_TIER_MODEL_CACHE") or default_cache_dir(env)),
            help="folder for the converted model (default: %(default)s)",
        )
        parser.add_argument(
            "--max-queue",
            type=int,
            default=int(env.get("LOCAL_TIER_MAX_QUEUE", "8")),
            help="requests that may wait behind the running one before 429 (default 8)",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=int(env.get("LOCAL_TIER_THREADS", "1")),
            help="torch threads for generation (default 1: decoding is memory-bound)",
        )
        parser.add_argument(
            "--max-model-len", type=int, default=int(env.get("LOCAL_TIER_MAX_MODEL_LEN", "2048"))
        )
        parser.add_argument("--model-id", default=env.get("LOCAL_TIER_MODEL_ID", MODEL_ID))
        parser.add_argument("--log-level", default=env.get("LOCAL_TIER_LOG_LEVEL", "warning"))
        args = parser.parse_args(argv)
        if args.max_queue < 0:
            parser.error("--max-queue must be 0 or more")
        return cls(
            host=args.host,
            port=args.port,
            model_cache=args.model_cache,
            max_queue=args.max_queue,
            threads=max(1, args.threads),
            max_model_len=args.max_model_len,
            model_id=args.model_id,
            log_level=args.log_level,
        )
