"""A socket's life on a real gateway process: token expiry and renewal, origin allow-list,
connection limit, slow consumers, graceful shutdown."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support import GatewayProcess, RecordingUpstream, gateway_env, make_token


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    decoded: dict[str, Any] = orjson.loads(message.data)
    return decoded


async def test_socket_is_closed_with_1008_when_its_token_expires(gateway: GatewayProcess) -> None:
    token = make_token("short-lived", exp_in=2)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{token}") as ws:
            assert (await receive_json(ws))["topic"] == "system.connected"
            closing = await ws.receive(timeout=10)
            assert closing.type == aiohttp.WSMsgType.CLOSE
            assert closing.data == 1008
            assert closing.extra == "token expired"


async def test_authenticate_renews_the_token_and_keeps_the_socket_open(gateway: GatewayProcess) -> None:
    token = make_token("renewer", exp_in=2)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{token}") as ws:
            await receive_json(ws)
            fresh = make_token("renewer", exp_in=3600)
            await ws.send_json({"action": "authenticate", "payload": {"token": fresh}})
            reply = await receive_json(ws)
            assert reply["topic"] == "system.authenticated"
            assert reply["data"]["userId"] == "renewer"
            assert reply["data"]["expiresAt"].endswith("Z")
            await asyncio.sleep(2.5)  # past the first token's expiry
            await ws.send_json({"action": "ping"})
            assert (await receive_json(ws))["topic"] == "system.pong"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: make_token("someone-else"), "token of another user"),
        (lambda: make_token("renewer-2", exp_in=-10), "invalid token"),
        (lambda: "garbage", "invalid token"),
        (lambda: make_token("renewer-2", roles=[]), "forbidden"),
        (lambda: 42, "invalid payload"),
    ],
)
async def test_authenticate_refuses_bad_tokens(
    gateway: GatewayProcess, token: Callable[[], Any], reason: str
) -> None:
    original = make_token("renewer-2")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{original}") as ws:
            await receive_json(ws)
            await ws.send_json({"action": "authenticate", "payload": {"token": token()}})
            reply = await receive_json(ws)
            assert reply["topic"] == "tables.error"
            assert reply["data"] == {"error": reason}
            assert reply["metadata"]["action"] == "authenticate"
            await ws.send_json({"action": "ping"})
            assert (await receive_json(ws))["topic"] == "system.pong"


async def test_origin_allow_list(
    upstream: RecordingUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gateway = start_gateway(
        gateway_env(upstream.url, WS_ALLOWED_ORIGINS="https://app.mesaya.example, http://localhost:4200/")
    )
    token = make_token()
    url = f"{gateway.ws_url}/ws/tables/main-hall/{token}"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, origin="http://localhost:4200") as ws:
            assert (await receive_json(ws))["topic"] == "system.connected"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, origin="https://evil.example")
        assert refused.value.status == 403
        response = await http.get(
            f"{gateway.url}/ws/tables/main-hall/{token}", headers={"Origin": "https://evil.example"}
        )
        assert response.status == 403
        assert await response.json() == {"message": "origin not allowed"}
        # Non-browser clients send no Origin and are not affected.
        async with http.ws_connect(url) as ws:
            assert (await receive_json(ws))["topic"] == "system.connected"


async def test_connection_limit_answers_503(
    upstream: RecordingUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gateway = start_gateway(gateway_env(upstream.url, WS_MAX_CONNECTIONS="2"))
    url = f"{gateway.ws_url}/ws/tables/main-hall/{make_token()}"
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(url)
        second = await http.ws_connect(url)
        await receive_json(first)
        await receive_json(second)
        response = await http.get(url.replace("ws://", "http://"))
        assert response.status == 503
        assert await response.json() == {"message": "too many connections"}
        await first.close()
        await asyncio.sleep(0.3)
        third = await http.ws_connect(url)
        assert (await receive_json(third))["topic"] == "system.connected"
        await second.close()
        await third.close()


def _raw_handshake(port: int, path: str, receive_buffer: int) -> socket.socket:
    """A WebSocket client on a plain socket with a tiny receive buffer that never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + body


