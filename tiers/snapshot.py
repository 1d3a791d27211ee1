"""EXPERIMENTAL: the vLLM side of a Modal GPU memory snapshot (``gpu_snapshot = true``).

Before the snapshot the server is booted, sent one short request (so lazy initialisation is
done), and put to sleep (``POST /sleep?level=1``: weights to CPU memory, KV cache dropped).
After a restore it is woken (``POST /wake_up``) and probed until ``/health`` answers.
Needs ``--enable-sleep-mode`` and ``VLLM_SERVER_DEV_MODE=1`` (modal_app sets both).
Never on by default: it has not been run on Modal by this project (docs/tiers.md).

Standard library only, because it runs in the container beside vLLM.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

from gateway.tierspec import TierSpec

PROBE_INTERVAL_S = 2.0  # a boot takes tens of seconds; finer polling buys nothing
WAKE_TIMEOUT_S = 120.0  # waking moves the weights back to the GPU: seconds, not minutes
REQUEST_TIMEOUT_S = 60.0


class SnapshotLifecycle:
    process: subprocess.Popen[bytes] | None = None

    def start(self, command: list[str], spec: TierSpec, *, ready_timeout_s: float) -> None:
        self.process = subprocess.Popen(command)  # noqa: S603 - argv from config, no shell
        self._wait_healthy(spec, ready_timeout_s)
        self._post(
            spec,
            "/v1/chat/completions",
            {
                "model": spec.served_model_name,
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 1,
            },
        )
        self._post(spec, "/sleep?level=1", None)

    def wake(self, spec: TierSpec) -> None:
        self._post(spec, "/wake_up", None)
        self._wait_healthy(spec, WAKE_TIMEOUT_S)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def _wait_healthy(self, spec: TierSpec, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and (rc := self.process.poll()) is not None:
                raise RuntimeError(f"vLLM exited with status {rc} before it was healthy")
            try:
                with urllib.request.urlopen(_url(spec, "/health"), timeout=5) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(PROBE_INTERVAL_S)
        raise TimeoutError(f"vLLM not healthy within {timeout_s:.0f} s")

    def _post(self, spec: TierSpec, path: str, body: object) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback URL built here
            _url(spec, path), data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as resp:  # noqa: S310
            resp.read()


def _url(spec: TierSpec, path: str) -> str:
    return f"http://127.0.0.1:{spec.port}{path}"
