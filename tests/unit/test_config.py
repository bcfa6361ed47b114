"""Configuration: names and defaults of reference §11, parsing, .env, and start-up errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesaya_realtime.bootstrap import build_verifier, topic_entities
from mesaya_realtime.config import (
    DEFAULT_ALLOWED_ACTIONS,
    ConfigError,
    Settings,
    load_settings,
    parse_duration,
    parse_entity_topics,
)
from mesaya_realtime.domain.catalogue import CATALOGUE

PEM = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo
4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u
+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh
kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ
0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg
cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc
mwIDAQAB
-----END PUBLIC KEY-----"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No gateway variable from the real environment, and a cwd without a .env file."""
    names = {name.upper() for name in Settings.model_fields} | {"KAFKA_BROKER", "KAFKA_BROKERS"}
    for name in list(os.environ):
        if name.upper() in names:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    monkeypatch.setenv("JWT_SECRET", env.pop("JWT_SECRET", "s3cret-" + "0123456789" * 3))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_defaults_are_the_references(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(monkeypatch)
    assert config.port == 8080
    assert config.host == "0.0.0.0"
    assert config.kafka_brokers == "localhost:9092"
    assert config.kafka_group_id == "realtime-group"
    assert config.ws_default_entity == "restaurants"
    assert config.rest_base_url == "http://localhost:3000"
    assert config.rest_timeout == 10.0
    assert config.log_level == "info"
    assert config.log_format == "json"
    assert config.allowed_actions == tuple(DEFAULT_ALLOWED_ACTIONS.split(","))
    assert config.allowed_actions == (
        "created",
        "updated",
        "deleted",
        "status_changed",
        "user_signed_up",
        "user_logged_in",
        "roles_updated",
        "permissions_updated",
    )
    assert config.ws_max_message_bytes == 65_536


def test_default_entity_topics_map_every_reference_topic() -> None:
    config = load_settings({"jwt_secret": "x" * 32})
    mapping = topic_entities(config, CATALOGUE)
    assert mapping == {
        "mesa-ya.restaurants.events": "restaurants",
        "mesa-ya.sections.events": "sections",
        "mesa-ya.tables.events": "tables",
        "mesa-ya.objects.events": "objects",
        "mesa-ya.section-objects.events": "section-objects",
        "mesa-ya.menus.events": "menus",
        "mesa-ya.reviews.events": "reviews",
        "mesa-ya.images.events": "images",
        "mesa-ya.reservations.events": "reservations",
        "mesa-ya.payments.events": "payments",
        "mesa-ya.subscriptions.events": "subscriptions",
        "mesa-ya.auth.events": "users",
        "mesa-ya.owner-upgrade.events": "owner-upgrades",
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("300ms", 0.3),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("250000us", 0.25),
        ("250000µs", 0.25),
        ("7", 7.0),
        (" 2s ", 2.0),
        ('"5s"', 5.0),
        (3, 3.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "10 s", "10x", "s", "0", "0s", "-1s", "-3", True, None, [1]])
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_rest_timeout_is_a_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch, REST_TIMEOUT="300ms").rest_timeout == pytest.approx(0.3)
    assert settings(monkeypatch, REST_TIMEOUT="15").rest_timeout == 15.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REST_TIMEOUT", "soon"),
        ("REST_TIMEOUT", "0"),
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("REST_BASE_URL", "localhost:3000"),
        ("REST_BASE_URL", "ftp://host"),
        ("WS_ENTITY_TOPICS", "tables"),
        ("WS_ENTITY_TOPICS", "tables:"),
        ("WS_ENTITY_TOPICS", ":topic"),
        ("WS_ENTITY_TOPICS", ","),
        ("LOG_LEVEL", "loud"),
        ("SNAPSHOT_CACHE_TTL", "never"),
        ("SNAPSHOT_CACHE_MAX_ENTRIES", "0"),
        ("KAFKA_ENABLED", "perhaps"),
    ],
)
def test_a_wrong_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        settings(monkeypatch, **{name: value})


def test_rest_base_url_quotes_and_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(monkeypatch, REST_BASE_URL='"http://api.local:3000/"')
    assert config.rest_base_url == "http://api.local:3000"


def test_parse_entity_topics() -> None:
    assert parse_entity_topics(" tables:a|b , MENUS:c|, reviews : d ") == {
        "tables": ("a", "b"),
        "menus": ("c",),
        "reviews": ("d",),
    }