async def test_a_client_that_does_not_read_is_closed_not_buffered_forever(
    upstream: RecordingUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gateway = start_gateway(gateway_env(upstream.url, WS_SEND_BUFFER_BYTES="65536"))
    sock = await asyncio.to_thread(
        _raw_handshake, gateway.port, f"/ws/tables/main-hall/{make_token('slow')}", 4096
    )
    command = _masked_text(b'{"action":"list_tables","payload":{"limit":100}}')
    try:
        # Each reply is a few KB; thousands of them overflow kernel buffers and the bound.
        for _ in range(40):
            await asyncio.to_thread(sock.sendall, command * 100)
            metrics = await asyncio.to_thread(_get, f"{gateway.url}/metrics")
            if "mesaya_slow_consumers_closed_total 1.0" in metrics:
                break
        else:
            pytest.fail("the slow consumer was never closed")
    except (BrokenPipeError, ConnectionResetError):
        metrics = await asyncio.to_thread(_get, f"{gateway.url}/metrics")
        assert "mesaya_slow_consumers_closed_total 1.0" in metrics
    finally:
        sock.close()
    # The node is fine: a normal client still works.
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{make_token()}") as ws:
            assert (await receive_json(ws))["topic"] == "system.connected"


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def test_shutdown_closes_sockets_with_going_away(
    upstream: RecordingUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gateway = start_gateway(gateway_env(upstream.url))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{make_token()}") as ws:
            await receive_json(ws)
            gateway.process.terminate()
            closing = await ws.receive(timeout=15)
            assert closing.type == aiohttp.WSMsgType.CLOSE
            assert closing.data == 1001
    assert await asyncio.to_thread(gateway.process.wait, 15) == 0


async def test_renewing_with_a_token_without_exp_keeps_the_socket_open(gateway: GatewayProcess) -> None:
    token = make_token("no-exp-renewer", exp_in=2)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{token}") as ws:
            await receive_json(ws)
            await ws.send_json(
                {"action": "refresh_token", "payload": {"token": make_token("no-exp-renewer", exp_in=None)}}
            )
            reply = await receive_json(ws)
            assert reply["topic"] == "system.authenticated"
            assert "expiresAt" not in reply["data"]
            await asyncio.sleep(2.5)
            await ws.send_json({"action": "ping"})
            assert (await receive_json(ws))["topic"] == "system.pong"


async def test_a_wildcard_admin_cannot_renew_into_a_non_admin_token(gateway: GatewayProcess) -> None:
    admin = make_token("boss", roles=["ADMIN"])
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws_url}/ws/tables/*/{admin}") as ws:
            await receive_json(ws)
            await ws.send_json(
                {"action": "authenticate", "payload": {"token": make_token("boss", roles=["OWNER"])}}
            )
            reply = await receive_json(ws)
            assert reply["topic"] == "tables.error"
            assert reply["data"] == {"error": "forbidden"}


async def test_renewing_a_token_without_exp_into_one_with_exp_closes_at_the_new_exp(
    gateway: GatewayProcess,
) -> None:
    token = make_token("forever-then-not", exp_in=None)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{token}") as ws:
            await receive_json(ws)
            fresh = make_token("forever-then-not", exp_in=2)
            await ws.send_json({"action": "authenticate", "payload": {"token": fresh}})
            assert (await receive_json(ws))["topic"] == "system.authenticated"
            closing = await ws.receive(timeout=10)
            assert (closing.type, closing.data, closing.extra) == (
                aiohttp.WSMsgType.CLOSE,
                1008,
                "token expired",
            )


async def test_many_sockets_expire_independently(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as http:
        short = [
            await http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{make_token(f'x{i}', exp_in=2)}")
            for i in range(5)
        ]
        long = await http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{make_token('y', exp_in=600)}")
        for ws in [*short, long]:
            await receive_json(ws)
        for ws in short:
            closing = await ws.receive(timeout=10)
            assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1008)
        await long.send_json({"action": "ping"})
        assert (await receive_json(long))["topic"] == "system.pong"
        await long.close()


async def test_unknown_methods_and_paths_answer_json(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{gateway.url}/health")
        assert (response.status, await response.json()) == (405, {"message": "Method Not Allowed"})
        response = await http.delete(f"{gateway.url}/ws/tables/main-hall/token")
        assert response.status == 405
        response = await http.post(f"{gateway.url}/broadcast")  # a route now, authenticated
        assert (response.status, await response.json()) == (401, {"message": "unauthorized"})
        response = await http.get(f"{gateway.url}/broadcast")
        assert (response.status, await response.json()) == (405, {"message": "Method Not Allowed"})
        response = await http.post(f"{gateway.url}/nothing-here")
        assert (response.status, await response.json()) == (404, {"message": "Not Found"})
