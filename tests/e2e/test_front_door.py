"""The front door (interface/front_door.py), end to end: real gateway processes, raw TCP clients.

The entity route's plain upgrades are answered by the front door, everything else by aiohttp;
a gateway with ``WS_FRONT_DOOR=false`` sends everything through aiohttp. The differential test
holds both to the same answers; the others check what the front door does on its own: the
hand-overs, keep-alive after a refusal, the head timeout, early bytes, the heartbeat, pings.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest

from tests.support import SECRET, GatewayProcess, RecordingUpstream, gateway_env, running_gateway

TIMEOUT = 10.0
Pair = tuple[GatewayProcess, GatewayProcess]


def token(**claims: Any) -> str:
    body = {"sub": "u1", "roles": ["ADMIN"], "exp": int(time.time()) + 3600, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")


def upgrade_request(path: str, *, extra: str = "", version: str = "1.1") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/{version}\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


class Raw:
    """A TCP client that reads HTTP heads and server frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    @classmethod
    async def upgraded(cls, port: int) -> Raw:
        """A v1 tables socket past its 101 and ``system.connected``."""
        client = await cls.open(port)
        await client.send(upgrade_request(f"/ws/tables/main/{token()}"))
        assert (await client.head())[0] == 101
        assert (await client.message())["topic"] == "system.connected"
        return client

    async def close_code(self) -> int:
        """The code of the next frame, which must be a close frame."""
        opcode, payload = await self.frame()
        assert opcode == 8, (opcode, payload)
        code: int = struct.unpack("!H", payload[:2])[0]
        return code

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> tuple[int, dict[str, str]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        lines = raw.decode().split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    async def response(self) -> tuple[int, Any]:
        status, headers = await self.head()
        body = await asyncio.wait_for(self.reader.readexactly(int(headers["content-length"])), TIMEOUT)
        assert headers["content-type"].startswith("application/json"), headers
        return status, orjson.loads(body)

    async def frame(self) -> tuple[int, bytes]:
        first, second = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(length), TIMEOUT)

    async def message(self) -> dict[str, Any]:
        opcode, payload = await self.frame()
        assert opcode == 1, (opcode, payload)
        body: dict[str, Any] = orjson.loads(payload)
        return body

    async def closed_by_server(self, within: float) -> bool:
        """True when the server ends the connection (EOF or reset) within ``within`` s."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture(scope="module")
def both(
    upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """A gateway with the front door and one without (``WS_FRONT_DOOR=false``)."""
    logs = tmp_path_factory.mktemp("front-door")
    with (
        running_gateway(gateway_env(upstream.url), logs) as door,
        running_gateway(gateway_env(upstream.url, WS_FRONT_DOOR="false"), logs) as plain,
    ):
        yield door, plain


async def answer(port: int, request: bytes) -> tuple[int, Any]:
    """The status and, for a refusal its JSON body, for a 101 the first frame's topic."""
    client = await Raw.open(port)
    try:
        await client.send(request)
        status, headers = await client.head()
        if status == 101:
            return 101, (await client.message())["topic"]
        body = await asyncio.wait_for(client.reader.readexactly(int(headers["content-length"])), TIMEOUT)
        is_json = headers.get("content-type", "").startswith("application/json")
        return status, orjson.loads(body) if is_json else body
    finally:
        client.close()


