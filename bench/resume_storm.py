"""The resume storm: a node dies and its protocol v2 clients all come back to another at once.

Usage::

    python -m bench.resume_storm                     # make bench-resume: 5,000 sockets, gap 50
    python -m bench.resume_storm --sockets 1000 --gap 20

Two gateway nodes on a real broker (docs/BENCHMARKS.md "Resume storm"):

1. ``--sockets`` v2 clients (each with its own JWT) connect to node A, over ``--sections``
   sections, and keep the cursor of ``system.connected``;
2. node A is killed (SIGKILL): every client loses its connection at once;
3. ``--gap`` events per client are produced (each section gets ``--gap`` events, over three
   partitions) while nobody is connected; node B reads them;
4. every client reconnects to node B with ``?since=<cursor>`` (at most ``--concurrency``
   handshakes in flight, as a load balancer's retry would spread them) and must get exactly
   its ``--gap`` events, in partition order, then ``system.resumed`` ``recovered: true``;
5. the baseline, in the same command: the same clients close and connect to node B again
   without a cursor (the reconnect storm every gateway has), and wait for ``system.connected``.

Reported: seconds until every client has resumed, node B's CPU seconds for the storm, per
resume and per replayed event, the ratio to the baseline's, Kafka connections node B opened
during the storm (0: resumes read the node's journal, no consumer per socket), and lost /
duplicated / out-of-order events (the run fails on any). Results go to
``bench/results/resume-storm-*.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.common import RESULTS, SECRET, TOPIC, make_tokens, pin, proc_cpu, raise_nofile
from bench.run import PYTHON, Layout, Producer, Server, Upstream, free_port, kafka_brokers

_KEY = base64.b64encode(b"mesaya-storm-key").decode()


def broker_connections(pid: int, broker_port: int) -> int:
    """Established TCP connections of process ``pid`` to the broker's port."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return 0
    wanted = f":{broker_port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if fields[2].endswith(wanted) and fields[3] == "01" and fields[9] in inodes:
                        count += 1
        except OSError:
            continue
    return count


@dataclass
class Client(asyncio.Protocol):
    """A minimal protocol v2 client: its upgrade, a frame parser, the messages it got."""

    path: str
    on_message: Callable[[Client, dict[str, Any]], None]
    transport: asyncio.Transport | None = None
    buffer: bytearray = field(default_factory=bytearray)
    upgraded: bool = False
    lost: asyncio.Future[None] | None = None
    # what the storm checks
    cursor: str = ""
    events: list[int] = field(default_factory=list)
    resumed: dict[str, Any] | None = None
    connected: bool = False
    done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: mesaya.v2\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("closed before it was done"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end])
            if b" 101 " not in head.split(b"\r\n", 1)[0] or b"mesaya.v2" not in head:
                raise RuntimeError(f"upgrade refused: {head[:200]!r}")
            del buffer[: end + 4]
            self.upgraded = True
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            if opcode == 1:
                self.on_message(self, orjson.loads(payload))
            elif opcode == 9 and self.transport is not None:  # ping: pong (zero mask)
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.write(bytes((0x88, 0x82)) + b"\0\0\0\0" + (1000).to_bytes(2, "big"))
            self.transport.close()


def _track(client: Client, message: dict[str, Any]) -> None:
    """Keep the cursor; count events (their seq); finish on system.resumed / connected."""
    topic = message["topic"]
    if message.get("cursor"):
        client.cursor = message["cursor"]
    if topic == "system.connected":
        client.connected = True
        if client.done is not None and not client.done.done() and "since=" not in client.path:
            client.done.set_result(None)
    elif topic == "system.resumed":
        client.resumed = message["data"]
        if client.done is not None and not client.done.done():
            client.done.set_result(None)
    elif topic == "tables.updated":
        client.events.append(message["data"]["bench"]["s"])


