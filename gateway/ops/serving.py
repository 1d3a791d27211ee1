"""``gateway serve``: start the embedded CPU tier when it is needed, then the ASGI server.

The embedded tier is a child process of this one (never of a worker), started before the
server so that every worker sees the same URL; the gateway answers at once while the model
loads, and requests meanwhile follow the cold-start rules. SIGTERM drains in-flight
requests (the server's graceful shutdown) while new connections are refused, in every
worker; then the child is stopped and we exit 0.

The server's own limits (``[server]`` in config/gateway.toml) are passed to uvicorn here;
those it cannot enforce (header time and size) belong to the front proxy (deploy/nginx).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import closing
from types import FrameType
from typing import TYPE_CHECKING, Any

from uvicorn import Config
from uvicorn.supervisors import Multiprocess

from gateway.logs import configure_logging
from gateway.settings import (
    EMBEDDED_URL_ENV,
    SUPERVISOR_ENV,
    WARMTH_DB_ENV,
    ServerSettings,
    Settings,
    load_settings,
)
from gateway.tierspec import tier_env_var

if TYPE_CHECKING:
    from litestar.types import ASGIApp

log = logging.getLogger(__name__)
GRACEFUL_SHUTDOWN_S = ServerSettings().drain_s  # the default drain; `[server] drain_s` sets it
CHILD_STOP_S = 10  # the CPU tier exits at once on SIGTERM; SIGKILL after this
# Connections the kernel completes before the worker accepts them. uvicorn's 2048 overflowed
# when 10,000 clients arrived at a worker on a busy machine (bench/results/hold-10k.md): an
# overflowed handshake is reset ~a minute later. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 16_384


def free_port(host: str = "127.0.0.1") -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start_local_tier(port: int) -> subprocess.Popen[bytes]:
    """The CPU tier on loopback; its output goes to ours so its load is visible."""
    return subprocess.Popen(  # noqa: S603  # fixed argv: this interpreter, our module
        [sys.executable, "-m", "tiers.local", "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL,
    )


def stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(CHILD_STOP_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def worker_app() -> ASGIApp:
    """The ASGI factory each worker runs: the app, its body reads under the time limit."""
    from gateway.app import create_app
    from gateway.http.body_deadline import BodyDeadline

    configure_logging()  # in each worker: they are fresh interpreters
    settings = load_settings()
    return BodyDeadline(create_app(settings), limit_s=settings.server.body_timeout_s)


class DrainingSupervisor(Multiprocess):
    """uvicorn's supervisor of ``--workers N``, except that SIGTERM and SIGINT close its copy
    of the listening socket at once.

    Each worker closes its own copy when it starts draining, but the supervisor's kept the
    port listening: the kernel went on completing handshakes that no worker would accept,
    and reset them when the supervisor exited. With every copy closed, a new connection is
    refused (a client or balancer retries elsewhere) while in-flight requests finish.
    """

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop_listening)

    def _stop_listening(self, signum: int, frame: FrameType | None) -> None:
        for sock in self.sockets:
            sock.close()
        # Exit the supervising loop now: a worker it restarted would get a closed socket.
        self.should_exit.set()


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's open-file limit (soft) to its hard limit, and return both.

    Each held client is one socket, one file descriptor: the usual soft limit of 1024 would
    cap a worker at about a thousand held requests while its hard limit (often 2^20) allows
    far more. Raising the soft limit needs no privilege; children (workers) inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. above the kernel's nr_open
            log.warning("open-file limit stays %d (raising to %d failed: %s)", soft, target, exc)
            return soft, hard
        log.info("open-file limit raised from %d to %d (the hard limit)", soft, target)
        soft = target
    return soft, hard


def describe(settings: Settings, host: str, port: int) -> str:
    lines = [f"gateway: listening on http://{host}:{port}  (config {settings.config_path})"]
    default = settings.env or settings.default_tier
    for tier in settings.tiers.values():
        where = tier.url or f"not configured (set {tier_env_var(tier.name, 'URL')})"
        kind = "embedded CPU tier" if tier.kind == "local" else tier.kind
        mark = " (default)" if tier.name == default else ""
        lines.append(f"  {tier.name}{mark}: {kind} -> {where}")
    return "\n".join(lines)


def serve(settings: Settings, *, host: str, port: int, workers: int) -> int:
    import uvicorn

    child = None
    embedded = settings.embedded_tier
    if embedded is not None and embedded.url is None:
        child_port = free_port()
        url = f"http://127.0.0.1:{child_port}"
        child = start_local_tier(child_port)
        os.environ[EMBEDDED_URL_ENV] = url  # workers rebuild settings from the environment
        settings = settings.with_tier_url(embedded.name, url)
    os.environ.setdefault("GATEWAY_CONFIG", str(settings.config_path))
    configure_logging()
    raise_open_file_limit()  # one socket per held client: 1024 would cap a worker (see there)
    if workers > 1:
        shared = tempfile.mkdtemp(prefix="gateway-")
        # Workers share their metrics through files, so a scrape of any one sees them all,
        # (prometheus_client reads every *.db file in its folder: nothing else may live there)
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(shared, "metrics")
            os.mkdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        # and their tiers' warmth through one store, so warm-ups stay single-flight.
        if not settings.warmth_db:
            os.environ[WARMTH_DB_ENV] = os.path.join(shared, "warmth.db")
        # and a worker whose supervisor is gone (killed hard) stops itself (runtime.py).
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
    print(describe(settings, host, port), flush=True)
    stopped: list[int] = []
    # uvicorn drains on SIGTERM, restores the handler it found and raises the signal again;
    # this handler is that one, so a drained shutdown ends in exit status 0, not -15.
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    limits = settings.server
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "http": "httptools",
        "log_level": "warning",
        "access_log": False,
        # uvicorn counts open connections (and running requests) per worker: past the
        # limit a request is answered 503 and its connection closed.
        "limit_concurrency": limits.max_connections,
        "timeout_keep_alive": limits.keep_alive_s,
        "timeout_graceful_shutdown": limits.drain_s,
        "backlog": LISTEN_BACKLOG,
    }
    try:
        if workers > 1:
            config = Config("gateway.ops.serving:worker_app", **options)
            DrainingSupervisor(config, sockets=[config.bind_socket()]).run()
        else:
            uvicorn.run("gateway.ops.serving:worker_app", **options)
    finally:
        if child is not None:
            stop(child)
    return 0
