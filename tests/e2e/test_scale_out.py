"""Scale-out: several gateway processes on one broker each deliver every event their own
clients are entitled to. Each node assigns every partition itself (no consumer group
membership), so the same KAFKA_GROUP_ID on all nodes splits nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import orjson

from tests import kafka_support as ks
from tests.kafka_support import PLATFORM_TOPICS, EventClient, EventProducer, http_get, partition_count, unique
from tests.support import GatewayProcess, RecordingUpstream, gateway_env, make_token


async def test_two_gateways_on_one_broker_each_deliver_to_their_entitled_clients(
    kafka_brokers: str,
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
    http: aiohttp.ClientSession,
) -> None:
    nodes = [
        start_gateway(
            gateway_env(
                upstream.url,
                KAFKA_ENABLED="true",
                KAFKA_BROKERS=kafka_brokers,
                KAFKA_GROUP_ID="one-group-for-all",
            ),
            ready=True,
        )
        for _ in range(2)
    ]
    # the platform's topics, and the gateway's own topic of payment pushes (same consumer)
    partitions = partition_count(kafka_brokers, (*PLATFORM_TOPICS, "mesaya-realtime.broadcasts"))
    for node in nodes:
        status, body = http_get(node.url + "/ready")
        assert status == 200
        assert orjson.loads(body)["events"]["partitions"] == partitions

    p = unique("x")
    section, r1, u1, u2, o1 = f"{p}-s", f"{p}-r1", f"{p}-u1", f"{p}-u2", f"{p}-o1"
    upstream.own(o1, r1)

    async def client(node: GatewayProcess, entity: str, where: str, user: str, role: str) -> EventClient:
        name = f"{entity}/{where}/{user}@{node.port}"
        return await EventClient.connect(
            http, node.ws_url, entity, where, make_token(user, [role]), prefix=p, name=name
        )

    tables = [await client(node, "tables", section, u1, "USER") for node in nodes]
    owner_on_1 = await client(nodes[1], "reservations", r1, o1, "OWNER")
    user1_on_0 = await client(nodes[0], "reservations", r1, u1, "USER")
    user2_on_1 = await client(nodes[1], "reservations", r1, u2, "USER")

    producer = EventProducer(kafka_brokers)
    table_shapes = [ks.table_event("updated", f"{p}-t{n}", section, number=n) for n in range(30)]
    for n, (payload, _) in enumerate(table_shapes):
        producer.send("mesa-ya.tables.events", payload, key=f"{p}-k{n}", partition=n % 3)
    mine, mine_message = ks.reservation_event("created", f"{p}-res1", r1, u1)
    theirs, theirs_message = ks.reservation_event("created", f"{p}-res2", r1, u2)
    mine_again, mine_again_message = ks.reservation_event("deleted", f"{p}-res1", r1, u1)
    for payload in (mine, theirs, mine_again):
        producer.send("mesa-ya.reservations.events", payload, key=p)
    producer.flush()
    assert len({d.partition for d in producer.delivered if d.topic == "mesa-ya.tables.events"}) == 3

    by_id = {message["resourceId"]: message for _, message in table_shapes}
    for socket in tables:
        received = [await socket.next_event() for _ in range(len(table_shapes))]
        assert sorted(m["resourceId"] for m in received) == sorted(by_id)
        assert all(m == by_id[m["resourceId"]] for m in received)
    await owner_on_1.expect([mine_message, theirs_message, mine_again_message])
    await user1_on_0.expect([mine_message, mine_again_message])  # not the other user's
    await user2_on_1.expect([theirs_message])
    for socket in [*tables, owner_on_1, user1_on_0, user2_on_1]:
        await socket.expect_nothing_more()
        await socket.close()
