"""The response-fixtures plugin as a user meets it: their own test files, run by pytest with
the plugin installed (``pytester``), recorded against a real tier, replayed with it gone."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from gateway.ops.bench import start_gateway, stop_gateway
from gateway.testing.embedded import EmbeddedTier
from tests.conftest import PERSON_SCHEMA, completion
from tests.integration.openai_standin import standin_tier

pytest_plugins = ["pytester"]

PLUGIN = "gateway.testing.pytest_plugin"
MODAL_KEY = "wk-recorder-KEY-0451"
MODAL_SECRET = "ws-recorder-SECRET-1138"
API_KEY = "sk-recorder-APIKEY-2187"
SECRETS = (MODAL_KEY, MODAL_SECRET, API_KEY)
KEPT_HEADERS = ("x-model-tier-requested", "x-model-tier-served", "x-fallback-reason")

# What a user writes. Each test saves what it saw, so record and replay can be compared.
CONFTEST = f"""
import json, os, pathlib, socket
import pytest

def save(name, response):
    keep = {KEPT_HEADERS!r}
    pathlib.Path(os.environ["ANSWERS_DIR"], name + ".json").write_text(json.dumps({{
        "status": response.status_code,
        "body": response.json(),
        "headers": {{k: response.headers.get(k) for k in keep}},
    }}))

@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    # Replay must not open a socket; loopback socketpairs (the event loop's) don't connect.
    if os.environ.get("NO_NETWORK"):
        def refuse(*args, **kwargs):
            raise RuntimeError("replay tried to open a network connection")
        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket.socket, "connect_ex", refuse)
"""

GENERATE_TEST = """
from conftest import save
SCHEMA = {schema!r}

def test_generate(gateway_client):
    r = gateway_client.post("/generate", json={{
        "prompt": {prompt!r}, "schema": SCHEMA, "max_tokens": 24, "temperature": 0.0}})
    assert r.status_code == 200, r.text
    save("generate", r)
"""
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
    "additionalProperties": False,
}
ASK_ANSWER = GENERATE_TEST.format(schema=ANSWER_SCHEMA, prompt="What is 2 + 2?")
ASK_PERSON = GENERATE_TEST.format(schema=PERSON_SCHEMA, prompt="Who wrote the first program?")

OPENAI_TEST = """
import openai
from conftest import save
SCHEMA = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 12}},
          "required": ["colour"], "additionalProperties": False}

def test_openai_client(gateway_client):
    client = openai.OpenAI(base_url=str(gateway_client.base_url) + "/v1", api_key="unused",
                           http_client=gateway_client, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="dev", messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=24, temperature=0.0,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}})
    assert raw.http_response.status_code == 200
    save("openai", raw.http_response)
"""


def plugin_args() -> list[str]:
    """``-p`` the plugin unless the installed package's entry point already loads it."""
    loaded = any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))
    return [] if loaded else ["-p", PLUGIN]


def clear_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GATEWAY_") or name == "RECORD_FIXTURES":
            monkeypatch.delenv(name)


def answers(folder: Path) -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def cassettes(root: Path) -> dict[str, dict[str, Any]]:
    return {
        str(p.relative_to(root)): json.loads(p.read_text())
        for p in sorted((root / "tests" / "cassettes").rglob("*.json"))
    }


def refused(url: str) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    clear_gateway_env(monkeypatch)
    # pytester gives the inner session a fresh HOME; keep the user's cache (the CPU tier's
    # converted weights live there: without it every run converts the GGUF again, ~40 s)
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    monkeypatch.setenv(
        "XDG_CACHE_HOME", os.environ.get("XDG_CACHE_HOME", str(real_home / ".cache"))
    )
    monkeypatch.setenv("GATEWAY_CONFIG", str(Path(__file__).parents[2] / "config/gateway.toml"))
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


def run(project: pytest.Pytester, out: Path, *args: str, **env: str) -> pytest.RunResult:
    out.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANSWERS_DIR", str(out))
        for name, value in env.items():
            mp.setenv(name, value)
        return project.runpytest_subprocess(*plugin_args(), "-W", "error", *args, timeout=240)


