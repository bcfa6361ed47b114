"""Decoding Kafka records into domain events (reference §8.3-8.4, as intended).

The payloads are the backend's real shapes (tests/kafka_support.py); the expected values are
written out by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from mesaya_realtime.application.handlers.events import (
    EventContext,
    EventDispatcher,
    EventIngest,
    Record,
)
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.snapshot_cache import SnapshotCache
from mesaya_realtime.domain.catalogue import CATALOGUE
from mesaya_realtime.domain.events import (
    MAX_EVENT_BYTES,
    DomainEvent,
    EventDecodeError,
    decode_event,
    event_values,
)
from tests import kafka_support as ks

TABLES = "mesa-ya.tables.events"
MENUS = "mesa-ya.menus.events"


def decode(topic: str, value: Any, topic_entities: dict[str, str] | None = None) -> DomainEvent:
    raw = orjson.dumps(value) if isinstance(value, dict | list) else value
    return decode_event(topic, raw, CATALOGUE, topic_entities)


def as_message(event: DomainEvent) -> dict[str, Any]:
    """The fields a socket receives, as the expected dicts of kafka_support spell them."""
    body: dict[str, Any] = {"topic": event.topic, "entity": event.entity.name, "action": event.action}
    if event.resource_id:
        body["resourceId"] = event.resource_id
    if event.data is not None:
        body["data"] = event.data
    if event.metadata:
        body["metadata"] = dict(event.metadata)
    body["timestamp"] = event.timestamp
    return body


# -- the platform's payloads -------------------------------------------------------------------

REAL_SHAPES = [
    pytest.param("mesa-ya.restaurants.events", ks.restaurant_updated("r-1", "o-1"), id="restaurant-updated"),
    pytest.param(
        "mesa-ya.restaurants.events", ks.restaurant_status_changed("r-1", "o-1"), id="restaurant-status"
    ),
    pytest.param(TABLES, ks.table_event("updated", "t-1", "s-1"), id="table-updated"),
    pytest.param(
        "mesa-ya.reservations.events",
        ks.reservation_event("created", "res-1", "r-1", "u-1"),
        id="reservation-created",
    ),
    pytest.param(
        "mesa-ya.reservations.events",
        ks.reservation_event("deleted", "res-1", "r-1", "u-1"),
        id="reservation-deleted",
    ),
    pytest.param(
        MENUS, ks.dish_event("created", "d-1", "r-1", "m-1", metadata_restaurant=True), id="dish-created"
    ),
    pytest.param(
        MENUS,
        ks.dish_event("updated", "d-1", "r-1", "m-1", metadata_restaurant=False),
        id="dish-updated-null-metadata",
    ),
    pytest.param(MENUS, ks.menu_event("updated", "m-1", "r-1"), id="menu-updated"),
    pytest.param(
        "mesa-ya.payments.events",
        ks.payment_event("status_changed", "p-1", "r-1", "u-1"),
        id="payment-status",
    ),
    pytest.param(
        "mesa-ya.subscriptions.events",
        ks.subscription_status_changed("sub-1", "r-1"),
        id="subscription-status",
    ),
    pytest.param("mesa-ya.subscriptions.events", ks.plan_event("updated", "plan-1"), id="plan-updated"),
    pytest.param(
        "mesa-ya.owner-upgrade.events",
        ks.owner_upgrade_status_changed("req-1", "u-1", "r-1"),
        id="owner-upgrade-status",
    ),
    pytest.param("mesa-ya.auth.events", ks.user_signed_up("u-9"), id="auth-user-signed-up"),
]


@pytest.mark.parametrize(("topic", "shape"), REAL_SHAPES)
def test_real_payloads_decode_to_the_expected_message(topic: str, shape: tuple[dict[str, Any], Any]) -> None:
    payload, expected = shape
    assert as_message(decode(topic, payload)) == expected


@pytest.mark.parametrize(
    ("topic", "subtype", "entity"),
    [
        (MENUS, "dish", "dishes"),
        (MENUS, "menu", "menus"),
        (MENUS, "DISH", "dishes"),
        ("mesa-ya.subscriptions.events", "plan", "subscription-plans"),
        ("mesa-ya.subscriptions.events", "subscription", "subscriptions"),
        ("mesa-ya.subscriptions.events", None, "subscriptions"),
        ("mesa-ya.menus.events", None, "menus"),
        ("mesa-ya.auth.events", None, "users"),
        ("mesa-ya.owner-upgrade.events", None, "owner-upgrades"),
        ("mesa-ya.section-objects.events", None, "section-objects"),
    ],
)
def test_entities_are_the_plural_catalogue_names(topic: str, subtype: str | None, entity: str) -> None:
    payload: dict[str, Any] = {"event_type": "created", "entity_id": "x-1", "data": {}}
    if subtype is not None:
        payload["entity_subtype"] = subtype
    event = decode(topic, payload)
    assert event.entity.name == entity
    assert event.topic == f"{entity}.created"


def test_configured_topics_map_to_their_entity() -> None:
    event = decode(
        "custom.dishes", {"event_type": "created", "entity_id": "d-1"}, {"custom.dishes": "dishes"}
    )
    assert event.topic == "dishes.created"
    # an alias in WS_ENTITY_TOPICS (``auth``) is normalised to the catalogue name
    event = decode("custom.auth", {"event_type": "user_signed_up", "entity_id": "u"}, {"custom.auth": "auth"})
    assert event.topic == "users.user_signed_up"


def test_subtype_on_a_configured_topic_still_picks_the_entity() -> None:
    event = decode(
        "custom.menus",
        {"event_type": "created", "entity_id": "d-1", "entity_subtype": "dish"},
        {"custom.menus": "menus"},
    )
    assert event.entity.name == "dishes"


def test_legacy_fields_are_read_when_the_new_ones_are_absent() -> None:
    event = decode(TABLES, {"action": "Updated", "resourceId": "t-9", "data": {"sectionId": "s-1"}})
    assert (event.topic, event.action, event.resource_id) == ("tables.updated", "updated", "t-9")


@pytest.mark.parametrize(
    ("topic", "legacy"),
    [
        (TABLES, "restaurant"),
        ("mesa-ya.payments.events", "restaurants"),
        ("mesa-ya.reservations.events", "restaurant"),
        ("mesa-ya.auth.events", "objects"),
        ("mesa-ya.subscriptions.events", "payments"),
        (MENUS, "reservations"),
        ("mesa-ya.restaurants.events", "section"),  # the sections entity's singular
    ],
)
def test_a_legacy_entity_of_another_aggregate_is_skipped(topic: str, legacy: str) -> None:
    with pytest.raises(EventDecodeError) as raised:
        decode(topic, {"event_type": "created", "entity": legacy, "entity_id": "r-1", "data": {}})
    assert raised.value.reason == "foreign entity"


@pytest.mark.parametrize(
    ("topic", "legacy", "entity"),
    [
        (MENUS, "dish", "dishes"),
        (MENUS, "Menus", "menus"),
        ("mesa-ya.subscriptions.events", "subscription_plan", "subscription-plans"),
        ("mesa-ya.reservations.events", "reservation", "reservations"),
        ("mesa-ya.auth.events", "users", "users"),
        # a name the catalogue does not know leaves the topic's entity
        (TABLES, "mesa", "tables"),
    ],
)
def test_a_legacy_entity_picks_only_within_the_topic(topic: str, legacy: str, entity: str) -> None:
    event = decode(topic, {"event_type": "created", "entity": legacy, "entity_id": "x"})
    assert event.entity.name == entity


def test_a_subtype_wins_over_a_legacy_entity() -> None:
    payload = {"event_type": "created", "entity_subtype": "dish", "entity": "restaurants", "entity_id": "d"}
    assert decode(MENUS, payload).entity.name == "dishes"


def test_event_type_is_trimmed_and_lower_cased() -> None:
    assert decode(TABLES, {"event_type": " STATUS_CHANGED ", "entity_id": "t"}).action == "status_changed"


def test_numeric_entity_id_becomes_a_string() -> None:
    assert decode(TABLES, {"event_type": "updated", "entity_id": 42}).resource_id == "42"


def test_empty_entity_id_is_allowed() -> None:
    event = decode(TABLES, {"event_type": "updated", "entity_id": "", "data": {"sectionId": "s"}})
    assert event.resource_id == ""


def test_metadata_values_become_strings_and_null_is_dropped() -> None:
    event = decode(
        TABLES,
        {
            "event_type": "updated",
            "metadata": {
                "s": "x",
                "n": 3,
                "f": 1.25,
                "t": True,
                "b": False,
                "o": {"a": [1, None]},
                "l": ["x"],
                "z": None,
                "e": "",
            },
        },
    )
    assert dict(event.metadata) == {
        "s": "x",
        "n": "3",
        "f": "1.25",
        "t": "true",
        "b": "false",
        "o": '{"a":[1,null]}',
        "l": '["x"]',
        "e": "",
    }


@pytest.mark.parametrize(
    ("raw", "printed"),
    [
        ("2026-01-10T15:04:05.123Z", "2026-01-10T15:04:05.123Z"),
        ("2026-01-10T15:04:05.100Z", "2026-01-10T15:04:05.1Z"),
        ("2026-01-10T15:04:05.000Z", "2026-01-10T15:04:05Z"),
        ("2026-01-10T15:04:05+02:00", "2026-01-10T13:04:05Z"),
        ("2026-01-10T15:04:05", "2026-01-10T15:04:05Z"),
    ],
)
def test_the_payload_timestamp_is_kept_in_utc(raw: str, printed: str) -> None:
    assert decode(TABLES, {"event_type": "updated", "timestamp": raw}).timestamp == printed


@pytest.mark.parametrize(
    "raw",
    [None, "", "yesterday", 1736521445000, "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"],
)
def test_an_unusable_timestamp_falls_back_to_now(raw: Any) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    event = decode(TABLES, {"event_type": "updated", "timestamp": raw})
    moment = datetime.fromisoformat(event.timestamp.replace("Z", "+00:00"))
    assert event.timestamp.endswith("Z")
    assert moment >= before


# -- garbage -------------------------------------------------------------------------------------

GARBAGE = [
    pytest.param(None, "empty record", id="tombstone"),
    pytest.param(b"", "not json", id="empty-bytes"),
    pytest.param(b"not json at all", "not json", id="text"),
    pytest.param(b"\xff\xfe{", "not json", id="invalid-utf8"),
    pytest.param(b"{" * 5000, "not json", id="unterminated-deep"),
    pytest.param(b"[" * 3000 + b"]" * 3000, "not json", id="too-deep"),
    pytest.param(b"[1,2,3]", "not an object", id="array"),
    pytest.param(b"42", "not an object", id="number"),
    pytest.param(b'"created"', "not an object", id="string"),
    pytest.param(b"null", "not an object", id="null"),
    pytest.param({"entity_id": "t-1", "data": {}}, "no event_type", id="no-event-type"),
    pytest.param({"event_type": "", "entity_id": "t-1"}, "no event_type", id="empty-event-type"),
    pytest.param({"event_type": 7, "entity_id": "t-1"}, "event_type is not a string", id="event-type-number"),
    pytest.param({"event_type": True}, "event_type is not a string", id="event-type-bool"),
    pytest.param({"event_type": ["created"]}, "event_type is not a string", id="event-type-list"),
    pytest.param({"event_type": "x" * 65}, "event_type too long", id="event-type-huge"),
    pytest.param(
        {"event_type": "created", "entity_id": {"id": 1}}, "entity_id is not a string", id="entity-id-object"
    ),
    pytest.param(
        {"event_type": "created", "entity_id": "i" * 10_000}, "entity_id too long", id="entity-id-huge"
    ),
    pytest.param(
        {"event_type": "created", "metadata": ["user_id", "u"]},
        "metadata is not an object",
        id="metadata-list",
    ),
    pytest.param(
        {"event_type": "created", "metadata": "u-1"}, "metadata is not an object", id="metadata-text"
    ),
    pytest.param(
        {"event_type": "created", "entity_subtype": 3}, "entity_subtype is not a string", id="subtype-number"
    ),
]


@pytest.mark.parametrize(("value", "reason"), GARBAGE)
def test_garbage_is_refused_with_a_reason(value: Any, reason: str) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode(TABLES, value)
    assert caught.value.reason == reason


def test_an_unknown_subtype_is_refused() -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode(MENUS, {"event_type": "created", "entity_subtype": "combo", "entity_id": "c-1"})
    assert caught.value.reason == "unknown subtype"


@pytest.mark.parametrize("subtype", ["payment", "reservation", "user", "plan"])
def test_a_subtype_cannot_move_an_event_to_another_aggregate(subtype: str) -> None:
    # The menus topic carries menus and dishes only: a "payment" there must not reach
    # payments sockets (nor "plan", which belongs to the subscriptions topic).
    with pytest.raises(EventDecodeError) as caught:
        decode(MENUS, {"event_type": "created", "entity_subtype": subtype, "entity_id": "x-1"})
    assert caught.value.reason == "unknown subtype"


def test_a_topic_of_no_entity_is_refused() -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode("mesa-ya.unknown.events", {"event_type": "created"})
    assert caught.value.reason == "unknown entity"


def test_a_record_above_the_size_limit_is_refused_before_parsing() -> None:
    data = "x" * (900 * 1024)
    value = orjson.dumps({"event_type": "updated", "entity_id": "t-1", "data": {"blob": data}})
    assert len(value) > MAX_EVENT_BYTES
    with pytest.raises(EventDecodeError) as caught:
        decode_event(TABLES, value, CATALOGUE)
    assert caught.value.reason == "too large"
    # a large but acceptable record passes
    ok = orjson.dumps({"event_type": "updated", "entity_id": "t-1", "data": {"blob": "y" * 400_000}})
    assert decode_event(TABLES, ok, CATALOGUE).data == {"blob": "y" * 400_000}


def test_decoding_raises_nothing_but_event_decode_error() -> None:
    """Every JSON shape in every field position: either an event or EventDecodeError."""
    shapes: list[Any] = [None, True, 0, -1, 2**63, 1.5, "", "x", [], [1], {}, {"a": None}]
    keys = ["event_type", "action", "entity_id", "resourceId", "entity_subtype", "entity", "timestamp"]
    keys += ["data", "metadata", "topic"]
    for key in keys:
        for shape in shapes:
            payload = {"event_type": "updated", key: shape}
            try:
                event = decode(TABLES, payload)
            except EventDecodeError:
                continue
            assert isinstance(event, DomainEvent)


# -- event values used by the delivery rules ----------------------------------------------------


def test_event_values_reads_data_and_metadata_paths() -> None:
    event = decode(
        "mesa-ya.reservations.events",
        {
            "event_type": "created",
            "data": {"restaurantId": "r-1", "userId": 7, "flag": True},
            "metadata": {"restaurant_id": "r-1", "user_id": "u-1"},
        },
    )
    assert event_values(event, ("data.restaurantId", "metadata.restaurant_id")) == ["r-1"]
    assert event_values(event, ("data.userId", "metadata.user_id")) == ["7", "u-1"]
    assert event_values(event, ("data.flag", "data.missing", "other.x", "data")) == []


def test_event_values_of_non_object_data_is_empty() -> None:
    event = decode(TABLES, {"event_type": "created", "data": ["s-1"]})
    assert event_values(event, ("data.sectionId",)) == []


# -- one bad record never stops the batch --------------------------------------------------------


class CountingMetrics:
    def __init__(self) -> None:
        self.consumed: dict[str, int] = {}
        self.skipped: list[tuple[str, str]] = []

    def events_consumed(self, topic: str, count: int) -> None:
        self.consumed[topic] = self.consumed.get(topic, 0) + count

    def event_skipped(self, topic: str, reason: str, count: int = 1) -> None:
        self.skipped += [(topic, reason)] * count

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def test_a_batch_with_garbage_delivers_every_good_event() -> None:
    delivered: list[str] = []
    metrics = CountingMetrics()
    hub = Hub(lambda payload: payload, metrics)
    context = EventContext(
        hub=hub,
        cache=SnapshotCache(max_entries=10, ttl_seconds=30),
        allowed_actions=frozenset({"updated"}),
        metrics=metrics,
    )

    def record(event: DomainEvent, _: EventContext) -> None:
        delivered.append(event.resource_id)

    ingest = EventIngest(EventDispatcher(context, {"tables": [record]}), CATALOGUE, {}, metrics)
    values = [
        orjson.dumps({"event_type": "updated", "entity_id": "good-1"}),
        b"not json",
        orjson.dumps(
            {"event_type": "updated", "entity_id": "overflow", "timestamp": "0001-01-01T00:00:00+01:00"}
        ),
        orjson.dumps([1]),
        orjson.dumps({"event_type": "created", "entity_id": "not-allowed"}),
        None,
        orjson.dumps({"event_type": "updated", "entity_id": "good-2"}),
    ]
    ingest.process([Record(TABLES, 0, offset, value) for offset, value in enumerate(values)])
    assert delivered == ["good-1", "overflow", "good-2"]
    assert metrics.consumed == {TABLES: 7}
    assert metrics.skipped == [
        (TABLES, "not json"),
        (TABLES, "not an object"),
        (TABLES, "action not allowed"),
        (TABLES, "empty record"),
    ]
