"""The notifications socket end to end: a real gateway on a real Kafka broker, a fixture REST
server answering ``GET /api/v1/restaurants/me`` per token, real WebSocket clients.

``GET /ws/notifications`` gets every section's events under its role's topics: ADMIN all, an
OWNER the private events of the restaurants they own (and their own), a USER only their own
private events plus public ones. "Does not receive" is proven with sentinels: a later event of
the same partition that the socket does receive (tests/e2e/test_events_delivery.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests import kafka_support as ks
from tests.kafka_support import EventClient, EventProducer, scrape, unique
from tests.support import (
    GatewayProcess,
    RecordingUpstream,
    gateway_env,
    make_token,
    refusal,
    running_gateway,
)

ME = "/api/v1/restaurants/me"


@pytest.fixture(scope="module")
def bell_gateway(
    kafka_brokers: str, upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = gateway_env(upstream.url, KAFKA_ENABLED="true", KAFKA_BROKERS=kafka_brokers, REST_TIMEOUT="1s")
    with running_gateway(env, tmp_path_factory.mktemp("bell-gateway"), ready=True) as process:
        yield process


async def bell(
    http: aiohttp.ClientSession, gateway: GatewayProcess, token: str, prefix: str, *, header: bool = False
) -> EventClient:
    """A notifications socket (no ``system.connected`` is sent: a ping proves it is open)."""
    if header:
        ws = await http.ws_connect(
            f"{gateway.ws_url}/ws/notifications", headers={"Authorization": f"Bearer {token}"}
        )
    else:
        ws = await http.ws_connect(f"{gateway.ws_url}/ws/notifications?token={token}")
    client = EventClient(ws, f"bell/{prefix}", prefix)
    await ws.send_str('{"action":"ping"}')
    first = await client.receive(20)
    assert first["topic"] == "system.pong", first  # the first frame: no system.connected
    return client


async def expect_per_topic(client: EventClient, expected: list[dict[str, Any]]) -> None:
    """The next ``len(expected)`` events are ``expected``, in order within each topic."""
    got = [await client.next_event() for _ in expected]

    def by_entity(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            grouped.setdefault(event["entity"], []).append(event)
        return grouped

    assert by_entity(got) == by_entity(expected), client.name


async def test_a_missing_or_invalid_token_is_refused_before_the_upgrade(
    bell_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    refused = (401, {"message": "invalid or missing token"})
    assert await refusal(http, bell_gateway, "/ws/notifications") == refused
    assert await refusal(http, bell_gateway, "/ws/notifications?token=") == refused
    assert await refusal(http, bell_gateway, "/ws/notifications?token=garbage") == refused
    expired = make_token("u", exp_in=-60)
    assert await refusal(http, bell_gateway, f"/ws/notifications?token={expired}") == refused
    other = make_token("u", secret="another-secret-0123456789-abcdefghijkl")
    assert await refusal(http, bell_gateway, "/ws/notifications", Authorization=f"Bearer {other}") == refused
    async with http.post(f"{bell_gateway.url}/ws/notifications") as response:
        assert response.status == 405
    assert scrape(bell_gateway.url).value("mesaya_handshakes_rejected_total", status="401") >= 5


async def test_each_role_gets_what_is_theirs_and_nothing_of_anyone_else(
    bell_gateway: GatewayProcess,
    upstream: RecordingUpstream,
    kafka_brokers: str,
    http: aiohttp.ClientSession,
) -> None:
    p = unique("nb")
    user_a, user_b, owner_a, admin = f"{p}-ua", f"{p}-ub", f"{p}-oa", f"{p}-admin"
    rest_a, rest_b = f"{p}-ra", f"{p}-rb"
    upstream.own(owner_a, rest_a)
    clients = {
        "user_a": await bell(http, bell_gateway, make_token(user_a), p),
        "user_a_header": await bell(http, bell_gateway, make_token(user_a), p, header=True),
        "user_b": await bell(http, bell_gateway, make_token(user_b), p),
        "owner_a": await bell(http, bell_gateway, make_token(owner_a, ["OWNER"]), p),
        "admin": await bell(http, bell_gateway, make_token(admin, ["ADMIN"]), p),
    }
    res_b_of_b = ks.reservation_event("created", f"{p}-res1", rest_b, user_b)  # B's, for user B
    res_a_of_b = ks.reservation_event("created", f"{p}-res2", rest_a, user_b)  # A's, for user B
    res_a_of_a = ks.reservation_event("created", f"{p}-res3", rest_a, user_a)  # A's, for user A
    pay_b = ks.payment_event("created", f"{p}-pay1", rest_b, user_b)
    pay_a = ks.payment_event("created", f"{p}-pay2", rest_a, user_a)
    # sections whose restaurant the REST API knows: an owner's bell gets their own sections' tables
    upstream.rows["sections"] += [
        {"id": f"{p}-sec-a", "restaurantId": rest_a, "name": "A"},
        {"id": f"{p}-sec-b", "restaurantId": rest_b, "name": "B"},
    ]
    table_b = ks.table_event("updated", f"{p}-tab1", f"{p}-sec-b")  # not on a USER's list
    table_a = ks.table_event("updated", f"{p}-tab2", f"{p}-sec-a")
    restaurant = ks.restaurant_updated(f"{p}-rest9", f"{p}-someone")  # public; not owner A's
    restaurant_a = ks.restaurant_updated(rest_a, owner_a)
    producer = EventProducer(kafka_brokers)
    for topic, shapes in (
        ("reservations", (res_b_of_b, res_a_of_b, res_a_of_a)),
        ("payments", (pay_b, pay_a)),
        ("tables", (table_b, table_a)),
        ("restaurants", (restaurant, restaurant_a)),
    ):
        for payload, _ in shapes:
            producer.send(f"mesa-ya.{topic}.events", payload, key=p)  # one key: one partition
    producer.flush()

    # per socket, the events expected in order within each topic (topics interleave freely);
    # the others' events came first on the same partitions, so they had time to arrive
    mine = {
        "user_a": [res_a_of_a, pay_a, restaurant, restaurant_a],
        "user_a_header": [res_a_of_a, pay_a, restaurant, restaurant_a],
        "user_b": [res_b_of_b, res_a_of_b, pay_b, restaurant, restaurant_a],
        # owner A: restaurant A's reservations and payments, whoever booked them, its tables
        # (the section resolved through the REST API) and its own events; nothing of B's
        "owner_a": [res_a_of_b, res_a_of_a, pay_a, table_a, restaurant_a],
        "admin": [
            res_b_of_b,
            res_a_of_b,
            res_a_of_a,
            pay_b,
            pay_a,
            table_b,
            table_a,
            restaurant,
            restaurant_a,
        ],
    }
    for name, shapes in mine.items():
        await expect_per_topic(clients[name], [expected for _, expected in shapes])
    # the admin got the last event of every topic: every socket's share was written before
    for client in clients.values():
        await client.expect_nothing_more()
        await client.close()


async def test_status_changed_arrives_under_the_kafka_spelling_and_either_spelling_subscribes(
    bell_gateway: GatewayProcess, kafka_brokers: str, http: aiohttp.ClientSession
) -> None:
    p = unique("ns")
    user = f"{p}-u"
    client = await bell(http, bell_gateway, make_token(user), p)
    # both spellings are on the list: unsubscribing the hyphen one, subscribing it back is fine
    for action in ("unsubscribe", "subscribe"):
        await client.ws.send_str(
            orjson.dumps({"action": action, "topic": "reservations.status-changed"}).decode()
        )
    # a topic outside a USER's list is refused; an unknown action is ignored (no reply)
    await client.ws.send_str('{"action":"subscribe","topic":"tables.updated"}')
    refused = await client.receive()
    assert refused["topic"] == "notifications.error"
    assert refused["metadata"] == {"action": "subscribe", "reason": "topic not allowed", "sectionId": ""}
    await client.ws.send_str('{"action":"list_reservations","payload":{}}')
    await client.ws.send_str('{"action":"ping"}')
    assert (await client.receive())["topic"] == "system.pong"  # the list command got no reply
    changed = ks.reservation_event("status_changed", f"{p}-res", f"{p}-r", user)
    producer = EventProducer(kafka_brokers)
    producer.send("mesa-ya.reservations.events", changed[0], key=p)
    producer.flush()
    got = await client.next_event()
    assert got == changed[1]
    assert got["topic"] == "reservations.status_changed"
    await client.close()


async def test_an_owner_is_refused_when_the_rest_api_cannot_say_what_they_own(
    bell_gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    p = unique("nd")
    token = make_token(f"{p}-o", ["OWNER"])
    upstream.script(ME, status=500)
    try:
        assert await refusal(http, bell_gateway, f"/ws/notifications?token={token}") == (
            503,
            {"message": "ownership check unavailable"},
        )
        # a USER needs no ownership answer: admitted while the REST API is down
        client = await bell(http, bell_gateway, make_token(f"{p}-u"), p)
        await client.close()
    finally:
        upstream.scripts.pop(ME)
    client = await bell(http, bell_gateway, token, p)
    await client.close()


async def test_a_node_counts_notifications_sockets(
    bell_gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    p = unique("nc")
    clients = [await bell(http, bell_gateway, make_token(f"{p}-{i}"), p) for i in range(3)]
    assert scrape(bell_gateway.url).value("mesaya_open_sockets", entity="notifications") >= 3
    await asyncio.gather(*(client.close() for client in clients))
