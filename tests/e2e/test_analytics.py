"""Analytics sockets end to end: a real gateway on a real Kafka broker, a real REST fixture
server (its ``/api/v1/<resource>/analytics`` echo the query they were called with), real
WebSocket clients.

The error table and its order, the first snapshot then ``system.connected``, the commands and
their merge rules, who may read which key, and the refresh after events of each dependency row
(reference §8.6) with the upstream calls counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests import kafka_support as ks
from tests.kafka_support import EventProducer, unique
from tests.support import (
    GatewayProcess,
    RecordingUpstream,
    gateway_env,
    make_token,
    refusal,
    running_gateway,
)

QUIET = 0.3


@pytest.fixture(scope="module")
def stats_gateway(
    kafka_brokers: str, upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = gateway_env(
        upstream.url,
        KAFKA_ENABLED="true",
        KAFKA_BROKERS=kafka_brokers,
        REST_TIMEOUT="1s",
        SNAPSHOT_REFRESH_QUIET=f"{QUIET}s",
        OWNERSHIP_CACHE_TTL="1s",
    )
    with running_gateway(env, tmp_path_factory.mktemp("stats-gateway"), ready=True) as process:
        yield process


class Stats:
    """One analytics socket: its first two messages, then what it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.first: dict[str, Any] = {}
        self.connected: dict[str, Any] = {}

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str, **headers: str) -> Stats:
        stats = cls(await http.ws_connect(url, headers=headers))
        stats.first = await stats.receive()
        stats.connected = await stats.receive()
        assert stats.connected["topic"] == "system.connected", stats.connected
        return stats

    async def receive(self, timeout: float = 20.0) -> dict[str, Any]:
        frame = await self.ws.receive(timeout=timeout)
        assert frame.type == aiohttp.WSMsgType.TEXT, frame
        message: dict[str, Any] = orjson.loads(frame.data)
        return message

    async def send(self, body: dict[str, Any]) -> dict[str, Any]:
        await self.ws.send_str(orjson.dumps(body).decode())
        return await self.receive()

    async def nothing_more(self) -> None:
        assert (await self.send({"action": "ping"}))["topic"] == "system.pong"

    async def close(self) -> None:
        await self.ws.close()


