"""The catalogue's delivery rules, through the real decode -> dispatch -> hub pipeline.

Sockets are in-memory fakes; each test states by hand which sockets receive an event.
"""

from __future__ import annotations

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
from mesaya_realtime.application.usecases.sessions import Session, base_topics
from mesaya_realtime.application.usecases.snapshot_cache import SnapshotCache
from mesaya_realtime.config import DEFAULT_ALLOWED_ACTIONS
from mesaya_realtime.domain.catalogue import CATALOGUE, ENTITIES, Visibility
from mesaya_realtime.domain.identity import Principal
from tests import kafka_support as ks
from tests.support import FakeConnection

ALLOWED = tuple(DEFAULT_ALLOWED_ACTIONS.split(","))


class World:
    """A hub with named sockets and an ingest that feeds it records."""

    def __init__(self, allowed: tuple[str, ...] = ALLOWED) -> None:
        self.hub = Hub(lambda payload: payload)
        self.sockets: dict[str, FakeConnection] = {}
        self.sessions: dict[str, Session] = {}
        context = EventContext(
            hub=self.hub,
            cache=SnapshotCache(max_entries=100, ttl_seconds=30),
            allowed_actions=frozenset(allowed),
        )
        self.ingest = EventIngest(EventDispatcher(context), CATALOGUE, {})
        self.offset = 0
        self.allowed = allowed

    def connect(self, name: str, entity: str, section: str, user: str, *roles: str) -> None:
        spec = CATALOGUE.by_name[entity]
        connection = FakeConnection()
        session = Session(
            connection=connection,
            principal=Principal(user_id=user, roles=roles, session_id=name, token="t"),
            entity=spec,
            section=section,
            topics=set(base_topics(spec.name, self.allowed)),
        )
        self.hub.add(session)
        self.sockets[name] = connection
        self.sessions[name] = session

    def produce(self, topic: str, payload: dict[str, Any]) -> None:
        self.offset += 1
        self.ingest.process([Record(topic, 0, self.offset, orjson.dumps(payload))])

    def receivers(self) -> set[str]:
        """Names of the sockets that got something since the last call (and clear them)."""
        got = {name for name, connection in self.sockets.items() if connection.frames}
        for connection in self.sockets.values():
            connection.frames.clear()
        return got


# -- rules declared in the catalogue ----------------------------------------------------------


def test_the_catalogue_states_each_entity_rule() -> None:
    rules = {e.name: (e.delivery.visibility, e.delivery.scope_paths, e.delivery.user_paths) for e in ENTITIES}
    restaurant = ("data.restaurantId", "metadata.restaurant_id")
    private_users = ("data.userId", "metadata.user_id")
    assert rules == {
        "restaurants": (Visibility.PUBLIC, (), ()),
        "tables": (Visibility.SCOPED, ("data.sectionId",), ()),
        "reservations": (Visibility.PRIVATE, restaurant, private_users),
        "reviews": (Visibility.SCOPED, restaurant, ()),
        "sections": (Visibility.SCOPED, (*restaurant, "data.id"), ()),
        "objects": (Visibility.PUBLIC, (), ()),
        "menus": (Visibility.SCOPED, restaurant, ()),
        "dishes": (Visibility.SCOPED, restaurant, ()),
        "images": (Visibility.PUBLIC, (), ()),
        "section-objects": (Visibility.SCOPED, ("data.sectionId",), ()),
        "payments": (Visibility.PRIVATE, restaurant, private_users),
        "subscriptions": (Visibility.PRIVATE, restaurant, private_users),
        "subscription-plans": (Visibility.PUBLIC, (), ()),
        "users": (Visibility.PUBLIC, (), ()),
        "owner-upgrades": (Visibility.PUBLIC, (), ()),
    }


# -- tables: by data.sectionId ------------------------------------------------------------------


def test_tables_reach_the_sockets_of_their_section_and_the_admin_wildcard() -> None:
    world = World()
    world.connect("user-s1", "tables", "s-1", "u-1", "USER")
    world.connect("owner-s1", "tables", "s-1", "o-1", "OWNER")
    world.connect("user-s2", "tables", "s-2", "u-2", "USER")
    world.connect("admin-s2", "tables", "s-2", "a-1", "ADMIN")
    world.connect("admin-all", "tables", "*", "a-2", "ADMIN")
    world.connect("restaurants", "restaurants", "s-1", "u-1", "USER")

    payload, expected = ks.table_event("updated", "t-1", "s-1")
    world.produce("mesa-ya.tables.events", payload)
    assert world.sockets["user-s1"].messages() == [expected]
    assert world.receivers() == {"user-s1", "owner-s1", "admin-all"}

    world.produce("mesa-ya.tables.events", ks.table_event("deleted", "t-2", "s-2")[0])
    assert world.receivers() == {"user-s2", "admin-s2", "admin-all"}


