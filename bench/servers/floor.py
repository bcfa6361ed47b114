"""The floor: a bare aiohttp broadcast of one pre-encoded frame per event.

No decoding, no routing, no per-socket bookkeeping beyond a set of transports: each Kafka
record value becomes one unmasked text frame, written as is to every connected transport.
This is the least a server built on aiohttp can do for one write per delivery.

    python -m bench.servers.floor --port 18100 --brokers 127.0.0.1:19092
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from bench.common import TOPIC, raise_nofile
from bench.servers.kafka_feed import KafkaFeed
from mesaya_realtime.interface.frames import text_frame

HELLO = text_frame(b'{"topic":"system.connected"}')


def create_app(brokers: str) -> web.Application:
    transports: set[asyncio.Transport] = set()
    app = web.Application()

    def broadcast(values: list[bytes]) -> None:
        for value in values:
            frame = text_frame(value)
            for transport in transports:
                transport.write(frame)

    async def socket(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        transports.add(transport)
        transport.write(HELLO)
        try:
            async for _ in ws:
                pass
        finally:
            transports.discard(transport)
        return ws

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"sockets": len(transports)})

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({}, status=200 if feed.ready.is_set() else 503)

    async def start(app: web.Application) -> None:
        nonlocal feed
        feed = KafkaFeed(brokers, TOPIC, asyncio.get_running_loop(), broadcast)
        feed.start()

    feed: KafkaFeed
    app.on_startup.append(start)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/ws/{entity}/{section}/{token}", socket)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--brokers", required=True)
    args = parser.parse_args()
    raise_nofile()
    web.run_app(create_app(args.brokers), host="127.0.0.1", port=args.port, backlog=4096, print=None)


if __name__ == "__main__":
    main()
