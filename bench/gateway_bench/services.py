"""The servers under test, each a child process on loopback with its own port.

- ``stub``: nginx answering the chat completion (the upstream every other target calls).
- ``nginx``: a second nginx, a plain reverse proxy to the stub (the floor for one HTTP hop).
- ``litellm``: the LiteLLM proxy from its own virtual environment, one model -> the stub.
- ``gateway``: this project, run the way the README runs it (``gateway serve``).
- ``slow``: standin_tier.py, which holds every request (for the peak-RSS measurement).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import payloads

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LITELLM_VENV = REPO / "bench" / ".venv-litellm"
READY_TIMEOUT_S = 120  # LiteLLM with 2 workers took 20-51 s to answer its liveness probe


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_string(text: str) -> str:
    """Quote for nginx's config parser: inside '...' a backslash escapes the next char."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _nginx_conf(workdir: Path, name: str, workers: int, server: str, upstream: str = "") -> Path:
    temp = workdir / f"{name}-temp"
    temp.mkdir(parents=True, exist_ok=True)
    conf = f"""
worker_processes {workers};
daemon off;
master_process on;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    {upstream}
    server {{
        {server}
    }}
}}
"""
    path = workdir / f"{name}.conf"
    path.write_text(conf)
    return path


def stub_conf(workdir: Path, port: int, workers: int = 1) -> Path:
    body = nginx_string(payloads.chat_completion().decode())
    server = f"""listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        location = /v1/chat/completions {{ return 200 {body}; }}
        location = /health {{ return 200 '{{}}'; }}
        location = /v1/models {{
            return 200 '{{"object":"list","data":[{{"id":"dev","object":"model"}}]}}';
        }}"""
    return _nginx_conf(workdir, "stub", workers, server)


def proxy_conf(workdir: Path, port: int, stub_port: int, workers: int) -> Path:
    upstream = f"""upstream stub {{
        server 127.0.0.1:{stub_port};
        keepalive 256;
        keepalive_requests 10000000;
    }}"""
    server = f"""listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://stub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}"""
    return _nginx_conf(workdir, "proxy", workers, server, upstream)


class Service:
    """A child process tree and the URL it answers on."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, **kw: object):
        self.name, self.port, self.ready_path = name, port, ready_path
        self.log = kw.pop("log")
        assert isinstance(self.log, Path)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # own process group: stopped as one, never by name
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout_s} s (log: {self.log})")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_nginx(name: str, conf: Path, port: int, workdir: Path) -> Service:
    argv = ["nginx", "-c", str(conf), "-p", str(workdir)]
    return Service(name, argv, port, "/health", log=workdir / f"{name}.log")


def start_litellm(workdir: Path, upstream: str, workers: int) -> Service:
    config = workdir / "litellm.yaml"
    config.write_text(
        f"""model_list:
  - model_name: {payloads.MODEL}
    litellm_params:
      model: openai/{payloads.MODEL}
      api_base: {upstream}/v1
      api_key: bench-unused
general_settings:
  master_key: {payloads.MASTER_KEY}
"""
    )
    port = free_port()
    env = {
        "PATH": f"{LITELLM_VENV}/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else it fetches a price list at start
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
    }
    argv = [
        str(LITELLM_VENV / "bin" / "litellm"),
        *("--config", str(config), "--host", "127.0.0.1", "--port", str(port)),
        *("--num_workers", str(workers)),
    ]
    if workers > 1:  # uvicorn's 5 s health check kills workers that are still importing
        argv += ["--timeout_worker_healthcheck", "120"]
    return Service(
        "litellm", argv, port, "/health/liveliness", log=workdir / "litellm.log", env=env
    )


def gateway_env(upstream: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PYTHONPATH"))}
    env.update(
        PYTHONPATH=str(REPO),
        GATEWAY_TIER_DEV_URL=upstream,
        GATEWAY_TIER_DEV_KIND="openai",
        GATEWAY_LOCAL_TIER="off",
    )
    env.update(extra or {})
    return env


def start_gateway(
    workdir: Path,
    upstream: str,
    workers: int,
    *,
    name: str = "gateway",
    extra_env: dict[str, str] | None = None,
    server_argv: list[str] | None = None,
    cwd: Path = REPO,
) -> Service:
    """``gateway serve`` by default; ``server_argv`` runs another server on the app factory
    (``{port}`` in it is filled in) for the server comparison."""
    port = free_port()
    argv = [sys.executable, "-m", "gateway.ops.cli", "serve", "--port", str(port)]
    argv += ["--workers", str(workers)]
    if server_argv is not None:
        argv = [a.format(port=port, workers=workers) for a in server_argv]
    env = gateway_env(upstream, extra_env)
    log = workdir / f"{name.replace('/', '_')}.log"
    return Service(name, argv, port, "/health", log=log, env=env, cwd=cwd)


def start_slow(workdir: Path, hold_s: float) -> Service:
    port = free_port()
    argv = [sys.executable, str(HERE / "standin_tier.py"), "--port", str(port)]
    argv += ["--hold", str(hold_s), "--lifetime", "900"]
    return Service("slow", argv, port, "/health", log=workdir / "slow.log")
