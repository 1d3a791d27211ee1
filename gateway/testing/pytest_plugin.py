"""The pytest plugin installed with the gateway (entry point ``gateway_fixtures``).

Fixtures (nothing happens unless a test asks for one):

- ``gateway_client``: a Litestar ``TestClient`` on the gateway app built from your settings,
  its tier calls recorded to / replayed from this test's cassette;
- ``gateway_app``: that app, for your own client (``AsyncTestClient(app=gateway_app)``);
- ``gateway_http_transport``: a transport for *your* httpx / openai client pointed at a
  running gateway: records the gateway's answers, replays them with no gateway at all;
- ``gateway_settings``: the settings the app is built from (``load_settings()``; override
  this fixture to use your own), ``gateway_fixtures_mode``, ``gateway_cassette``;
- ``gateway_embedded_tier``: the URL of the embedded CPU tier, started (once a session);
  ``gateway_embedded_on_demand``: the same tier not started until a request needs it, which
  is what ``gateway_client`` uses while recording.

Mode: ``--fixtures-mode=replay|record|refresh`` (pytest's own ``--fixtures`` flag lists
fixtures, so the name had to differ), else ``RECORD_FIXTURES`` (``true`` = record,
``refresh``), else ``replay``. Cassettes: ``--fixtures-dir`` (default ``tests/cassettes``).

pytest imports this module in every session where the gateway is installed, so at module
level it imports only modules built on the standard library (a test checks this); the app,
httpx and settings are imported by the fixtures that need them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway.testing.inventory import DEFAULT_MAX_AGE  # stdlib only below it: cheap

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.testing import TestClient

    from gateway.settings import Settings
    from gateway.testing.cassette import Cassette
    from gateway.testing.embedded import EmbeddedTier
    from gateway.testing.transport import CassetteTransport, Mode

ENV_MODE = "RECORD_FIXTURES"
DEFAULT_DIR = "tests/cassettes"
STALE = pytest.StashKey[list[tuple[Path, float]]]()  # replayed cassettes past the max age
EMBEDDED_BOOT_S = 300.0  # a cold CPU load of the small model takes seconds; a slow disk more
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-\[\]=,+]")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gateway_fixtures", "tier-gateway response fixtures")
    group.addoption(
        "--fixtures-mode",
        choices=("replay", "record", "refresh"),
        default=None,
        help="replay (default): answer from cassettes only; record: call the real tiers for "
        "requests without a recording; refresh: re-record everything. Env: RECORD_FIXTURES.",
    )
    group.addoption(
        "--fixtures-dir",
        default=None,
        help=f"where cassettes live, relative to the rootdir (default: {DEFAULT_DIR})",
    )
    parser.addini("gateway_fixtures_dir", "cassette directory (like --fixtures-dir)")
    parser.addini(
        "gateway_fixtures_max_age",
        f"replayed cassettes older than this are listed at the end (default {DEFAULT_MAX_AGE})",
        default=DEFAULT_MAX_AGE,
    )


def _note_if_stale(config: pytest.Config, transport: CassetteTransport) -> None:
    """Remember a replayed cassette older than the configured age, for the summary."""
    from gateway.testing.cassette import parse_time
    from gateway.testing.inventory import parse_age

    stamps = [parse_time(i.recorded_at) for i in transport.cassette.interactions]
    if transport.mode != "replay" or not stamps:
        return
    age_s = (datetime.now(UTC) - min(stamps)).total_seconds()
    if age_s > parse_age(config.getini("gateway_fixtures_max_age")):
        config.stash.setdefault(STALE, []).append((transport.cassette.path, age_s))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    stale = config.stash.get(STALE, [])
    if not stale:
        return
    limit = config.getini("gateway_fixtures_max_age")
    terminalreporter.write_sep("-", f"gateway fixtures: {len(stale)} replayed older than {limit}")
    for path, age_s in sorted(set(stale)):
        terminalreporter.write_line(f"{path} ({age_s / 86400:.1f} days old)")
    terminalreporter.write_line("re-record them with: RECORD_FIXTURES=refresh pytest ...")


def resolve_mode(flag: str | None, environ: Mapping[str, str]) -> Mode:
    if flag:
        return flag  # type: ignore[return-value]  # argparse checked the choices
    value = environ.get(ENV_MODE, "").strip().lower()
    if value in ("1", "true", "yes", "on", "record"):
        return "record"
    if value == "refresh":
        return "refresh"
    if value in ("", "0", "false", "no", "off", "replay"):
        return "replay"
    raise pytest.UsageError(f"{ENV_MODE}={value!r}: expected true, false or refresh")


def cassette_dir(config: pytest.Config) -> Path:
    raw = config.getoption("fixtures_dir") or config.getini("gateway_fixtures_dir") or DEFAULT_DIR
    path = Path(raw)
    return path if path.is_absolute() else config.rootpath / path


def cassette_path(node: pytest.Item, root: Path, suffix: str = ".json") -> Path:
    """``<dir>/<module path below dir's parent>/<test name>.json``."""
    module = Path(node.path)
    try:
        relative = module.relative_to(root.parent)
    except ValueError:
        relative = Path(module.name)
    parts = node.nodeid.split("::")[1:] or [node.name]
    name = _UNSAFE.sub("_", ".".join(parts))
    return root / relative.with_suffix("") / f"{name}{suffix}"


