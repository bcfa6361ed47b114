"""Snapshot refresh after Kafka events: one upstream call per distinct query, bursts
coalesced, and never a call with an expired token. Real broker, real gateway process,
real WebSocket clients, recording REST upstream."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from confluent_kafka import Producer

from tests.support import GatewayProcess, RecordingUpstream, gateway_env, make_token

TABLES_TOPIC = "mesa-ya.tables.events"


def produce_table_updates(brokers: str, section: str, count: int, table_id: str = "table-1") -> None:
    producer = Producer({"bootstrap.servers": brokers, "acks": "all", "linger.ms": 5})
    for index in range(count):
        payload = {
            "timestamp": "2026-01-10T12:00:00.000Z",
            "event_type": "updated",
            "entity_id": table_id,
            "data": {"id": table_id, "sectionId": section, "number": index, "status": "OCCUPIED"},
        }
        producer.produce(TABLES_TOPIC, key=table_id.encode(), value=orjson.dumps(payload))
    assert producer.flush(20) == 0


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def next(self, timeout: float = 15.0) -> dict[str, Any]:
        message = await self.ws.receive(timeout=timeout)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        decoded: dict[str, Any] = orjson.loads(message.data)
        return decoded

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = await self.next(max(0.1, deadline - time.monotonic()))
            if predicate(message):
                return message

    async def command(self, action: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.ws.send_str(orjson.dumps({"action": action, "payload": payload or {}}).decode())
        return await self.until(lambda m: m["topic"] != "tables.updated")


@pytest.fixture
async def kafka_gateway(
    kafka_brokers: str,
    fresh_upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
) -> GatewayProcess:
    env = gateway_env(
        fresh_upstream.url,
        KAFKA_ENABLED="true",
        KAFKA_BROKERS=kafka_brokers,
        SNAPSHOT_REFRESH_QUIET="300ms",
        SNAPSHOT_REFRESH_MAX_DELAY="3s",
    )
    return start_gateway(env, ready=True)


@pytest.fixture
async def connect(kafka_gateway: GatewayProcess) -> AsyncIterator[Callable[..., Any]]:
    async with aiohttp.ClientSession() as http:

        async def open_client(section: str, token: str) -> Client:
            ws = await http.ws_connect(f"{kafka_gateway.ws_url}/ws/tables/{section}/{token}")
            client = Client(ws)
            assert (await client.next())["topic"] == "system.connected"
            return client

        yield open_client


def list_calls(upstream: RecordingUpstream, section: str) -> list[dict[str, Any]]:
    return [call for call in upstream.calls("/api/v1/tables") if call["query"].get("sectionId") == section]


async def test_one_upstream_call_per_distinct_query(
    connect: Callable[..., Any], fresh_upstream: RecordingUpstream, kafka_brokers: str
) -> None:
    section = f"sec-{uuid.uuid4().hex[:8]}"
    same_query = [await connect(section, make_token(f"user-{i}")) for i in range(5)]
    other_query = [await connect(section, make_token(f"other-{i}")) for i in range(2)]
    for client in same_query:
        reply = await client.command("list_tables", {"limit": 5})
        assert reply["metadata"]["origin"] == "request"
    for client in other_query:
        await client.command("list_tables", {"limit": 7})
    # Shared (USER) query: the first socket filled the cache, the rest were hits.
    assert len(list_calls(fresh_upstream, section)) == 2
    fresh_upstream.requests.clear()

    produce_table_updates(kafka_brokers, section, 1)

    for client in [*same_query, *other_query]:
        event = await client.until(lambda m: m["topic"] == "tables.updated")
        assert event["data"]["sectionId"] == section
        refreshed = await client.until(lambda m: m["topic"] == "tables.list")
        assert refreshed["metadata"]["origin"] == "refresh"
        assert refreshed["resourceId"] == section
    calls = list_calls(fresh_upstream, section)
    assert sorted(call["query"]["limit"] for call in calls) == ["5", "7"]


async def test_a_burst_of_events_causes_one_refetch_per_query(
    connect: Callable[..., Any], fresh_upstream: RecordingUpstream, kafka_brokers: str
) -> None:
    section = f"sec-{uuid.uuid4().hex[:8]}"
    client = await connect(section, make_token("burst-user"))
    await client.command("list_tables", {"limit": 3})
    await client.command("get_table", {"id": "table-2"})
    fresh_upstream.requests.clear()

    produce_table_updates(kafka_brokers, section, 100, table_id="table-2")

    updates = 0
    refreshes: list[dict[str, Any]] = []
    while updates < 100 or len(refreshes) < 2:
        message = await client.next()
        if message["topic"] == "tables.updated":
            updates += 1
        elif message["metadata"].get("origin") == "refresh":
            refreshes.append(message)
    assert sorted(m["topic"] for m in refreshes) == ["tables.detail", "tables.list"]
    # Quiet for longer than the coalescing window: nothing more comes.
    await asyncio.sleep(1.5)
    assert len(list_calls(fresh_upstream, section)) == 1
    assert len(fresh_upstream.calls("/api/v1/tables/table-2")) == 1


async def test_refresh_never_uses_an_expired_token(
    connect: Callable[..., Any], fresh_upstream: RecordingUpstream, kafka_brokers: str
) -> None:
    section = f"sec-{uuid.uuid4().hex[:8]}"
    # Same user, same query: one group. One token is about to expire (inside the margin).
    expiring = make_token("same-user", exp_in=5.9)
    valid = make_token("same-user", exp_in=3600)
    first = await connect(section, expiring)
    second = await connect(section, valid)
    await first.command("list_tables", {"limit": 4})
    await second.command("list_tables", {"limit": 4})
    fresh_upstream.requests.clear()
    # Let the first token come within the refresh margin (5 s) while its socket is open.
    await asyncio.sleep(1.5)

    produce_table_updates(kafka_brokers, section, 1)

    refreshed = await second.until(lambda m: m["topic"] == "tables.list")
    assert refreshed["metadata"]["origin"] == "refresh"
    calls = list_calls(fresh_upstream, section)
    assert [call["authorization"] for call in calls] == [f"Bearer {valid}"]


async def test_no_refresh_call_when_every_token_of_the_group_is_expiring(
    connect: Callable[..., Any], fresh_upstream: RecordingUpstream, kafka_brokers: str
) -> None:
    section = f"sec-{uuid.uuid4().hex[:8]}"
    lonely = await connect(section, make_token("lonely-user", exp_in=5.9))
    sentinel = await connect(section, make_token("sentinel-user", exp_in=3600))
    await lonely.command("list_tables", {"limit": 9})
    await sentinel.command("list_tables", {"limit": 8})
    fresh_upstream.requests.clear()
    await asyncio.sleep(1.5)

    produce_table_updates(kafka_brokers, section, 1)

    # The sentinel's refresh proves the refresh pass ran; the expiring group made no call.
    await sentinel.until(lambda m: m["topic"] == "tables.list")
    await asyncio.sleep(0.5)
    limits = [call["query"]["limit"] for call in list_calls(fresh_upstream, section)]
    assert limits == ["8"]


async def test_unsubscribed_list_topic_gets_no_refresh(
    connect: Callable[..., Any], fresh_upstream: RecordingUpstream, kafka_brokers: str
) -> None:
    section = f"sec-{uuid.uuid4().hex[:8]}"
    client = await connect(section, make_token("quiet-user"))
    await client.command("list_tables", {"limit": 2})
    await client.command("get_table", {"id": "table-1"})
    await client.ws.send_str('{"action":"unsubscribe","topic":"tables.list"}')

    produce_table_updates(kafka_brokers, section, 1)

    assert (await client.until(lambda m: m["topic"] == "tables.updated"))["resourceId"] == "table-1"
    refreshed = await client.next()
    # The detail refresh comes; the list refresh, unsubscribed, does not.
    assert (refreshed["topic"], refreshed["metadata"]["origin"]) == ("tables.detail", "refresh")
    await client.ws.send_str('{"action":"ping"}')
    assert (await client.next())["topic"] == "system.pong"
