"""Settings: built once from ``config/gateway.toml`` (+ ``tiers.toml``) and the environment,
frozen, and passed into ``create_app(settings)``. This is the only module that reads
``os.environ``.

>>> settings = load_settings(environ={"GATEWAY_ENV": "prod"})
>>> settings.tiers["prod"].timeouts.cold
600.0

Environment overrides (each named in errors with where it came from):

- ``GATEWAY_CONFIG``: path of the TOML file (default: ``config/gateway.toml`` in the repo).
- ``GATEWAY_ENV``: ``dev`` or ``prod``: the tier a request gets when it names none.
- ``GATEWAY_TIER_<NAME>_URL``: root URL of the tier's OpenAI-compatible server.
- ``GATEWAY_TIER_<NAME>_KIND``: ``openai`` or ``modal``.
- ``GATEWAY_MODAL_KEY`` / ``GATEWAY_MODAL_SECRET``: Modal proxy-auth token for ``modal`` tiers.
- ``GATEWAY_LOCAL_TIER``: ``auto`` (default: the embedded CPU tier serves ``dev`` when dev
  has no URL) or ``off``.
- ``GATEWAY_STATE``: ``redis://host:port/db`` (or ``rediss://``, ``unix://``): keep the
  tiers' warmth in Redis, shared by every replica (default: the SQLite file / memory).
- ``GATEWAY_KEYS_FILE``: the API keys file (``gateway keys``); set, every route but
  ``/health`` needs a key.
- ``GATEWAY_KEYS_STORE``: ``state`` (the ``state`` Redis) or a Redis URL: API keys shared by
  every replica, beside the file's; set, every route but ``/health`` needs a key.
- ``GATEWAY_LIMITS_STORE``: where per-key limits are counted: ``memory://`` (one process) or
  a Redis URL (shared by every worker and replica); default: the ``state`` Redis, if any.
- ``GATEWAY_ALLOWED_HOSTS`` / ``GATEWAY_CORS_ALLOW_ORIGINS``: comma-separated lists that
  override ``[server] allowed_hosts`` and ``[server.cors] allow_origins``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from gateway.tierspec import TierSpec, TierSpecError, load_tier_specs, tier_env_var
from gateway.warmth.schedule import Schedule, ScheduleError, parse_schedule

MODAL_HOLD_S = 150.0  # a Modal web endpoint holds a request this long, then answers 303
WARMTH_DB_ENV = "GATEWAY_WARMTH_DB"  # set by `gateway serve --workers N` when unset
EMBEDDED_URL_ENV = "GATEWAY_EMBEDDED_TIER_URL"  # set by `gateway serve` for its workers
SUPERVISOR_ENV = "GATEWAY_SUPERVISOR_PID"  # set by `gateway serve --workers N` for its workers
STATE_ENV = "GATEWAY_STATE"
KEYS_STORE_ENV = "GATEWAY_KEYS_STORE"
ALLOWED_HOSTS_ENV = "GATEWAY_ALLOWED_HOSTS"  # comma-separated; overrides [server] allowed_hosts
CORS_ORIGINS_ENV = "GATEWAY_CORS_ALLOW_ORIGINS"  # comma-separated; overrides allow_origins
STATE_SCHEMES = ("redis", "rediss", "unix")  # what redis-py's from_url understands
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "gateway.toml"

Kind = Literal["modal", "openai"]
FallbackMode = Literal["allow", "deny", "wait"]
SchemaMode = Literal["lower", "strict"]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


class SettingsError(ValueError):
    """A bad file or value; the message names the key and where it came from."""


class Secret:
    """A value that never shows itself in a repr, a log line or an error body."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    connect: Seconds = 10.0
    warm: Seconds = 120.0  # whole request budget when the tier is warm
    cold: Seconds = 600.0  # whole request budget when the tier must boot first
    # Streams (stream: true): the first token must come within `first_token` from a warm tier
    # (from a cold one, within the cold budget: the boot comes first); after it, a gap of
    # more than `stream_idle` between chunks ends the stream with an error event.
    first_token: Seconds = 30.0
    stream_idle: Seconds = 30.0


class TierFileEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    kind: Kind = "modal"
    url: str | None = None
    model: str | None = None  # the name sent upstream; defaults to tiers.toml served_model_name
    fallback: tuple[str, ...] = ()
    fallback_mode: FallbackMode = "deny"
    keep_warm: str = "off"
    max_redirects: int | None = None  # default: enough 150 s holds to cover the cold budget
    timeouts: Timeouts = Timeouts()
    # lower: serve schemas the tier cannot enforce through a lowered schema, checked after;
    # strict: refuse them (422), as before lowering. X-Schema-Mode overrides per request.
    schema_mode: SchemaMode = "lower"
    schema_retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 2  # see config/gateway.toml
    # A down tier's first trial after this many seconds, doubling per failed trial up to
    # down_retry_max_s; unset: by kind (gateway.warmth.types.TierWarmthConfig.for_tier:
    # 5/60 s for free probes, 60/900 s for a Modal tier that scales to zero)
    down_retry_after_s: Seconds | None = None
    down_retry_max_s: Seconds | None = None
    # Three failures in a row make a tier down only after this long without a success;
    # unset: gateway.warmth.types.DOWN_AFTER_SILENCE_S (5 s, the reason is there).
    down_after_silence_s: Seconds | None = None


# What a browser script may read of an answer (docs/api.md, "Response headers"): CORS hides
# every response header but a handful unless it is exposed by name.
EXPOSED_HEADERS = (
    "x-request-id",
    "x-model-tier-requested",
    "x-model-tier-served",
    "x-fallback-reason",
    "x-schema-checked-after",
    "x-gateway-overhead-ms",
    "x-should-retry",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit-gpu-seconds",
    "x-ratelimit-remaining-gpu-seconds",
    "x-ratelimit-reset-gpu-seconds",
    "x-gpu-seconds",
    "x-gpu-cost-usd",
)