@pytest.mark.model
def test_record_against_the_local_tier_then_replay_offline(project: pytest.Pytester) -> None:
    project.makepyfile(test_user=ASK_ANSWER, test_openai_user=OPENAI_TEST)
    # Zero configuration: the plugin starts the embedded CPU tier for the recording session.
    recorded = run(project, project.path / "recorded", "--fixtures-mode=record")
    recorded.assert_outcomes(passed=2)
    files = cassettes(project.path)
    assert set(files) == {
        "tests/cassettes/test_user/test_generate.json",
        "tests/cassettes/test_openai_user/test_openai_client.json",
    }
    urls = set()
    for cassette in files.values():
        (interaction,) = cassette["interactions"]
        assert interaction["tier"] == "dev"
        assert interaction["latency_ms"] > 0
        assert interaction["recorded_at"] == cassette["recorded_at"]
        assert interaction["response"]["status"] == 200
        urls.add(interaction["request"]["url"])
    (url,) = urls
    assert refused(url)  # the tier went with the recording session

    # Replay: the tier is gone and sockets are refused; same answers, same headers.
    replayed = run(project, project.path / "replayed", NO_NETWORK="1")
    replayed.assert_outcomes(passed=2)
    live, again = answers(project.path / "recorded"), answers(project.path / "replayed")
    assert set(live) == {"generate", "openai"}
    # latency_ms is the tier's time measured now (a replay takes none); the rest is the answer
    timing = [
        live["generate"]["body"].pop("latency_ms"),
        again["generate"]["body"].pop("latency_ms"),
    ]
    assert timing[0] > timing[1]
    assert again == live
    assert live["generate"]["headers"]["x-model-tier-served"] == "dev"
    assert cassettes(project.path) == files  # replay writes nothing


HTTP_TEST = f"""
import httpx, openai
from conftest import save
SCHEMA = {{"type": "object", "properties": {{"name": {{"type": "string"}},
           "age": {{"type": "integer"}}}}, "required": ["name", "age"]}}

def test_via_running_gateway(gateway_http_transport):
    import os
    client = openai.OpenAI(base_url=os.environ["MY_GATEWAY_URL"] + "/v1", api_key={API_KEY!r},
                           http_client=httpx.Client(transport=gateway_http_transport),
                           max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="dev", messages=[{{"role": "user", "content": "Who?"}}], max_tokens=32,
        response_format={{"type": "json_schema", "json_schema": {{"name": "p", "schema": SCHEMA}}}})
    save("http", raw.http_response)
"""


def test_replay_of_an_unrecorded_request_names_the_missing_cassette(
    project: pytest.Pytester,
) -> None:
    """Both fixtures stop the test at the call that has no recording, with one message that
    names the cassette and the command that records it."""
    project.makepyfile(test_user=ASK_ANSWER, test_http_user=HTTP_TEST)
    result = run(project, project.path / "out", NO_NETWORK="1", MY_GATEWAY_URL="http://gw.test")
    result.assert_outcomes(failed=2)
    for test, name in (("test_user.py::test_generate", "test_user/test_generate.json"),
                       ("test_http_user.py::test_via_running_gateway",
                        "test_http_user/test_via_running_gateway.http.json")):  # fmt: skip
        missing = project.path / "tests/cassettes" / name
        assert f"in cassette {missing} (the file does not exist)" in result.stdout.str()
        assert f"pytest --fixtures-mode=record '{test}'" in result.stdout.str()
        assert not missing.exists()
    # the failure is the miss itself, not a later assertion on a 500
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert all(" - Failed: no recorded answ" in line for line in failed), failed