def test_ws_entity_topics_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(monkeypatch, WS_ENTITY_TOPICS="table:custom.tables|other.tables,dishes:food")
    assert config.entity_topics == {"table": ("custom.tables", "other.tables"), "dishes": ("food",)}
    assert topic_entities(config, CATALOGUE) == {
        "custom.tables": "tables",
        "other.tables": "tables",
        "food": "dishes",
    }


def test_ws_entity_topics_with_an_unknown_entity_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = settings(monkeypatch, WS_ENTITY_TOPICS="spaceships:topic")
    with pytest.raises(ConfigError, match="WS_ENTITY_TOPICS"):
        topic_entities(config, CATALOGUE)


def test_allowed_actions_are_trimmed_lowered_deduplicated(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(monkeypatch, WS_ALLOWED_ACTIONS=" Created ,updated,created,,snapshot")
    assert config.allowed_actions == ("created", "updated", "snapshot")
    assert settings(monkeypatch, WS_ALLOWED_ACTIONS=" , ").allowed_actions == (
        "created",
        "updated",
        "deleted",
        "snapshot",
    )


def test_kafka_brokers_takes_precedence_over_kafka_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(monkeypatch, KAFKA_BROKER="single:9092", KAFKA_BROKERS="a:1, b:2 ,")
    assert config.broker_list == "a:1,b:2"
    monkeypatch.delenv("KAFKA_BROKERS")
    assert load_settings().broker_list == "single:9092"
    monkeypatch.delenv("KAFKA_BROKER")
    assert load_settings().broker_list == "localhost:9092"


@pytest.mark.parametrize(
    ("raw", "level"),
    [("debug", "debug"), ("DBG", "debug"), ("trace", "debug"), ("warning", "warn"), ("err", "error")],
)
def test_log_level_aliases(monkeypatch: pytest.MonkeyPatch, raw: str, level: str) -> None:
    assert settings(monkeypatch, LOG_LEVEL=raw).log_level == level


@pytest.mark.parametrize(
    ("raw", "fmt"), [("json", "json"), ("JSON", "json"), ("text", "text"), ("x", "text")]
)
def test_log_format_anything_but_json_is_text(monkeypatch: pytest.MonkeyPatch, raw: str, fmt: str) -> None:
    assert settings(monkeypatch, LOG_FORMAT=raw).log_format == fmt


def test_a_jwt_key_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        load_settings()
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        settings(monkeypatch, JWT_SECRET='""')


def test_jwt_secret_is_not_required_with_a_public_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_PUBLIC_KEY", PEM)
    config = load_settings()
    assert config.jwt_secret == ""
    verifier = build_verifier(config)
    assert verifier is not None


def test_jwt_public_key_with_literal_newlines_and_quotes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_PUBLIC_KEY", '"' + PEM.replace("\n", "\\n") + '"')
    build_verifier(load_settings())


def test_an_unparsable_public_key_is_a_start_up_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")
    config = load_settings()
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY"):
        build_verifier(config)


def test_dotenv_fills_gaps(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    (clean_env / ".env").write_text(
        "JWT_SECRET=from-dotenv-0123456789-0123456789-0123\nPORT=9191\nREST_TIMEOUT=2s\nUNRELATED_NAME=ignored\n",
        encoding="utf-8",
    )
    config = load_settings()
    assert config.jwt_secret == "from-dotenv-0123456789-0123456789-0123"
    assert config.port == 9191
    assert config.rest_timeout == 2.0


def test_dotenv_never_overrides_the_real_environment(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    (clean_env / ".env").write_text(
        "JWT_SECRET=from-dotenv-0123456789-0123456789-0123\nPORT=9191\nKAFKA_BROKERS=dotenv:1\nWS_DEFAULT_ENTITY=tables\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("JWT_SECRET", "from-env-0123456789-0123456789-0123456")
    monkeypatch.setenv("PORT", "7070")
    monkeypatch.setenv("KAFKA_BROKERS", "env:1")
    config = load_settings()
    assert config.jwt_secret == "from-env-0123456789-0123456789-0123456"
    assert config.port == 7070
    assert config.kafka_brokers == "env:1"
    assert config.ws_default_entity == "tables"


def test_a_wrong_value_in_dotenv_also_names_its_variable(clean_env: Path) -> None:
    (clean_env / ".env").write_text("JWT_SECRET=" + "x" * 32 + "\nREST_TIMEOUT=whenever\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="REST_TIMEOUT"):
        load_settings()


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "7070")
    assert load_settings({"jwt_secret": "x" * 32, "port": 0}).port == 0