class Cors(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which browser pages may call the gateway (Litestar's CORS, on every route). No
    origins: no CORS headers at all, so a browser lets only same-origin pages read answers."""

    allow_origins: tuple[str, ...] = ()  # "https://app.example", "https://*.example", or "*"
    # What a preflight may ask to send; "*" allows what it asks, Authorization included.
    allow_headers: tuple[str, ...] = ("*",)
    expose_headers: tuple[str, ...] = EXPOSED_HEADERS
    max_age_s: Annotated[int, msgspec.Meta(ge=0)] = 600  # how long a browser caches a preflight

    @property
    def enabled(self) -> bool:
        return bool(self.allow_origins)


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Whom the server answers, and how it protects itself from slow, silent, huge or too
    many clients.

    ``allowed_hosts`` and ``cors`` are Litestar's own (``create_app``), on every route.
    uvicorn (with httptools) enforces the first three limits in every worker; it has no limit
    on the time or size of a request's headers, nor on the time a body takes to arrive, so the
    last three are enforced by the front proxy whose configuration ``deploy/nginx`` renders
    from these values (docs/operations.md).
    """

    # Host headers answered, port included when the client sends one ("gateway.example",
    # "*.example", "gateway.internal:8000"); any other gets 400. Empty: any host.
    allowed_hosts: tuple[str, ...] = ()
    cors: Cors = Cors()

    max_connections: Annotated[int, msgspec.Meta(ge=2)] = 16_384  # per worker; 503 past it
    keep_alive_s: Seconds = 5.0  # an idle keep-alive connection is closed after this
    drain_s: Seconds = 30.0  # on SIGTERM, in-flight requests get this long to finish
    header_timeout_s: Seconds = 10.0  # front proxy: the whole request head must arrive by then
    body_timeout_s: Seconds = 30.0  # front proxy: the longest pause between two body reads
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16_384  # front proxy: per line


class GatewayFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    default_tier: str = "dev"
    tiers_file: str = "tiers.toml"
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1_048_576
    # a tier's answer: a chat completion is kilobytes; the cap stops a runaway or hostile tier
    max_answer_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024 * 1024
    warmth_db: str = ""  # shared warmth store (SQLite file); "" = in memory, one worker
    state: str = ""  # "redis://host:port/db": warmth shared by replicas; "" = warmth_db
    state_prefix: str = "tier-gateway"  # Redis keys are <prefix>:tier:<name>
    # A Redis call on a LAN takes < 1 ms; 250 ms means it is down or swamped, and a request
    # must not wait longer than that for shared state it can do without.
    state_timeout_s: Seconds = 0.25
    # A crashed replica's warm-up is taken over within this (renewed every third of it).
    warmup_lease_s: Seconds = 30.0
    keys_file: str = ""  # API keys (gateway keys); relative to this file; "" = keys off
    # API keys shared by replicas: "state" (the state Redis) or a Redis URL; "" = file only
    keys_store: str = ""
    limits_store: str = ""  # per-key limits: memory:// or a Redis URL; "" = state, else memory
    server: ServerSettings = ServerSettings()
    tiers: dict[str, TierFileEntry]


class Tier(msgspec.Struct, frozen=True, kw_only=True):
    """One tier, resolved: file entry + environment + tiers.toml facts."""

    name: str
    kind: Literal["modal", "openai", "local"]  # local: the embedded CPU tier, started by serve
    url: str | None  # None: not configured (and not served by the embedded tier)
    model: str
    fallback: tuple[str, ...]
    fallback_mode: FallbackMode
    keep_warm: Schedule  # parsed here, once, as the settings load
    timeouts: Timeouts
    max_redirects: int
    spec: TierSpec | None  # None for a tier tiers.toml does not describe
    schema_mode: SchemaMode = "lower"
    schema_retries: int = 2  # fresh samples after output breaks a lowered keyword
    down_retry_after_s: float | None = None  # None: the default for the tier's kind
    down_retry_max_s: float | None = None
    down_after_silence_s: float | None = None  # None: DOWN_AFTER_SILENCE_S

    @property
    def configured(self) -> bool:
        return self.url is not None

    @property
    def aliases(self) -> tuple[str, ...]:
        """Names a client may put in OpenAI's ``model`` field to pick this tier."""
        names = [self.name, self.model]
        if self.spec is not None:
            names += [self.spec.model, self.spec.served_model_name]
        return tuple(dict.fromkeys(names))


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    config_path: Path
    env: Literal["dev", "prod"] | None
    default_tier: str
    max_body_bytes: int
    tiers: dict[str, Tier]
    max_answer_bytes: int = 64 * 1024 * 1024
    local_tier: Literal["auto", "off"] = "auto"
    warmth_db: str = ""
    state: Secret | None = None  # a Redis URL (it may hold a password); None = warmth_db
    state_prefix: str = "tier-gateway"
    state_timeout_s: float = 0.25
    warmup_lease_s: float = 30.0
    server: ServerSettings = ServerSettings()
    supervisor_pid: int | None = None  # a worker of `gateway serve --workers N`: its parent
    modal_key: Secret | None = None
    modal_secret: Secret | None = None
    keys_file: Path | None = None  # None and no keys_store: keys off (every route open)
    keys_store: Secret | None = None  # a Redis URL holding keys (gateway.access.shared_keys)
    limits_store: Secret | None = None  # a Redis URL (it may hold a password); None: memory

    @property
    def keys_on(self) -> bool:
        """Every route but ``/health`` needs a key: a keys file, a shared key store, or both."""
        return self.keys_file is not None or self.keys_store is not None

    @property
    def embedded_tier(self) -> Tier | None:
        """The tier the embedded CPU tier must serve, if any (url filled in by ``serve``)."""
        return next((t for t in self.tiers.values() if t.kind == "local"), None)

    def with_tier_url(self, name: str, url: str) -> Settings:
        tier = msgspec.structs.replace(self.tiers[name], url=url)
        return msgspec.structs.replace(self, tiers={**self.tiers, name: tier})


def _check_url(url: str, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{where}: {url!r} is not an http(s) URL")
    return url.rstrip("/")


_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"  # "_": container names
_PORT = r"(?::[0-9]{1,5})?"
# As Litestar's allowed hosts match the Host header: a name or IPv4 address (a leading "*."
# matches any subdomain) or a bracketed IPv6 address, with the port when clients send one.
_HOST = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*{_PORT}|\[[0-9a-f:.]+\]{_PORT}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # RFC 9110 token
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _allowed_hosts(values: tuple[str, ...], where: str) -> tuple[str, ...]:
    hosts: list[str] = []
    for value in values:
        host = value.strip().lower()  # DNS names are case-blind; clients send them lower
        if "://" in host or "/" in host:
            raise SettingsError(
                f"{where}: {value!r} is a URL; give the host as clients send it in the Host "
                "header, e.g. 'gateway.example' or 'gateway.internal:8000'"
            )
        if host != "*" and not _HOST.fullmatch(host):
            raise SettingsError(
                f"{where}: {value!r} is not a host: use a name or address ('gateway.example', "
                "'10.0.0.5'), '*.' before a domain for its subdomains, ':port' when clients "
                "send one, or '*' for any"
            )
        hosts.append(host)
    return tuple(dict.fromkeys(hosts))


def _origins(values: tuple[str, ...], where: str) -> tuple[str, ...]:
    origins: list[str] = []
    for value in values:
        origin = value.strip()
        if origin == "*":
            origins.append(origin)
            continue
        parts = urlsplit(origin)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = -1
        if scheme not in _DEFAULT_PORTS or not parts.hostname or port == -1 or "@" in origin:
            raise SettingsError(
                f"{where}: {value!r} is not an origin: scheme://host[:port], e.g. "
                "'https://app.example' (a '*' in the host matches any part of it)"
            )
        netloc = parts.netloc.lower()
        if port == _DEFAULT_PORTS[scheme]:
            netloc = netloc.rsplit(":", 1)[0]  # a browser leaves the default port out
        # A browser's Origin header has no path, not even "/": one here would never match.
        if parts.path or parts.query or parts.fragment or netloc != parts.netloc.lower():
            raise SettingsError(
                f"{where}: {value!r} would never match: a browser sends it as '{scheme}://{netloc}'"
            )
        origins.append(f"{scheme}://{netloc}")
    return tuple(dict.fromkeys(origins))


def _header_names(values: tuple[str, ...], where: str) -> tuple[str, ...]:
    for value in values:
        if not _HEADER_NAME.fullmatch(value.lower()):
            raise SettingsError(f"{where}: {value!r} is not a header name")
    return tuple(dict.fromkeys(value.lower() for value in values))


def _listed(value: str) -> tuple[str, ...]:
    """An environment variable's comma-separated list."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _server(file: ServerSettings, env: Mapping[str, str], path: Path) -> ServerSettings:
    """The ``[server]`` table, its lists checked (and the environment's lists applied)."""
    hosts, where = file.allowed_hosts, f"{path}: server.allowed_hosts"
    if env.get(ALLOWED_HOSTS_ENV):
        hosts, where = _listed(env[ALLOWED_HOSTS_ENV]), ALLOWED_HOSTS_ENV
    origins, from_ = file.cors.allow_origins, f"{path}: server.cors.allow_origins"
    if env.get(CORS_ORIGINS_ENV):
        origins, from_ = _listed(env[CORS_ORIGINS_ENV]), CORS_ORIGINS_ENV
    cors = msgspec.structs.replace(
        file.cors,
        allow_origins=_origins(origins, from_),
        allow_headers=_header_names(file.cors.allow_headers, f"{path}: server.cors.allow_headers"),
        expose_headers=_header_names(
            file.cors.expose_headers, f"{path}: server.cors.expose_headers"
        ),
    )
    return msgspec.structs.replace(file, allowed_hosts=_allowed_hosts(hosts, where), cors=cors)


def _choice(value: str, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise SettingsError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return value


def load_settings(
    config_path: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file and apply environment overrides; raise SettingsError on any fault."""
    import os

    env = dict(os.environ if environ is None else environ)
    path = Path(config_path or env.get("GATEWAY_CONFIG") or DEFAULT_CONFIG)
    source = "GATEWAY_CONFIG" if config_path is None and env.get("GATEWAY_CONFIG") else "config"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{source} {path}: cannot read ({exc.strerror})") from exc
    try:
        file = msgspec.toml.decode(raw, type=GatewayFile)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"{path}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc

    specs: dict[str, TierSpec] = {}
    if file.tiers_file:
        try:
            specs = load_tier_specs(path.parent / file.tiers_file)
        except TierSpecError as exc:
            raise SettingsError(f"{path}: tiers_file: {exc}") from exc

    gateway_env = env.get("GATEWAY_ENV") or None
    if gateway_env is not None:
        _choice(gateway_env, ("dev", "prod"), "GATEWAY_ENV")
    local_mode = _choice(
        env.get("GATEWAY_LOCAL_TIER", "auto"), ("auto", "off"), "GATEWAY_LOCAL_TIER"
    )

    tiers: dict[str, Tier] = {}
    for name, entry in file.tiers.items():
        kind_var, url_var = tier_env_var(name, "KIND"), tier_env_var(name, "URL")
        kind: str = entry.kind
        if kind_var in env:
            kind = _choice(env[kind_var], ("modal", "openai"), kind_var)
        url = entry.url
        if env.get(url_var):
            url = _check_url(env[url_var], url_var)
        elif url:
            url = _check_url(url, f"{path}: tiers.{name}.url")
        else:
            url = None
        try:
            keep_warm = parse_schedule(entry.keep_warm)
        except ScheduleError as exc:
            raise SettingsError(f"{path}: tiers.{name}.keep_warm: {exc}") from exc
        for other in entry.fallback:
            if other not in file.tiers or other == name:
                raise SettingsError(f"{path}: tiers.{name}.fallback: no other tier named {other!r}")
        spec = specs.get(name)
        model = entry.model or (spec.served_model_name if spec else name)
        if url is None and name == "dev" and local_mode == "auto":
            kind = "local"  # the embedded CPU tier; `gateway serve` starts it, sets its URL
            if env.get(EMBEDDED_URL_ENV):
                url = _check_url(env[EMBEDDED_URL_ENV], EMBEDDED_URL_ENV)
        hops = entry.max_redirects
        if hops is None:
            hops = math.ceil(entry.timeouts.cold / MODAL_HOLD_S) + 1
        tiers[name] = Tier(
            name=name,
            kind=kind,  # type: ignore[arg-type]  # checked by _choice above
            url=url,
            model=model,
            fallback=entry.fallback,
            fallback_mode=entry.fallback_mode,
            keep_warm=keep_warm,
            timeouts=entry.timeouts,
            max_redirects=hops,
            spec=spec,
            schema_mode=entry.schema_mode,
            schema_retries=entry.schema_retries,
            down_retry_after_s=entry.down_retry_after_s,
            down_retry_max_s=entry.down_retry_max_s,
            down_after_silence_s=entry.down_after_silence_s,
        )
    if file.default_tier not in tiers:
        raise SettingsError(f"{path}: default_tier: no tier named {file.default_tier!r}")
    if gateway_env is not None and gateway_env not in tiers:
        raise SettingsError(f"GATEWAY_ENV: no tier named {gateway_env!r} in {path}")

    state = env.get(STATE_ENV) or file.state
    if state:
        where = STATE_ENV if env.get(STATE_ENV) else f"{path}: state"
        if urlsplit(state).scheme not in STATE_SCHEMES:
            # the value itself is not shown: a Redis URL may carry a password
            raise SettingsError(f"{where}: not a {'://, '.join(STATE_SCHEMES)}:// URL")
    if not file.state_prefix or ":" in file.state_prefix:
        raise SettingsError(
            f"{path}: state_prefix: {file.state_prefix!r} must be non-empty, no ':'"
        )
    keys_file = None  # from the environment as given (the shell's directory), else beside the file
    if env.get("GATEWAY_KEYS_FILE"):
        keys_file = Path(env["GATEWAY_KEYS_FILE"])
    elif file.keys_file:
        keys_file = path.parent / file.keys_file
    keys_store = _keys_store(env, file, state, path)
    # Per-key limits count where the warmth is shared, unless told otherwise.
    limits_store = env.get("GATEWAY_LIMITS_STORE") or file.limits_store or state or "memory://"
    if urlsplit(limits_store).scheme not in ("memory", *STATE_SCHEMES):
        where = (
            "GATEWAY_LIMITS_STORE" if env.get("GATEWAY_LIMITS_STORE") else f"{path}: limits_store"
        )
        # the value itself is not shown: a Redis URL may carry a password
        raise SettingsError(f"{where}: not memory:// or a {'://, '.join(STATE_SCHEMES)}:// URL")

    key_, secret = env.get("GATEWAY_MODAL_KEY"), env.get("GATEWAY_MODAL_SECRET")
    if bool(key_) != bool(secret):
        raise SettingsError("GATEWAY_MODAL_KEY and GATEWAY_MODAL_SECRET must be set together")
    return Settings(
        config_path=path,
        env=gateway_env,  # type: ignore[arg-type]  # checked by _choice above
        default_tier=file.default_tier,
        max_body_bytes=file.max_body_bytes,
        max_answer_bytes=file.max_answer_bytes,
        tiers=tiers,
        local_tier=local_mode,  # type: ignore[arg-type]
        warmth_db=env.get(WARMTH_DB_ENV) or file.warmth_db,
        state=Secret(state) if state else None,
        state_prefix=file.state_prefix,
        state_timeout_s=file.state_timeout_s,
        warmup_lease_s=file.warmup_lease_s,
        server=_server(file.server, env, path),
        supervisor_pid=int(env[SUPERVISOR_ENV]) if env.get(SUPERVISOR_ENV, "").isdigit() else None,
        modal_key=Secret(key_) if key_ else None,
        modal_secret=Secret(secret) if secret else None,
        keys_file=keys_file,
        keys_store=Secret(keys_store) if keys_store else None,
        limits_store=None if limits_store.startswith("memory:") else Secret(limits_store),
    )


def _keys_store(env: Mapping[str, str], file: GatewayFile, state: str, path: Path) -> str:
    """The Redis URL of the shared API keys, or "": ``state`` names the ``state`` Redis."""
    value = env.get(KEYS_STORE_ENV) or file.keys_store
    where = KEYS_STORE_ENV if env.get(KEYS_STORE_ENV) else f"{path}: keys_store"
    if value == "state":
        if not state:
            raise SettingsError(f"{where}: 'state', but no state (GATEWAY_STATE) Redis is set")
        return state
    if value and urlsplit(value).scheme not in STATE_SCHEMES:
        # the value itself is not shown: a Redis URL may carry a password
        raise SettingsError(f"{where}: not 'state' or a {'://, '.join(STATE_SCHEMES)}:// URL")
    return value
