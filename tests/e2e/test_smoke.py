from __future__ import annotations

import aiohttp
import orjson

from tests.support import GatewayProcess, RecordingUpstream, make_token


async def test_list_tables_over_a_real_socket(gateway: GatewayProcess, upstream: RecordingUpstream) -> None:
    token = make_token("user-1", ["USER"])
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{token}") as ws:
            connected = orjson.loads((await ws.receive(timeout=5)).data)
            assert connected["topic"] == "system.connected"
            await ws.send_str('{"action":"list_tables"}')
            reply = orjson.loads((await ws.receive(timeout=5)).data)
    assert reply["topic"] == "tables.list"
    assert [t["id"] for t in reply["data"]["data"]] == [f"table-{i}" for i in range(1, 7)]
