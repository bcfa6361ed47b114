"""Kafka events to the entitled sockets: real broker, real gateway process, real clients.

The backend's payload shapes (reference §8.3) go to the platform's topics; each socket must
receive exactly the events the catalogue's delivery rule entitles it to, field by field, in
partition order, and nothing else.

"Does not receive" is proven without sleeping: every event of one test goes to one partition
(one key), so when a socket's next event is a later entitled one, the earlier event was not
delivered to it. For the events after a socket's last entitled one, ``expect_nothing_more``
pings the socket once every socket has received its events: frames already written to it
would precede the pong.

Other tests share the broker; every id here carries a fresh prefix and the clients ignore
events of other ids (tests/kafka_support.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests import kafka_support as ks
from tests.kafka_support import EventClient, EventProducer, unique
from tests.support import GatewayProcess, RecordingUpstream, gateway_env, make_token, running_gateway


@pytest.fixture(scope="module")
def events_gateway(
    kafka_brokers: str, upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = gateway_env(upstream.url, KAFKA_ENABLED="true", KAFKA_BROKERS=kafka_brokers)
    with running_gateway(env, tmp_path_factory.mktemp("events-gateway"), ready=True) as process:
        yield process


@dataclass(frozen=True)
class Sock:
    entity: str
    section: str
    user: str
    role: str


@dataclass(frozen=True)
class Ev:
    topic: str
    shape: tuple[dict[str, Any], dict[str, Any]]
    receivers: frozenset[str]


def ev(topic: str, shape: tuple[dict[str, Any], dict[str, Any]], *receivers: str) -> Ev:
    return Ev(f"mesa-ya.{topic}.events", shape, frozenset(receivers))


async def test_each_socket_gets_exactly_the_events_it_is_entitled_to(
    events_gateway: GatewayProcess,
    kafka_brokers: str,
    http: aiohttp.ClientSession,
    upstream: RecordingUpstream,
) -> None:
    p = unique("d")
    r1, r2, r3 = f"{p}-r1", f"{p}-r2", f"{p}-r3"
    s1, s2 = f"{p}-s1", f"{p}-s2"
    u1, u2, u3, u9 = f"{p}-u1", f"{p}-u2", f"{p}-u3", f"{p}-u9"
    o1, o2, admin = f"{p}-o1", f"{p}-o2", f"{p}-admin"
    upstream.own(o1, r1)  # the tenant check (tests/e2e/test_tenant_isolation.py)
    upstream.own(o2, r2)

    sockets = {
        # restaurants: public
        "rest_user": Sock("restaurants", r3, u1, "USER"),
        "rest_owner2": Sock("restaurants", r2, o2, "OWNER"),
        "rest_admin_all": Sock("restaurants", "*", admin, "ADMIN"),
        # tables: by data.sectionId
        "tbl_user1_s1": Sock("tables", s1, u1, "USER"),
        "tbl_owner1_s1": Sock("tables", s1, o1, "OWNER"),
        "tbl_user2_s2": Sock("tables", s2, u2, "USER"),
        "tbl_admin_s2": Sock("tables", s2, admin, "ADMIN"),
        "tbl_admin_all": Sock("tables", "*", admin, "ADMIN"),
        # reservations: staff by restaurant, a USER only their own
        "res_owner1": Sock("reservations", r1, o1, "OWNER"),
        "res_owner2": Sock("reservations", r2, o2, "OWNER"),
        "res_admin_r1": Sock("reservations", r1, admin, "ADMIN"),
        "res_admin_all": Sock("reservations", "*", admin, "ADMIN"),
        "res_u1_r1": Sock("reservations", r1, u1, "USER"),
        "res_u2_r1": Sock("reservations", r1, u2, "USER"),
        "res_u3_r1": Sock("reservations", r1, u3, "USER"),
        # menus and dishes share a topic; both by restaurant
        "menus_r1": Sock("menus", r1, u2, "USER"),
        "menus_r2": Sock("menus", r2, u1, "USER"),
        "menus_admin_all": Sock("menus", "*", admin, "ADMIN"),
        "dishes_r1": Sock("dishes", r1, o1, "OWNER"),
        "dishes_r2": Sock("dishes", r2, u1, "USER"),
        "dishes_admin_all": Sock("dishes", "*", admin, "ADMIN"),
        # payments and subscriptions: staff by restaurant
        "pay_owner1": Sock("payments", r1, o1, "OWNER"),
        "pay_owner2": Sock("payments", r2, o2, "OWNER"),
        "pay_admin_all": Sock("payments", "*", admin, "ADMIN"),
        "sub_owner1": Sock("subscriptions", r1, o1, "OWNER"),
        "sub_owner2": Sock("subscriptions", r2, o2, "OWNER"),
        # public / admin-only entities
        "plans_user": Sock("subscription-plans", r3, u1, "USER"),
        "upgrades_admin": Sock("owner-upgrades", "requests", admin, "ADMIN"),
        "users_admin": Sock("users", "all", admin, "ADMIN"),
    }
    events = [
        ev("restaurants", ks.restaurant_updated(r1, o1), "rest_user", "rest_owner2", "rest_admin_all"),
        ev("restaurants", ks.restaurant_status_changed(r1, o1), "rest_user", "rest_owner2", "rest_admin_all"),
        ev(
            "tables",
            ks.table_event("updated", f"{p}-t1", s1),
            "tbl_user1_s1",
            "tbl_owner1_s1",
            "tbl_admin_all",
        ),
        ev(
            "tables",
            ks.table_event("updated", f"{p}-t2", s2, number=2),
            "tbl_user2_s2",
            "tbl_admin_s2",
            "tbl_admin_all",
        ),
        ev(
            "tables",
            ks.table_event("deleted", f"{p}-t1", s1, status="BLOCKED"),
            "tbl_user1_s1",
            "tbl_owner1_s1",
            "tbl_admin_all",
        ),
        ev(
            "reservations",
            ks.reservation_event("created", f"{p}-res1", r1, u1),
            "res_owner1",
            "res_admin_r1",
            "res_admin_all",
            "res_u1_r1",
        ),
        ev(
            "reservations",
            ks.reservation_event("created", f"{p}-res2", r1, u2),
            "res_owner1",
            "res_admin_r1",
            "res_admin_all",
            "res_u2_r1",
        ),
        ev(
            "reservations",
            ks.reservation_event("created", f"{p}-res3", r2, u2),
            "res_owner2",
            "res_admin_all",
            "res_u2_r1",
        ),
        ev(
            "reservations",
            ks.reservation_event("deleted", f"{p}-res1", r1, u1),
            "res_owner1",
            "res_admin_r1",
            "res_admin_all",
            "res_u1_r1",
        ),
        ev(
            "reservations",
            ks.reservation_event("created", f"{p}-res4", r3, u3),
            "res_admin_all",
            "res_u3_r1",
        ),
        ev("menus", ks.menu_event("created", f"{p}-m1", r1), "menus_r1", "menus_admin_all"),
        ev(
            "menus",
            ks.dish_event("created", f"{p}-d1", r1, f"{p}-m1", metadata_restaurant=True),
            "dishes_r1",
            "dishes_admin_all",
        ),
        ev(
            "menus",
            ks.dish_event("updated", f"{p}-d2", r2, f"{p}-m2", metadata_restaurant=False),
            "dishes_r2",
            "dishes_admin_all",
        ),
        ev("menus", ks.menu_event("updated", f"{p}-m2", r2), "menus_r2", "menus_admin_all"),
        ev("menus", ks.menu_event("deleted", f"{p}-m1", r1), "menus_r1", "menus_admin_all"),
        ev(
            "payments",
            ks.payment_event("status_changed", f"{p}-pay1", r1, u1),
            "pay_owner1",
            "pay_admin_all",
        ),
        ev(
            "payments",
            ks.payment_event("created", f"{p}-pay2", r2, u2, status="PENDING"),
            "pay_owner2",
            "pay_admin_all",
        ),
        ev("subscriptions", ks.subscription_status_changed(f"{p}-sub1", r1), "sub_owner1"),
        ev("subscriptions", ks.plan_event("updated", f"{p}-plan1"), "plans_user"),
        ev("subscriptions", ks.subscription_status_changed(f"{p}-sub2", r2), "sub_owner2"),
        ev("owner-upgrade", ks.owner_upgrade_status_changed(f"{p}-req1", u1, r1), "upgrades_admin"),
        ev("auth", ks.user_signed_up(u9), "users_admin"),
    ]
    assert set().union(*(e.receivers for e in events)) == set(sockets)

    clients: dict[str, EventClient] = {}
    for name, sock in sockets.items():
        token = make_token(sock.user, [sock.role])
        clients[name] = await EventClient.connect(
            http, events_gateway.ws_url, sock.entity, sock.section, token, prefix=p, name=name
        )
        assert clients[name].connected["data"]["entity"] == sock.entity

    producer = EventProducer(kafka_brokers)
    for event in events:
        producer.send(event.topic, event.shape[0], key=p)  # one key: one partition per topic
    producer.flush()

    for name, client in clients.items():
        await client.expect([e.shape[1] for e in events if name in e.receivers])
    for client in clients.values():
        await client.expect_nothing_more()
    for client in clients.values():
        await client.close()


@pytest.mark.parametrize(
    ("entity", "section", "roles"),
    [
        ("payments", "r-1", ["USER"]),
        ("subscriptions", "r-1", ["USER"]),
        ("owner-upgrades", "any", ["OWNER", "USER"]),
        ("users", "any", ["OWNER"]),
        ("tables", "*", ["OWNER"]),
        ("reservations", "*", ["USER"]),
    ],
)
async def test_roles_that_may_not_see_an_entity_or_every_section_cannot_subscribe(
    events_gateway: GatewayProcess, http: aiohttp.ClientSession, entity: str, section: str, roles: list[str]
) -> None:
    token = make_token("someone", roles)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(f"{events_gateway.ws_url}/ws/{entity}/{section}/{token}")
    assert refused.value.status == 403


async def test_events_of_one_partition_reach_each_socket_in_partition_order(
    events_gateway: GatewayProcess, kafka_brokers: str, http: aiohttp.ClientSession
) -> None:
    p = unique("o")
    section = f"{p}-s"
    user = await EventClient.connect(
        http, events_gateway.ws_url, "tables", section, make_token(f"{p}-u", ["USER"]), prefix=p, name="user"
    )
    admin = await EventClient.connect(
        http, events_gateway.ws_url, "tables", "*", make_token(f"{p}-a", ["ADMIN"]), prefix=p, name="admin"
    )
    producer = EventProducer(kafka_brokers)
    for n in range(300):
        payload, _ = ks.table_event("updated", f"{p}-t{n}", section, number=n)
        producer.send("mesa-ya.tables.events", payload, key=f"{p}-k{n % 6}", partition=n % 3)
    producer.flush()
    partitions = {d.partition for d in producer.delivered}
    assert partitions == {0, 1, 2}
    place = {orjson.loads(d.value or b"")["entity_id"]: (d.partition, d.offset) for d in producer.delivered}

    for client in (user, admin):
        received = [(await client.next_event())["resourceId"] for _ in range(300)]
        assert sorted(received) == sorted(place)
        for partition in partitions:
            mine = [place[rid][1] for rid in received if place[rid][0] == partition]
            assert mine == sorted(mine), f"{client.name}: partition {partition} out of order"
        await client.expect_nothing_more()
        await client.close()


async def test_a_fresh_node_starts_at_the_end_of_each_topic(
    kafka_brokers: str, upstream: RecordingUpstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    p = unique("f")
    section = f"{p}-s"
    producer = EventProducer(kafka_brokers)
    for n in range(3):
        producer.send("mesa-ya.tables.events", ks.table_event("updated", f"{p}-old{n}", section)[0], key=p)
    producer.send("mesa-ya.restaurants.events", ks.restaurant_updated(f"{p}-old-r", f"{p}-o")[0], key=p)
    producer.flush()

    env = gateway_env(upstream.url, KAFKA_ENABLED="true", KAFKA_BROKERS=kafka_brokers)
    gateway = GatewayProcess(env, tmp_path / "fresh.log")
    try:
        gateway.wait_healthy(ready=True, timeout=60)
        tables = await EventClient.connect(
            http, gateway.ws_url, "tables", section, make_token(f"{p}-u", ["USER"]), prefix=p
        )
        restaurants = await EventClient.connect(
            http, gateway.ws_url, "restaurants", "any", make_token(f"{p}-u", ["USER"]), prefix=p
        )
        table_new, table_expected = ks.table_event("updated", f"{p}-new", section)
        restaurant_new, restaurant_expected = ks.restaurant_updated(f"{p}-new-r", f"{p}-o")
        producer.send("mesa-ya.tables.events", table_new, key=p)
        producer.send("mesa-ya.restaurants.events", restaurant_new, key=p)
        producer.flush()
        # the same partitions as the old records: the new one comes first, so no replay
        await tables.expect([table_expected])
        await restaurants.expect([restaurant_expected])
        await tables.expect_nothing_more()
        await restaurants.expect_nothing_more()
        await tables.close()
        await restaurants.close()
    finally:
        gateway.stop()