async def test_the_error_table_in_the_references_order(
    stats_gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    p = unique("ae")
    admin = make_token(f"{p}-adm", ["ADMIN"])
    cases: list[tuple[str, dict[str, str], tuple[int, str]]] = [
        ("/ws/analytics/admin/nothing", {}, (404, "analytics endpoint not available")),
        ("/ws/analytics/weird/users", {}, (404, "analytics endpoint not available")),
        ("/ws/analytics/admin/payments", {}, (400, "missing token")),  # the key before the token
        ("/ws/analytics/admin/payments?token=garbage", {}, (401, "invalid token")),
        ("/ws/analytics/restaurant/users", {}, (400, "missing token")),  # the token first
        (f"/ws/analytics/restaurant/users?token={admin}", {}, (400, "missing identifier")),
        (f"/ws/analytics/admin/payments?token={make_token(f'{p}-u')}", {}, (403, "forbidden")),
        (f"/ws/analytics/admin/payments?token={make_token(f'{p}-o', ['OWNER'])}", {}, (403, "forbidden")),
        (
            f"/ws/analytics/restaurant/users?restaurantId={p}-not-theirs",
            {"Authorization": f"Bearer {make_token(f'{p}-o', ['OWNER'])}"},
            (403, "forbidden"),
        ),
    ]
    for path, headers, (status, message) in cases:
        assert await refusal(http, stats_gateway, path, **headers) == (status, {"message": message}), path
    for answer, expected in (
        ((403, 0.0), (403, "forbidden")),
        ((401, 0.0), (403, "forbidden")),
        ((404, 0.0), (404, "analytics not found")),
        ((500, 0.0), (500, "unable to fetch analytics")),
        ((200, 3.0), (504, "analytics timeout")),  # slower than REST_TIMEOUT (1 s)
    ):
        upstream.script("/api/v1/payments/analytics", status=answer[0], delay=answer[1])
        got = await refusal(http, stats_gateway, f"/ws/analytics/admin/payments/{admin}")
        assert got == (expected[0], {"message": expected[1]}), answer
    upstream.scripts.pop("/api/v1/payments/analytics")


async def test_the_first_snapshot_then_system_connected_and_every_token_source(
    stats_gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    p = unique("ac")
    owner, restaurant = f"{p}-o", f"{p}-r"
    upstream.own(owner, restaurant)
    token = make_token(owner, ["OWNER"], sid=f"{p}-sid")
    base = f"{stats_gateway.ws_url}/ws/analytics/rest/Restaurant_Users"
    opened = [
        await Stats.open(http, f"{base}?restaurantId={restaurant}&startDate=2026-01-01&nope=1&token={token}"),
        await Stats.open(http, f"{base}/{token}?restaurantId={restaurant}&startDate=2026-01-01"),
        await Stats.open(
            http, f"{base}?restaurantId={restaurant}&startDate=2026-01-01", Authorization=f"Bearer {token}"
        ),
    ]
    for stats in opened:
        assert stats.first == {
            "topic": "analytics-restaurant-users.snapshot",
            "entity": "analytics-restaurant-users",
            "action": "snapshot",
            "resourceId": restaurant,
            "data": {
                "resource": "users",
                "total": stats.first["data"]["total"],
                "query": {"restaurantId": restaurant, "startDate": "2026-01-01"},  # `nope` filtered out
            },
            "metadata": {
                "scope": "restaurant",
                "identifier": restaurant,
                "query.startDate": "2026-01-01",
                "origin": "connect",
            },
            "timestamp": stats.first["timestamp"],
        }
        connected = stats.connected
        assert connected["data"] == {
            "mode": "analytics",
            "entity": "users",
            "topics": ["analytics-restaurant-users.snapshot", "analytics-restaurant-users.error"],
            "identifier": restaurant,
            "query": {"startDate": "2026-01-01"},
            "roles": ["OWNER"],
        }
        assert connected["metadata"] == {
            "scope": "restaurant",
            "analyticsKey": "analytics-restaurant-users",
            "sessionId": f"{p}-sid",
            "userId": owner,
        }
        await stats.close()
    calls = [
        c for c in upstream.calls("/api/v1/users/analytics") if c["query"].get("restaurantId") == restaurant
    ]
    assert len(calls) == 3
    assert calls[0]["authorization"] == f"Bearer {token}"
    # public keys need no token
    public = await Stats.open(http, f"{stats_gateway.ws_url}/ws/analytics/pub/dish")
    assert public.first["topic"] == "analytics-public-dishes.snapshot"
    assert public.connected["metadata"]["sessionId"].startswith("analytics-public-dishes-")
    assert "userId" not in public.connected["metadata"]
    await public.close()


async def test_commands_merge_into_the_request(
    stats_gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    p = unique("aq")
    admin = make_token(f"{p}-adm", ["ADMIN"])
    stats = await Stats.open(
        http, f"{stats_gateway.ws_url}/ws/analytics/admin/payments/{admin}?restaurantId={p}-r1"
    )
    reply = await stats.send(
        {"action": "fetch", "payload": {"query": {"startDate": "2026-02-01", "bogus": "x"}}}
    )
    assert reply["topic"] == "analytics-admin-payments.snapshot"
    assert reply["data"]["query"] == {"restaurantId": f"{p}-r1", "startDate": "2026-02-01"}
    assert reply["metadata"] == {
        "scope": "admin",
        "query.restaurantId": f"{p}-r1",
        "query.startDate": "2026-02-01",
        "origin": "request",
    }
    # an empty value deletes the key; the other stays
    reply = await stats.send({"action": "query", "payload": {"query": {"restaurantId": ""}}})
    assert reply["data"]["query"] == {"startDate": "2026-02-01"}
    refused = await stats.send({"action": "list_payments"})
    assert refused["topic"] == "analytics-admin-payments.error"
    assert refused["metadata"]["reason"] == "unsupported action"
    assert refused["metadata"]["action"] == "list_payments"  # the action sent (reference §6.4)
    bad = await stats.send({"action": "refresh", "payload": {"query": ["x"]}})
    assert bad["metadata"]["reason"] == "invalid payload"
    upstream.script("/api/v1/payments/analytics", status=500)
    failed = await stats.send({"action": "refresh"})
    upstream.scripts.pop("/api/v1/payments/analytics")
    assert failed["topic"] == "analytics-admin-payments.error"
    assert failed["metadata"]["reason"] == "unable to fetch analytics"
    await stats.close()


async def test_an_owner_cannot_switch_to_a_restaurant_they_do_not_own(
    stats_gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    p = unique("aw")
    owner = f"{p}-o"
    upstream.own(owner, f"{p}-mine")
    token = make_token(owner, ["OWNER"])
    stats = await Stats.open(
        http, f"{stats_gateway.ws_url}/ws/analytics/restaurant/users/{token}?restaurantId={p}-mine"
    )
    refused = await stats.send({"action": "refresh", "payload": {"identifier": f"{p}-theirs"}})
    assert refused["topic"] == "analytics-restaurant-users.error"
    assert refused["metadata"]["reason"] == "forbidden"
    again = await stats.send({"action": "refresh"})
    assert again["resourceId"] == f"{p}-mine"  # the socket's request did not change
    await stats.close()


async def test_an_owner_who_lost_the_restaurant_gets_no_more_refreshes_of_it(
    stats_gateway: GatewayProcess,
    upstream: RecordingUpstream,
    kafka_brokers: str,
    http: aiohttp.ClientSession,
) -> None:
    p = unique("al")
    kept, lost, restaurant = f"{p}-kept", f"{p}-lost", f"{p}-r"
    upstream.own(kept, restaurant)
    upstream.own(lost, restaurant)
    base = f"{stats_gateway.ws_url}/ws/analytics/restaurant/users"
    keeper = await Stats.open(http, f"{base}/{make_token(kept, ['OWNER'])}?restaurantId={restaurant}")
    loser = await Stats.open(http, f"{base}/{make_token(lost, ['OWNER'])}?restaurantId={restaurant}")
    upstream.disown(lost, restaurant)
    await asyncio.sleep(1.5)  # past OWNERSHIP_CACHE_TTL: the next check asks the REST API
    reservation = ks.reservation_event("created", f"{p}-res", restaurant, f"{p}-u")
    # Read by the loser from now on: aiohttp's client answers a close frame only inside
    # receive(), and a connection that ends before it is read reports 1006, not the code sent.
    loser_frame = asyncio.create_task(loser.ws.receive(timeout=10))
    producer = EventProducer(kafka_brokers)
    producer.send("mesa-ya.reservations.events", reservation[0], key=p)
    producer.flush()
    # the sentinel: the owner who still owns it gets the refresh
    pushed = await keeper.receive()
    assert (pushed["topic"], pushed["metadata"]["origin"]) == (
        "analytics-restaurant-users.snapshot",
        "refresh",
    )
    # the other one's socket is closed (1008), with no snapshot of the restaurant before it
    frame = await loser_frame
    assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), frame
    assert loser.ws.close_code == 1008
    await keeper.close()


#: (entity of the event, an event of it, the analytics keys it refreshes) — reference §8.6
def _rows(p: str) -> list[tuple[str, tuple[Any, Any], list[str]]]:
    return [
        (
            "reservations",
            ks.reservation_event("created", f"{p}-res", f"{p}-r", f"{p}-u"),
            ["admin/reservations"],
        ),
        ("tables", ks.table_event("updated", f"{p}-tab", f"{p}-s"), ["admin/tables", "admin/payments"]),
        ("payments", ks.payment_event("created", f"{p}-pay", f"{p}-r", f"{p}-u"), ["admin/payments"]),
        ("menus", ks.menu_event("created", f"{p}-menu", f"{p}-r"), ["public/menus"]),
        ("auth", ks.user_signed_up(f"{p}-new-user"), ["public/users", "admin/users"]),
        (
            "restaurants",
            ks.restaurant_updated(f"{p}-rest", f"{p}-o"),
            ["admin/restaurants", "admin/sections"],
        ),
    ]


@pytest.mark.parametrize("row", range(6))
async def test_events_refresh_the_keys_they_make_stale_once_per_burst(
    row: int,
    stats_gateway: GatewayProcess,
    upstream: RecordingUpstream,
    kafka_brokers: str,
    http: aiohttp.ClientSession,
) -> None:
    p = unique("ar")
    entity, (payload, _), refreshed = _rows(p)[row]
    admin = make_token(f"{p}-adm", ["ADMIN"])
    keys = [*refreshed, "admin/images"]  # admin-images: not refreshed by any of these rows
    # two sockets of one token on each key (they never evict each other): one call per key
    sockets = {
        key: [
            await Stats.open(http, f"{stats_gateway.ws_url}/ws/analytics/{key}/{admin}?startDate={p}")
            for _ in range(2)
        ]
        for key in keys
    }

    def path(key: str) -> str:
        resource = key.split("/")[1]
        return f"/api/v1/{resource}/analytics"

    def calls() -> dict[str, int]:
        """Upstream calls of this test per REST path (public-users and admin-users share one)."""
        counted: dict[str, int] = {}
        for call in upstream.calls():
            if call["query"].get("startDate") == p:
                counted[call["path"]] = counted.get(call["path"], 0) + 1
        return counted

    def share(chosen: list[str]) -> dict[str, int]:
        counted: dict[str, int] = {}
        for key in chosen:
            counted[path(key)] = counted.get(path(key), 0) + 1
        return counted

    before = calls()
    assert before == {route: 2 * n for route, n in share(keys).items()}  # each socket's first snapshot
    producer = EventProducer(kafka_brokers)
    topic = f"mesa-ya.{entity}.events"
    for _ in range(5):  # a burst
        producer.send(topic, payload, key=p)
    producer.flush()
    for key in refreshed:
        for stats in sockets[key]:
            pushed = await stats.receive()
            assert pushed["topic"] == f"analytics-{key.replace('/', '-')}.snapshot"
            assert pushed["metadata"]["origin"] == "refresh"
            assert pushed["metadata"]["query.startDate"] == p
    await asyncio.sleep(QUIET * 4)  # any second refresh of the burst would have come by now
    after = calls()
    # one call per key for two sockets and five events; nothing for admin-images
    assert {route: after[route] - before[route] for route in before} == {
        route: share(refreshed).get(route, 0) for route in before
    }
    for group in sockets.values():
        for stats in group:
            await stats.nothing_more()
            await stats.close()
