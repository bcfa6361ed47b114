"""Protocol v2's cursors and resume on the real broker, across two real gateway processes
(docs/WEBSOCKET_ENDPOINTS.md "Cursors and resume").

A client on node A drops (TCP reset); 200 events it is entitled to and 200 it is not are
produced over three partitions; it comes back to node B with its last cursor and gets exactly
its 200, in partition order, then ``system.resumed`` ``recovered: true``, then live events,
with no duplicate. Past ``RESUME_MAX_AGE`` it gets ``recovered: false``. A list reply's
watermark plus the events after it hold every change made after the reply's REST call began.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from tests import kafka_support as ks
from tests.kafka_support import EventClient, EventProducer, unique
from tests.support import GatewayProcess, RecordingUpstream, gateway_env, make_token

TABLES = "mesa-ya.tables.events"


def v2_node(upstream: RecordingUpstream, kafka_brokers: str, **extra: str) -> dict[str, str]:
    return gateway_env(upstream.url, KAFKA_ENABLED="true", KAFKA_BROKERS=kafka_brokers, **extra)


class V2Client:
    """A protocol v2 client that reads all the time and keeps its last cursor."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, prefix: str) -> None:
        self.ws = ws
        self.prefix = prefix
        self.cursor = ""
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str, prefix: str) -> V2Client:
        ws = await http.ws_connect(url, protocols=("mesaya.v2",), max_msg_size=8 * 1024 * 1024)
        assert ws.protocol == "mesaya.v2"
        return cls(ws, prefix)

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                message = orjson.loads(frame.data)
                if message.get("cursor"):
                    self.cursor = message["cursor"]
                await self.frames.put(message)

    async def next(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next message that is a system message or one of this test's events."""
        while True:
            message = await asyncio.wait_for(self.frames.get(), timeout)
            if message["topic"].startswith("system.") or str(message.get("resourceId", "")).startswith(
                self.prefix
            ):
                return message

    async def barrier(self) -> list[dict[str, Any]]:
        """Ping; everything of this test that came before the pong."""
        await self.ws.send_str('{"action":"ping","requestId":"barrier"}')
        before = []
        while True:
            message = await self.next()
            if message["topic"] == "system.pong":
                return before
            before.append(message)

    def reset(self) -> None:
        """Drop the connection with a TCP reset (no close frame, no FIN)."""
        transport = self.ws._conn.transport  # type: ignore[union-attr]
        raw = transport.get_extra_info("socket")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        self._reader.cancel()

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


def number_of(message: dict[str, Any]) -> int:
    return int(message["resourceId"].rsplit("-t", 1)[1])


async def test_a_client_that_drops_resumes_on_the_other_node_without_loss_or_duplicate(
    kafka_brokers: str,
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
    http: aiohttp.ClientSession,
) -> None:
    a, b = (
        start_gateway(v2_node(upstream, kafka_brokers, RESUME_MAX_EVENTS="5000"), ready=True)
        for _ in range(2)
    )
    p = unique("rs")
    mine, theirs = f"{p}-s", f"{p}-other"
    token = make_token(f"{p}-u", ["USER"])
    producer = EventProducer(kafka_brokers)

    def produce(first: int, count: int, section: str) -> None:
        for n in range(first, first + count):
            payload, _ = ks.table_event("updated", f"{p}-{section[-1]}-t{n}", section, number=n)
            producer.send(TABLES, payload, key=f"{p}-{n}", partition=n % 3)

    client = await V2Client.connect(http, f"{a.ws_url}/ws/tables/{mine}/{token}", p)
    connected = await client.next()
    assert connected["topic"] == "system.connected"
    assert connected["cursor"]
    produce(0, 6, mine)  # live on A, each with its cursor
    producer.flush()
    live = [await client.next() for _ in range(6)]
    assert all(message["cursor"] for message in live)
    assert sorted(number_of(m) for m in live) == list(range(6))
    cursor = client.cursor
    client.reset()

    # The gap: 200 events for the client's section, 200 for another, over three partitions.
    for n in range(6, 206):
        produce(n, 1, mine)
        produce(n, 1, theirs)
    # A sentinel per partition, read by a v1 client on B: B has read the whole gap.
    watcher = await EventClient.connect(http, b.ws_url, "tables", f"{p}-watch", make_token("w"), prefix=p)
    for n in range(3):
        payload, _ = ks.table_event("updated", f"{p}-w-t{n}", f"{p}-watch", number=n)
        producer.send(TABLES, payload, partition=n)
    producer.flush()
    assert {d.partition for d in producer.delivered} == {0, 1, 2}
    sentinels = [number_of(await watcher.next_event()) for _ in range(3)]
    assert sorted(sentinels) == [0, 1, 2]

    back = await V2Client.connect(http, f"{b.ws_url}/ws/tables/{mine}/{token}?since={cursor}", p)
    assert (await back.next())["topic"] == "system.connected"
    replayed = []
    while True:
        message = await back.next()
        if message["topic"] == "system.resumed":
            break
        replayed.append(message)
    assert message["data"] == {"recovered": True, "replayed": 200}
    assert message["cursor"]
    numbers = [number_of(m) for m in replayed]
    assert sorted(numbers) == list(range(6, 206))  # exactly the 200: none lost, none twice
    assert all(m["data"]["sectionId"] == mine and m["cursor"] for m in replayed)
    for partition in range(3):
        in_partition = [n for n in numbers if n % 3 == partition]
        assert in_partition == sorted(in_partition), f"partition {partition} out of order"

    # Live after the resume: the next events, no gap, no duplicate.
    produce(206, 9, mine)
    producer.flush()
    after = [await back.next() for _ in range(9)]
    assert sorted(number_of(m) for m in after) == list(range(206, 215))
    assert await back.barrier() == []

    # The replayed cursors are positions too: resuming again from the last replayed event's
    # cursor, on A this time, brings exactly the events after it. First a sentinel per
    # partition read on A: A has read those events too (a node replays what it has read).
    watcher_a = await EventClient.connect(http, a.ws_url, "tables", f"{p}-watch-a", make_token("w"), prefix=p)
    for n in range(3):
        payload, _ = ks.table_event("updated", f"{p}-wa-t{n}", f"{p}-watch-a", number=n)
        producer.send(TABLES, payload, partition=n)
    producer.flush()
    assert sorted([number_of(await watcher_a.next_event()) for _ in range(3)]) == [0, 1, 2]
    third = await V2Client.connect(http, f"{a.ws_url}/ws/tables/{mine}?since={replayed[-1]['cursor']}", p)
    await third.ws.send_str(orjson.dumps({"action": "authenticate", "payload": {"token": token}}).decode())
    assert (await third.next())["topic"] == "system.connected"
    again = []
    while (message := await third.next())["topic"] != "system.resumed":
        again.append(number_of(message))
    # Nothing the client saw up to that event comes again; everything after it does.
    assert message["data"] == {"recovered": True, "replayed": 9}
    assert sorted(again) == list(range(206, 215))
    for done in (back, third):
        await done.close()
    await watcher.close()
    await watcher_a.close()


async def test_a_cursor_older_than_resume_max_age_is_not_recovered(
    kafka_brokers: str,
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
    http: aiohttp.ClientSession,
) -> None:
    node = start_gateway(v2_node(upstream, kafka_brokers, RESUME_MAX_AGE="2s"), ready=True)
    p = unique("old")
    token = make_token(f"{p}-u")
    client = await V2Client.connect(http, f"{node.ws_url}/ws/tables/{p}-s/{token}", p)
    connected = await client.next()
    await client.close()
    await asyncio.sleep(3.5)
    back = await V2Client.connect(
        http, f"{node.ws_url}/ws/tables/{p}-s/{token}?since={connected['cursor']}", p
    )
    assert (await back.next())["topic"] == "system.connected"
    resumed = await back.next()
    assert resumed["topic"] == "system.resumed"
    assert resumed["data"] == {"recovered": False}
    # A cursor that is not one (or of other topics) is not recovered either.
    garbage = await V2Client.connect(http, f"{node.ws_url}/ws/tables/{p}-s/{token}?since=1.zz.nope", p)
    await garbage.next()
    assert (await garbage.next())["data"] == {"recovered": False}
    # Live events still come after a failed resume: the client re-reads its snapshots.
    producer = EventProducer(kafka_brokers)
    payload, _ = ks.table_event("updated", f"{p}-t1", f"{p}-s", number=1)
    producer.send(TABLES, payload)
    producer.flush()
    assert number_of(await back.next()) == 1
    for done in (back, garbage):
        await done.close()


async def test_a_list_watermark_and_the_events_after_it_hold_every_change_after_the_rest_call(
    kafka_brokers: str,
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
    http: aiohttp.ClientSession,
) -> None:
    """The REST call is slow (1 s); a change is made (its event produced) while it runs. The
    reply's watermark is from before the call, so resuming from it brings that event."""
    node = start_gateway(v2_node(upstream, kafka_brokers, SNAPSHOT_CACHE_TTL="0.01"), ready=True)
    p = unique("wm")
    section = f"{p}-s"
    token = make_token(f"{p}-u")
    client = await V2Client.connect(http, f"{node.ws_url}/ws/tables/{section}/{token}", p)
    await client.next()
    await client.ws.send_str('{"action":"unsubscribe","topic":"tables.updated"}')  # see only the reply
    assert (await client.next())["topic"] == "system.ack"
    watcher = await EventClient.connect(http, node.ws_url, "tables", section, make_token("w"), prefix=p)
    path = "/api/v1/tables"  # a USER's list of a section (?sectionId=...)
    upstream.script(path, status=200, body={"data": []}, delay=1.5)
    try:
        await client.ws.send_str(orjson.dumps({"action": "list_tables", "requestId": "l1"}).decode())
        for _ in range(200):  # until the REST call has started (the upstream has the request)
            if upstream.calls(path):
                break
            await asyncio.sleep(0.01)
        assert upstream.calls(path)
        producer = EventProducer(kafka_brokers)
        payload, _ = ks.table_event("updated", f"{p}-t7", section, number=7)
        producer.send(TABLES, payload)
        producer.flush()
        # The node has delivered the change (so a resume finds it in its journal) ...
        assert number_of(await watcher.next_event()) == 7
        reply = await client.next()  # ... while the REST call was still running
    finally:
        upstream.reset()
        await watcher.close()
    assert reply["topic"] == "tables.list"
    assert reply["metadata"]["requestId"] == "l1"
    watermark = reply["cursor"]
    await client.close()
    # Reading the events after the watermark (a resume from it) gives the change.
    back = await V2Client.connect(http, f"{node.ws_url}/ws/tables/{section}/{token}?since={watermark}", p)
    await back.next()
    change = await back.next()
    assert change["topic"] == "tables.updated"
    assert number_of(change) == 7
    assert (await back.next())["data"] == {"recovered": True, "replayed": 1}
    await back.close()


async def test_holds_survive_a_drop_and_a_resume_on_the_other_node_and_end_after_the_grace(
    kafka_brokers: str,
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
    http: aiohttp.ClientSession,
) -> None:
    env = {"TABLE_SELECTION_RECONNECT_GRACE": "3s", "TABLE_SELECTION_RATE_LIMIT": "1000"}
    a, b = (start_gateway(v2_node(upstream, kafka_brokers, **env), ready=True) for _ in range(2))
    p = unique("gr")
    section = f"{p}-s"

    async def socket(node: GatewayProcess, user: str, since: str = "") -> V2Client:
        query = f"?since={since}" if since else ""
        client = await V2Client.connect(
            http, f"{node.ws_url}/ws/tables/{section}/{make_token(user)}{query}", p
        )
        assert (await client.next())["topic"] == "system.connected"
        return client

    async def holds(client: V2Client, count: int) -> list[tuple[str, str, str]]:
        """The next ``count`` selection messages: (topic, table, reason or holder)."""
        found = []
        while len(found) < count:
            message = await client.next()
            if message["topic"] in ("tables.selecting", "tables.released"):
                data = message["data"]
                found.append((message["topic"], data["tableId"], data.get("reason", data["selectedBy"])))
        return found

    async def command(client: V2Client, action: str, table: str) -> dict[str, Any]:
        await client.ws.send_str(
            orjson.dumps({"action": action, "payload": {"tableId": table}, "requestId": action}).decode()
        )
        while True:
            message = await client.next()
            if (
                message["topic"].startswith("system.")
                and message.get("metadata", {}).get("requestId") == action
            ):
                return message

    observer = await socket(b, f"{p}-obs")
    ada = await socket(a, f"{p}-ada")
    assert (await command(ada, "select_table", f"{p}-t1"))["topic"] == "system.ack"
    assert await holds(observer, 1) == [("tables.selecting", f"{p}-t1", f"{p}-ada")]
    ada.reset()
    await asyncio.sleep(0.5)
    back = await socket(b, f"{p}-ada", since=ada.cursor)  # the other node, within the grace
    await asyncio.sleep(3.5)  # past the grace: the hold must still be ada's
    bob = await socket(a, f"{p}-bob")
    assert (await command(bob, "select_table", f"{p}-t9"))["topic"] == "system.ack"
    assert (await command(bob, "release_table", f"{p}-t9"))["topic"] == "system.ack"
    # The sentinel's two messages come, and nothing released t1 before them.
    assert await holds(observer, 2) == [
        ("tables.selecting", f"{p}-t9", f"{p}-bob"),
        ("tables.released", f"{p}-t9", "released"),
    ]
    # The resumed socket holds t1 now: it may release it.
    assert (await command(back, "release_table", f"{p}-t1"))["topic"] == "system.ack"
    assert await holds(observer, 1) == [("tables.released", f"{p}-t1", "released")]

    # A drop that nobody resumes ends with "disconnected", once the grace is over.
    carl = await socket(a, f"{p}-carl")
    assert (await command(carl, "select_table", f"{p}-t2"))["topic"] == "system.ack"
    assert await holds(observer, 1) == [("tables.selecting", f"{p}-t2", f"{p}-carl")]
    dropped = asyncio.get_running_loop().time()
    carl.reset()
    assert await holds(observer, 1) == [("tables.released", f"{p}-t2", "disconnected")]
    assert asyncio.get_running_loop().time() - dropped >= 2.5
    # A clean close from the client releases at once, as in v1.
    dana = await socket(a, f"{p}-dana")
    assert (await command(dana, "select_table", f"{p}-t3"))["topic"] == "system.ack"
    assert await holds(observer, 1) == [("tables.selecting", f"{p}-t3", f"{p}-dana")]
    closed = asyncio.get_running_loop().time()
    await dana.close()
    assert await holds(observer, 1) == [("tables.released", f"{p}-t3", "disconnected")]
    assert asyncio.get_running_loop().time() - closed < 2.0
    for client in (observer, back, bob):
        await client.close()


async def test_a_node_started_after_the_gap_reads_it_from_kafka_once_for_every_resume(
    kafka_brokers: str,
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
    http: aiohttp.ClientSession,
) -> None:
    a = start_gateway(v2_node(upstream, kafka_brokers), ready=True)
    p = unique("late")
    section = f"{p}-s"
    tokens = [make_token(f"{p}-u{n}") for n in range(3)]
    clients = [await V2Client.connect(http, f"{a.ws_url}/ws/tables/{section}/{token}", p) for token in tokens]
    cursors = []
    for client in clients:
        assert (await client.next())["topic"] == "system.connected"
        cursors.append(client.cursor)
        client.reset()
    producer = EventProducer(kafka_brokers)
    for n in range(30):
        payload, _ = ks.table_event("updated", f"{p}-t{n}", section, number=n)
        producer.send(TABLES, payload, partition=n % 3)
    producer.flush()
    # Node B starts now: it reads from the end of each partition, after the whole gap.
    b = start_gateway(v2_node(upstream, kafka_brokers), ready=True)
    back = await asyncio.gather(
        *(
            V2Client.connect(http, f"{b.ws_url}/ws/tables/{section}/{token}?since={cursor}", p)
            for token, cursor in zip(tokens, cursors, strict=True)
        )
    )
    for client in back:
        assert (await client.next())["topic"] == "system.connected"
        replayed = []
        while (message := await client.next())["topic"] != "system.resumed":
            replayed.append(number_of(message))
        assert message["data"] == {"recovered": True, "replayed": 30}
        assert sorted(replayed) == list(range(30))
        for partition in range(3):
            mine = [n for n in replayed if n % 3 == partition]
            assert mine == sorted(mine)
        await client.close()
    metrics = ks.scrape(b.url)
    assert metrics.total("mesaya_resume_log_reads_total", outcome="read") == 1  # one read, shared


async def test_a_resume_replays_no_private_event_of_another_user_or_restaurant(
    kafka_brokers: str,
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
    http: aiohttp.ClientSession,
) -> None:
    """Reservations are a restaurant's private data: a USER's resume replays only their own,
    an OWNER's only their restaurant's. Each socket's own event comes last: the sentinel that
    shows the others had been read and were left out."""
    node = start_gateway(v2_node(upstream, kafka_brokers), ready=True)
    p = unique("pv")
    r1, r2, u1, u2, owner = f"{p}-r1", f"{p}-r2", f"{p}-u1", f"{p}-u2", f"{p}-o2"
    upstream.own(owner, r2)
    sockets = {
        "user": f"/ws/reservations/{r1}/{make_token(u1, ['USER'])}",
        "owner": f"/ws/reservations/{r2}/{make_token(owner, ['OWNER'])}",
    }
    cursors = {}
    for name, path in sockets.items():
        client = await V2Client.connect(http, node.ws_url + path, p)
        assert (await client.next())["topic"] == "system.connected"
        await client.ws.send_str('{"action":"ping"}')
        cursors[name] = (await client.next())["cursor"]  # the pong's: the position now
        await client.close()
    watcher = await EventClient.connect(
        http, node.ws_url, "reservations", "*", make_token("root", ["ADMIN"]), prefix=p
    )
    producer = EventProducer(kafka_brokers)
    events = [
        ks.reservation_event("created", f"{p}-res-u2", r1, u2),  # another user, same restaurant
        ks.reservation_event("created", f"{p}-res-r1", r1, f"{p}-u3"),  # r1: not the owner's restaurant
        ks.reservation_event("created", f"{p}-res-u1", r1, u1),  # the user's own: its sentinel
        ks.reservation_event("created", f"{p}-res-r2", r2, f"{p}-u4"),  # the owner's: its sentinel
    ]
    for payload, _ in events:
        producer.send("mesa-ya.reservations.events", payload, partition=0)
    producer.flush()
    seen = [(await watcher.next_event())["resourceId"] for _ in events]  # the node read them all
    assert seen == [f"{p}-res-u2", f"{p}-res-r1", f"{p}-res-u1", f"{p}-res-r2"]
    await watcher.close()
    expected = {"user": [f"{p}-res-u1"], "owner": [f"{p}-res-r2"]}
    for name, path in sockets.items():
        back = await V2Client.connect(http, f"{node.ws_url}{path}?since={cursors[name]}", p)
        assert (await back.next())["topic"] == "system.connected"
        replayed = []
        while (message := await back.next())["topic"] != "system.resumed":
            replayed.append(message["resourceId"])
        assert replayed == expected[name], name
        assert message["data"] == {"recovered": True, "replayed": 1}
        await back.close()