async def test_the_front_door_answers_as_aiohttp_does(both: Pair) -> None:
    door, plain = both
    good = token()
    cases = [
        upgrade_request(f"/ws/tables/main/{good}"),
        upgrade_request(f"/ws/tables/main?token={good}"),
        upgrade_request("/ws/tables/main", extra=f"Authorization: Bearer {good}\r\n"),
        upgrade_request(f"/ws/tables/main/{token(exp=int(time.time()) - 60)}"),
        upgrade_request("/ws/tables/main/not-a-jwt"),
        upgrade_request(f"/ws/nope/main/{good}"),
        upgrade_request(f"/ws/tables/ /{good}"),
        upgrade_request(f"/ws/tables//{good}"),
        upgrade_request(f"/ws//main/{good}"),
        upgrade_request("/ws/tables/main"),
        upgrade_request(f"/ws/tables/*/{token(roles=['USER'])}"),
        upgrade_request(f"/ws/tables/main%20hall/{good}"),  # encoded: aiohttp's on both
        upgrade_request(f"/ws/tables/main/{good}", version="1.0"),
        upgrade_request(f"/ws/tables/main/{good}/"),
        upgrade_request(f"/ws/analytics/x/{good}"),
        upgrade_request(f"/ws/tables/main/{good}", extra="Sec-WebSocket-Protocol: mesaya.v2\r\n"),
        upgrade_request(f"/ws/tables/main/{good}").replace(b"Version: 13", b"Version: 12"),
        upgrade_request(f"/ws/tables/main/{good}").replace(b"Upgrade: websocket", b"Upgrade: h2c"),
        f"GET /ws/tables/main/{good} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        upgrade_request(f"/ws/tables/main/{good}", extra="Content-Length: 0\r\nContent-Length: 5\r\n"),
        upgrade_request(f"/ws/tables/main/{good}", extra="Host: y\r\n"),
        upgrade_request(f"/ws/tables/main/{good}").replace(b"Host: x\r\n", b""),
        upgrade_request(f"/ws/tables/main/{good}", extra="Transfer-Encoding: chunked\r\n"),
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for request in cases:
        got, expected = await answer(door.port, request), await answer(plain.port, request)
        if request.startswith(b"GET /health"):
            assert got[0] == expected[0] == 200
            continue
        assert got == expected, request


async def test_a_refused_connection_serves_the_next_request(both: Pair) -> None:
    door, _ = both
    client = await Raw.open(door.port)
    try:
        await client.send(upgrade_request("/ws/tables/main/not-a-jwt"))
        assert await client.response() == (401, {"message": "invalid token"})
        await client.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = await client.response()
        assert status == 200
        assert body["status"] == "ok"
    finally:
        client.close()


async def test_a_head_in_pieces_and_bytes_after_it(both: Pair) -> None:
    door, _ = both
    request = upgrade_request(f"/ws/tables/main/{token()}")
    client = await Raw.open(door.port)
    try:
        for piece in (request[:7], request[7:40], request[40:]):
            await client.send(piece)
            await asyncio.sleep(0.05)
        status, headers = await client.head()
        assert status == 101
        assert headers["upgrade"] == "websocket"
        assert (await client.message())["topic"] == "system.connected"
        await client.send(masked(1, b'{"action":"ping"}'))
        assert (await client.message())["topic"] == "system.pong"
    finally:
        client.close()
    # Frames before the 101 (a client should wait for it), in the head's write or just after
    # it: answered, and never ahead of the 101.
    for split in (False, True):
        client = await Raw.open(door.port)
        try:
            head = upgrade_request(f"/ws/tables/main/{token()}")
            frames = masked(9, b"early") + masked(1, b'{"action":"ping"}')
            if split:
                client.writer.write(head)
                await asyncio.sleep(0)
                client.writer.write(frames)
            else:
                client.writer.write(head + frames)
            assert (await client.head())[0] == 101
            got = [await client.frame() for _ in range(3)]
            assert (10, b"early") in got
            texts = {orjson.loads(payload)["topic"] for opcode, payload in got if opcode == 1}
            assert texts == {"system.connected", "system.pong"}
        finally:
            client.close()


async def test_pings_are_answered_and_close_frames_echoed(both: Pair) -> None:
    door, _ = both
    client = await Raw.upgraded(door.port)
    try:
        await client.send(masked(9, b"hello"))
        assert await client.frame() == (10, b"hello")
        await client.send(masked(8, struct.pack("!H", 1000) + b"bye"))
        assert await client.close_code() == 1000
        assert await client.closed_by_server(5)
    finally:
        client.close()


async def test_an_unmasked_frame_is_1002(both: Pair) -> None:
    door, _ = both
    client = await Raw.upgraded(door.port)
    try:
        await client.send(bytes((0x81, 2)) + b"{}")
        assert await client.close_code() == 1002
    finally:
        client.close()


async def test_silence_before_the_head_and_after_a_ping_is_ended(
    upstream: RecordingUpstream, tmp_path: Path
) -> None:
    env = gateway_env(upstream.url, WS_HANDSHAKE_TIMEOUT="1", WS_HEARTBEAT="1")
    with running_gateway(env, tmp_path) as gateway:
        silent = await Raw.open(gateway.port)
        deaf = await Raw.upgraded(gateway.port)
        lively = await Raw.upgraded(gateway.port)
        try:
            texts: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

            async def keep_answering() -> None:
                while True:
                    opcode, payload = await lively.frame()
                    if opcode == 9:
                        await lively.send(masked(10, payload))
                    elif opcode == 1:
                        texts.put_nowait(orjson.loads(payload))

            answering = asyncio.create_task(keep_answering())
            started = time.monotonic()
            assert await silent.closed_by_server(4), "a connection that sends nothing stays open"
            assert await deaf.closed_by_server(4), "a socket that never answers a ping stays open"
            assert time.monotonic() - started < 4
            # The sentinel: the socket that answers its pings is open after the others ended.
            await asyncio.sleep(1.5)
            await lively.send(masked(1, b'{"action":"ping"}'))
            assert (await asyncio.wait_for(texts.get(), TIMEOUT))["topic"] == "system.pong"
            answering.cancel()
        finally:
            for client in (silent, deaf, lively):
                client.close()


@pytest.mark.parametrize("v2", [False, True])
async def test_a_bad_frame_ends_the_socket(both: Pair, v2: bool) -> None:
    """Invalid UTF-8 in a text frame: 1007 and the connection ends, before authenticating too."""
    door, _ = both
    if v2:
        client = await Raw.open(door.port)
        await client.send(upgrade_request("/ws/tables/main", extra="Sec-WebSocket-Protocol: mesaya.v2\r\n"))
        assert (await client.head())[0] == 101
    else:
        client = await Raw.upgraded(door.port)
    try:
        await client.send(masked(1, b"\xff\xfe\xfd"))
        assert await client.close_code() == 1007
        assert await client.closed_by_server(3)
    finally:
        client.close()
    # The session has left the hub (its end ran to completion): /health counts no socket.
    deadline = time.monotonic() + 5
    while True:
        client = await Raw.open(door.port)
        try:
            await client.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            _, body = await client.response()
        finally:
            client.close()
        if body["sockets"] == 0:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)
