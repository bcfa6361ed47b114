"""A load-generator process: thousands of raw-socket WebSocket clients on one event loop.

Driven by the orchestrator through JSON lines on stdin/stdout (one request, one answer).
The clients are deliberately minimal so the generator is cheap: a hand-written upgrade
request, an incremental frame parser, and for each event frame one ``find`` plus a tiny
``orjson.loads`` of the embedded ``"bench":{"r":run,"s":seq,"t":ns}`` marker. Every client
checks that it gets every event of the current run exactly once and in order.

    python -m bench.loadgen --core 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from bench.common import histogram, pin, raise_nofile

_KEY = base64.b64encode(b"mesaya-bench-key").decode()
_ACCEPT = base64.b64encode(hashlib.sha1((_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
_MARK = b'"bench"'
_LIST_REPLY = b'{"topic":"tables.list"'
_ERROR_REPLY = b'{"topic":"tables.error"'
_now = time.time_ns
_mono = time.perf_counter_ns


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame with an all-zero mask (valid, and the payload stays as is)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65_536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


LIST_TABLES = masked_frame(1, b'{"action":"list_tables"}')
CLOSE = masked_frame(8, (1000).to_bytes(2, "big"))
# Centrifugo's client protocol (JSON): the server's ping is an empty command, the pong too.
_CF_PONG = masked_frame(1, b"{}")
_CF_SUBSCRIBED = b'"id":2'


def centrifugo_hello(token: str, channel: str) -> bytes:
    """Connect (with the socket's JWT) and subscribe, two commands in one frame (newline-separated)."""
    connect = orjson.dumps({"id": 1, "connect": {"token": token, "name": "mesaya-bench"}})
    subscribe = orjson.dumps({"id": 2, "subscribe": {"channel": channel}})
    return masked_frame(1, connect + b"\n" + subscribe)


def centrifugo_ping(buf: bytes, start: int, end: int) -> bool:
    """Whether a frame holds Centrifugo's ping, ``{}``, alone or among newline-separated pushes."""
    if end - start == 2:
        return buf[start:end] == b"{}"
    return (
        buf.startswith(b"{}\n", start)
        or buf.endswith(b"\n{}", start, end)
        or buf.find(b"\n{}\n", start, end) >= 0
    )


class Generator:
    """The clients of this process and the counters of the current phase."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.run = -1
        self.target = 0
        self.expecting = 0
        self.done = 0
        self.all_done: asyncio.Future[None] | None = None
        self.latencies = array("q")
        self.dup = 0
        self.gaps = 0
        self.foreign = 0
        self.first_ns = 0
        self.last_ns = 0
        self.round_last: dict[int, int] = {}
        self.round_count: dict[int, int] = {}
        self.round_waiters: dict[int, asyncio.Future[None]] = {}
        self.round_size = 0
        self.closed_by_server = 0
        # commands
        self.commands = False
        self.closed_loop = False
        self.replies = 0
        self.errors = 0
        self.cmd_latencies = array("q")

    def client_done(self) -> None:
        self.done += 1
        if self.done == self.expecting and self.all_done is not None and not self.all_done.done():
            self.all_done.set_result(None)

    def round_complete(self, rnd: int, now: int) -> None:
        count = self.round_count.get(rnd, 0) + 1
        self.round_count[rnd] = count
        if count == self.expecting:
            self.round_last[rnd] = now
            waiter = self.round_waiters.pop(rnd, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def live(self) -> list[Client]:
        return [c for c in self.clients if not c.closed]


class Client(asyncio.Protocol):
    __slots__ = (
        "buf",
        "centrifugo",
        "closed",
        "expected",
        "gen",
        "hello",
        "opened",
        "pending",
        "request",
        "transport",
        "upgraded",
    )

    def __init__(
        self,
        gen: Generator,
        request: bytes,
        loop: asyncio.AbstractEventLoop,
        centrifugo: bytes | None = None,
    ) -> None:
        self.gen = gen
        self.request = request
        #: Centrifugo's connect + subscribe frame, sent once upgraded (None: the gateway's protocol).
        self.centrifugo = centrifugo
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.closed = False
        self.opened: asyncio.Future[int] = loop.create_future()
        self.hello = False
        self.expected = 0
        self.pending: deque[int] = deque()

    # -- connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if self.upgraded:
                self.gen.closed_by_server += 1
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the upgrade"))

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            data = self.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            head = data[:end]
            if not head.startswith(b"HTTP/1.1 101") or _ACCEPT not in head:
                self.buf = b""
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                return
            self.upgraded = True
            self.buf = b""
            if self.centrifugo is not None and self.transport is not None:
                self.transport.write(self.centrifugo)
            data = data[end + 4 :]
            if not data:
                return
        self.frames(data)

    def frames(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        size = len(buf)
        pos = 0
        now = 0
        gen = self.gen
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            pos = end
            if opcode == 1:
                if now == 0:
                    now = _now()
                mark = buf.find(_MARK, start, end)
                if mark >= 0:
                    while mark >= 0:
                        left = buf.find(b"{", mark, end)
                        right = buf.find(b"}", left, end) + 1
                        self.event(orjson.loads(buf[left:right]), now)
                        # Centrifugo batches several pushes into one frame, one per line.
                        mark = buf.find(_MARK, right, end) if self.centrifugo is not None else -1
                    if self.centrifugo is not None and centrifugo_ping(buf, start, end):
                        self.pong()
                elif self.centrifugo is not None:
                    self.centrifugo_reply(buf, start, end)
                elif gen.commands and (
                    buf.startswith(_LIST_REPLY, start) or buf.startswith(_ERROR_REPLY, start)
                ):
                    self.reply(buf.startswith(_ERROR_REPLY, start))
                elif not self.hello:
                    self.hello = True
                    if not self.opened.done():
                        self.opened.set_result(0)
            elif opcode == 9 and self.transport is not None:
                self.transport.write(masked_frame(10, buf[start:end]))
            elif opcode == 8:
                self.closed = True
                gen.closed_by_server += 1
                if self.transport is not None:
                    self.transport.close()
        self.buf = buf[pos:] if pos < size else b""

    # -- Centrifugo --------------------------------------------------------------------------
    def pong(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(_CF_PONG)

    def centrifugo_reply(self, buf: bytes, start: int, end: int) -> None:
        """Replies to connect (id 1) and subscribe (id 2), and pings: open once subscribed."""
        if centrifugo_ping(buf, start, end):
            self.pong()
        if self.hello:
            return
        if buf.find(b'"error"', start, end) >= 0:
            self.hello = True
            if not self.opened.done():
                self.opened.set_exception(ConnectionError(buf[start:end][:80].decode(errors="replace")))
        elif buf.find(_CF_SUBSCRIBED, start, end) >= 0:
            self.hello = True
            if not self.opened.done():
                self.opened.set_result(0)

    # -- events ----------------------------------------------------------------------------
    def event(self, marker: dict[str, int], now: int) -> None:
        gen = self.gen
        if marker["r"] != gen.run:
            gen.foreign += 1
            return
        seq = marker["s"]
        expected = self.expected
        if seq < expected:
            gen.dup += 1
            return
        if seq > expected:
            gen.gaps += 1
        self.expected = seq + 1
        gen.latencies.append(now - marker["t"])
        if gen.round_size and (seq + 1) % gen.round_size == 0:
            gen.round_complete(seq // gen.round_size, now)
        if self.expected == gen.target:
            gen.last_ns = max(gen.last_ns, now)
            gen.client_done()

    # -- commands --------------------------------------------------------------------------
    def command(self) -> None:
        if self.transport is not None and not self.closed:
            self.pending.append(_mono())
            self.transport.write(LIST_TABLES)

    def reply(self, error: bool) -> None:
        gen = self.gen
        if not self.pending:
            gen.foreign += 1
            return
        gen.cmd_latencies.append(_mono() - self.pending.popleft())
        gen.replies += 1
        if error:
            gen.errors += 1
        if gen.closed_loop:
            self.command()


def _request(host: str, port: int, path: str, protocol: str = "") -> bytes:
    offer = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    ).encode()


class Agent:
    """Executes the orchestrator's requests."""

    def __init__(self) -> None:
        self.gen = Generator()
        self.loop = asyncio.get_running_loop()

    async def connect(
        self,
        host: str,
        port: int,
        paths: list[str],
        concurrency: int = 200,
        timeout: float = 20.0,
        keep: bool = True,
        centrifugo: str = "",
        protocol: str = "",
    ) -> dict[str, Any]:
        """Open one client per path (``concurrency`` at a time); wait for its first frame.

        With ``centrifugo`` (a channel), each path is a JWT instead: the client upgrades on
        ``/connection/websocket``, connects with that token, subscribes to the channel and is
        open once the subscription is confirmed.
        """
        gen = self.gen
        loop = self.loop
        index = 0
        failures: dict[str, int] = {}
        opened: list[Client] = []
        times = array("q")

        async def worker() -> None:
            nonlocal index
            while index < len(paths):
                path = paths[index]
                index += 1
                started = _mono()
                if centrifugo:
                    request = _request(host, port, "/connection/websocket")
                    client = Client(gen, request, loop, centrifugo_hello(path, centrifugo))
                else:
                    # ``protocol``: the subprotocol asked for (``mesaya.v2``: the gateway's v2)
                    client = Client(gen, _request(host, port, path, protocol), loop)
                try:
                    await loop.create_connection(lambda c=client: c, host, port)  # type: ignore[misc]
                    await asyncio.wait_for(asyncio.shield(client.opened), timeout)
                except (OSError, ConnectionError, TimeoutError) as error:
                    reason = str(error)[:80] or type(error).__name__
                    failures[reason] = failures.get(reason, 0) + 1
                    if client.transport is not None:
                        client.transport.abort()
                    continue
                times.append(_mono() - started)
                opened.append(client)

        start = _now()
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(paths))))))
        end = _now()
        if keep:
            gen.clients.extend(opened)
        else:
            for client in opened:
                client.closed = True
                if client.transport is not None:
                    client.transport.write(CLOSE)
                    client.transport.close()
        return {
            "opened": len(opened),
            "failed": sum(failures.values()),
            "failures": failures,
            "start_ns": start,
            "end_ns": end,
            "latency_hist": histogram(times),
        }

    async def close(self, count: int | None = None) -> dict[str, Any]:
        """Close ``count`` clients (all when None) with a close frame."""
        live = self.gen.live()
        chosen = live if count is None else live[len(live) - count :]
        for client in chosen:
            client.closed = True
            if client.transport is not None:
                client.transport.write(CLOSE)
                client.transport.close()
        self.gen.clients = [c for c in self.gen.clients if not c.closed]
        await asyncio.sleep(0)
        return {"closed": len(chosen), "left": len(self.gen.clients)}

    async def expect(self, run: int, target: int, round_size: int = 0) -> dict[str, Any]:
        """Start a run: every live client must get events 0..target-1 of ``run`` in order."""
        gen = self.gen
        gen.run = run
        gen.target = target
        gen.done = 0
        gen.all_done = self.loop.create_future()
        gen.latencies = array("q")
        gen.dup = gen.gaps = gen.foreign = 0
        gen.first_ns = gen.last_ns = 0
        gen.round_last = {}
        gen.round_count = {}
        gen.round_waiters = {}
        gen.round_size = round_size
        gen.closed_by_server = 0
        for client in gen.clients:
            client.expected = 0
        gen.expecting = len(gen.live())
        if not gen.expecting or target == 0:
            gen.all_done.set_result(None)
        return {"clients": gen.expecting}

    async def wait_round(self, round: int, timeout: float) -> dict[str, Any]:
        """Wait until every client got the last event of burst ``round``."""
        gen = self.gen
        if gen.round_count.get(round, 0) >= gen.expecting:
            return {"ok": True}
        waiter = gen.round_waiters.setdefault(round, self.loop.create_future())
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return {"ok": False}
        return {"ok": True}

    async def wait(self, timeout: float) -> dict[str, Any]:
        """Wait until every client got every event of the run (or the timeout)."""
        gen = self.gen
        assert gen.all_done is not None
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(gen.all_done), timeout)
        except TimeoutError:
            timed_out = True
        received = len(gen.latencies)
        expected = gen.target * gen.expecting
        hist = histogram(gen.latencies)
        return {
            "clients": gen.expecting,
            "expected": expected,
            "received": received,
            "lost": max(0, expected - received),
            "dup": gen.dup,
            "gaps": gen.gaps,
            "foreign": gen.foreign,
            "closed_by_server": gen.closed_by_server,
            "timed_out": timed_out,
            "last_ns": gen.last_ns,
            "round_last": gen.round_last,
            "latency_hist": hist,
        }

    async def commands(self, duration: float, rate: float = 0.0, warmup: bool = True) -> dict[str, Any]:
        """``list_tables`` round trips for ``duration`` s: closed loop (rate 0) or open loop."""
        gen = self.gen
        live = gen.live()
        gen.commands = True
        if warmup:
            gen.closed_loop = False
            for client in live:
                client.command()
            deadline = time.monotonic() + 30
            while gen.replies < len(live) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        gen.replies = gen.errors = 0
        gen.cmd_latencies = array("q")
        start = _now()
        if rate <= 0:
            gen.closed_loop = True
            for client in live:
                client.command()
            await asyncio.sleep(duration)
            gen.closed_loop = False
        else:
            sent = 0
            began = time.monotonic()
            turn = 0
            while True:
                elapsed = time.monotonic() - began
                if elapsed >= duration:
                    break
                due = int(rate * elapsed) - sent
                for _ in range(due):
                    live[turn].command()
                    turn = (turn + 1) % len(live)
                sent += max(0, due)
                await asyncio.sleep(0.001)
        end = _now()
        replies = gen.replies
        drain_deadline = time.monotonic() + 30
        while any(c.pending for c in live) and time.monotonic() < drain_deadline:
            await asyncio.sleep(0.01)
        outstanding = sum(len(c.pending) for c in live)
        for client in live:
            client.pending.clear()
        gen.commands = False
        return {
            "replies_in_window": replies,
            "replies": gen.replies,
            "errors": gen.errors,
            "outstanding": outstanding,
            "start_ns": start,
            "end_ns": end,
            "latency_hist": histogram(gen.cmd_latencies),
        }

    async def status(self) -> dict[str, Any]:
        return {"clients": len(self.gen.live()), "pid": os.getpid()}


async def serve() -> None:
    agent = Agent()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer

    def answer(body: dict[str, Any]) -> None:
        out.write(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        out.flush()

    answer({"ready": True, "pid": os.getpid()})
    while True:
        line = await reader.readline()
        if not line:
            return
        request = orjson.loads(line)
        op = request.pop("op")
        if op == "exit":
            await agent.close()
            answer({"ok": True})
            return
        method: Callable[..., Any] = getattr(agent, op)
        try:
            result = await method(**request)
        except Exception as error:
            answer({"error": f"{type(error).__name__}: {error}"})
        else:
            answer(result)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--core", type=int, action="append")
    args = parser.parse_args()
    raise_nofile()
    pin(args.core)
    try:
        import uvloop
    except ImportError:  # the plain asyncio loop works, at a higher cost per frame
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
