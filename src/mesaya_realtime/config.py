"""Configuration from environment variables (reference §11 names and defaults).

A ``.env`` file in the working directory fills gaps but never overrides the real environment.
A wrong value fails at start-up with :class:`ConfigError` naming the variable::

    settings = load_settings()          # reads os.environ and .env
"""

from __future__ import annotations

import difflib
import re
import socket
import uuid
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mesaya_realtime.domain.catalogue import CATALOGUE

__all__ = [
    "ConfigError",
    "Settings",
    "load_settings",
    "parse_duration",
    "parse_entity_topics",
    "unknown_settings",
]

DEFAULT_ALLOWED_ACTIONS = (
    "created,updated,deleted,status_changed,user_signed_up,user_logged_in,roles_updated,permissions_updated"
)

#: Derived from the catalogue (its topics, reference §8.2), never restated.
DEFAULT_ENTITY_TOPICS = CATALOGUE.entity_topics_setting()

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(Exception):
    """Configuration that cannot be used: every problem found, each naming its variable."""

    def __init__(self, message: str | list[str]) -> None:
        problems = [message] if isinstance(message, str) else list(message)
        self.problems = [p.removeprefix("invalid configuration: ") for p in problems]
        if len(self.problems) == 1:
            text = f"invalid configuration: {self.problems[0]}"
        else:
            text = f"invalid configuration ({len(self.problems)} problems):\n" + "\n".join(
                f"  {problem}" for problem in self.problems
            )
        super().__init__(text)


#: HMAC keys shorter than this are refused (RFC 7518 §3.2: at least the hash's 256 bits).
MIN_SECRET_BYTES = 32


