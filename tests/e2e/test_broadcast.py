"""``POST /broadcast`` end to end: two real gateway processes on one real Kafka broker, real
notifications sockets, a real REST fixture for owners' restaurants.

Authenticated (``BROADCAST_SECRET`` or an ADMIN JWT), validated as the Go service, written to the
gateway's own topic and answered once the broker acknowledged it, delivered on every node to
the notifications sockets the push names (and ADMIN), never to anyone else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
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
    running_gateway,
)

SECRET = "n8n-static-secret-0123456789abcdef"
OK = {"success": True, "message": "Message broadcasted successfully"}
UTC_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture(scope="module")
def nodes(
    kafka_brokers: str, upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two nodes of one deployment: same broker, same secret, separate processes."""
    env = gateway_env(
        upstream.url, KAFKA_ENABLED="true", KAFKA_BROKERS=kafka_brokers, BROADCAST_SECRET=SECRET
    )
    with (
        running_gateway({**env, "NODE_ID": "push-a"}, tmp_path_factory.mktemp("push-a"), ready=True) as a,
        running_gateway({**env, "NODE_ID": "push-b"}, tmp_path_factory.mktemp("push-b"), ready=True) as b,
    ):
        yield a, b


async def post(
    http: aiohttp.ClientSession, gateway: GatewayProcess, body: Any, token: str | None = SECRET
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(f"{gateway.url}/broadcast", data=data, headers=headers) as response:
        return response.status, orjson.loads(await response.read())


async def bell(http: aiohttp.ClientSession, gateway: GatewayProcess, token: str, prefix: str) -> EventClient:
    ws = await http.ws_connect(f"{gateway.ws_url}/ws/notifications?token={token}")
    client = EventClient(ws, f"bell/{gateway.url}", prefix)
    await ws.send_str('{"action":"ping"}')
    assert (await client.receive())["topic"] == "system.pong"
    return client


async def test_only_the_secret_or_an_admin_token_may_push(
    nodes: tuple[GatewayProcess, GatewayProcess], http: aiohttp.ClientSession
) -> None:
    a, _ = nodes
    body = {"event": "payment.approved", "reservation_id": unique("auth")}
    unauthorized = (401, {"message": "unauthorized"})
    assert await post(http, a, body, token=None) == unauthorized
    assert await post(http, a, body, token="") == unauthorized
    assert await post(http, a, body, token=SECRET + "x") == unauthorized
    assert await post(http, a, body, token=make_token("u-1")) == unauthorized  # a USER's JWT
    assert await post(http, a, body, token=make_token("o-1", ["OWNER"])) == unauthorized
    assert await post(http, a, body, token=make_token("adm", ["ADMIN"], exp_in=-60)) == unauthorized
    assert await post(http, a, body) == (200, {**OK, "event": "payment.approved"})
    assert await post(http, a, body, token=make_token("adm", ["ADMIN"])) == (
        200,
        {**OK, "event": "payment.approved"},
    )
    async with http.get(f"{a.url}/broadcast") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
    assert scrape(a.url).value("mesaya_broadcasts_total", outcome="refused") >= 6


async def test_bodies_are_validated_as_the_go_service_does(
    nodes: tuple[GatewayProcess, GatewayProcess], http: aiohttp.ClientSession
) -> None:
    a, _ = nodes
    invalid = (400, {"message": "invalid request body"})
    assert await post(http, a, b"{not json") == invalid
    assert await post(http, a, b"") == invalid
    assert await post(http, a, [1, 2]) == invalid
    assert await post(http, a, {"event": 5}) == invalid
    assert await post(http, a, {"event": "payment.approved", "amount": "12"}) == invalid
    assert await post(http, a, {"event": "payment.approved", "data": [1]}) == invalid
    assert await post(http, a, {"status": "approved"}) == (400, {"message": "event field is required"})
    assert await post(http, a, {"event": ""}) == (400, {"message": "event field is required"})
    huge = {"event": "payment.approved", "data": {"blob": "x" * (64 * 1024)}}
    assert await post(http, a, huge) == (413, {"message": "request body too large"})


async def test_a_push_on_one_node_reaches_the_entitled_sockets_of_every_node_and_no_one_else(
    nodes: tuple[GatewayProcess, GatewayProcess],
    upstream: RecordingUpstream,
    http: aiohttp.ClientSession,
) -> None:
    a, b = nodes
    p = unique("pb")
    user, other, owner, admin, restaurant = f"{p}-u", f"{p}-v", f"{p}-o", f"{p}-adm", f"{p}-r"
    upstream.own(owner, restaurant)
    clients = {
        "user_on_b": await bell(http, b, make_token(user), p),
        "user_on_a": await bell(http, a, make_token(user), p),
        "other_on_b": await bell(http, b, make_token(other), p),
        "owner_on_b": await bell(http, b, make_token(owner, ["OWNER"]), p),
        "admin_on_b": await bell(http, b, make_token(admin, ["ADMIN"]), p),
    }
    body = {
        "event": "payment.approved",
        "reservation_id": f"{p}-res1",
        "payment_id": f"{p}-pay1",
        "status": "approved",
        "amount": 25.5,
        "timestamp": "2026-12-01T10:00:00-05:00",
        "data": {"currency": "USD", "status": "APPROVED"},
        "user_id": user,
        "restaurant_id": restaurant,
    }
    assert await post(http, a, body) == (200, {**OK, "event": "payment.approved"})
    # the sentinel: a later push for the other user, which shows the first had time to arrive
    sentinel = {"event": "payment.failed", "reservation_id": f"{p}-res2", "user_id": other}
    assert (await post(http, a, sentinel))[0] == 200

    expected_data = {
        "event": "payment.approved",
        "reservation_id": f"{p}-res1",
        "payment_id": f"{p}-pay1",
        "status": "APPROVED",  # ``data`` is merged over the built fields
        "amount": 25.5,
        "timestamp": "2026-12-01T10:00:00-05:00",
        "currency": "USD",
    }
    for name in ("user_on_b", "user_on_a", "owner_on_b", "admin_on_b"):
        got = await clients[name].next_event()
        timestamp = got.pop("timestamp")
        assert UTC_Z.fullmatch(timestamp), timestamp  # UTC, not the node's local time
        assert got == {
            "topic": "payment.approved",
            "entity": "payment",
            "action": "status-changed",
            "resourceId": f"{p}-res1",
            "data": expected_data,
        }, name
    for name in ("other_on_b", "admin_on_b"):
        got = await clients[name].next_event()
        assert (got["topic"], got["resourceId"]) == ("payment.failed", f"{p}-res2"), name
    for client in clients.values():
        await client.expect_nothing_more()
        await client.close()


async def test_a_push_naming_only_a_reservation_finds_its_user_from_the_reservation_events(
    nodes: tuple[GatewayProcess, GatewayProcess], kafka_brokers: str, http: aiohttp.ClientSession
) -> None:
    a, b = nodes
    p = unique("pr")
    user, admin = f"{p}-u", f"{p}-adm"
    user_bell = await bell(http, b, make_token(user), p)
    admin_bell = await bell(http, b, make_token(admin, ["ADMIN"]), p)
    reservation = ks.reservation_event("created", f"{p}-res", f"{p}-r", user)
    producer = EventProducer(kafka_brokers)
    producer.send("mesa-ya.reservations.events", reservation[0], key=p)
    producer.flush()
    await user_bell.expect([reservation[1]])
    await admin_bell.expect([reservation[1]])
    before = scrape(b.url).value("mesaya_broadcasts_total", outcome="unresolved")
    # pushed on node A; node B knows the reservation from the event it delivered
    assert (await post(http, a, {"event": "payment.approved", "reservation_id": f"{p}-res"}))[0] == 200
    assert (await user_bell.next_event())["topic"] == "payment.approved"
    assert (await admin_bell.next_event())["topic"] == "payment.approved"
    # a reservation nobody knows: ADMIN only, counted
    assert (await post(http, a, {"event": "payment.failed", "reservation_id": f"{p}-unknown"}))[0] == 200
    assert (await admin_bell.next_event())["resourceId"] == f"{p}-unknown"
    await user_bell.expect_nothing_more()
    assert scrape(b.url).value("mesaya_broadcasts_total", outcome="unresolved") >= before + 1
    await user_bell.close()
    await admin_bell.close()


async def test_without_kafka_a_push_is_delivered_in_process(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    env = gateway_env("http://127.0.0.1:9", KAFKA_ENABLED="false", BROADCAST_SECRET=SECRET)
    with running_gateway(env, tmp_path) as gateway:
        p = unique("pi")
        client = await bell(http, gateway, make_token(f"{p}-u"), p)
        body = {"event": "payment.refunded", "reservation_id": f"{p}-res", "user_id": f"{p}-u"}
        assert await post(http, gateway, body) == (200, {**OK, "event": "payment.refunded"})
        got = await client.next_event()
        assert (got["topic"], got["resourceId"]) == ("payment.refunded", f"{p}-res")
        await client.close()


async def test_with_neither_a_secret_nor_admin_tokens_the_route_says_why(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    env = gateway_env("http://127.0.0.1:9", KAFKA_ENABLED="false", BROADCAST_ADMIN_TOKENS="false")
    with running_gateway(env, tmp_path) as gateway:
        status, body = await post(
            http, gateway, {"event": "payment.approved"}, token=make_token("a", ["ADMIN"])
        )
        assert status == 503
        assert "BROADCAST_SECRET" in body["message"]
