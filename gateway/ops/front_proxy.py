"""The front proxy's configuration, rendered from the gateway's own settings.

uvicorn cannot limit how long or how large a request's head may be, nor how long a body
may pause; nginx can. ``deploy/nginx/gateway.conf.template`` holds the configuration, and
this fills in its numbers from ``[server]`` (and ``max_body_bytes``, the tiers' budgets), so
each limit lives in one place, config/gateway.toml, with its reason.

>>> print(render_nginx(load_settings(), listen="0.0.0.0:80", upstream="127.0.0.1:8000"))
"""

from __future__ import annotations

import math
from pathlib import Path
from string import Template

from gateway.settings import Settings

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "gateway.conf.template"
MIN_NGINX_CONNECTIONS = 1024  # twice nginx's default 512: a small cap must not starve nginx
READ_MARGIN_S = 30  # past the longest tier budget, the gateway answers 504 itself first


def render_nginx(settings: Settings, *, listen: str, upstream: str) -> str:
    limits = settings.server
    longest_budget = max(t.timeouts.cold for t in settings.tiers.values())
    return Template(TEMPLATE.read_text()).substitute(
        listen=listen,
        # every client held costs nginx two connections: the client's and the one upstream
        # (and nginx's default 512 as the least: its listener and idle keep-alives count too)
        worker_connections=max(MIN_NGINX_CONNECTIONS, 2 * limits.max_connections),
        upstream=upstream,
        header_timeout_s=_seconds(limits.header_timeout_s),
        body_timeout_s=_seconds(limits.body_timeout_s),
        keep_alive_s=_seconds(limits.keep_alive_s),
        # A request sent on a connection uvicorn is closing as idle fails (and a POST is not
        # retried); nginx must let go of idle upstream connections first.
        upstream_idle_s=max(1, math.floor(limits.keep_alive_s) - 1),
        max_header_bytes=limits.max_header_bytes,
        max_body_bytes=settings.max_body_bytes,
        proxy_read_timeout_s=_seconds(longest_budget + READ_MARGIN_S),
    )


def _seconds(value: float) -> int:
    """nginx takes whole seconds here; round up, so a limit is never tighter than configured."""
    return max(1, math.ceil(value))