def test_a_table_event_without_a_section_reaches_only_the_admin_wildcard() -> None:
    world = World()
    world.connect("user-s1", "tables", "s-1", "u-1", "USER")
    world.connect("admin-all", "tables", "*", "a-1", "ADMIN")
    world.produce("mesa-ya.tables.events", {"event_type": "updated", "entity_id": "t-1", "data": {}})
    assert world.receivers() == {"admin-all"}
    # the section is never taken from entity_id (reference §13.4)
    world.produce("mesa-ya.tables.events", {"event_type": "updated", "entity_id": "s-1", "data": None})
    assert world.receivers() == {"admin-all"}


# -- restaurant-scoped entities -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "topic", "payload"),
    [
        ("menus", "mesa-ya.menus.events", ks.menu_event("updated", "m-1", "r-1")[0]),
        (
            "dishes",
            "mesa-ya.menus.events",
            ks.dish_event("updated", "d-1", "r-1", "m-1", metadata_restaurant=False)[0],
        ),
        (
            "reviews",
            "mesa-ya.reviews.events",
            {"event_type": "created", "entity_id": "rv-1", "data": {"id": "rv-1", "restaurantId": "r-1"}},
        ),
        (
            "sections",
            "mesa-ya.sections.events",
            {"event_type": "updated", "entity_id": "sec-1", "data": {"id": "sec-1", "restaurantId": "r-1"}},
        ),
        (
            "dishes",
            "mesa-ya.menus.events",
            {
                "event_type": "deleted",
                "entity_id": "d-2",
                "entity_subtype": "dish",
                "data": {"deleted": True},
                "metadata": {"restaurant_id": "r-1"},
            },
        ),
    ],
)
def test_restaurant_scoped_entities_follow_the_restaurant(
    entity: str, topic: str, payload: dict[str, Any]
) -> None:
    world = World()
    world.connect("user-r1", entity, "r-1", "u-1", "USER")
    world.connect("owner-r1", entity, "r-1", "o-1", "OWNER")
    world.connect("user-r2", entity, "r-2", "u-2", "USER")
    world.connect("admin-all", entity, "*", "a-1", "ADMIN")
    world.produce(topic, payload)
    assert world.receivers() == {"user-r1", "owner-r1", "admin-all"}


def test_dishes_and_menus_on_one_topic_reach_only_their_entity() -> None:
    world = World()
    world.connect("menus", "menus", "r-1", "u-1", "USER")
    world.connect("dishes", "dishes", "r-1", "u-1", "USER")
    world.produce(
        "mesa-ya.menus.events", ks.dish_event("created", "d-1", "r-1", "m-1", metadata_restaurant=True)[0]
    )
    assert world.receivers() == {"dishes"}
    world.produce("mesa-ya.menus.events", ks.menu_event("created", "m-1", "r-1")[0])
    assert world.receivers() == {"menus"}


def test_a_section_event_also_reaches_sockets_on_that_section_id() -> None:
    world = World()
    world.connect("by-restaurant", "sections", "r-1", "o-1", "OWNER")
    world.connect("by-section", "sections", "sec-1", "o-1", "OWNER")
    world.connect("other", "sections", "sec-2", "o-2", "OWNER")
    world.produce(
        "mesa-ya.sections.events",
        {"event_type": "updated", "entity_id": "sec-1", "data": {"id": "sec-1", "restaurantId": "r-1"}},
    )
    assert world.receivers() == {"by-restaurant", "by-section"}


# -- private entities -------------------------------------------------------------------------


def test_reservations_reach_staff_of_the_restaurant_and_only_their_own_user() -> None:
    world = World()
    world.connect("owner-r1", "reservations", "r-1", "o-1", "OWNER")
    world.connect("admin-r1", "reservations", "r-1", "a-1", "ADMIN")
    world.connect("owner-r2", "reservations", "r-2", "o-2", "OWNER")
    world.connect("u1-on-r1", "reservations", "r-1", "u-1", "USER")
    world.connect("u1-elsewhere", "reservations", "mine", "u-1", "USER")
    world.connect("u2-on-r1", "reservations", "r-1", "u-2", "USER")
    world.connect("admin-all", "reservations", "*", "a-2", "ADMIN")

    payload, expected = ks.reservation_event("created", "res-1", "r-1", "u-1")
    world.produce("mesa-ya.reservations.events", payload)
    assert world.sockets["u1-on-r1"].messages() == [expected]
    assert world.receivers() == {"owner-r1", "admin-r1", "u1-on-r1", "u1-elsewhere", "admin-all"}

    world.produce("mesa-ya.reservations.events", ks.reservation_event("deleted", "res-2", "r-1", "u-2")[0])
    assert world.receivers() == {"owner-r1", "admin-r1", "u2-on-r1", "admin-all"}


def test_a_private_event_names_its_user_by_metadata_too() -> None:
    world = World()
    world.connect("u1", "reservations", "r-1", "u-1", "USER")
    world.connect("u2", "reservations", "r-1", "u-2", "USER")
    world.produce(
        "mesa-ya.reservations.events",
        {
            "event_type": "updated",
            "entity_id": "res-1",
            "data": {"id": "res-1"},
            "metadata": {"user_id": "u-1"},
        },
    )
    assert world.receivers() == {"u1"}


