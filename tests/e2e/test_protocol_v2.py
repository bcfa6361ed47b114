"""Protocol v2 on a real gateway process, with real WebSocket clients that ask for ``mesaya.v2``:
close-frame refusals a browser can read, authentication in the first frame and its timeout,
``requestId`` on every kind of reply in both versions, ``system.ack``, error codes and fields
(docs/WEBSOCKET_ENDPOINTS.md "Protocol v2").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support import GatewayProcess, RecordingUpstream, gateway_env, make_token, running_gateway

V2 = ("mesaya.v2",)
ME = "/api/v1/restaurants/me"


@pytest.fixture(scope="module")
def gateway(
    upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = gateway_env(
        upstream.url,
        WS_AUTH_TIMEOUT="0.5",
        REST_TIMEOUT="1",
        TABLE_SELECTION_RATE_LIMIT="1000",
        SNAPSHOT_CACHE_TTL="0.01",
    )
    with running_gateway(env, tmp_path_factory.mktemp("v2")) as process:
        yield process


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> dict[str, Any]:
    frame = await ws.receive(timeout=timeout)
    assert frame.type == aiohttp.WSMsgType.TEXT, (frame.type, frame.data, frame.extra)
    message: dict[str, Any] = orjson.loads(frame.data)
    return message


async def ask(ws: aiohttp.ClientWebSocketResponse, command: dict[str, Any]) -> dict[str, Any]:
    """Send a command; its reply (the next frame that is not a table hold)."""
    await ws.send_str(orjson.dumps(command).decode())
    while True:
        message = await receive(ws)
        if not message["topic"].startswith("tables.select") and message["topic"] != "tables.released":
            return message


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """The close code and reason the server ended the socket with."""
    frame = await ws.receive(timeout=10)
    assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), (frame.type, frame.data)
    return ws.close_code, str(frame.extra or "")


async def v2_socket(
    http: aiohttp.ClientSession, gateway: GatewayProcess, path: str, **kwargs: Any
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{gateway.ws_url}{path}", protocols=V2, **kwargs)
    assert ws.protocol == "mesaya.v2"
    return ws


async def test_v2_is_selected_when_asked_and_v1_is_unchanged_otherwise(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    token = make_token("ada", ["USER"], exp_in=600)
    async with http.ws_connect(f"{gateway.ws_url}/ws/tables/s1/{token}") as ws:
        assert ws.protocol is None
        connected = await receive(ws)
        assert "expiresAt" not in connected["data"]
        assert "cursor" not in connected
    ws = await v2_socket(http, gateway, f"/ws/tables/s1/{token}")
    connected = await receive(ws)
    assert connected["topic"] == "system.connected"
    assert connected["data"]["expiresAt"].endswith("Z")
    await ws.close()


REFUSALS = [
    ("/ws/tables/s1/not-a-jwt", 4401, "invalid token"),
    (f"/ws/tables/s1/{make_token('ada', exp_in=-60)}", 4401, "invalid token"),
    (f"/ws/nothing/s1/{make_token('ada')}", 4404, "entity nothing is not integrated"),
    (f"/ws/tables/*/{make_token('ada')}", 4403, "forbidden"),
    (f"/ws/tables/%20/{make_token('ada')}", 4400, "missing section"),
    (f"/ws/analytics/public/nothing/{make_token('ada')}", 4404, "analytics endpoint not available"),
    ("/ws/notifications?token=garbage", 4401, "invalid or missing token"),
]


@pytest.mark.parametrize(("path", "code", "reason"), REFUSALS, ids=[r[2] for r in REFUSALS])
async def test_refusals_are_close_frames_a_browser_can_read(
    http: aiohttp.ClientSession, gateway: GatewayProcess, path: str, code: int, reason: str
) -> None:
    ws = await v2_socket(http, gateway, path)
    assert await closed_with(ws) == (code, reason)


async def test_first_frame_authentication(http: aiohttp.ClientSession, gateway: GatewayProcess) -> None:
    ws = await v2_socket(http, gateway, "/ws/tables/s1")
    token = make_token("ada", ["USER"], exp_in=600)
    await ws.send_str(
        orjson.dumps({"action": "authenticate", "payload": {"token": token}, "requestId": "a1"}).decode()
    )
    connected = await receive(ws)
    assert connected["topic"] == "system.connected"
    assert connected["metadata"]["requestId"] == "a1"
    assert connected["metadata"]["userId"] == "ada"
    assert connected["data"]["expiresAt"].endswith("Z")
    pong = await ask(ws, {"action": "ping", "requestId": "p1"})
    assert pong["topic"] == "system.pong"
    assert pong["metadata"]["requestId"] == "p1"
    await ws.close()


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        ({"action": "ping"}, 4401, "authentication required"),
        ({"action": "authenticate", "payload": {"token": ""}}, 4401, "missing token"),
        ({"action": "authenticate", "payload": {"token": "garbage"}}, 4401, "invalid token"),
        ({"action": "authenticate", "payload": {"token": 5}}, 4400, "invalid payload"),
        ("not json", 4401, "authentication required"),
    ],
)
async def test_first_frame_refusals(
    http: aiohttp.ClientSession, gateway: GatewayProcess, first: Any, code: int, reason: str
) -> None:
    ws = await v2_socket(http, gateway, "/ws/tables/s1")
    await ws.send_str(first if isinstance(first, str) else orjson.dumps(first).decode())
    assert await closed_with(ws) == (code, reason)


async def test_silence_is_closed_after_the_auth_timeout_and_the_node_stays_responsive(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    silent = await v2_socket(http, gateway, "/ws/tables/s1")
    started = asyncio.get_running_loop().time()
    assert await closed_with(silent) == (4408, "authentication timeout")
    assert 0.4 <= asyncio.get_running_loop().time() - started < 5
    async with http.get(f"{gateway.url}/health") as response:
        assert response.status == 200


async def test_pings_do_not_stretch_the_auth_timeout(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    ws = await v2_socket(http, gateway, "/ws/tables/s1", autoping=False)
    started = asyncio.get_running_loop().time()

    async def keep_pinging() -> None:
        while not ws.closed:
            await ws.ping()
            await asyncio.sleep(0.1)

    pinger = asyncio.ensure_future(keep_pinging())
    try:
        while True:
            frame = await ws.receive(timeout=10)
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
    finally:
        pinger.cancel()
    assert (ws.close_code, str(frame.extra)) == (4408, "authentication timeout")
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_notifications_and_analytics_authenticate_in_the_first_frame(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    admin = make_token("root", ["ADMIN"])
    ws = await v2_socket(http, gateway, "/ws/notifications")
    await ws.send_str(orjson.dumps({"action": "authenticate", "payload": {"token": admin}}).decode())
    connected = await receive(ws)
    assert connected["topic"] == "system.connected"
    assert connected["metadata"]["userId"] == "root"
    # v1 ignores an unknown action here; v2 answers every command.
    unknown = await ask(ws, {"action": "dance", "requestId": "n1"})
    assert unknown["data"] == {"error": "unsupported action", "code": "unknown_action"}
    assert unknown["metadata"]["requestId"] == "n1"
    await ws.close()


async def test_request_ids_on_every_kind_of_reply_in_v1(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    token = make_token("ada", ["USER"])
    async with http.ws_connect(f"{gateway.ws_url}/ws/tables/s1/{token}") as ws:
        await receive(ws)
        replies = {
            "ping": await ask(ws, {"action": "ping", "requestId": "1"}),
            "list": await ask(ws, {"action": "list_tables", "requestId": "2"}),
            "detail": await ask(ws, {"action": "get_table", "payload": {"id": "missing"}, "requestId": "3"}),
            "unknown": await ask(ws, {"action": "dance", "requestId": "4"}),
            "payload": await ask(ws, {"action": "list_tables", "payload": {"page": "x"}, "requestId": "5"}),
            "authenticate": await ask(
                ws, {"action": "authenticate", "payload": {"token": token}, "requestId": "6"}
            ),
        }
        for index, (kind, reply) in enumerate(replies.items(), start=1):
            assert reply["metadata"]["requestId"] == str(index), (kind, reply)
        assert replies["unknown"]["data"] == {"error": "unsupported action"}  # v1: no code
        # v1 sends nothing back for a subscription: the next reply is the ping's.
        await ws.send_str('{"action":"subscribe","topic":"tables.updated","requestId":"7"}')
        assert (await ask(ws, {"action": "ping", "requestId": "8"}))["metadata"]["requestId"] == "8"


async def test_v2_answers_every_command_once_with_its_request_id(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    token = make_token("ada", ["USER"])
    ws = await v2_socket(http, gateway, f"/ws/tables/s2/{token}")
    await receive(ws)
    cases: list[tuple[dict[str, Any], str, dict[str, Any] | None]] = [
        (
            {"action": "subscribe", "topic": "tables.updated"},
            "system.ack",
            {"action": "subscribe", "topic": "tables.updated"},
        ),
        (
            {"action": "unsubscribe", "topic": "tables.updated"},
            "system.ack",
            {"action": "unsubscribe", "topic": "tables.updated"},
        ),
        ({"action": "select_table", "payload": {"tableId": "t-1"}}, "system.ack", {"action": "select_table"}),
        (
            {"action": "release_table", "payload": {"tableId": "t-1"}},
            "system.ack",
            {"action": "release_table"},
        ),
        ({"action": "ping"}, "system.pong", None),
        ({"action": "list_tables"}, "tables.list", None),
    ]
    for index, (command, topic, data) in enumerate(cases):
        reply = await ask(ws, {**command, "requestId": f"r{index}"})
        assert (reply["topic"], reply["metadata"]["requestId"]) == (topic, f"r{index}"), reply
        if data is not None:
            assert reply["data"] == data
    # Exactly one reply each: the next frame answers the next command.
    assert (await ask(ws, {"action": "ping", "requestId": "last"}))["metadata"]["requestId"] == "last"
    await ws.close()


@pytest.mark.parametrize(
    ("command", "data"),
    [
        ({"action": "dance"}, {"error": "unsupported action", "code": "unknown_action"}),
        (
            {"action": "list_tables", "payload": {"page": "x"}},
            {"error": "invalid payload", "code": "invalid_payload", "field": "payload.page"},
        ),
        (
            {"action": "get_table", "payload": {}},
            {"error": "invalid payload", "code": "invalid_payload", "field": "payload.id"},
        ),
        (
            {"action": "ping", "requestId": 7},
            {"error": "invalid payload", "code": "invalid_payload", "field": "requestId"},
        ),
        (
            {"action": "select_table", "payload": {"tableId": 3}},
            {"error": "tableId must be a string", "code": "invalid_payload", "field": "payload.tableId"},
        ),
        (
            {"action": "subscribe", "topic": "payments.created"},
            {"error": "topic not allowed", "code": "topic_not_allowed", "field": "topic"},
        ),
        (
            {"action": "authenticate", "payload": {"token": "garbage"}},
            {"error": "invalid token", "code": "invalid_token", "field": "payload.token"},
        ),
    ],
)
async def test_error_codes_and_fields(
    http: aiohttp.ClientSession, gateway: GatewayProcess, command: dict[str, Any], data: dict[str, Any]
) -> None:
    ws = await v2_socket(http, gateway, f"/ws/tables/s3/{make_token('ada')}")
    await receive(ws)
    reply = await ask(ws, command)
    assert reply["topic"] == "tables.error"
    assert reply["data"] == data
    await ws.close()


async def test_upstream_errors_have_codes_and_never_expose_internals(
    http: aiohttp.ClientSession, gateway: GatewayProcess, fresh_upstream: RecordingUpstream
) -> None:
    ws = await v2_socket(http, gateway, f"/ws/tables/s4/{make_token('ada')}")
    await receive(ws)
    fresh_upstream.script("/api/v1/tables/gone", status=404)
    reply = await ask(ws, {"action": "get_table", "payload": {"id": "gone"}})
    assert reply["data"] == {"error": "section snapshot not found", "code": "not_found"}
    fresh_upstream.script("/api/v1/tables/slow", status=200, delay=3.0)  # past REST_TIMEOUT (1 s)
    reply = await ask(ws, {"action": "get_table", "payload": {"id": "slow"}})
    assert reply["data"] == {"error": "snapshot request failed: upstream timeout", "code": "upstream_timeout"}
    await ws.close()


async def test_node_refusals_and_ownership_checks_are_close_frames(
    http: aiohttp.ClientSession, upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = gateway_env(
        upstream.url, WS_MAX_CONNECTIONS="1", WS_ALLOWED_ORIGINS="https://mesaya.example", REST_TIMEOUT="1"
    )
    with running_gateway(env, tmp_path_factory.mktemp("v2-node")) as node:
        ws = await v2_socket(http, node, f"/ws/tables/s1/{make_token('ada')}", origin="https://evil.example")
        assert await closed_with(ws) == (4403, "origin not allowed")
        first = await v2_socket(http, node, f"/ws/tables/s1/{make_token('ada')}")
        await receive(first)
        second = await v2_socket(http, node, f"/ws/tables/s1/{make_token('bob')}")
        assert await closed_with(second) == (4429, "too many connections")
        await first.close()
        upstream.script(ME, status=500)
        try:
            owner = await v2_socket(http, node, f"/ws/reservations/s1/{make_token('olga', ['OWNER'])}")
            assert await closed_with(owner) == (4503, "ownership check unavailable")
        finally:
            upstream.reset()
        async with http.get(f"{node.url}/metrics") as response:
            text = await response.text()
        assert 'status="403"' in text
        assert 'status="503"' in text
