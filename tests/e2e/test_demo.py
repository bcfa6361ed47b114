"""``mesaya-realtime demo`` as a newcomer runs it (the README's first command): the process, its
printed instructions, and every route they name, over real sockets."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import orjson
import pytest

from tests.support import ROOT, free_port


@pytest.fixture
def demo() -> Iterator[tuple[int, dict[str, str]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "KAFKA_", "REST_"))}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mesaya_realtime",
            "demo",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--interval",
            "0.3",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed = ""
        deadline = time.monotonic() + 30
        while "  USER " not in printed and time.monotonic() < deadline:
            printed += process.stdout.readline()
        tokens = dict(re.findall(r"^  (ADMIN|OWNER|USER) +(\S+)$", printed, re.M))
        assert set(tokens) == {"ADMIN", "OWNER", "USER"}, printed
        assert f"/ws/tables/main-hall/{tokens['USER']}" in printed
        assert f"/ws/reservations/rest-1/{tokens['OWNER']}" in printed
        yield port, tokens
    finally:
        process.terminate()
        process.wait(10)


async def test_the_demo_serves_every_route_it_prints(demo: tuple[int, dict[str, str]]) -> None:
    port, tokens = demo
    token = tokens["ADMIN"]
    base = f"127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        # the owner's token opens the demo restaurant's reservations (the ownership check passes)
        owner = await http.ws_connect(f"ws://{base}/ws/reservations/rest-1/{tokens['OWNER']}")
        assert orjson.loads((await owner.receive(timeout=10)).data)["topic"] == "system.connected"
        await owner.close()
        # the USER's token may not read admin analytics
        async with http.get(f"http://{base}/ws/analytics/admin/tables/{tokens['USER']}") as refused:
            assert refused.status in (400, 403)
        tables = await http.ws_connect(f"ws://{base}/ws/tables/main-hall/{tokens['USER']}")
        assert orjson.loads((await tables.receive(timeout=10)).data)["topic"] == "system.connected"
        await tables.send_str('{"action":"list_tables"}')
        while True:
            reply = orjson.loads((await tables.receive(timeout=10)).data)
            if reply["topic"] == "tables.list":
                break
        assert reply["data"]["data"]
        bell = await http.ws_connect(f"ws://{base}/ws/notifications?token={token}")
        stats = await http.ws_connect(f"ws://{base}/ws/analytics/admin/tables/{token}")
        first = orjson.loads((await stats.receive(timeout=10)).data)
        assert first["topic"] == "analytics-admin-tables.snapshot"
        assert orjson.loads((await stats.receive(timeout=10)).data)["topic"] == "system.connected"
        body = {"event": "payment.approved", "reservation_id": "res-1", "user_id": "demo-user"}
        async with http.post(
            f"http://{base}/broadcast", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 200
        topics = set()
        deadline = asyncio.get_running_loop().time() + 10
        while {"payment.approved", "tables.updated"} - topics:
            remaining = deadline - asyncio.get_running_loop().time()
            topics.add(orjson.loads((await bell.receive(timeout=remaining)).data)["topic"])
        # the demo's table events make the tables analytics stale: a refreshed snapshot
        refreshed = orjson.loads((await stats.receive(timeout=10)).data)
        assert refreshed["metadata"]["origin"] == "refresh"
        for ws in (tables, bell, stats):
            await ws.close()


async def test_the_demo_serves_its_floor_plan_page_and_a_token_for_its_visitor(
    demo: tuple[int, dict[str, str]],
) -> None:
    port, _ = demo
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as page:
            assert page.status == 200
            assert page.content_type == "text/html"
            assert 'src="./demo/app.js"' in await page.text()
        for script in ("/demo/app.js", "/src/index.js", "/src/client.js"):
            async with http.get(base + script) as response:
                assert (response.status, response.content_type) == (200, "text/javascript"), script
        async with http.get(f"{base}/demo/token", params={"user": "ada"}) as response:
            token = (await response.json())["token"]
        async with http.ws_connect(f"ws://127.0.0.1:{port}/ws/tables/main-hall/{token}") as ws:
            connected = orjson.loads((await ws.receive(timeout=10)).data)
            assert connected["metadata"]["userId"] == "ada"
        async with http.get(f"{base}/asyncapi.json") as response:
            described = await response.json()
            assert described["asyncapi"] == "3.0.0"
            assert "/ws/{entity}/{section}" in {c["address"] for c in described["channels"].values()}
        for bad in ("/src/../bootstrap.py", "/demo/token?user=../x", "/src/missing.js"):
            async with http.get(base + bad) as response:
                assert response.status in (400, 404), bad
