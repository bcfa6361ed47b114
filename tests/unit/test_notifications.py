"""NotificationFeed and the push body rules, with fake connections (the e2e tests in
tests/e2e/test_notifications.py and test_broadcast.py run the real thing)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from mesaya_realtime.application.usecases.broadcast import (
    BroadcastRejected,
    decode_push,
    encode_push,
    parse_push,
)
from mesaya_realtime.application.usecases.commands import CommandService, Envelope
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.notifications import (
    NotificationFeed,
    PushTarget,
    notification_topics,
)
from mesaya_realtime.application.usecases.sessions import Session
from mesaya_realtime.application.usecases.snapshot_cache import SnapshotCache
from mesaya_realtime.application.usecases.snapshots import SnapshotService
from mesaya_realtime.domain.catalogue import CATALOGUE, NOTIFICATIONS
from mesaya_realtime.domain.events import decode_event
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.messages import Message
from mesaya_realtime.infrastructure.jwt_verifier import JwtVerifier
from tests.support import SECRET, make_token
from tests.unit.test_commands import FakeConnection


class NoOwnership:
    async def owned(self, principal: Principal) -> frozenset[str]:
        return frozenset()


def feed_with(
    *people: tuple[str, tuple[str, ...], frozenset[str]],
) -> tuple[NotificationFeed, dict[str, Session]]:
    hub = Hub(lambda payload: payload)
    feed = NotificationFeed(hub, NoOwnership())  # type: ignore[arg-type]
    sessions = {}
    for user, roles, owned in people:
        principal = Principal(user, roles, "sid", "tok")
        topics = feed.topics(principal)[1]
        session = Session(FakeConnection(), principal, NOTIFICATIONS, "", topics, owned=owned)
        hub.add(session)
        feed.join(session)
        sessions[user] = session
    return feed, sessions


def received(session: Session) -> list[dict[str, Any]]:
    connection = session.connection
    assert isinstance(connection, FakeConnection)
    return [orjson.loads(frame) for frame in connection.sent]


def event(topic: str, payload: dict[str, Any]) -> Any:
    return decode_event(topic, orjson.dumps(payload), CATALOGUE, CATALOGUE.topic_entities)


def test_the_topic_lists_per_role() -> None:
    admin = notification_topics(Principal("a", ("ADMIN",), "", ""))
    owner = notification_topics(Principal("o", ("OWNER",), "", ""))
    user = notification_topics(Principal("u", ("USER",), "", ""))
    nobody = notification_topics(Principal("n", (), "", ""))
    assert admin == owner
    assert "tables.updated" in owner
    assert "tables.updated" not in user
    assert {"reservations.status_changed", "reservations.status-changed", "payment.approved"} <= set(user)
    assert {"payments.created", "subscriptions.status_changed"} <= set(user)
    assert nobody == user


def test_private_events_reach_admin_the_owner_of_the_restaurant_and_the_user_only() -> None:
    feed, s = feed_with(
        ("admin", ("ADMIN",), frozenset()),
        ("owner-a", ("OWNER",), frozenset({"rest-a"})),
        ("owner-b", ("OWNER",), frozenset({"rest-b"})),
        ("user-1", ("USER",), frozenset()),
        ("user-2", ("USER",), frozenset()),
    )
    payload = {
        "event_type": "created",
        "entity_id": "res-1",
        "data": {"id": "res-1", "restaurantId": "rest-a", "userId": "user-1"},
        "metadata": {"user_id": "user-1"},
    }
    feed.deliver(event("mesa-ya.reservations.events", payload))
    got = {user: [m["resourceId"] for m in received(session)] for user, session in s.items()}
    assert got == {"admin": ["res-1"], "owner-a": ["res-1"], "owner-b": [], "user-1": ["res-1"], "user-2": []}
    # no restaurant named: ADMIN and the user only
    del payload["data"]["restaurantId"]  # type: ignore[attr-defined]
    payload["entity_id"] = "res-2"
    feed.deliver(event("mesa-ya.reservations.events", payload))
    assert [m["resourceId"] for m in received(s["owner-a"])] == ["res-1"]
    assert [m["resourceId"] for m in received(s["user-1"])] == ["res-1", "res-2"]


def test_public_events_follow_the_topic_list_the_role_policy_and_an_owners_restaurants() -> None:
    feed, s = feed_with(
        ("admin", ("ADMIN",), frozenset()),
        ("owner", ("OWNER",), frozenset({"rest-a"})),
        ("user", ("USER",), frozenset()),
    )
    table = {"event_type": "updated", "entity_id": "t-1", "data": {"tableId": "t-1", "sectionId": "s"}}
    feed.deliver(event("mesa-ya.tables.events", table))
    assert [m["topic"] for m in received(s["admin"])] == ["tables.updated"]
    assert received(s["owner"]) == []  # the section's restaurant is unknown here: fail closed
    assert received(s["user"]) == []  # not on a USER's list
    for restaurant in ("rest-b", "rest-a"):
        review = {
            "event_type": "created",
            "entity_id": f"rev-{restaurant}",
            "data": {"restaurantId": restaurant},
        }
        feed.deliver(event("mesa-ya.reviews.events", review))
        updated = {"event_type": "updated", "entity_id": restaurant, "data": {"id": restaurant}}
        feed.deliver(event("mesa-ya.restaurants.events", updated))
    assert [m["resourceId"] for m in received(s["owner"])] == ["rev-rest-a", "rest-a"]
    assert [m["resourceId"] for m in received(s["user"])] == ["rev-rest-b", "rest-b", "rev-rest-a", "rest-a"]


def test_a_push_naming_a_reservation_is_placed_by_its_events_and_left_sessions_get_nothing() -> None:
    feed, s = feed_with(("admin", ("ADMIN",), frozenset()), ("user-1", ("USER",), frozenset()))
    payload = {
        "event_type": "created",
        "entity_id": "res-9",
        "data": {"id": "res-9", "restaurantId": "r", "userId": "user-1"},
    }
    feed.deliver(event("mesa-ya.reservations.events", payload))
    push = Message("payment.approved", "payment", "status-changed", resource_id="res-9")
    assert feed.push(push, PushTarget(reservation_id="res-9")) == 2
    assert feed.push(push, PushTarget(reservation_id="unknown")) == 1  # ADMIN only
    asyncio.run(feed.leave(s["user-1"]))
    assert feed.push(push, PushTarget(user_id="user-1")) == 1


def test_push_bodies() -> None:
    push = parse_push(
        orjson.dumps(
            {"event": "payment.approved", "payment_id": "p", "amount": 0, "data": {"x": 1}, "user_id": "u"}
        )
    )
    assert push.message.topic == "payment.approved"
    assert push.message.resource_id == "p"  # no reservation: the payment
    assert push.message.data == {"event": "payment.approved", "payment_id": "p", "x": 1}  # amount 0 left out
    assert push.target.user_id == "u"
    decoded = decode_push(encode_push(push))
    assert decoded is not None
    assert decoded[0] == push.message
    assert decoded[1].user_id == "u"
    assert decode_push(b"garbage") is None
    assert decode_push(b'{"v":2}') is None
    for bad in (b"[]", b'{"event":1}', b'{"event":"e","amount":true}', b'{"event":"e","user_id":3}'):
        with pytest.raises(BroadcastRejected, match="invalid request body"):
            parse_push(bad)
    with pytest.raises(BroadcastRejected, match="event field is required"):
        parse_push(b"{}")


async def test_a_renewal_may_not_change_the_roles_of_a_notifications_socket() -> None:
    feed, s = feed_with(("admin-1", ("ADMIN",), frozenset()))
    service = CommandService(
        SnapshotService(None, SnapshotCache(max_entries=10, ttl_seconds=60)),  # type: ignore[arg-type]
        features=[feed],
        verifier=JwtVerifier(secret=SECRET),
    )
    session = s["admin-1"]
    downgraded = Envelope("authenticate", "", {"token": make_token("admin-1", ["USER"])})
    refused = await service.handle(session, downgraded)
    assert refused is not None
    assert refused.topic == "notifications.error"
    assert refused.metadata is not None
    assert refused.metadata["reason"] == "forbidden"
    assert session.principal.roles == ("ADMIN",)
    same = Envelope("authenticate", "", {"token": make_token("admin-1", ["ADMIN"])})
    renewed = await service.handle(session, same)
    assert renewed is not None
    assert renewed.topic == "system.authenticated"


def test_a_push_on_a_topic_no_list_holds_still_reaches_the_entitled() -> None:
    feed, s = feed_with(("admin", ("ADMIN",), frozenset()), ("user-1", ("USER",), frozenset()))
    push = Message("payment.canceled", "payment", "status-changed", resource_id="res-1")
    assert feed.push(push, PushTarget(user_id="user-1")) == 2
    assert [m["topic"] for m in received(s["user-1"])] == ["payment.canceled"]
