"""Resilience of the event pipeline: garbage records, the allowed-actions filter, metrics and
readiness, a broker restart while events flow, and a gateway started before its broker.

Garbage, filter and metrics tests use topics of their own on the shared broker (configured
with WS_ENTITY_TOPICS), so their counters are exact. Restarting or starting a broker late is
done on a broker of the test's own (never the shared one on 19092).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from tests import kafka_support as ks
from tests.kafka_support import (
    EventClient,
    EventProducer,
    create_topics,
    http_get,
    kafka_local,
    own_broker,
    scrape,
    unique,
    wait_status,
)
from tests.support import GatewayProcess, RecordingUpstream, gateway_env, make_token

#: Own brokers (ports at least 2 apart; PORT+1 is the controller).
RESTART_BROKER_PORT = 19310
LATE_BROKER_PORT = 19316

StartGateway = Callable[..., GatewayProcess]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def topics_gateway(
    start_gateway: StartGateway, upstream: RecordingUpstream, brokers: str, topics: dict[str, str], **env: str
) -> GatewayProcess:
    mapping = ",".join(f"{entity}:{topic}" for entity, topic in topics.items())
    return start_gateway(
        gateway_env(
            upstream.url, KAFKA_ENABLED="true", KAFKA_BROKERS=brokers, WS_ENTITY_TOPICS=mapping, **env
        ),
        ready=True,
    )


# -- garbage -------------------------------------------------------------------------------------


async def test_garbage_records_are_skipped_and_counted_while_every_good_event_arrives(
    kafka_brokers: str, upstream: RecordingUpstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    p = unique("g")
    tables_topic, menus_topic = f"{p}.tables.events", f"{p}.menus.events"
    create_topics(kafka_brokers, [tables_topic, menus_topic])
    gateway = topics_gateway(
        start_gateway, upstream, kafka_brokers, {"tables": tables_topic, "menus": menus_topic}
    )
    section, restaurant = f"{p}-s", f"{p}-r"
    tables = await EventClient.connect(
        http, gateway.ws_url, "tables", section, make_token(f"{p}-u", ["USER"]), prefix=p, name="tables"
    )
    dishes = await EventClient.connect(
        http, gateway.ws_url, "dishes", restaurant, make_token(f"{p}-u", ["USER"]), prefix=p, name="dishes"
    )

    def good(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return ks.table_event("updated", f"{p}-t{n}", section, number=n)

    huge_data = {"event_type": "updated", "entity_id": f"{p}-huge", "data": {"sectionId": section}}
    huge_data["data"]["blob"] = "x" * (900 * 1024)
    garbage: list[tuple[bytes | None, str]] = [
        (b"this is not json", "not json"),
        (b"", "not json"),
        (b"\xff\xfe\x00garbage", "not json"),
        (b"[" * 5000, "not json"),
        (b'[{"event_type":"updated"}]', "not an object"),
        (b"42", "not an object"),
        (b'"updated"', "not an object"),
        (None, "empty record"),
        (orjson.dumps({"entity_id": f"{p}-x", "data": {"sectionId": section}}), "no event_type"),
        (orjson.dumps({"event_type": 3, "entity_id": f"{p}-x"}), "event_type is not a string"),
        (
            orjson.dumps({"event_type": "updated", "entity_id": f"{p}-x", "metadata": ["user_id", "u"]}),
            "metadata is not an object",
        ),
        (orjson.dumps({"event_type": "updated", "entity_id": {"id": f"{p}-x"}}), "entity_id is not a string"),
        (orjson.dumps({"event_type": "updated", "entity_id": "i" * 20_000}), "entity_id too long"),
        (orjson.dumps(huge_data), "too large"),
    ]
    producer = EventProducer(kafka_brokers)
    expected: list[dict[str, Any]] = []
    for n, (value, _) in enumerate(garbage):
        payload, message = good(n)
        producer.send(tables_topic, payload, key=p)
        expected.append(message)
        producer.send(tables_topic, value, key=p)
    # a timestamp with no UTC value is an event all the same (its time becomes "now")
    overflow, overflow_message = good(100)
    overflow["timestamp"] = "0001-01-01T00:00:00+01:00"
    producer.send(tables_topic, overflow, key=p)
    last, last_message = good(101)
    producer.send(tables_topic, last, key=p)
    # the menus topic: an unknown subtype between two dishes
    dish_a, dish_a_message = ks.dish_event(
        "created", f"{p}-d1", restaurant, f"{p}-m", metadata_restaurant=True
    )
    combo = {"event_type": "created", "entity_id": f"{p}-c1", "entity_subtype": "combo", "data": {}}
    dish_b, dish_b_message = ks.dish_event(
        "updated", f"{p}-d2", restaurant, f"{p}-m", metadata_restaurant=False
    )
    for value in (dish_a, combo, dish_b):
        producer.send(menus_topic, value, key=p)
    producer.flush()

    await tables.expect(expected)
    got = await tables.next_event()
    stamp = got.pop("timestamp")
    overflow_message.pop("timestamp")
    assert got == overflow_message
    assert stamp.endswith("Z")
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).year == datetime.now(UTC).year
    await tables.expect([last_message])
    await dishes.expect([dish_a_message, dish_b_message])
    await tables.expect_nothing_more()
    await dishes.expect_nothing_more()

    assert gateway.process.poll() is None
    assert http_get(gateway.url + "/health")[0] == 200
    metrics = scrape(gateway.url)
    skipped = {
        labels["reason"]: metrics.value("mesaya_events_skipped_total", **labels)
        for labels in metrics.samples("mesaya_events_skipped_total")
        if labels["topic"] == tables_topic
    }
    want: dict[str, float] = {}
    for _, reason in garbage:
        want[reason] = want.get(reason, 0) + 1
    assert skipped == want
    assert metrics.value("mesaya_events_skipped_total", topic=menus_topic, reason="unknown subtype") == 1
    assert metrics.value("mesaya_events_consumed_total", topic=tables_topic) == 2 * len(garbage) + 2
    assert metrics.value("mesaya_events_consumed_total", topic=menus_topic) == 3
    log = gateway.log()
    assert "skipped kafka record" in log
    assert tables_topic in log


# -- WS_ALLOWED_ACTIONS --------------------------------------------------------------------------


async def test_actions_outside_ws_allowed_actions_are_not_delivered_and_are_counted(
    kafka_brokers: str, upstream: RecordingUpstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    p = unique("a")
    topic = f"{p}.tables.events"
    create_topics(kafka_brokers, [topic])
    gateway = topics_gateway(
        start_gateway, upstream, kafka_brokers, {"tables": topic}, WS_ALLOWED_ACTIONS="created, Deleted"
    )
    section = f"{p}-s"
    client = await EventClient.connect(
        http, gateway.ws_url, "tables", section, make_token(f"{p}-u", ["USER"]), prefix=p
    )
    allowed_topics = client.connected["data"]["allowedTopics"]
    assert {"tables.created", "tables.deleted"} <= set(allowed_topics)
    assert not {"tables.updated", "tables.status_changed"} & set(allowed_topics)
    # subscribing to the topic explicitly does not get around the filter
    await client.ws.send_str('{"action":"subscribe","topic":"tables.updated"}')
    await client.command({"action": "ping"}, "system.pong")

    producer = EventProducer(kafka_brokers)
    updated, _ = ks.table_event("updated", f"{p}-t1", section)
    status, _ = ks.table_event("status_changed", f"{p}-t1", section)
    created, created_message = ks.table_event("created", f"{p}-t2", section)
    deleted, deleted_message = ks.table_event("deleted", f"{p}-t1", section)
    producer.produce_all(topic, [updated, status, created, deleted], key=p)

    await client.expect([created_message, deleted_message])
    await client.expect_nothing_more()
    metrics = scrape(gateway.url)
    assert metrics.value("mesaya_events_skipped_total", topic=topic, reason="action not allowed") == 2
    assert metrics.value("mesaya_events_consumed_total", topic=topic) == 4


# -- metrics and readiness -----------------------------------------------------------------------


async def test_metrics_expose_events_deliveries_sockets_cache_and_lag(
    kafka_brokers: str, upstream: RecordingUpstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    p = unique("m")
    topic = f"{p}.tables.events"
    create_topics(kafka_brokers, [topic])
    gateway = topics_gateway(start_gateway, upstream, kafka_brokers, {"tables": topic})
    status, body = http_get(gateway.url + "/ready")
    assert status == 200
    readiness = orjson.loads(body)
    assert readiness["ready"] is True
    assert readiness["events"]["connected"] is True
    assert readiness["events"]["partitions"] == 3 + 3  # and the gateway's own push topic
    assert readiness["events"]["missingTopics"] == []

    before = scrape(gateway.url)
    assert before.value("mesaya_consumer_up") == 1
    page = http_get(gateway.url + "/metrics")[1].decode()
    for name in ("events_consumed", "events_skipped", "deliveries", "snapshot_cache"):
        assert f"# TYPE mesaya_{name}_total counter" in page
    for name in ("open_sockets", "consumer_lag", "consumer_up"):
        assert f"# TYPE mesaya_{name} gauge" in page
    assert "# TYPE mesaya_upstream_call_seconds histogram" in page
    # one lag sample per assigned partition (reported every few seconds)
    deadline = time.monotonic() + 30
    while len([s for s in scrape(gateway.url).samples("mesaya_consumer_lag") if s["topic"] == topic]) < 3:
        assert time.monotonic() < deadline, "no consumer lag samples"
        await asyncio.sleep(0.2)

    section = f"{p}-s"
    token = make_token(f"{p}-u", ["USER"])
    sockets = [
        await EventClient.connect(http, gateway.ws_url, "tables", section, token, prefix=p, name=f"t{n}")
        for n in range(2)
    ]
    restaurants = await EventClient.connect(http, gateway.ws_url, "restaurants", "any", token, prefix=p)
    opened = scrape(gateway.url)
    assert opened.value("mesaya_open_sockets", entity="tables") == 2
    assert opened.value("mesaya_open_sockets", entity="restaurants") == 1

    first = await restaurants.command({"action": "list_restaurants"}, "restaurants.list")
    second = await restaurants.command({"action": "list_restaurants"}, "restaurants.list")
    assert first["data"] == second["data"]
    cached = scrape(gateway.url)
    assert (
        cached.value("mesaya_snapshot_cache_total", outcome="miss")
        == before.value("mesaya_snapshot_cache_total", outcome="miss") + 1
    )
    assert (
        cached.value("mesaya_snapshot_cache_total", outcome="hit")
        == before.value("mesaya_snapshot_cache_total", outcome="hit") + 1
    )
    assert (
        cached.total("mesaya_upstream_call_seconds_count")
        == before.total("mesaya_upstream_call_seconds_count") + 1
    )

    producer = EventProducer(kafka_brokers)
    shapes = [ks.table_event("updated", f"{p}-t{n}", section, number=n) for n in range(5)]
    producer.produce_all(topic, [payload for payload, _ in shapes], key=p)
    for client in sockets:
        await client.expect([message for _, message in shapes])
    after = scrape(gateway.url)
    assert after.value("mesaya_events_consumed_total", topic=topic) == 5
    assert (
        after.value("mesaya_deliveries_total", entity="tables")
        == before.value("mesaya_deliveries_total", entity="tables") + 10
    )
    lags = {s["partition"]: s for s in after.samples("mesaya_consumer_lag") if s["topic"] == topic}
    assert set(lags) == {"0", "1", "2"}

    for client in [*sockets, restaurants]:
        await client.close()
    deadline = time.monotonic() + 20
    while scrape(gateway.url).value("mesaya_open_sockets", entity="tables") != 0:
        assert time.monotonic() < deadline, "open sockets gauge did not go down"
        await asyncio.sleep(0.1)
    assert scrape(gateway.url).value("mesaya_open_sockets", entity="restaurants") == 0


# -- a broker restart while events flow ----------------------------------------------------------


class Flow:
    """Produces keyed table events from a thread until stopped, noting the phase of each."""

    def __init__(self, producer: EventProducer, topic: str, prefix: str, section: str) -> None:
        self.producer = producer
        self.topic = topic
        self.prefix = prefix
        self.section = section
        self.phase = "before"
        self.sent: dict[str, str] = {}  # entity_id -> phase
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            entity_id = f"{self.prefix}-t{n}"
            payload, _ = ks.table_event("updated", entity_id, self.section, number=n)
            self.sent[entity_id] = self.phase
            # keyed like the backend, and spread over every partition for sure
            self.producer.send(self.topic, payload, key=f"{self.prefix}-k{n % 6}", partition=n % 3)
            n += 1
            self._stop.wait(0.02)

    def start(self) -> None:
        self._thread.start()

    def count(self, phase: str) -> int:
        return sum(1 for value in list(self.sent.values()) if value == phase)

    async def wait_for(self, phase: str, count: int) -> None:
        while self.count(phase) < count:
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


async def test_a_broker_restart_loses_no_event_and_keeps_partition_order(
    upstream: RecordingUpstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    assert port_free(RESTART_BROKER_PORT), f"port {RESTART_BROKER_PORT} is in use"
    with own_broker(RESTART_BROKER_PORT) as brokers:
        gateway = start_gateway(
            gateway_env(upstream.url, KAFKA_ENABLED="true", KAFKA_BROKERS=brokers), ready=True
        )
        p = unique("b")
        section = f"{p}-s"
        clients = [
            await EventClient.connect(
                http, gateway.ws_url, "tables", section, make_token(f"{p}-u", ["USER"]), prefix=p, name="user"
            ),
            await EventClient.connect(
                http, gateway.ws_url, "tables", "*", make_token(f"{p}-a", ["ADMIN"]), prefix=p, name="admin"
            ),
        ]
        producer = EventProducer(brokers)
        flow = Flow(producer, "mesa-ya.tables.events", p, section)
        flow.start()
        try:
            await flow.wait_for("before", 40)
            flow.phase = "down"
            await asyncio.to_thread(kafka_local, RESTART_BROKER_PORT, "stop")
            not_ready = orjson.loads(await wait_status(gateway.url + "/ready", 503, timeout=60))
            assert not_ready["events"]["connected"] is False
            await flow.wait_for("down", 20)
            await asyncio.to_thread(kafka_local, RESTART_BROKER_PORT, "start")
            flow.phase = "after"
            await wait_status(gateway.url + "/ready", 200, timeout=120)
            await flow.wait_for("after", 40)
        finally:
            flow.stop()
        remaining = await asyncio.to_thread(producer.producer.flush, 180)
        assert remaining == 0
        # entity_id -> (partition, sequence number). A record acknowledged after a retry may
        # carry no offset in its report; the idempotent producer keeps each partition in
        # produce order, so the sequence number is the partition order.
        delivered: dict[str, tuple[int, int]] = {}
        for report in producer.delivered:
            entity_id = orjson.loads(report.value or b"")["entity_id"]
            sequence = int(entity_id.rsplit("-t", 1)[1])
            assert report.partition == sequence % 3
            delivered[entity_id] = (report.partition, sequence)
        # every phase has acknowledged events: the restart happened while events flowed
        assert {flow.sent[entity_id] for entity_id in delivered} == {"before", "down", "after"}
        assert len({partition for partition, _ in delivered.values()}) == 3

        for client in clients:
            received = [(await client.next_event(60))["resourceId"] for _ in range(len(delivered))]
            assert sorted(received) == sorted(delivered), f"{client.name}: lost or repeated events"
            for partition in range(3):
                order = [delivered[rid][1] for rid in received if delivered[rid][0] == partition]
                assert order == sorted(order), f"{client.name}: partition {partition} out of order"
            await client.expect_nothing_more()
            await client.close()
        assert gateway.process.poll() is None


# -- a gateway started before its broker ---------------------------------------------------------


async def test_a_gateway_started_without_kafka_serves_commands_and_picks_events_up_later(
    upstream: RecordingUpstream, start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    assert port_free(LATE_BROKER_PORT), f"port {LATE_BROKER_PORT} is in use"
    with own_broker(LATE_BROKER_PORT, start=False) as brokers:
        gateway = start_gateway(gateway_env(upstream.url, KAFKA_ENABLED="true", KAFKA_BROKERS=brokers))
        assert http_get(gateway.url + "/health")[0] == 200
        status, body = http_get(gateway.url + "/ready")
        assert status == 503
        state = orjson.loads(body)
        assert state["ready"] is False
        assert state["events"]["connected"] is False
        assert scrape(gateway.url).value("mesaya_consumer_up") == 0

        p = unique("l")
        section = "main-hall"
        client = await EventClient.connect(
            http, gateway.ws_url, "tables", section, make_token(f"{p}-u", ["USER"]), prefix=p
        )
        listed = await client.command({"action": "list_tables"}, "tables.list")
        assert [t["id"] for t in listed["data"]["data"]] == [f"table-{i}" for i in range(1, 7)]
        assert (await client.command({"action": "ping"}, "system.pong"))["action"] == "pong"

        await asyncio.to_thread(kafka_local, LATE_BROKER_PORT, "start")
        ready = orjson.loads(await wait_status(gateway.url + "/ready", 200, timeout=120))
        assert ready["events"]["connected"] is True
        assert ready["events"]["partitions"] == 14 * 3  # 13 platform topics, 1 of pushes
        assert scrape(gateway.url).value("mesaya_consumer_up") == 1

        producer = EventProducer(brokers)
        shapes = [ks.table_event("updated", f"{p}-t{n}", section, number=n) for n in range(3)]
        producer.produce_all("mesa-ya.tables.events", [payload for payload, _ in shapes], key=p)
        await client.expect([message for _, message in shapes])
        await client.expect_nothing_more()
        await client.close()