def parse_duration(value: object) -> float:
    """Seconds from a Go duration (``10s``, ``1m30s``, ``500ms``) or a number of seconds.

    >>> parse_duration("1m30s"), parse_duration("250ms"), parse_duration("7")
    (90.0, 0.25, 7.0)
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().strip("\"'")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"not a duration: {value!r}") from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError(f"not a duration: {value!r}")
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


def parse_entity_topics(value: str) -> dict[str, tuple[str, ...]]:
    """``entity:topicA|topicB,entity2:topicC`` -> ``{entity: (topics...)}``.

    >>> parse_entity_topics("tables:mesa-ya.tables.events, menus:a|b")
    {'tables': ('mesa-ya.tables.events',), 'menus': ('a', 'b')}
    """
    mapping: dict[str, tuple[str, ...]] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        entity, sep, topics = item.partition(":")
        names = tuple(t.strip() for t in topics.split("|") if t.strip())
        if not sep or not entity.strip() or not names:
            raise ValueError(f"expected entity:topic[|topic...], got {item!r}")
        mapping[entity.strip().lower()] = names
    if not mapping:
        raise ValueError("no entity:topic pairs")
    return mapping


def _unquote(value: object) -> object:
    return value.strip().strip("\"'") if isinstance(value, str) else value


class Settings(BaseSettings):
    """Every setting of the gateway; the field name upper-cased is the variable."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)

    kafka_enabled: bool = True
    kafka_brokers: str = Field(
        default="localhost:9092", validation_alias=AliasChoices("KAFKA_BROKERS", "KAFKA_BROKER")
    )
    kafka_group_id: str = "realtime-group"
    ws_entity_topics: str = DEFAULT_ENTITY_TOPICS
    ws_allowed_actions: str = DEFAULT_ALLOWED_ACTIONS
    ws_default_entity: str = "restaurants"

    rest_base_url: str = "http://localhost:3000"
    rest_timeout: float = 10.0
    rest_max_connections: int = Field(default=100, ge=1)

    jwt_secret: str = ""
    jwt_public_key: str = Field(default="", validate_default=True)
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_require_exp: bool = False

    log_level: str = "info"
    log_format: Literal["json", "text"] = "json"

    snapshot_cache_ttl: float = 30.0
    snapshot_cache_max_entries: int = Field(default=10_000, ge=1)
    snapshot_refresh_quiet: float = 0.15
    snapshot_refresh_max_delay: float = 1.0

    # The tenant boundary (docs/ARCHITECTURE.md "Who may see what"): how long an owner's
    # restaurants (GET /api/v1/restaurants/me) are trusted before open sockets are re-checked.
    ownership_cache_ttl: float = 60.0
    ownership_cache_max_entries: int = Field(default=10_000, ge=1)

    ws_max_message_bytes: int = Field(default=65_536, ge=256)
    ws_send_buffer_bytes: int = Field(default=1_048_576, ge=4096)
    ws_heartbeat: float = 30.0
    ws_max_inflight_commands: int = Field(default=32, ge=1)
    ws_max_connections: int = Field(default=0, ge=0)
    ws_max_topics_per_socket: int = Field(default=64, ge=1)
    ws_handshake_timeout: float = 10.0
    #: Entity-socket upgrades answered by the front door (interface/front_door.py) instead of
    #: aiohttp's request machinery; false sends every request through aiohttp.
    ws_front_door: bool = True
    #: Seconds a protocol v2 socket has to authenticate in its first frame (then 4408).
    ws_auth_timeout: float = Field(default=5.0, gt=0)
    #: Seconds between moves of surviving objects out of the collector's reach (0: CPython's
    #: default collector); see infrastructure/gc_policy.py.
    gc_freeze_interval: float = Field(default=10.0, ge=0)
    # Protocol v2's resume (docs/WEBSOCKET_ENDPOINTS.md "Cursors and resume"): how long and how
    # much of the recent events a node keeps, and the largest gap one resume replays.
    resume_max_age: float = Field(default=300.0, ge=0)
    resume_max_events: int = Field(default=1000, ge=0)
    resume_buffer_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    #: Worker processes sharing the port (infrastructure/workers.py); 0: one per usable CPU.
    workers: int = Field(default=0, ge=0, le=256)
    #: The asyncio event loop (infrastructure/event_loop.py): uvloop where installed.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    ws_allowed_origins: str = ""

    # The payment push (POST /broadcast, docs/WEBSOCKET_ENDPOINTS.md "The payment push"): who
    # may call it, and the gateway's own topic that carries pushes to every node.
    broadcast_secret: str = ""
    broadcast_admin_tokens: bool = True
    broadcast_topic: str = Field(default="mesaya-realtime.broadcasts", min_length=1)

    node_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")

    # Table selection (docs/ARCHITECTURE.md#table-selection): the shared log topic, the hold TTL,
    # per-socket limits and how fast a dead node's holds end (within TABLE_SELECTION_NODE_TIMEOUT
    # + 2 s of its death).
    table_selection_topic: str = Field(default="mesaya-realtime.table-selections", min_length=1)
    table_selection_ttl: float = 300.0
    table_selection_max_per_socket: int = Field(default=3, ge=1)
    table_selection_rate_limit: float = Field(default=10.0, gt=0)
    table_selection_heartbeat: float = 2.0
    table_selection_node_timeout: float = 10.0
    table_selection_checkpoint_interval: float = 30.0
    table_selection_request_timeout: float = 5.0
    #: Seconds a protocol v2 socket's holds outlive a drop, for the client to resume (0: none).
    table_selection_reconnect_grace: float = Field(default=10.0, ge=0)

    @field_validator(
        "table_selection_ttl",
        "table_selection_heartbeat",
        "table_selection_node_timeout",
        "table_selection_checkpoint_interval",
        "table_selection_request_timeout",
        "table_selection_reconnect_grace",
        mode="before",
    )
    @classmethod
    def _selection_duration(cls, value: object) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _selection_timing(self) -> Settings:
        if self.table_selection_node_timeout < 2 * self.table_selection_heartbeat:
            raise ValueError("TABLE_SELECTION_NODE_TIMEOUT must be at least twice TABLE_SELECTION_HEARTBEAT")
        return self

    @field_validator(
        "rest_timeout",
        "snapshot_cache_ttl",
        "snapshot_refresh_quiet",
        "snapshot_refresh_max_delay",
        "ownership_cache_ttl",
        "ws_heartbeat",
        "ws_handshake_timeout",
        "ws_auth_timeout",
        "resume_max_age",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @field_validator("rest_base_url", "jwt_secret", "jwt_public_key", "broadcast_secret", mode="before")
    @classmethod
    def _strip_quotes(cls, value: object) -> object:
        return _unquote(value)

    @field_validator("event_loop", mode="before")
    @classmethod
    def _event_loop(cls, value: object) -> object:
        return str(value).strip().lower()

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: object) -> object:
        # The reference treats anything but "json" as text.
        return "json" if str(value).strip().lower() == "json" else "text"

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: object) -> str:
        level = str(value).strip().lower()
        aliases = {"dbg": "debug", "trace": "debug", "warning": "warn", "err": "error"}
        level = aliases.get(level, level)
        if level not in ("debug", "info", "warn", "error"):
            raise ValueError("expected debug, info, warn or error")
        return level

    @field_validator("rest_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{value!r} needs a scheme and a host (http://host:port)")
        return value.rstrip("/")

    @field_validator("ws_entity_topics")
    @classmethod
    def _topics(cls, value: str) -> str:
        parse_entity_topics(value)
        return value

    @field_validator("jwt_secret", mode="after")
    @classmethod
    def _secret_length(cls, value: str) -> str:
        if value and len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"must be at least {MIN_SECRET_BYTES} bytes (it is {len(value.encode())}); "
                "make one with: openssl rand -base64 48"
            )
        return value

    @field_validator("jwt_public_key", mode="after")
    @classmethod
    def _some_key(cls, value: str, info: ValidationInfo) -> str:
        # A field check (not a model check) so that it is reported with every other problem.
        if not value and not info.data.get("jwt_secret") and "jwt_secret" in info.data:
            raise ValueError("JWT_SECRET is required (or JWT_PUBLIC_KEY for RS256)")
        return value

    @property
    def entity_topics(self) -> dict[str, tuple[str, ...]]:
        return parse_entity_topics(self.ws_entity_topics)

    @property
    def allowed_actions(self) -> tuple[str, ...]:
        actions: list[str] = []
        for raw in self.ws_allowed_actions.split(","):
            action = raw.strip().lower()
            if action and action not in actions:
                actions.append(action)
        return tuple(actions) or ("created", "updated", "deleted", "snapshot")

    @property
    def allowed_origins(self) -> frozenset[str]:
        """``WS_ALLOWED_ORIGINS`` as a set; empty means every origin (the reference's rule)."""
        return frozenset(
            origin.strip().rstrip("/").lower()
            for origin in self.ws_allowed_origins.split(",")
            if origin.strip()
        )

    @property
    def broker_list(self) -> str:
        return ",".join(b.strip() for b in self.kafka_brokers.split(",") if b.strip())


