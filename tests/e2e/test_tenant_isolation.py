"""The tenant boundary end to end: a real gateway process on a real Kafka broker, a real REST
fixture server whose ``GET /api/v1/restaurants/me`` answers per token, real WebSocket clients.

An OWNER sees a restaurant's private data (reservations, payments, subscriptions) only if they
own it; the REST API's silence refuses (fail closed); an ownership change closes open sockets
within the TTL; and no record reaches another aggregate's sockets through a legacy ``entity``
field. "Does not receive" is proven with sentinels on the same partition (see
tests/e2e/test_events_delivery.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from mesaya_realtime.domain.catalogue import CATALOGUE
from tests import kafka_support as ks
from tests.kafka_support import PLATFORM_TOPICS, EventClient, EventProducer, scrape, unique
from tests.support import (
    GatewayProcess,
    RecordingUpstream,
    free_port,
    gateway_env,
    make_token,
    refusal,
    running_gateway,
)

PRIVATE = ("reservations", "payments", "subscriptions")
ME = "/api/v1/restaurants/me"
TTL = 2.0


@pytest.fixture(scope="module")
def tenant_gateway(
    kafka_brokers: str, upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = gateway_env(
        upstream.url,
        KAFKA_ENABLED="true",
        KAFKA_BROKERS=kafka_brokers,
        OWNERSHIP_CACHE_TTL=f"{TTL}s",
        REST_TIMEOUT="1s",
    )
    with running_gateway(env, tmp_path_factory.mktemp("tenant-gateway"), ready=True) as process:
        yield process


async def connect(
    http: aiohttp.ClientSession, gateway: GatewayProcess, entity: str, section: str, token: str, p: str
) -> EventClient:
    return await EventClient.connect(
        http, gateway.ws_url, entity, section, token, prefix=p, name=f"{entity}/{section}"
    )


async def test_an_owner_is_refused_on_another_restaurants_private_sockets(
    tenant_gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    p = unique("ti")
    owner_a, rest_a, rest_b = f"{p}-oa", f"{p}-ra", f"{p}-rb"
    upstream.own(owner_a, rest_a)
    for roles in (["OWNER"], ["OWNER", "USER"], ["owner"]):
        token = make_token(owner_a, roles)
        for entity in PRIVATE:
            assert await refusal(http, tenant_gateway, f"/ws/{entity}/{rest_b}/{token}") == (
                403,
                {"message": "forbidden"},
            ), (entity, roles)
            client = await connect(http, tenant_gateway, entity, rest_a, token, p)
            assert client.connected["data"]["sectionId"] == rest_a
            await client.close()
    # the same owner on public entities of B is not refused: that data is public
    client = await connect(http, tenant_gateway, "reviews", rest_b, make_token(owner_a, ["OWNER"]), p)
    await client.close()
    metrics = scrape(tenant_gateway.url)
    assert metrics.value("mesaya_ownership_checks_total", outcome="denied") >= 9
    assert metrics.value("mesaya_handshakes_rejected_total", status="403") >= 9


async def test_private_events_of_another_restaurant_never_reach_an_owner(
    tenant_gateway: GatewayProcess,
    upstream: RecordingUpstream,
    kafka_brokers: str,
    http: aiohttp.ClientSession,
) -> None:
    p = unique("te")
    owner_a, owner_b, user, admin = f"{p}-oa", f"{p}-ob", f"{p}-u", f"{p}-admin"
    rest_a, rest_b = f"{p}-ra", f"{p}-rb"
    upstream.own(owner_a, rest_a)
    upstream.own(owner_b, rest_b)
    token_a, token_b = make_token(owner_a, ["OWNER"]), make_token(owner_b, ["OWNER"])
    clients = {
        **{f"a_{e}": await connect(http, tenant_gateway, e, rest_a, token_a, p) for e in PRIVATE},
        **{f"b_{e}": await connect(http, tenant_gateway, e, rest_b, token_b, p) for e in PRIVATE},
        # a USER on A's reservations sees only their own reservations, wherever they are
        "user_on_a": await connect(http, tenant_gateway, "reservations", rest_a, make_token(user), p),
        "admin_b": await connect(
            http, tenant_gateway, "reservations", rest_b, make_token(admin, ["ADMIN"]), p
        ),
        "admin_all": await connect(http, tenant_gateway, "payments", "*", make_token(admin, ["ADMIN"]), p),
    }
    res_b = ks.reservation_event("created", f"{p}-res-b", rest_b, f"{p}-someone")
    res_b_user = ks.reservation_event("created", f"{p}-res-b-user", rest_b, user)
    res_a = ks.reservation_event("created", f"{p}-res-a", rest_a, f"{p}-someone")  # the sentinel
    pay_b = ks.payment_event("created", f"{p}-pay-b", rest_b, f"{p}-someone")
    pay_a = ks.payment_event("created", f"{p}-pay-a", rest_a, f"{p}-someone")
    sub_b = ks.subscription_status_changed(f"{p}-sub-b", rest_b)
    sub_a = ks.subscription_status_changed(f"{p}-sub-a", rest_a)
    producer = EventProducer(kafka_brokers)
    for topic, shapes in (
        ("reservations", (res_b, res_b_user, res_a)),
        ("payments", (pay_b, pay_a)),
        ("subscriptions", (sub_b, sub_a)),
    ):
        for payload, _ in shapes:
            producer.send(f"mesa-ya.{topic}.events", payload, key=p)  # one key: one partition
    producer.flush()

    # A's owner: only A's events; B's came first on the same partition, so had time to arrive
    await clients["a_reservations"].expect([res_a[1]])
    await clients["a_payments"].expect([pay_a[1]])
    await clients["a_subscriptions"].expect([sub_a[1]])
    await clients["b_reservations"].expect([res_b[1], res_b_user[1]])
    await clients["b_payments"].expect([pay_b[1]])
    await clients["b_subscriptions"].expect([sub_b[1]])
    await clients["user_on_a"].expect([res_b_user[1]])
    await clients["admin_b"].expect([res_b[1], res_b_user[1]])
    await clients["admin_all"].expect([pay_b[1], pay_a[1]])
    for client in clients.values():
        await client.expect_nothing_more()
        await client.close()


async def test_no_answer_from_the_rest_api_refuses_and_recovery_admits(
    tenant_gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    p = unique("td")
    owner, rest = f"{p}-o", f"{p}-r"
    upstream.own(owner, rest)
    token = make_token(owner, ["OWNER"])
    unavailable = (503, {"message": "ownership check unavailable"})
    upstream.script(ME, status=500)
    assert await refusal(http, tenant_gateway, f"/ws/reservations/{rest}/{token}") == unavailable
    upstream.script(ME, status=200, delay=3.0)  # slower than REST_TIMEOUT (1 s)
    assert await refusal(http, tenant_gateway, f"/ws/payments/{rest}/{token}") == unavailable
    upstream.scripts.pop(ME)
    client = await connect(http, tenant_gateway, "reservations", rest, token, p)
    await client.expect_nothing_more()
    await client.close()


async def test_a_rest_api_that_is_not_there_refuses(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    env = gateway_env(f"http://127.0.0.1:{free_port()}", KAFKA_ENABLED="false", REST_TIMEOUT="1s")
    with running_gateway(env, tmp_path) as gateway:
        token = make_token("an-owner", ["OWNER"])
        for entity in PRIVATE:
            assert await refusal(http, gateway, f"/ws/{entity}/r-1/{token}") == (
                503,
                {"message": "ownership check unavailable"},
            )
        # entities without the rule do not depend on the REST API to connect
        client = await EventClient.connect(http, gateway.ws_url, "tables", "s-1", token, prefix="none")
        await client.close()


async def test_two_hundred_sockets_of_one_owner_make_one_call(
    tenant_gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    p = unique("ts")
    owner, rest = f"{p}-o", f"{p}-r"
    upstream.own(owner, rest)
    token = make_token(owner, ["OWNER"])
    before = len(upstream.calls(ME))
    # the default connector holds 100 connections at most; sockets keep theirs
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as many:
        sockets = await asyncio.gather(
            *(
                many.ws_connect(f"{tenant_gateway.ws_url}/ws/{PRIVATE[i % 3]}/{rest}/{token}")
                for i in range(200)
            )
        )
        try:
            for ws in sockets:
                first = orjson.loads((await ws.receive(timeout=20)).data)
                assert first["topic"] == "system.connected"
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))
    mine = [c for c in upstream.calls(ME)[before:] if c["authorization"] == f"Bearer {token}"]
    assert len(mine) == 1


async def test_an_owner_who_loses_a_restaurant_is_closed_within_the_ttl(
    tenant_gateway: GatewayProcess, upstream: RecordingUpstream, http: aiohttp.ClientSession
) -> None:
    p = unique("tc")
    owner, lost, kept = f"{p}-o", f"{p}-lost", f"{p}-kept"
    upstream.own(owner, lost, kept)
    token = make_token(owner, ["OWNER"])
    on_lost = await http.ws_connect(f"{tenant_gateway.ws_url}/ws/payments/{lost}/{token}")
    on_kept = await connect(http, tenant_gateway, "reservations", kept, token, p)
    assert orjson.loads((await on_lost.receive(timeout=20)).data)["topic"] == "system.connected"
    upstream.disown(owner, lost)
    started = time.monotonic()
    while True:
        frame = await on_lost.receive(timeout=TTL + 5)
        if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    elapsed = time.monotonic() - started
    assert on_lost.close_code == 1008
    assert frame.extra == "forbidden"
    assert elapsed <= TTL + 5
    # the socket on the restaurant still owned stays open
    await on_kept.expect_nothing_more()
    await on_kept.close()
    # and a new socket on the lost restaurant is refused
    assert await refusal(http, tenant_gateway, f"/ws/payments/{lost}/{token}") == (
        403,
        {"message": "forbidden"},
    )
    metrics = scrape(tenant_gateway.url)
    assert metrics.value("mesaya_ownership_checks_total", outcome="revoked") >= 1


# -- the topic decides the aggregate ---------------------------------------------------------------


def _primary(topic: str) -> str:
    return CATALOGUE.topic_entities[topic]


async def test_no_legacy_entity_field_moves_a_record_to_another_aggregate(
    tenant_gateway: GatewayProcess, kafka_brokers: str, http: aiohttp.ClientSession
) -> None:
    p = unique("tl")
    admin = make_token(f"{p}-admin", ["ADMIN"])
    # every entity's every-section socket (ADMIN `*`), plus ordinary sockets of public entities
    watchers = {}
    for spec in CATALOGUE.entities:
        watchers[spec.name] = await connect(http, tenant_gateway, spec.name, "*", admin, p)
    public = {
        "restaurants_owner": await connect(
            http, tenant_gateway, "restaurants", f"{p}-r", make_token(f"{p}-o", ["OWNER"]), p
        ),
        "objects_user": await connect(http, tenant_gateway, "objects", f"{p}-s", make_token(f"{p}-u"), p),
        "plans_user": await connect(
            http, tenant_gateway, "subscription-plans", f"{p}-r", make_token(f"{p}-u"), p
        ),
    }
    before = scrape(tenant_gateway.url).total("mesaya_events_skipped_total", reason="foreign entity")
    producer = EventProducer(kafka_brokers)
    foreign = 0
    scoped = {"restaurantId": f"{p}-r", "sectionId": f"{p}-s", "userId": f"{p}-u", "amount": 9}
    sentinels: dict[str, str] = {}
    for topic in PLATFORM_TOPICS:
        aggregate = {spec.name for spec in CATALOGUE.entities if topic in spec.kafka_topics}
        for spec in CATALOGUE.entities:
            if spec.name in aggregate:
                continue
            for spelled in (spec.name, spec.singular, spec.name.upper()):
                record = {
                    "event_type": "created",
                    "entity": spelled,
                    "entity_id": f"{p}-foreign-{foreign}",
                    "data": scoped,
                    "metadata": {"user_id": f"{p}-u", "restaurant_id": f"{p}-r"},
                }
                producer.send(topic, record, key=p)
                foreign += 1
        sentinel = f"{p}-sentinel-{_primary(topic)}"
        sentinels[_primary(topic)] = sentinel
        producer.send(topic, {"event_type": "created", "entity_id": sentinel, "data": {}}, key=p)
    producer.flush()

    for entity, sentinel in sentinels.items():
        event = await watchers[entity].next_event()
        assert (event["topic"], event["resourceId"]) == (f"{entity}.created", sentinel)
    for name, entity in (("restaurants_owner", "restaurants"), ("objects_user", "objects")):
        assert (await public[name].next_event())["resourceId"] == sentinels[entity]  # public data
    # every topic's sentinel came after its foreign records: nothing else may have arrived
    for client in (*watchers.values(), *public.values()):
        await client.expect_nothing_more()
        await client.close()
    after = scrape(tenant_gateway.url).total("mesaya_events_skipped_total", reason="foreign entity")
    assert after - before == foreign