@pytest.fixture(scope="session")
def gateway_fixtures_mode(pytestconfig: pytest.Config) -> Mode:
    return resolve_mode(pytestconfig.getoption("fixtures_mode"), os.environ)


@pytest.fixture
def gateway_settings() -> Settings:
    """The settings the gateway app is built from; override this fixture to use your own."""
    from gateway.settings import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def gateway_embedded_on_demand() -> Iterator[EmbeddedTier]:
    """Record mode, when the embedded CPU tier serves a tier: its URL now, its process on the
    first request the cassette cannot answer (most recordings never need it), once a session."""
    from gateway.testing.embedded import EmbeddedTier

    tier = EmbeddedTier(boot_s=EMBEDDED_BOOT_S)
    try:
        yield tier
    finally:
        tier.close()


@pytest.fixture(scope="session")
def gateway_embedded_tier(gateway_embedded_on_demand: EmbeddedTier) -> str:
    """The embedded CPU tier, started once and up, for a test that calls it itself."""
    return gateway_embedded_on_demand.ensure_up()


def _hint(node: pytest.Item) -> str:
    return (
        f"record it with: pytest --fixtures-mode=record '{node.nodeid}' "
        f"(or RECORD_FIXTURES=true pytest ...)"
    )


def _fail(message: str) -> None:
    pytest.fail(message, pytrace=False)


def _finish(transport: CassetteTransport, reported: int = 0, errors_reported: int = 0) -> None:
    """Write the cassette; fail the test for misses nobody has reported yet (a request made
    by a client of the user's own on ``gateway_app``, or from a background task), and raise
    a failed start of the embedded tier the same way."""
    transport.finish()
    if len(transport.misses) > reported:
        _fail("\n".join(dict.fromkeys(transport.misses[reported:])))
    if len(transport.start_errors) > errors_reported:
        raise transport.start_errors[errors_reported]


@dataclass
class GatewayRecording:
    """What ``gateway_app`` is built from: the settings as the test sees them and the
    transport between the gateway and its tiers."""

    settings: Settings
    transport: CassetteTransport
    mode: Mode
    reported: int = 0  # misses already turned into a test failure at the call
    errors_reported: int = 0  # failed starts of the embedded tier, likewise

    @property
    def cassette(self) -> Cassette:
        return self.transport.cassette