@pytest.fixture
def modal_like_tier(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback tier the gateway treats as a Modal tier, so proxy-auth headers are sent."""
    with standin_tier() as upstream:
        url = f"http://127.0.0.1:{upstream.server_address[1]}"
        monkeypatch.setenv("GATEWAY_TIER_DEV_URL", url)
        monkeypatch.setenv("GATEWAY_TIER_DEV_KIND", "modal")
        monkeypatch.setenv("GATEWAY_MODAL_KEY", MODAL_KEY)
        monkeypatch.setenv("GATEWAY_MODAL_SECRET", MODAL_SECRET)
        yield url
        assert all(sent.get("Modal-Key") == MODAL_KEY for sent in upstream.seen_headers)


def test_recorded_cassettes_hold_no_secret(project: pytest.Pytester, modal_like_tier: str) -> None:
    """Proxy-auth headers (gateway -> tier) and the client's API key (client -> gateway) are
    sent for real while recording, and never written."""
    project.makepyfile(test_user=ASK_PERSON, test_http_user=HTTP_TEST)
    child, gateway_url = start_gateway(None)  # `gateway serve`, a real process
    try:
        result = run(project, project.path / "recorded", MY_GATEWAY_URL=gateway_url,
                     RECORD_FIXTURES="true")  # fmt: skip
    finally:
        stop_gateway(child)
    result.assert_outcomes(passed=2)
    files = cassettes(project.path)
    assert len(files) == 2
    tier_side = files["tests/cassettes/test_user/test_generate.json"]
    client_side = files["tests/cassettes/test_http_user/test_via_running_gateway.http.json"]
    sent = tier_side["interactions"][0]["request"]["headers"]
    assert sent["modal-key"] == sent["modal-secret"] == "[REDACTED]"
    assert client_side["interactions"][0]["request"]["headers"]["authorization"] == "[REDACTED]"
    assert client_side["scope"] == "gateway"
    assert client_side["interactions"][0]["tier"] == "dev"  # from X-Model-Tier-Served
    for path in (project.path / "tests/cassettes").rglob("*.json"):
        text = path.read_text()
        for secret in SECRETS:
            assert secret not in text, f"{secret} written to {path}"

    # The client-side cassette replays with no gateway and no tier at all.
    replayed = run(project, project.path / "replayed", "-k", "via_running_gateway",
                   NO_NETWORK="1", MY_GATEWAY_URL=gateway_url)  # fmt: skip
    replayed.assert_outcomes(passed=1)
    assert answers(project.path / "replayed")["http"] == answers(project.path / "recorded")["http"]


def write_cassette(path: Path, test: str, recorded_at: str) -> None:
    interaction = {"key": "k", "tier": "dev", "latency_ms": 812.0, "recorded_at": recorded_at,
                   "request": {}, "response": {"status": 200, "json": {}}}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": 1, "test": test, "scope": "tier", "interactions": [interaction]}
    path.write_text(json.dumps(body))


def gateway_fixtures(project: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.ops.cli", "fixtures", *args],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_fixtures_commands_show_stale_and_unused_and_prune(project: pytest.Pytester) -> None:
    project.makepyfile(test_user=ASK_ANSWER)
    root = project.path / "tests/cassettes"
    now = datetime.now(UTC)
    fresh = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_cassette(root / "test_user/test_generate.json", "test_user.py::test_generate", fresh)
    write_cassette(root / "test_gone/test_renamed.json", "test_gone.py::test_renamed", old)

    listed = gateway_fixtures(project, "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[-1] for line in listed.stdout.splitlines()[1:]}
    assert rows == {
        "test_user/test_generate.json": "ok",
        "test_gone/test_renamed.json": "stale,unused",
    }
    checked = gateway_fixtures(project, "check", "--max-age", "60d")
    assert checked.returncode == 1
    assert "test_gone/test_renamed.json: test test_gone.py::test_renamed unused" in checked.stdout

    # without collection nothing is known unused; --stale still finds the old one
    dry = gateway_fixtures(project, "prune", "--dry-run", "--stale", "--no-collect")
    assert dry.stdout.splitlines()[0] == "would remove test_gone/test_renamed.json (stale)"
    assert (root / "test_gone/test_renamed.json").exists()
    pruned = gateway_fixtures(project, "prune")
    assert pruned.returncode == 0
    assert not (root / "test_gone").exists()
    assert (root / "test_user/test_generate.json").exists()


def test_replay_lists_cassettes_older_than_the_max_age(
    project: pytest.Pytester, modal_like_tier: str
) -> None:
    project.makepyfile(test_user=ASK_PERSON)
    run(project, project.path / "recorded", "--fixtures-mode=record").assert_outcomes(passed=1)
    path = project.path / "tests/cassettes/test_user/test_generate.json"
    fresh = run(project, project.path / "fresh", NO_NETWORK="1")
    fresh.assert_outcomes(passed=1)
    assert "gateway fixtures:" not in fresh.stdout.str()

    cassette = json.loads(path.read_text())
    for interaction in cassette["interactions"]:
        interaction["recorded_at"] = "2020-01-01T00:00:00Z"
    path.write_text(json.dumps(cassette))
    old = run(project, project.path / "old", NO_NETWORK="1")
    old.assert_outcomes(passed=1)  # stale is news, not a failure
    old.stdout.fnmatch_lines(
        [
            "*gateway fixtures: 1 replayed older than 7d*",
            f"{path} (* days old)",
            "re-record them with: RECORD_FIXTURES=refresh pytest ...",
        ]
    )


# --- the embedded tier starts only when a request needs it ---------------------------------

# A stand-in for the embedded CPU tier, as a real process: not listening for a moment (its
# "boot"), then /health and chat completions, like `python -m tiers.local --port PORT`.
FAKE_TIER = f"""
import sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
time.sleep(0.5)
BODY = {json.dumps(completion('{"answer": 4}')).encode()!r}
class Tier(BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def send(self, status, body):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self): self.send(200 if self.path == "/health" else 404, b"{{}}")
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.send(200, BODY)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Tier).serve_forever()
"""


def starter(
    script: str, starts: list[subprocess.Popen[bytes]]
) -> Callable[[int], subprocess.Popen[bytes]]:
    def start(port: int) -> subprocess.Popen[bytes]:
        starts.append(subprocess.Popen([sys.executable, "-c", script, str(port)]))
        return starts[-1]

    return start


def test_embedded_tier_starts_on_first_need_once_for_every_event_loop() -> None:
    starts: list[subprocess.Popen[bytes]] = []
    tier = EmbeddedTier(boot_s=60.0, start=starter(FAKE_TIER, starts))
    try:
        assert not tier.started
        assert refused(tier.url)  # the port is held, nobody listens: nothing started

        async def one_test() -> str:  # each test's gateway runs on a loop of its own
            urls = await asyncio.gather(tier.aensure_up(), tier.aensure_up())
            return urls[0]

        assert asyncio.run(one_test()) == tier.url
        assert asyncio.run(one_test()) == tier.ensure_up() == tier.url
        assert len(starts) == 1
        assert not refused(tier.url)
    finally:
        tier.close()
    assert starts[0].poll() is not None
    assert refused(tier.url)


@pytest.mark.parametrize(
    ("script", "boot_s", "why"),
    [
        ("raise SystemExit(3)", 60.0, "the embedded CPU tier exited with 3"),
        ("import time; time.sleep(60)", 1.0, "the embedded CPU tier was not up in 1 s"),
    ],
)
def test_embedded_tier_that_does_not_come_up_says_why_every_time(
    script: str, boot_s: float, why: str
) -> None:
    starts: list[subprocess.Popen[bytes]] = []
    tier = EmbeddedTier(boot_s=boot_s, start=starter(script, starts))
    try:
        with pytest.raises(RuntimeError, match=f"^{why}$"):
            asyncio.run(tier.aensure_up())
        assert starts[0].poll() is not None  # stopped, not left booting
        for again in (tier.ensure_up, tier.raise_failure):
            with pytest.raises(RuntimeError, match=f"^{why}$"):
                again()
        assert len(starts) == 1  # never retried
    finally:
        tier.close()


FROM_CASSETTE_TEST = f"""
import socket
SCHEMA = {PERSON_SCHEMA!r}
ASK = {{"prompt": "Who wrote the first program?", "schema": SCHEMA, "max_tokens": 24}}

