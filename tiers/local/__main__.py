"""``python -m tiers.local --host 127.0.0.1 --port 8101 [--model-cache DIR] [--max-queue N]``

Listens at once, loads the model in the background, prints one line to stdout when
``/health`` turns 200, and exits 0 on SIGTERM or Ctrl-C (1 if the model cannot load).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import uvicorn

from tiers.local.app import LocalTier, create_app
from tiers.local.config import LocalTierConfig
from tiers.local.model_store import apply_offline_env


class _Server(uvicorn.Server):
    def __init__(self, tier: LocalTier, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.tier = tier

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Answer queued requests 503 now rather than after the graceful timeout; the running
        # one may still finish. Scheduled on the loop: a signal handler interrupts it anywhere.
        with contextlib.suppress(RuntimeError):  # no loop running: nothing is queued either
            asyncio.get_running_loop().call_soon_threadsafe(self.tier.scheduler.close)
        super().handle_exit(sig, frame)


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything can import huggingface_hub: it reads these once, at import.
    apply_offline_env()
    config = LocalTierConfig.from_argv(argv)
    failed = threading.Event()
    server: _Server

    def on_ready(tier: LocalTier) -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.01)  # the model loaded before the socket was bound
        load_s = tier.metrics.load_seconds or 0.0
        sys.stdout.write(
            f"local tier ready: http://{config.host}:{config.port} model={config.model_id} "
            f"load={load_s:.1f}s threads={config.threads} max_queue={config.max_queue}\n"
        )
        sys.stdout.flush()

    def on_fatal(exc: BaseException) -> None:
        failed.set()
        server.should_exit = True

    app = create_app(config, on_ready=on_ready, on_fatal=on_fatal)
    server = _Server(
        app.state.tier,
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            access_log=config.log_level in {"debug", "info"},
            timeout_graceful_shutdown=config.graceful_timeout_s,
        ),
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default
    # SIGTERM handler that would kill us with -15 (SIGINT: a KeyboardInterrupt traceback).
    # A shutdown asked for is a clean exit.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda signum, frame: None)
    server.run()
    return 1 if failed.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
