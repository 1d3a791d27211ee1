"""The server protects itself from slow, silent, huge and too many clients: real sockets
against a started `gateway serve`, with `[server]` limits made small, and (for the limits
uvicorn cannot enforce) against nginx run from the rendered ``deploy/nginx`` configuration.

Each hostile client must be ended (closed, or answered 408/431/503) within its configured
limit, plus slack for a busy machine, while ``/health`` keeps answering.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from gateway.ops.front_proxy import render_nginx
from gateway.ops.serving import free_port
from gateway.settings import DEFAULT_CONFIG, load_settings
from tests.conftest import PERSON_SCHEMA
from tests.integration.openai_standin import standin_tier
from tests.integration.test_serve import gateway_process

HEADER_S = 2.0
BODY_S = 2.0
MAX_CONNECTIONS = 4
MAX_HEADER = 4096
SLACK_S = 4.0  # a shared, busy machine; the unlimited server held these for 65 s and more


def limited_config(tmp_path: Path) -> Path:
    text = DEFAULT_CONFIG.read_text()
    text = text.replace(
        'tiers_file = "tiers.toml"', f'tiers_file = "{DEFAULT_CONFIG.parent}/tiers.toml"'
    )
    values = {
        "header_timeout_s": HEADER_S,
        "body_timeout_s": BODY_S,
        "max_connections": MAX_CONNECTIONS,
        "max_header_bytes": MAX_HEADER,
    }
    for key, value in values.items():
        text, found = re.subn(rf"(?m)^{key} = \S+", f"{key} = {value}", text)
        assert found == 1, key
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


@contextmanager
def limited_gateway(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    config = limited_config(tmp_path)
    with standin_tier() as dev:
        env = {
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_TIER_DEV_URL": f"http://127.0.0.1:{dev.server_address[1]}",
            "GATEWAY_TIER_DEV_KIND": "openai",
        }
        with gateway_process(env) as (_, url):
            yield url, int(url.rsplit(":", 1)[1]), config


@contextmanager
def nginx_in_front(
    tmp_path: Path, config: Path, gateway_port: int, *, gateway_up: bool = True
) -> Iterator[str]:
    """nginx from the rendered deploy/nginx configuration, in front of ``gateway_port``;
    ready once /health answers 200 through it (or anything, without ``gateway_up``)."""
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed: scripts/test-services installs it (nginx-light)")
    port = free_port()
    prefix = tmp_path / f"nginx-{port}"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        render_nginx(
            load_settings(config, environ={}),
            listen=f"127.0.0.1:{port}",
            upstream=f"127.0.0.1:{gateway_port}",
        )
    )
    proc = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                answered = httpx.get(url + "/health", timeout=1.0).status_code
                if answered == 200 or not gateway_up:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("nginx did not start")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Hostile(threading.Thread):
    """One raw connection: sends ``head``, then ``drip`` one piece every ``every_s`` until
    the server answers or closes; records when and what (the server's first bytes)."""

    def __init__(self, port: int, head: bytes, drip: bytes = b"", every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.head, self.drip, self.every_s = head, drip, every_s
        self.answer = b""
        self.ended_after_s: float | None = None

    def run(self) -> None:
        started = time.monotonic()
        self.sock.settimeout(self.every_s)
        with contextlib.suppress(OSError):
            if self.head:
                self.sock.sendall(self.head)
            while time.monotonic() - started < 60:
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    if self.drip:
                        self.sock.sendall(self.drip)
                    continue
                self.answer += data
                if not data or self._complete():
                    break
        self.ended_after_s = time.monotonic() - started
        self.sock.close()

    def _complete(self) -> bool:
        """A whole answer: its head, and as many body bytes as its content-length says."""
        head, found, body = self.answer.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length: *(\d+)", head)
        return bool(found) and len(body) >= (int(length.group(1)) if length else 0)

    @property
    def status(self) -> int | None:
        match = re.match(rb"HTTP/1\.1 (\d{3})", self.answer)
        return int(match.group(1)) if match else None


def health_while(url: str, *clients: Hostile) -> list[int]:
    """Poll /health on fresh connections until every hostile client has ended, and once
    more after (a client refused at once may end before the first poll)."""
    statuses = []
    while True:
        alive = any(client.is_alive() for client in clients)
        response = httpx.get(url + "/health", timeout=2.0, headers={"connection": "close"})
        statuses.append(response.status_code)
        if not alive:
            return statuses
        time.sleep(0.2)


@pytest.mark.parametrize("path", ["/generate", "/warmup"])
def test_a_trickled_body_gets_408_within_the_body_limit(tmp_path: Path, path: str) -> None:
    """The completion lane and a Litestar route: the same problem, then the connection
    closes; one byte every half second would otherwise be held for as long as it lasts."""
    with limited_gateway(tmp_path) as (url, port, _):
        head = (
            f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            "content-length: 1000\r\n\r\n{"
        ).encode()
        trickle = Hostile(port, head, drip=b" ")
        trickle.start()
        assert set(health_while(url, trickle)) == {200}
        trickle.join()
    assert trickle.status == 408
    assert b"/problems/body-timeout" in trickle.answer
    assert b"connection: close" in trickle.answer.lower()
    assert trickle.ended_after_s is not None
    assert BODY_S - 0.5 <= trickle.ended_after_s < BODY_S + SLACK_S


def test_connections_past_the_cap_get_503_and_the_cap_frees_up(tmp_path: Path) -> None:
    with limited_gateway(tmp_path) as (url, port, _):
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS)]
        try:
            time.sleep(0.3)  # the server has accepted them all
            started = time.monotonic()
            over = httpx.get(url + "/health", timeout=5.0)
            assert over.status_code == 503  # answered at once, not queued behind the held
            assert time.monotonic() - started < SLACK_S
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert httpx.get(url + "/health", timeout=5.0).status_code == 200