@pytest.fixture
def gateway_recording(
    request: pytest.FixtureRequest,
    gateway_settings: Settings,
    gateway_fixtures_mode: Mode,
) -> Iterator[GatewayRecording]:
    import msgspec

    from gateway.testing.cassette import Cassette
    from gateway.testing.redact import Redactor
    from gateway.testing.transport import CassetteTransport

    # Each test's gateway starts with its own warmth, never a shared store's (a deployment's
    # warmth_db would leak production state into tests, and tests into it).
    settings = msgspec.structs.replace(gateway_settings, warmth_db="", state=None)
    on_demand: dict[str, EmbeddedTier] = {}
    for tier in settings.tiers.values():
        if tier.url is not None:
            continue
        if gateway_fixtures_mode == "replay":  # never dialled: the transport answers
            settings = settings.with_tier_url(tier.name, f"http://{tier.name}.cassette.invalid")
        elif tier.kind == "local":  # started by the first request the cassette cannot answer
            on_demand[tier.name] = request.getfixturevalue("gateway_embedded_on_demand")
            on_demand[tier.name].raise_failure()  # it failed in an earlier test: so does this
            settings = settings.with_tier_url(tier.name, on_demand[tier.name].url)
    node = request.node
    path = cassette_path(node, cassette_dir(request.config))
    transport = CassetteTransport(
        Cassette.load(path, test=node.nodeid, scope="tier"),
        mode=gateway_fixtures_mode,
        scope="tier",
        tiers={t.name: t.url for t in settings.tiers.values() if t.url},
        redactor=Redactor.from_environment(settings),
        record_hint=_hint(node),
        on_demand=on_demand,
    )
    recording = GatewayRecording(settings=settings, transport=transport, mode=gateway_fixtures_mode)
    yield recording
    _note_if_stale(request.config, transport)
    _finish(transport, recording.reported, recording.errors_reported)


@pytest.fixture
def gateway_cassette(gateway_recording: GatewayRecording) -> Cassette:
    return gateway_recording.cassette


@pytest.fixture
def gateway_app(gateway_recording: GatewayRecording) -> Litestar:
    from gateway.app import create_app

    return create_app(gateway_recording.settings, transport=gateway_recording.transport)


@pytest.fixture
def gateway_client(
    gateway_app: Litestar, gateway_recording: GatewayRecording
) -> Iterator[TestClient[Any]]:
    """A started gateway (lifespan run) answering in-process; ``.post("/generate", ...)``.
    A request replay has no answer for fails the test at that call, saying how to record;
    one that the embedded tier should answer but that tier did not start raises why."""
    import httpx
    from litestar.testing import TestClient

    recording = gateway_recording

    class ReplayingClient(TestClient[Any]):
        def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            response = super().send(request, **kwargs)
            misses = recording.transport.misses
            if len(misses) > recording.reported:
                new, recording.reported = misses[recording.reported :], len(misses)
                _fail("\n".join(dict.fromkeys(new)))
            errors = recording.transport.start_errors
            if len(errors) > recording.errors_reported:
                first, recording.errors_reported = errors[recording.errors_reported], len(errors)
                raise first
            return response

    with ReplayingClient(app=gateway_app) as client:
        yield client


@pytest.fixture
def gateway_http_transport(
    request: pytest.FixtureRequest, gateway_fixtures_mode: Mode
) -> Iterator[CassetteTransport]:
    """For your own client: ``httpx.Client(transport=gateway_http_transport)``."""
    from gateway.testing.cassette import Cassette
    from gateway.testing.transport import CassetteTransport

    node = request.node
    path = cassette_path(node, cassette_dir(request.config), suffix=".http.json")
    transport = CassetteTransport(
        Cassette.load(path, test=node.nodeid, scope="gateway"),
        mode=gateway_fixtures_mode,
        scope="gateway",
        record_hint=_hint(node),
        on_miss=_fail,  # raised through the user's client (even openai's retry loop)
    )
    yield transport
    transport.close()
    _note_if_stale(request.config, transport)
    _finish(transport, reported=len(transport.misses))
