"""Start a real local-tier server in a subprocess, for tests and benchmarks.

>>> with local_tier_server(max_queue=1) as server:
...     httpx.get(f"{server.base_url}/v1/models")

The server gets a free port on 127.0.0.1; the context manager waits for ``/health`` 200
(recording every status it saw on the way, so a test can check the 503 -> 200 sequence),
and at exit sends SIGTERM and waits for the process (``server.returncode``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
# A first start converts the GGUF (~40 s idle, minutes on a busy 2-core box).
READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalTierProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_dir: Path
    health_log: list[int] = field(default_factory=list)  # 0 = not listening yet
    returncode: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return (self.log_dir / "stdout").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / "stderr").read_text(errors="replace")

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Poll ``/health`` until 200; returns seconds waited. Raises if the process dies."""
        started = time.monotonic()
        with httpx.Client(timeout=httpx.Timeout(2.0)) as client:
            while time.monotonic() - started < timeout_s:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"local tier exited with {code}:\n{self.stderr()[-3000:]}")
                try:
                    status = client.get(f"{self.base_url}/health").status_code
                except httpx.TransportError:
                    status = 0
                self.health_log.append(status)
                if status == 200:
                    return time.monotonic() - started
                time.sleep(POLL_S)
        raise TimeoutError(
            f"local tier not healthy after {timeout_s:.0f} s:\n{self.stderr()[-3000:]}"
        )

    def stop(self) -> int:
        """SIGTERM, then wait; SIGKILL only if it hangs. Returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.returncode = self.process.returncode
        return self.returncode


@contextlib.contextmanager
def local_tier_server(
    *,
    max_queue: int | None = None,
    model_cache: Path | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    wait: bool = True,
) -> Iterator[LocalTierProcess]:
    """A running ``python -m tiers.local`` on a free port, stopped (SIGTERM) at exit.

    ``env`` entries are added to this process's environment; ``model_cache`` defaults to
    the server's own default (``LOCAL_TIER_MODEL_CACHE`` or the user cache folder).
    """
    port = free_port()
    args = [sys.executable, "-m", "tiers.local", "--host", "127.0.0.1", "--port", str(port)]
    if max_queue is not None:
        args += ["--max-queue", str(max_queue)]
    if model_cache is not None:
        args += ["--model-cache", str(model_cache)]
    args += list(extra_args)
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), child_env.get("PYTHONPATH", "")) if p
    )
    with tempfile.TemporaryDirectory(prefix="local-tier-") as logs:
        log_dir = Path(logs)
        with open(log_dir / "stdout", "wb") as out, open(log_dir / "stderr", "wb") as err:
            # Trusted argv: this interpreter and our own flags.
            process = subprocess.Popen(  # noqa: S603
                args, stdout=out, stderr=err, env=child_env, cwd=REPO_ROOT
            )
        server = LocalTierProcess(process, port, log_dir)
        try:
            if wait:
                server.wait_ready()
            yield server
        finally:
            server.stop()