async def storm(
    port: int, clients: list[Client], concurrency: int, timeout: float = 120.0
) -> tuple[float, list[Client]]:
    """Connect every client (``concurrency`` at once) and wait until each is done."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    failed: list[Client] = []

    async def one(client: Client) -> None:
        client.done = loop.create_future()
        client.lost = loop.create_future()
        async with gate:
            try:
                await loop.create_connection(lambda: client, "127.0.0.1", port)
                await asyncio.wait_for(asyncio.shield(client.done), timeout)
            except (OSError, TimeoutError, ConnectionError):
                failed.append(client)

    started = time.perf_counter()
    await asyncio.gather(*(one(client) for client in clients))
    return time.perf_counter() - started, failed


def node_env(port: int, brokers: str, upstream: str, sockets: int) -> dict[str, str]:
    return {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "KAFKA_ENABLED": "true",
        "KAFKA_BROKERS": brokers,
        "JWT_SECRET": SECRET,
        "REST_BASE_URL": upstream,
        "LOG_LEVEL": "warn",
        "WORKERS": "1",
        "RESUME_MAX_EVENTS": str(max(1000, 4 * sockets)),
    }


def check(clients: list[Client], gap: int) -> dict[str, int]:
    """Lost, duplicated and out-of-order events over all clients, and failed resumes."""
    lost = dup = disorder = unrecovered = 0
    for client in clients:
        seen = client.events
        unique = set(seen)
        dup += len(seen) - len(unique)
        lost += max(0, gap - len(unique))
        for partition in range(3):
            run = [s for s in seen if s % 3 == partition]
            disorder += sum(1 for a, b in itertools.pairwise(run) if b < a)
        if not client.resumed or not client.resumed.get("recovered"):
            unrecovered += 1
    return {"lost": lost, "duplicated": dup, "out_of_order": disorder, "not_recovered": unrecovered}


async def run(args: argparse.Namespace) -> int:
    layout = Layout.detect()
    pin(layout.load)
    raise_nofile()
    brokers, _ = kafka_brokers(layout)
    broker_port = int(brokers.rsplit(":", 1)[1])
    upstream = Upstream()
    producer = Producer(brokers)
    sections = [f"storm-{run_id}-{i}" for run_id in [os.getpid()] for i in range(args.sections)]
    tokens = make_tokens("storm", args.sockets)
    nodes: list[Server] = []
    try:
        a_port, b_port = free_port(), free_port()
        a = Server(
            "resume-a",
            [PYTHON, "-m", "mesaya_realtime", "serve"],
            node_env(a_port, brokers, upstream.url, args.sockets),
            a_port,
            layout,
        )
        b = Server(
            "resume-b",
            [PYTHON, "-m", "mesaya_realtime", "serve"],
            node_env(b_port, brokers, upstream.url, args.sockets),
            b_port,
            layout,
        )
        nodes += [a, b]
        await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))

        paths = [f"/ws/tables/{sections[i % args.sections]}/{tokens[i]}" for i in range(args.sockets)]
        first = [Client(path, _track) for path in paths]
        seconds, failed = await storm(a_port, first, args.concurrency)
        assert not failed, f"{len(failed)} clients could not connect to node A"
        print(f"::: resume storm: {len(first)} v2 sockets on node A in {seconds:.1f} s", flush=True)
        cursors = [client.cursor for client in first]
        assert all(cursors), "a client got no cursor"

        a.process.send_signal(signal.SIGKILL)  # the node dies; its clients lose their sockets
        lost = [c.lost for c in first if c.lost is not None]
        await asyncio.wait_for(asyncio.gather(*lost), 30)
        print("::: resume storm: node A killed; every client disconnected", flush=True)

        # The gap: --gap events per section over three partitions, then a sentinel per
        # partition that a watcher on node B must see (B has read the whole gap).
        from confluent_kafka import Producer as KafkaProducer

        kafka = KafkaProducer({"bootstrap.servers": brokers, "linger.ms": 5, "acks": 1, "log_level": 3})
        for seq in range(args.gap):
            for where in sections:
                kafka.produce(TOPIC, producer.value(7, seq, where), partition=seq % 3)
            kafka.poll(0)
        watch = f"storm-watch-{os.getpid()}"
        for partition in range(3):
            kafka.produce(TOPIC, producer.value(8, partition, watch), partition=partition)
        kafka.flush(60)
        watcher = Client(f"/ws/tables/{watch}/{tokens[0]}", _track)
        await storm(b_port, [watcher], 1)
        deadline = time.monotonic() + 60
        while len(watcher.events) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # The watcher's own connect may have come after the sentinels: it only proves B is
        # live. B has read the gap once its consumed count covers it.
        await asyncio.sleep(1.0)
        watcher.close()

        connections_before = broker_connections(b.pid, broker_port)
        resumed = [
            Client(f"{client.path}?since={cursor}", _track)
            for client, cursor in zip(first, cursors, strict=True)
        ]
        cpu_before = proc_cpu(b.pid)
        resume_seconds, failed = await storm(b_port, resumed, args.concurrency)
        resume_cpu = proc_cpu(b.pid) - cpu_before
        connections_after = broker_connections(b.pid, broker_port)
        verdict = check(resumed, args.gap)
        verdict["failed"] = len(failed)
        print(
            f"::: resume storm: {len(resumed)} resumes on node B in {resume_seconds:.2f} s, "
            f"CPU {resume_cpu:.2f} s; {verdict}",
            flush=True,
        )

        for client in resumed:
            client.close()
        await asyncio.sleep(2.0)
        plain = [Client(client.path.split("?", 1)[0], _track) for client in first]
        cpu_before = proc_cpu(b.pid)
        plain_seconds, plain_failed = await storm(b_port, plain, args.concurrency)
        plain_cpu = proc_cpu(b.pid) - cpu_before
        print(
            f"::: baseline: {len(plain)} plain reconnects on node B in {plain_seconds:.2f} s, "
            f"CPU {plain_cpu:.2f} s",
            flush=True,
        )
        for client in plain:
            client.close()
    finally:
        for node in nodes:
            node.stop()
    replayed = args.sockets * args.gap
    result = {
        "plan": vars(args),
        "resume": {
            "seconds": round(resume_seconds, 3),
            "server_cpu_s": round(resume_cpu, 3),
            "cpu_per_resume_us": round(resume_cpu / args.sockets * 1e6, 1),
            "cpu_per_replayed_event_us": round(resume_cpu / max(1, replayed) * 1e6, 2),
            "kafka_connections_opened": max(0, connections_after - connections_before),
            **verdict,
        },
        "baseline_plain_reconnect": {
            "seconds": round(plain_seconds, 3),
            "server_cpu_s": round(plain_cpu, 3),
            "cpu_per_connect_us": round(plain_cpu / args.sockets * 1e6, 1),
            "failed": len(plain_failed),
        },
        "ratios": {
            "seconds_vs_plain": round(resume_seconds / plain_seconds, 2) if plain_seconds else None,
            "cpu_vs_plain": round(resume_cpu / plain_cpu, 2) if plain_cpu else None,
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"resume-storm-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"::: resume storm: {orjson.dumps(result['resume']).decode()}")
    print(f"::: baseline: {orjson.dumps(result['baseline_plain_reconnect']).decode()}")
    print(f"::: ratios (same command): {orjson.dumps(result['ratios']).decode()}")
    print(f"::: results: {out}")
    bad = any(result["resume"][k] for k in ("lost", "duplicated", "out_of_order", "not_recovered", "failed"))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resume_storm", description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--sections", type=int, default=100)
    parser.add_argument("--gap", type=int, default=50, help="events each client misses")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight at once")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