def test_an_owner_is_a_user_too_for_their_own_reservation() -> None:
    world = World()
    world.connect("owner-r2", "reservations", "r-2", "o-2", "OWNER")
    world.produce("mesa-ya.reservations.events", ks.reservation_event("created", "res-1", "r-1", "o-2")[0])
    assert world.receivers() == {"owner-r2"}


@pytest.mark.parametrize(
    ("entity", "topic", "payload"),
    [
        ("payments", "mesa-ya.payments.events", ks.payment_event("status_changed", "p-1", "r-1", "u-1")[0]),
        ("subscriptions", "mesa-ya.subscriptions.events", ks.subscription_status_changed("sub-1", "r-1")[0]),
    ],
)
def test_staff_only_private_entities_follow_the_restaurant(
    entity: str, topic: str, payload: dict[str, Any]
) -> None:
    world = World()
    world.connect("owner-r1", entity, "r-1", "o-1", "OWNER")
    world.connect("owner-r2", entity, "r-2", "o-2", "OWNER")
    world.connect("admin-all", entity, "*", "a-1", "ADMIN")
    world.produce(topic, payload)
    assert world.receivers() == {"owner-r1", "admin-all"}


# -- public entities ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "topic", "payload"),
    [
        ("restaurants", "mesa-ya.restaurants.events", ks.restaurant_updated("r-1", "o-1")[0]),
        ("restaurants", "mesa-ya.restaurants.events", ks.restaurant_status_changed("r-1", "o-1")[0]),
        ("subscription-plans", "mesa-ya.subscriptions.events", ks.plan_event("updated", "plan-1")[0]),
        ("objects", "mesa-ya.objects.events", {"event_type": "created", "entity_id": "obj-1", "data": {}}),
        ("images", "mesa-ya.images.events", {"event_type": "deleted", "entity_id": "img-1", "data": {}}),
    ],
)
def test_public_entities_reach_every_socket_of_the_entity(
    entity: str, topic: str, payload: dict[str, Any]
) -> None:
    world = World()
    world.connect("user", entity, "anything", "u-1", "USER")
    world.connect("owner", entity, "r-2", "o-2", "OWNER")
    world.connect("admin-all", entity, "*", "a-1", "ADMIN")
    world.connect("other-entity", "tables", "r-1", "u-1", "USER")
    world.produce(topic, payload)
    assert world.receivers() == {"user", "owner", "admin-all"}


def test_admin_only_entities_reach_their_admins() -> None:
    world = World()
    world.connect("upgrades", "owner-upgrades", "any", "a-1", "ADMIN")
    world.connect("users", "users", "any", "a-1", "ADMIN")
    world.produce("mesa-ya.owner-upgrade.events", ks.owner_upgrade_status_changed("req-1", "u-1", "r-1")[0])
    assert world.receivers() == {"upgrades"}
    world.produce("mesa-ya.auth.events", ks.user_signed_up("u-9")[0])
    assert world.receivers() == {"users"}


# -- topics and allowed actions -----------------------------------------------------------------


def test_a_socket_that_unsubscribed_from_a_topic_gets_nothing_of_it() -> None:
    world = World()
    world.connect("a", "tables", "s-1", "u-1", "USER")
    world.connect("b", "tables", "s-1", "u-2", "USER")
    world.sessions["a"].topics.discard("tables.updated")
    world.produce("mesa-ya.tables.events", ks.table_event("updated", "t-1", "s-1")[0])
    assert world.receivers() == {"b"}


def test_a_not_allowed_action_is_delivered_to_nobody() -> None:
    world = World(allowed=("created",))
    world.connect("a", "tables", "s-1", "u-1", "USER")
    world.sessions["a"].topics.add("tables.updated")  # even when subscribed explicitly
    world.produce("mesa-ya.tables.events", ks.table_event("updated", "t-1", "s-1")[0])
    assert world.receivers() == set()
    world.produce("mesa-ya.tables.events", ks.table_event("created", "t-1", "s-1")[0])
    assert world.receivers() == {"a"}


def test_events_of_a_batch_reach_a_socket_in_order() -> None:
    world = World()
    world.connect("a", "tables", "s-1", "u-1", "USER")
    records = [
        Record("mesa-ya.tables.events", 0, n, orjson.dumps(ks.table_event("updated", f"t-{n}", "s-1")[0]))
        for n in range(50)
    ]
    world.ingest.process(records)
    assert [m["resourceId"] for m in world.sockets["a"].messages()] == [f"t-{n}" for n in range(50)]


def test_one_frame_is_encoded_per_event_whatever_the_recipients() -> None:
    world = World()
    for n in range(5):
        world.connect(f"s{n}", "restaurants", "any", f"u-{n}", "USER")
    world.produce("mesa-ya.restaurants.events", ks.restaurant_updated("r-1", "o-1")[0])
    frames = [world.sockets[f"s{n}"].frames[0] for n in range(5)]
    assert all(frame is frames[0] for frame in frames)