_KINDS = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
}


def _readable(item: Any) -> str:
    """A validation error as a person reads it: ``must be a whole number (got 'x')``."""
    kind = item.get("type", "")
    context = item.get("ctx") or {}
    if kind in _KINDS:
        return f"{_KINDS[kind]} (got {item.get('input')!r})"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        words = {"greater_than_equal": "at least", "less_than_equal": "at most", "greater_than": "more than"}
        bound = next(iter(context.values()), "")
        return f"must be {words.get(kind, 'less than')} {bound} (got {item.get('input')!r})"
    if kind == "literal_error":
        return f"must be one of {context.get('expected', '')} (got {item.get('input')!r})"
    return str(item.get("msg", "")).removeprefix("Value error, ")


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read the settings, turning validation errors into one :class:`ConfigError`."""
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = ".".join(str(part) for part in item["loc"]).upper()
            message = _readable(item)
            if message.startswith(name.split(".")[0]) or not name or name == "JWT_PUBLIC_KEY":
                problems.append(message)  # the message names its variable already
            else:
                problems.append(f"{name}: {message}")
        raise ConfigError(problems) from None


#: Prefixes only the gateway's settings use: any other variable with one is a typo. Names
#: without one (``PORTS``) are reported only when close to a setting's name.
_OWN_PREFIXES = (
    "WS_",
    "JWT_",
    "REST_",
    "TABLE_SELECTION_",
    "SNAPSHOT_",
    "OWNERSHIP_",
    "BROADCAST_",
    "GC_",
    "RESUME_",
)


def _setting_names() -> set[str]:
    names = {name.upper() for name in Settings.model_fields}
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice).upper() for choice in alias.choices}
    return names


def dotenv_values(path: str = ".env") -> dict[str, str]:
    """The variables a ``.env`` file sets (what pydantic-settings reads too), quotes removed."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    values: dict[str, str] = {}
    for line in lines:
        text = line.strip().removeprefix("export ").strip()
        if text and not text.startswith("#") and "=" in text:
            name, _, value = text.partition("=")
            values[name.strip()] = str(_unquote(value))
    return values


def dotenv_names(path: str = ".env") -> list[str]:
    """The variable names a ``.env`` file sets."""
    return list(dotenv_values(path))


def unknown_settings(environ: Mapping[str, str], extra_names: list[str] | None = None) -> list[str]:
    """Warnings for variables that look like the gateway's settings but are none (a typo is
    otherwise silently ignored): ``JWT_SECRETS: not a setting (did you mean JWT_SECRET?)``."""
    known = _setting_names()
    warnings: list[str] = []
    for name in sorted({*environ, *(extra_names or [])}):
        upper = name.upper()
        if upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.85)
        if close or upper.startswith(_OWN_PREFIXES):
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{name}: not a setting of the gateway, ignored{hint}")
    return warnings
