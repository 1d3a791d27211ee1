"""The front proxy's configuration takes every limit from the gateway's settings."""

from __future__ import annotations

import msgspec

from gateway.ops.front_proxy import render_nginx
from gateway.settings import ServerSettings, load_settings


def test_the_nginx_configuration_carries_the_configured_limits() -> None:
    settings = load_settings(environ={})
    limits = ServerSettings(header_timeout_s=2.5, body_timeout_s=7.0, max_header_bytes=4096)
    settings = msgspec.structs.replace(settings, server=limits)
    conf = render_nginx(settings, listen="127.0.0.1:8080", upstream="127.0.0.1:9000")
    assert "listen 127.0.0.1:8080;" in conf
    assert "server 127.0.0.1:9000;" in conf
    assert "client_header_timeout 3s;" in conf  # rounded up: never tighter than configured
    assert "client_body_timeout 7s;" in conf
    assert "large_client_header_buffers 4 4096;" in conf
    assert "keepalive_timeout 4s;" in conf  # upstream: let go before uvicorn's 5 s do
    assert f"client_max_body_size {settings.max_body_bytes};" in conf
    longest = max(t.timeouts.cold for t in settings.tiers.values())
    assert f"proxy_read_timeout {int(longest) + 30}s;" in conf
    assert "$host" in conf and "${" not in conf  # nginx's variables kept, ours all filled
