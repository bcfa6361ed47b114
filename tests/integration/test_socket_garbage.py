"""A closed socket leaves no reference cycle behind (so reference counting frees it, and the
collector's freeze in infrastructure/gc_policy.py loses nothing). The gateway runs in this
process, on loopback, with real WebSocket clients that open, ping and close sockets."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

import aiohttp

from mesaya_realtime.bootstrap import build_gateway
from mesaya_realtime.config import load_settings
from mesaya_realtime.infrastructure.event_loop import run
from tests.support import SECRET, make_token


async def _cyclic_garbage_of_closed_sockets() -> Counter[str]:
    """What a full collection finds after 20 sockets opened, pinged and closed (types counted)."""
    settings = load_settings(
        {
            "jwt_secret": SECRET,
            "kafka_enabled": False,
            "host": "127.0.0.1",
            "port": 0,
            "ws_heartbeat": "30s",
            "gc_freeze_interval": 0,  # this test looks at the collector itself
        }
    )
    gateway = build_gateway(settings)
    await gateway.start()
    try:
        url = f"ws://127.0.0.1:{gateway.port}/ws/tables/s-1/{make_token('gc')}"
        async with aiohttp.ClientSession() as http:

            async def one_socket() -> None:
                ws = await http.ws_connect(url)
                await ws.receive(timeout=10)
                await ws.send_str('{"action":"ping"}')
                await ws.receive(timeout=10)
                await ws.close()

            await one_socket()  # warm-up: caches, lazily made objects
            await asyncio.sleep(0.2)
            gc.collect()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for _ in range(20):
                    await one_socket()
                await asyncio.sleep(0.5)  # let the server side finish every socket
                gc.collect()
                kinds = Counter(type(o).__name__ for o in gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
    finally:
        await gateway.stop()
    return kinds


async def test_closed_sockets_leave_no_cycles() -> None:
    # the stock loop (pytest's): CPython 3.11's selector transport is itself a cycle
    # (infrastructure/event_loop.py), but nothing of the gateway's or aiohttp's objects is
    kinds = await _cyclic_garbage_of_closed_sockets()
    server_side = {"RequestHandler", "WebSocketResponse", "Request", "Session", "SocketConnection"}
    assert not server_side & set(kinds), kinds.most_common(10)


def test_on_uvloop_closed_sockets_leave_no_garbage_at_all() -> None:
    # the loop `serve` runs on by default: not one cyclic object, transports included
    kinds = run(_cyclic_garbage_of_closed_sockets(), "uvloop")
    assert not kinds, kinds.most_common(10)