def assert_not_started(tier):
    assert not tier.started
    host, port = tier.url.rsplit(":", 1)
    with socket.socket() as sock:
        assert sock.connect_ex((host.split("//")[1], int(port))) != 0

def test_dev_from_cassette(gateway_client, gateway_embedded_on_demand):
    r = gateway_client.post("/generate", json=ASK)
    assert r.status_code == 200, r.text
    assert_not_started(gateway_embedded_on_demand)

def test_prod_only(gateway_client, gateway_embedded_on_demand):
    # wait: no fallback to dev while the gateway's first probe of prod is under way
    headers = {{"X-Model-Tier": "prod", "X-Tier-Fallback": "wait"}}
    r = gateway_client.post("/generate", json=ASK, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-model-tier-served"] == "prod"
    assert_not_started(gateway_embedded_on_demand)
"""


def test_recording_starts_no_embedded_tier_when_no_request_needs_it(
    project: pytest.Pytester,
) -> None:
    """Record mode with the embedded tier serving dev (no URL for it): a test answered by
    its cassette, and one that calls only prod, never start it."""
    project.makepyfile(test_user=FROM_CASSETTE_TEST)
    with standin_tier() as upstream:
        stub = f"http://127.0.0.1:{upstream.server_address[1]}"
        # dev's cassette, recorded from a stand-in at a set URL (the request is the same)
        first = run(project, project.path / "first", "--fixtures-mode=record",
                    "-k", "from_cassette", GATEWAY_EMBEDDED_TIER_URL=stub)  # fmt: skip
        first.assert_outcomes(passed=1, deselected=1)
        assert len(upstream.seen) == 1
        result = run(project, project.path / "recorded", "--fixtures-mode=record",
                     GATEWAY_TIER_PROD_URL=stub, GATEWAY_TIER_PROD_KIND="openai")  # fmt: skip
        result.assert_outcomes(passed=2)
        assert len(upstream.seen) == 2  # prod's request; dev's came from the cassette
    files = cassettes(project.path)
    assert files["tests/cassettes/test_user/test_prod_only.json"]["interactions"][0]["tier"] == (
        "prod"
    )


ON_DEMAND_CONFTEST = (
    CONFTEST
    + """
import subprocess, sys
from gateway.testing.embedded import EmbeddedTier

@pytest.fixture(scope="session")
def gateway_embedded_on_demand():
    # the plugin's own fixture, with a stand-in process for the model
    def start(port):
        with open(os.environ["STARTS_FILE"], "a") as starts:
            starts.write(f"{port}\\n")
        return subprocess.Popen([sys.executable, "-c", os.environ["FAKE_TIER"], str(port)])
    tier = EmbeddedTier(boot_s=60.0, start=start)
    yield tier
    tier.close()
"""
)
ASK_TWICE = f"""
from conftest import save
SCHEMA = {ANSWER_SCHEMA!r}

def test_first(gateway_client):
    r = gateway_client.post("/generate", json={{"prompt": "2 + 2?", "schema": SCHEMA}})
    assert r.status_code == 200, r.text
    save("first", r)

def test_second(gateway_client):
    r = gateway_client.post("/generate", json={{"prompt": "3 + 1?", "schema": SCHEMA}})
    assert r.status_code == 200, r.text
"""


def test_recording_starts_the_embedded_tier_at_the_first_miss_once_a_session(
    project: pytest.Pytester,
) -> None:
    project.makeconftest(ON_DEMAND_CONFTEST)
    project.makepyfile(test_user=ASK_TWICE)
    starts = project.path / "starts.txt"
    result = run(project, project.path / "recorded", "--fixtures-mode=record",
                 STARTS_FILE=str(starts), FAKE_TIER=FAKE_TIER)  # fmt: skip
    result.assert_outcomes(passed=2)
    assert len(starts.read_text().splitlines()) == 1
    assert answers(project.path / "recorded")["first"]["body"]["output"] == {"answer": 4}
    assert len(cassettes(project.path)) == 2


def test_an_embedded_tier_that_fails_to_start_fails_the_test_that_needed_it(
    project: pytest.Pytester,
) -> None:
    """The first test that needs it gets the start's RuntimeError at its call (not a 500);
    later ones get it at setup, as from a failed session fixture; it is started once."""
    project.makeconftest(ON_DEMAND_CONFTEST)
    project.makepyfile(test_user=ASK_TWICE)
    starts = project.path / "starts.txt"
    # COLUMNS: pytest shortens the summary lines to the terminal's width
    result = run(project, project.path / "recorded", "--fixtures-mode=record",
                 STARTS_FILE=str(starts), FAKE_TIER="raise SystemExit(3)",
                 COLUMNS="200")  # fmt: skip
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_user.py::test_first - RuntimeError: the embedded CPU tier exited with 3",
            "ERROR test_user.py::test_second - RuntimeError: the embedded CPU tier exited with 3",
        ]
    )
    assert len(starts.read_text().splitlines()) == 1
