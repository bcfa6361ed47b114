"""The WS_ENTITY_TOPICS default (the reference's string) and the catalogue agree."""

from __future__ import annotations

import pytest

from mesaya_realtime.bootstrap import build_gateway, topic_entities
from mesaya_realtime.config import DEFAULT_ENTITY_TOPICS, ConfigError, load_settings, parse_entity_topics
from mesaya_realtime.domain.catalogue import CATALOGUE


def test_every_catalogue_topic_is_consumed_by_default() -> None:
    default_topics = {t for topics in parse_entity_topics(DEFAULT_ENTITY_TOPICS).values() for t in topics}
    catalogue_topics = {t for spec in CATALOGUE.entities for t in spec.kafka_topics}
    assert default_topics == catalogue_topics


def test_default_mapping_matches_the_catalogue() -> None:
    settings = load_settings({"jwt_secret": "x" * 32})
    assert topic_entities(settings, CATALOGUE) == dict(CATALOGUE.topic_entities)


def test_unknown_default_entity_is_a_start_up_error() -> None:
    settings = load_settings({"jwt_secret": "x" * 32, "ws_default_entity": "nope"})
    with pytest.raises(ConfigError, match="WS_DEFAULT_ENTITY"):
        build_gateway(settings)


def test_missing_jwt_key_message_names_the_variable_once() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({"jwt_secret": "", "jwt_public_key": ""})
    assert str(error.value) == ("invalid configuration: JWT_SECRET is required (or JWT_PUBLIC_KEY for RS256)")
