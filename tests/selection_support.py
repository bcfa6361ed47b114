"""Clients for the table-selection tests: aiohttp WebSocket clients and a bare-socket client that
can end its connection the way browsers lose theirs (no close frame, a TCP reset, silence)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import uuid
from typing import Any

import aiohttp
import orjson

from tests.support import GatewayProcess, make_token


def new_section() -> str:
    """A section of its own for each test, so tests never see each other's selections."""
    return f"sec-{uuid.uuid4().hex[:10]}"


class Client:
    """One tables socket; messages are read one at a time, in the order the gateway sent them."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, user: str, connected: dict[str, Any]) -> None:
        self.ws = ws
        self.user = user
        self.connected = connected

    async def send(self, action: str, payload: Any = None) -> None:
        frame: dict[str, Any] = {"action": action}
        if payload is not None:
            frame["payload"] = payload
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def select(self, table: Any, action: str = "select_table") -> None:
        await self.send(action, {"tableId": table})

    async def release(self, table: Any, action: str = "release_table") -> None:
        await self.send(action, {"tableId": table})

    async def receive(self, timeout: float = 15.0) -> dict[str, Any]:
        message = await self.ws.receive(timeout=timeout)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        decoded: dict[str, Any] = orjson.loads(message.data)
        return decoded

    async def expect(self, topic: str, timeout: float = 15.0) -> dict[str, Any]:
        message = await self.receive(timeout)
        assert message["topic"] == topic, message
        return message

    async def nothing_pending(self) -> None:
        """Nothing was queued for this socket before now: a ping's pong comes next."""
        await self.send("ping")
        message = await self.receive()
        assert message["topic"] == "system.pong", message

    async def close(self) -> None:
        await self.ws.close()


async def connect(
    http: aiohttp.ClientSession,
    gateway: GatewayProcess,
    user: str,
    section: str,
    roles: list[str] | None = None,
    entity: str = "tables",
) -> Client:
    token = make_token(user, roles)
    ws = await http.ws_connect(f"{gateway.ws_url}/ws/{entity}/{section}/{token}", autoping=True)
    client = Client(ws, user, {})
    client.connected = await client.expect("system.connected")
    return client


def selecting(message: dict[str, Any]) -> tuple[str, str, str]:
    assert message["topic"] == "tables.selecting", message
    return (message["data"]["tableId"], message["data"]["selectedBy"], message["metadata"]["origin"])


def released(message: dict[str, Any]) -> tuple[str, str, str]:
    assert message["topic"] == "tables.released", message
    return (message["data"]["tableId"], message["data"]["selectedBy"], message["data"]["reason"])


class RawClient:
    """A WebSocket client on a bare socket (blocking; call it through ``asyncio.to_thread``)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self._exactly(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed by the gateway")
            data += chunk
        return data

    def send(self, frame: dict[str, Any]) -> None:
        payload = orjson.dumps(frame)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if len(payload) < 126:
            head = struct.pack("!BB", 0x81, 0x80 | len(payload))
        else:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
        self.sock.sendall(head + mask + body)

    def receive(self) -> dict[str, Any]:
        """The next text message; control frames (pings) are read and never answered."""
        while True:
            first, second = self._exactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._exactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._exactly(8))
            payload = self._exactly(length)
            if first & 0x0F == 0x1:
                decoded: dict[str, Any] = orjson.loads(payload)
                return decoded

    def expect(self, topic: str) -> dict[str, Any]:
        message = self.receive()
        assert message["topic"] == topic, message
        return message

    def reset(self) -> None:
        """End the connection with a TCP reset: no close frame, no FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def drop(self) -> None:
        """Close the TCP connection without a WebSocket close frame."""
        self.sock.close()


async def raw_client(gateway: GatewayProcess, user: str, section: str) -> RawClient:
    path = f"/ws/tables/{section}/{make_token(user)}"
    client = await asyncio.to_thread(RawClient, gateway.port, path)
    await asyncio.to_thread(client.expect, "system.connected")
    return client
