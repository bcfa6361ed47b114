"""mesaya-realtime: the realtime WebSocket gateway of the mesa-ya platform.

`mesaya-realtime COMMAND --help` shows a command's options (`serve --help`: every setting).
Documentation: README.md (running, settings), docs/WEBSOCKET_ENDPOINTS.md (the protocol).
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
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web

from mesaya_realtime import __version__
from mesaya_realtime.bootstrap import EventSource, build_gateway, configuration_problems
from mesaya_realtime.config import (
    DEFAULT_ALLOWED_ACTIONS,
    ConfigError,
    Settings,
    dotenv_names,
    dotenv_values,
    load_settings,
    parse_duration,
    unknown_settings,
)
from mesaya_realtime.infrastructure.demo import (
    DEMO_RESTAURANT,
    DEMO_SECTIONS,
    ROWS,
    DemoEventSource,
    create_demo_upstream,
)
from mesaya_realtime.infrastructure.event_loop import run
from mesaya_realtime.infrastructure.logging_setup import configure_logging
from mesaya_realtime.infrastructure.workers import Supervisor, available_cpus, worker_identity
from mesaya_realtime.interface.demo_page import demo_page_routes

__all__ = ["main"]

log = logging.getLogger("mesaya_realtime")

#: Exit status of a configuration problem (``check``, ``serve``, a port that is taken).
CONFIG_EXIT = 2


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _warn_unknown_settings() -> None:
    for warning in unknown_settings(os.environ, dotenv_names()):
        log.warning("unknown setting", extra={"detail": warning})


async def serve(settings: Settings) -> None:
    gateway = build_gateway(settings)
    await gateway.start()
    try:
        await _wait_for_signal()
    finally:
        log.info("shutting down")
        await gateway.stop()


def _configured(name: str) -> str:
    """A variable from the environment, else from ``.env`` (as ``serve`` reads them)."""
    value = os.environ.get(name)
    return value if value is not None else dotenv_values().get(name, "")


def sign(secret: str, sub: str, roles: Sequence[str], ttl: float) -> str:
    claims: dict[str, Any] = {"sub": sub, "roles": list(roles), "exp": int(time.time() + ttl)}
    return jwt.encode(claims, secret, algorithm="HS256")


async def demo(port: int, host: str, interval: float) -> None:
    secret = _configured("JWT_SECRET") or secrets.token_urlsafe(48)
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

    day = 86_400
    page = demo_page_routes(lambda name: sign(secret, name, ["USER"], day))
    gateway = build_gateway(settings, source_factory=demo_source, extra_routes=page)
    try:
        await gateway.start()
    except BaseException:
        await runner.cleanup()
        raise
    admin = sign(secret, "demo-admin", ["ADMIN"], day)
    owner = sign(secret, "owner-1", ["OWNER"], day)  # the owner of the demo restaurant
    user = sign(secret, "demo-user", ["USER"], day)
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    ws = f"ws://{shown}:{gateway.port}"
    print(
        "mesaya-realtime demo is running (no Kafka, no upstream needed).\n"
        f"  gateway:  http://{shown}:{gateway.port}  (health: /health)\n"
        f"  floor plan (open it in two browser windows): http://{shown}:{gateway.port}/\n"
        f"  upstream: http://127.0.0.1:{upstream_port}/api/v1/tables  (fixture REST API)\n"
        f"  sections: {', '.join(DEMO_SECTIONS)} of restaurant {DEMO_RESTAURANT}; "
        f"a table changes status every {interval:g}s\n\n"
        "A diner (USER) on a floor plan: list the tables, hold one\n"
        f"  npx wscat -c {ws}/ws/tables/main-hall/{user}\n"
        '  > {"action":"list_tables"}\n'
        '  > {"action":"select_table","payload":{"tableId":"table-1"}}\n\n'
        f"The owner of {DEMO_RESTAURANT} (OWNER): its reservations\n"
        f"  npx wscat -c {ws}/ws/reservations/{DEMO_RESTAURANT}/{owner}\n"
        '  > {"action":"list_reservations"}\n\n'
        "An ADMIN: the notifications bell, a dashboard's analytics, a payment push to the bell\n"
        f"  npx wscat -c '{ws}/ws/notifications?token={admin}'\n"
        f"  npx wscat -c {ws}/ws/analytics/admin/tables/{admin}\n"
        f"  curl -X POST http://{shown}:{gateway.port}/broadcast -H 'Authorization: Bearer {admin}' \\\n"
        '       -d \'{"event":"payment.approved","reservation_id":"res-1","user_id":"demo-user"}\'\n\n'
        "Tokens (valid 24 h):\n"
        f"  ADMIN {admin}\n  OWNER {owner}\n  USER  {user}\n",
        flush=True,
    )
    try:
        await _wait_for_signal()
    finally:
        await gateway.stop()
        await runner.cleanup()


async def _connections(settings: Settings) -> list[str]:
    """``check --connect``: what does not answer (the broker, the REST API)."""
    problems: list[str] = []
    if settings.kafka_enabled:
        from confluent_kafka.admin import AdminClient

        def metadata() -> None:
            AdminClient({"bootstrap.servers": settings.broker_list, "log_level": 0}).list_topics(timeout=5)

        try:
            await asyncio.to_thread(metadata)
        except Exception as error:
            problems.append(f"KAFKA_BROKERS: no broker answers at {settings.broker_list} ({error})")
    import aiohttp

    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(settings.rest_base_url):
            pass  # any HTTP answer: the REST API is there
    except (aiohttp.ClientError, TimeoutError) as error:
        problems.append(f"REST_BASE_URL: {settings.rest_base_url} does not answer ({type(error).__name__})")
    return problems


def check(connect: bool) -> int:
    """Every problem of the configuration at once; 0 when there is none, else 2."""
    for warning in unknown_settings(os.environ, dotenv_names()):
        print(f"warning: {warning}")
    try:
        settings = load_settings()
    except ConfigError as error:
        problems = error.problems
    else:
        problems = configuration_problems(settings)
        if connect and not problems:
            problems = run(_connections(settings))
    if problems:
        print(f"mesaya-realtime: {len(problems)} problem{'s' if len(problems) > 1 else ''}:")
        for problem in problems:
            print(f"  {problem}")
        return CONFIG_EXIT
    print("configuration ok" + (" (Kafka and the REST API answer)" if connect else ""))
    return 0


def token(sub: str, roles: Sequence[str], ttl: str) -> int:
    try:
        settings = load_settings()
        seconds = parse_duration(ttl)
    except (ConfigError, ValueError) as error:
        print(f"mesaya-realtime: {error}", file=sys.stderr)
        return CONFIG_EXIT
    if not settings.jwt_secret:
        print(
            "mesaya-realtime: token needs JWT_SECRET (HS256); RS256 tokens come from your issuer",
            file=sys.stderr,
        )
        return CONFIG_EXIT
    print(sign(settings.jwt_secret, sub, [r.upper() for r in roles], seconds))
    return 0


def _settings_help() -> str:
    lines = ['settings (environment variables or .env; README.md "Configuration" says what each does):']
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=False)
        if default in ("", None) or field.default_factory is not None:
            shown = "-"
        else:
            shown = str(default).lower() if isinstance(default, bool) else str(default)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        lines.append(f"  {name.upper():<38} {shown}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="mesaya-realtime",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=f"mesaya-realtime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="run the gateway (configuration from the environment and .env)",
        description=(
            "Run the gateway: WORKERS processes (default: one per usable CPU) sharing the port,\n"
            "under one supervisor. Every problem of the configuration is reported at once (exit 2)."
        ),
        epilog=_settings_help(),
        formatter_class=raw,
    )
    serve_parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (overrides WORKERS; 1: a single process)"
    )
    demo_parser = commands.add_parser(
        "demo",
        help="run on an embedded default: fixture REST API, demo events, no Kafka",
        description=(
            "Run the gateway with a fixture REST API and demo table events, and print a token for "
            "each role with the command to try it. JWT_SECRET, PORT and HOST are read as serve "
            "reads them (environment, .env); without JWT_SECRET a random one is made."
        ),
    )
    # String defaults: argparse converts them only when `demo` runs, so a bad PORT never
    # crashes another command (whose settings report it naming the variable).
    demo_parser.add_argument(
        "--port", type=int, default=_configured("PORT") or "8080", help="default: PORT or 8080"
    )
    demo_parser.add_argument(
        "--host",
        default=_configured("HOST") or "127.0.0.1",
        help="default: HOST or 127.0.0.1 (this machine only)",
    )
    demo_parser.add_argument("--interval", type=float, default=3.0, help="seconds between demo events (3)")
    check_parser = commands.add_parser(
        "check",
        help="validate the configuration; exit 2 on any problem",
        description="Validate the whole configuration and report every problem at once; exit 2 on any.",
    )
    check_parser.add_argument(
        "--connect", action="store_true", help="also check that Kafka and the REST API answer"
    )
    token_parser = commands.add_parser(
        "token",
        help="print a test token signed with JWT_SECRET",
        description="Print an HS256 token signed with the configured JWT_SECRET, for tests and demos.",
        epilog="example:\n  TOKEN=$(mesaya-realtime token --sub user-1 --role USER --ttl 1h)",
        formatter_class=raw,
    )
    token_parser.add_argument("--sub", required=True, help="the user id (the token's sub)")
    token_parser.add_argument(
        "--role", action="append", default=[], help="ADMIN, OWNER or USER; repeat for several"
    )
    token_parser.add_argument("--ttl", default="1h", help="how long it is valid: 30m, 1h, 3600 (1h)")
    asyncapi_parser = commands.add_parser(
        "asyncapi",
        help="write docs/asyncapi.yaml and the TypeScript client's generated types",
        description=(
            "Write, from the entity catalogue, the AsyncAPI 3.0 document (docs/asyncapi.yaml) and\n"
            "the TypeScript client's types (clients/typescript/src/generated.ts), under --root."
        ),
        formatter_class=raw,
    )
    asyncapi_parser.add_argument("--root", default=".", help="the repository's folder (.)")
    return parser


def asyncapi(root: str) -> int:
    """Write the generated description files (a development tool: needs PyYAML, in `.[dev]`)."""
    import yaml

    from mesaya_realtime.interface.asyncapi import document, typescript

    base = Path(root)
    actions = default_actions()
    text = yaml.safe_dump(document(actions), sort_keys=False, allow_unicode=True, width=100)
    (base / "docs" / "asyncapi.yaml").write_text(ASYNCAPI_HEADER + text, encoding="utf-8")
    (base / "clients" / "typescript" / "src" / "generated.ts").write_text(
        typescript(actions), encoding="utf-8"
    )
    print("wrote docs/asyncapi.yaml and clients/typescript/src/generated.ts")
    return 0


def default_actions() -> tuple[str, ...]:
    """The event actions the generated description lists: ``WS_ALLOWED_ACTIONS``'s default."""
    return tuple(DEFAULT_ALLOWED_ACTIONS.split(","))


#: The first lines of docs/asyncapi.yaml.
ASYNCAPI_HEADER = "# Generated by `mesaya-realtime asyncapi` from the entity catalogue: do not edit.\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return check(args.connect)
        if args.command == "token":
            return token(args.sub, args.role or ["USER"], args.ttl)
        if args.command == "asyncapi":
            return asyncapi(args.root)
        if args.command == "serve":
            overrides = {} if args.workers is None else {"workers": args.workers}
            settings = load_settings(overrides)
            configure_logging(settings.log_level, settings.log_format)
            count = settings.workers or available_cpus()
            if count > 1 and worker_identity() is None:
                problems = configuration_problems(settings)
                if problems:
                    raise ConfigError(problems)
                _warn_unknown_settings()
                log.info("starting workers", extra={"workers": count})
                return Supervisor(count).run()
            if worker_identity() is None:
                _warn_unknown_settings()  # once, by the supervisor or the only process
            run(serve(settings), settings.event_loop)
        else:
            configure_logging("info", "text")
            run(demo(args.port, args.host, args.interval))
    except ConfigError as error:
        print(f"mesaya-realtime: {error}", file=sys.stderr)
        return CONFIG_EXIT
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
