"""A real ``redis-server`` on loopback, started for the tests that need one and stopped after.

``scripts/test`` installs it (``apt-get install redis-server``) when it is missing. Nothing is
written to disk (no RDB, no AOF): each start is an empty Redis.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from contextlib import closing

from gateway.ops.serving import free_port

STARTUP_S = 10.0  # redis-server is up in milliseconds; 10 s means it failed


class RedisServer:
    """One redis-server process on a fixed loopback port; ``stop``/``start`` again keep the
    port, so a gateway's configured URL stays right across an outage; ``pause``/``resume``
    freeze it (SIGSTOP): connections open, no answers, as a swamped Redis."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run scripts/test (it installs it) or "
                "`apt-get install -y redis-server`"
            )
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(  # fixed argv
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            with closing(socket.socket()) as sock, contextlib.suppress(OSError):
                sock.connect(("127.0.0.1", self.port))
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot stop
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
