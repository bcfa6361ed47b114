"""Message encoding (reference §5.1) and the messages the gateway builds (§5.4-5.8)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from mesaya_realtime.application.usecases.sessions import (
    Session,
    base_topics,
    connected_message,
    detail_message,
    error_message,
    list_message,
    pong_message,
)
from mesaya_realtime.domain.catalogue import CATALOGUE
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.messages import (
    Message,
    encode,
    format_timestamp,
    now_timestamp,
    parse_timestamp,
    stringify,
    topic_of,
)
from mesaya_realtime.domain.queries import ListQuery

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
STAMP = "2026-01-10T15:04:05.123456Z"


def keys(raw: bytes) -> list[str]:
    return list(orjson.loads(raw))


def test_field_order_with_every_field() -> None:
    raw = encode(
        Message(
            "tables.list",
            "tables",
            "list",
            data={"b": 1, "a": 2},
            resource_id="main-hall",
            metadata={"page": "1", "origin": "request", "limit": "20"},
            timestamp=STAMP,
        )
    )
    assert raw == (
        b'{"topic":"tables.list","entity":"tables","action":"list","resourceId":"main-hall",'
        b'"data":{"b":1,"a":2},"metadata":{"limit":"20","origin":"request","page":"1"},'
        b'"timestamp":"2026-01-10T15:04:05.123456Z"}'
    )


def test_empty_resource_id_none_data_and_empty_metadata_are_omitted() -> None:
    for metadata in (None, {}):
        raw = encode(Message("system.pong", "system", "pong", metadata=metadata, timestamp=STAMP))
        assert raw == (
            b'{"topic":"system.pong","entity":"system","action":"pong",'
            b'"timestamp":"2026-01-10T15:04:05.123456Z"}'
        )


def test_empty_but_present_data_is_kept() -> None:
    # Go's omitempty on an interface only drops nil, not an empty map or list.
    assert orjson.loads(encode(Message("t.x", "t", "x", data={}, timestamp=STAMP)))["data"] == {}
    assert orjson.loads(encode(Message("t.x", "t", "x", data=[], timestamp=STAMP)))["data"] == []


def test_metadata_keys_are_sorted() -> None:
    raw = encode(Message("t.x", "t", "x", metadata={"z": "1", "A": "2", "m": "3"}, timestamp=STAMP))
    assert list(orjson.loads(raw)["metadata"]) == ["A", "m", "z"]


def test_the_default_timestamp_is_now_in_rfc3339_utc() -> None:
    before = datetime.now(UTC)
    stamp = Message("t.x", "t", "x").timestamp
    assert RFC3339_UTC.match(stamp)
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= moment <= datetime.now(UTC) + timedelta(seconds=1)
    assert RFC3339_UTC.match(now_timestamp())


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 1, 10, 15, 4, 5, tzinfo=UTC), "2026-01-10T15:04:05Z"),
        (datetime(2026, 1, 10, 15, 4, 5, 123000, tzinfo=UTC), "2026-01-10T15:04:05.123Z"),
        (datetime(2026, 1, 10, 15, 4, 5, 120, tzinfo=UTC), "2026-01-10T15:04:05.00012Z"),
        (datetime(2026, 1, 10, 15, 4, 5, 999999, tzinfo=UTC), "2026-01-10T15:04:05.999999Z"),
        (
            datetime(2026, 1, 10, 10, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
            "2026-01-10T15:04:05Z",
        ),
    ],
)
def test_format_timestamp_is_go_style(moment: datetime, expected: str) -> None:
    assert format_timestamp(moment) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-10T12:00:00.000Z", "2026-01-10T12:00:00Z"),
        ("2026-01-10T12:00:00.5Z", "2026-01-10T12:00:00.5Z"),
        ("2026-01-10T07:00:00-05:00", "2026-01-10T12:00:00Z"),
        ("2026-01-10T12:00:00", "2026-01-10T12:00:00Z"),
        ("not a time", None),
        ("", None),
        (12345, None),
        (None, None),
        ("2026-01-10T12:00:00Z" + " " * 60, None),
    ],
)
def test_parse_timestamp(value: Any, expected: str | None) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("entity", "action", "expected"),
    [
        ("tables", "list", "tables.list"),
        (" tables ", " status_changed ", "tables.status_changed"),
        ("", "list", ""),
        ("tables", "  ", ""),
    ],
)
def test_topic_of(entity: str, action: str, expected: str) -> None:
    assert topic_of(entity, action) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("x", "x"), (None, ""), (True, "true"), (False, "false"), (3, "3"), (1.5, "1.5"), ({"a": 1}, '{"a":1}')],
)
def test_stringify(value: Any, expected: str) -> None:
    assert stringify(value) == expected


class _NoConnection:
    def send(self, payload: bytes) -> None:
        raise AssertionError("not used")

    def send_frame(self, frame: bytes) -> None:
        raise AssertionError("not used")

    def close(self, code: int, reason: str) -> None:
        raise AssertionError("not used")


def _session(roles: tuple[str, ...] | None, entity: str = "tables") -> Session:
    principal = Principal("user-7", roles, "sid-1", "tok")
    topics = base_topics(entity, ("created",))
    return Session(_NoConnection(), principal, CATALOGUE.by_name[entity], "3f1c", set(topics))


def test_base_topics_order_and_dedup() -> None:
    assert base_topics("tables", ("created", " Updated ", "snapshot", "created", "")) == [
        "tables.snapshot",
        "tables.list",
        "tables.detail",
        "tables.error",
        "tables.created",
        "tables.updated",
    ]


def test_connected_message() -> None:
    session = _session(("OWNER",))
    topics = base_topics("tables", ("created",))
    body = orjson.loads(encode(connected_message(session, topics)))
    assert keys(encode(connected_message(session, topics))) == [
        "topic",
        "entity",
        "action",
        "data",
        "metadata",
        "timestamp",
    ]
    assert body["topic"] == "system.connected"
    assert (body["entity"], body["action"]) == ("system", "connected")
    assert body["data"] == {
        "allowedTopics": topics,
        "entity": "tables",
        "roles": ["OWNER"],
        "sectionId": "3f1c",
    }
    assert list(body["data"]) == ["allowedTopics", "entity", "roles", "sectionId"]
    assert body["metadata"] == {"sectionId": "3f1c", "sessionId": "sid-1", "userId": "user-7"}
    assert RFC3339_UTC.match(body["timestamp"])


def test_connected_roles_are_null_when_the_claim_is_absent() -> None:
    body = orjson.loads(encode(connected_message(_session(None), [])))
    assert "roles" in body["data"]
    assert body["data"]["roles"] is None
    assert orjson.loads(encode(connected_message(_session(()), [])))["data"]["roles"] == []


def test_pong_message_exactly() -> None:
    body = orjson.loads(encode(pong_message()))
    assert list(body) == ["topic", "entity", "action", "timestamp"]
    assert body["topic"] == "system.pong"
    assert (body["entity"], body["action"]) == ("system", "pong")


def test_list_message() -> None:
    query = ListQuery.from_payload({"page": 2, "search": "x", "filters": {"Status": "OPEN"}})
    body = orjson.loads(encode(list_message("tables", "main-hall", query, {"data": []})))
    assert body["topic"] == "tables.list"
    assert body["resourceId"] == "main-hall"
    assert body["data"] == {"data": []}
    assert body["metadata"] == {
        "limit": "20",
        "origin": "request",
        "page": "2",
        "search": "x",
        "sectionId": "main-hall",
        "status": "OPEN",
    }
    refresh = orjson.loads(encode(list_message("tables", "s", ListQuery(), {}, origin="refresh")))
    assert refresh["metadata"]["origin"] == "refresh"


@pytest.mark.parametrize(
    ("entity", "key"),
    [
        ("restaurants", "restaurantId"),
        ("tables", "tableId"),
        ("reservations", "reservationId"),
        ("reviews", "reviewId"),
        ("sections", "resourceSectionId"),
        ("objects", "objectId"),
        ("menus", "menuId"),
        ("dishes", "dishId"),
        ("images", "imageId"),
        ("section-objects", "sectionObjectId"),
        ("payments", "paymentId"),
        ("subscriptions", "subscriptionId"),
        ("subscription-plans", "subscriptionPlanId"),
        ("users", "userId"),
    ],
)
def test_detail_message_uses_the_entity_id_key(entity: str, key: str) -> None:
    spec = CATALOGUE.by_name[entity]
    body = orjson.loads(encode(detail_message(spec, "main-hall", "id-9", {"id": "id-9"})))
    assert body["topic"] == f"{entity}.detail"
    assert body["resourceId"] == "id-9"
    assert body["data"] == {"id": "id-9"}
    assert body["metadata"] == {"origin": "request", "sectionId": "main-hall", key: "id-9"}


def test_error_message() -> None:
    raw = encode(error_message("tables", "main-hall", "list", "invalid payload"))
    body = orjson.loads(raw)
    assert keys(raw) == ["topic", "entity", "action", "resourceId", "data", "metadata", "timestamp"]
    assert body["topic"] == "tables.error"
    assert (body["entity"], body["action"], body["resourceId"]) == ("tables", "error", "main-hall")
    assert body["data"] == {"error": "invalid payload"}
    assert body["metadata"] == {"action": "list", "reason": "invalid payload", "sectionId": "main-hall"}


def test_error_message_without_reason_keeps_data_error_and_drops_metadata_reason() -> None:
    body = orjson.loads(encode(error_message("tables", "s", "unknown", "")))
    assert body["data"] == {"error": ""}
    assert body["metadata"] == {"action": "unknown", "sectionId": "s"}
