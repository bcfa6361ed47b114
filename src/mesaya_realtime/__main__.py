"""The ``mesaya-realtime`` command: ``serve`` (real configuration) and ``demo`` (embedded default).

mesaya-realtime serve                # env vars / .env: Kafka, REST upstream, JWT
mesaya-realtime demo [--port 8080]   # no external service needed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Sequence

import jwt
from aiohttp import web

from mesaya_realtime.bootstrap import EventSource, build_gateway
from mesaya_realtime.config import ConfigError, Settings, load_settings
from mesaya_realtime.infrastructure.demo import (
    DEMO_SECTIONS,
    ROWS,
    DemoEventSource,
    create_demo_upstream,
)
from mesaya_realtime.infrastructure.event_loop import run
from mesaya_realtime.infrastructure.logging_setup import configure_logging

__all__ = ["main"]

log = logging.getLogger("mesaya_realtime")


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(settings: Settings) -> None:
    gateway = build_gateway(settings)
    await gateway.start()
    try:
        await _wait_for_signal()
    finally:
        log.info("shutting down")
        await gateway.stop()


async def demo(port: int, host: str, interval: float) -> None:
    secret = os.environ.get("JWT_SECRET") or secrets.token_urlsafe(32)
    upstream = create_demo_upstream()
    runner = web.AppRunner(upstream, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    settings = load_settings(
        {
            "host": host,
            "port": port,
            "jwt_secret": secret,
            "rest_base_url": f"http://127.0.0.1:{upstream_port}",
            "kafka_enabled": False,
        }
    )

    def demo_source(on_batch: object) -> EventSource:
        return DemoEventSource(on_batch, upstream[ROWS], interval)  # type: ignore[arg-type]

    gateway = build_gateway(settings, source_factory=demo_source)
    await gateway.start()
    token = jwt.encode(
        {"sub": "demo-user", "roles": ["ADMIN", "OWNER", "USER"], "exp": int(time.time()) + 86_400},
        secret,
        algorithm="HS256",
    )
    shown_host = "localhost" if host in ("0.0.0.0", "::", "") else host
    print(
        "mesaya-realtime demo is running (no Kafka, no upstream needed).\n"
        f"  gateway:  http://{shown_host}:{gateway.port}  (health: /health)\n"
        f"  upstream: http://127.0.0.1:{upstream_port}/api/v1/tables  (fixture REST API)\n"
        f"  sections: {', '.join(DEMO_SECTIONS)}; a table changes status every {interval:g}s\n\n"
        "Connect and list the tables of a section:\n"
        f"  npx wscat -c ws://{shown_host}:{gateway.port}/ws/tables/main-hall/{token}\n"
        '  > {"action":"list_tables"}\n\n'
        "The notifications bell (every section's events), and a payment push to it:\n"
        f"  npx wscat -c 'ws://{shown_host}:{gateway.port}/ws/notifications?token={token}'\n"
        f"  curl -X POST http://{shown_host}:{gateway.port}/broadcast -H 'Authorization: Bearer {token}' \\\n"
        '       -d \'{"event":"payment.approved","reservation_id":"res-1","user_id":"demo-user"}\'\n\n'
        "A dashboard's analytics (refreshed when events make it stale):\n"
        f"  npx wscat -c 'ws://{shown_host}:{gateway.port}/ws/analytics/admin/tables/{token}'\n",
        flush=True,
    )
    try:
        await _wait_for_signal()
    finally:
        await gateway.stop()
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mesaya-realtime", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the gateway with configuration from the environment")
    demo_parser = commands.add_parser("demo", help="run with an embedded upstream and events")
    # A string default: argparse converts it only when `demo` runs, so a bad PORT never
    # crashes `serve` (whose settings report it naming the variable).
    demo_parser.add_argument("--port", type=int, default=os.environ.get("PORT", "8080"))
    demo_parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    demo_parser.add_argument("--interval", type=float, default=3.0, help="seconds between demo events")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            settings = load_settings()
            configure_logging(settings.log_level, settings.log_format)
            run(serve(settings), settings.event_loop)
        else:
            configure_logging("info", "text")
            run(demo(args.port, args.host, args.interval))
    except ConfigError as error:
        print(f"mesaya-realtime: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