def test_normal_requests_pass_and_the_proxy_refuses_an_oversized_body(tmp_path: Path) -> None:
    """The limits end hostile clients only: a normal request on the limited server passes,
    directly and through the proxy; a body over max_body_bytes stops at the proxy, with the
    gateway's own problem."""
    with limited_gateway(tmp_path) as (url, port, config):
        body = {"prompt": "p", "schema": PERSON_SCHEMA}
        assert httpx.post(url + "/generate", json=body).status_code == 200
        with nginx_in_front(tmp_path, config, port) as front:
            response = httpx.post(front + "/generate", json=body)
            assert response.status_code == 200
            assert response.json()["output"] == {"name": "Ada", "age": 36}
            too_large = httpx.post(front + "/generate", content=b"x" * 1_048_577)
            assert too_large.status_code == 413
            assert too_large.json()["type"].endswith("/payload-too-large")


def test_slowloris_headers_are_cut_at_the_header_limit(tmp_path: Path) -> None:
    with (
        limited_gateway(tmp_path) as (_, port, config),
        nginx_in_front(tmp_path, config, port) as front,
    ):
        front_port = int(front.rsplit(":", 1)[1])
        slow = Hostile(front_port, b"GET /health HTTP/1.1\r\nhost: x\r\n", drip=b"x-a: b\r\n")
        silent = Hostile(front_port, b"")
        slow.start()
        silent.start()
        assert set(health_while(front, slow, silent)) == {200}
        slow.join()
        silent.join()
    for client in (slow, silent):
        assert client.ended_after_s is not None
        assert HEADER_S - 0.5 <= client.ended_after_s < HEADER_S + SLACK_S
        assert client.status in (None, 408)  # nginx closes (and logs 408)


def test_a_huge_header_gets_431_at_once(tmp_path: Path) -> None:
    with (
        limited_gateway(tmp_path) as (_, port, config),
        nginx_in_front(tmp_path, config, port) as front,
    ):
        front_port = int(front.rsplit(":", 1)[1])
        huge = b"GET /health HTTP/1.1\r\nhost: x\r\nx-huge: " + b"a" * 1_000_000 + b"\r\n\r\n"
        client = Hostile(front_port, huge)
        client.start()
        assert set(health_while(front, client)) == {200}
        client.join()
    assert client.status == 431
    assert b"/problems/header-too-large" in client.answer
    assert client.ended_after_s is not None
    assert client.ended_after_s < SLACK_S


def test_the_proxy_answers_503_with_retry_after_when_the_gateway_is_gone(
    tmp_path: Path,
) -> None:
    """Draining or restarting, the gateway refuses connections; the proxy turns that into a
    503 problem a client retries, not nginx's bare 502."""
    with limited_gateway(tmp_path) as (_, port, config):
        pass  # started for its config, now stopped: its port refuses
    with nginx_in_front(tmp_path, config, port, gateway_up=False) as front:
        response = httpx.get(front + "/health", timeout=5.0)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["type"].endswith("/gateway-unavailable")
