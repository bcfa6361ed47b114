"""Heartbeats are not herded: aiohttp rounds timers over 5 s up to a whole second, so the pings
of every socket fell due in the same loop turn, once a second (the soak's stalls of 100-230 ms
at 10,000 sockets, docs/BENCHMARKS.md "Soak"). The gateway turns the rounding off; here the
pings of 60 sockets opened over 1.5 s arrive at many distinct instants, not at one or two."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from mesaya_realtime.bootstrap import build_gateway
from mesaya_realtime.config import load_settings
from tests.support import SECRET, make_token


async def test_the_pings_of_sockets_opened_apart_arrive_apart() -> None:
    settings = load_settings(
        {
            "jwt_secret": SECRET,
            "kafka_enabled": False,
            "host": "127.0.0.1",
            "port": 0,
            "ws_heartbeat": "6s",  # over aiohttp's 5 s rounding threshold
        }
    )
    gateway = build_gateway(settings)
    await gateway.start()
    arrivals: list[float] = []
    try:
        url = f"ws://127.0.0.1:{gateway.port}/ws/tables/s-1/{make_token('hb')}"
        async with aiohttp.ClientSession() as http:

            async def one_socket() -> None:
                async with http.ws_connect(url, autoping=False) as ws:
                    while True:
                        frame = await ws.receive(timeout=15)
                        if frame.type == aiohttp.WSMsgType.PING:
                            arrivals.append(time.monotonic())
                            await ws.pong(frame.data)
                            return

            tasks = []
            for _ in range(60):
                tasks.append(asyncio.ensure_future(one_socket()))
                await asyncio.sleep(0.025)  # 60 sockets over 1.5 s
            await asyncio.wait_for(asyncio.gather(*tasks), 20)
    finally:
        await gateway.stop()
    assert len(arrivals) == 60
    instants = {round(t, 2) for t in arrivals}  # 10 ms buckets
    # rounded to whole seconds, the 60 pings would come in at 2-3 instants; spread, at dozens
    assert len(instants) >= 20, sorted(instants)
