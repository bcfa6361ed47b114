"""HTTP routes: the entity and notifications WebSockets, the payment push, health, readiness
and metrics.

``GET /ws/{entity}/{section}[/{token}]`` runs the pre-upgrade checks of reference §2.2 and
answers refusals as ``{"message": "..."}`` with the reference's status codes;
``GET /ws/notifications`` those of §2.3 (docs/WEBSOCKET_ENDPOINTS.md).

Every socket route runs one driver (:func:`drive_socket`) over a :class:`SocketRequest`: here
aiohttp's request; for the entity route, usually the front door's (interface/front_door.py),
which upgrades without aiohttp's per-request machinery (docs/ARCHITECTURE.md "The front door").
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from aiohttp import HttpVersion11, WSMsgType, web

from mesaya_realtime.application.ports.metrics import Metrics
from mesaya_realtime.application.ports.push import PushUnavailable
from mesaya_realtime.application.usecases.analytics import AnalyticsService
from mesaya_realtime.application.usecases.broadcast import BroadcastRejected, BroadcastService, parse_push
from mesaya_realtime.application.usecases.commands import AUTHENTICATE_ACTIONS, CommandService, Envelope
from mesaya_realtime.application.usecases.connect import ConnectUseCase
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.lifecycle import SocketLifecycle
from mesaya_realtime.application.usecases.log_limits import RateLimitedLog
from mesaya_realtime.application.usecases.notifications import NotificationFeed
from mesaya_realtime.application.usecases.sessions import PROTOCOL_V2, V1, Hello, Session
from mesaya_realtime.domain.analytics import key_of
from mesaya_realtime.domain.catalogue import NOTIFICATIONS
from mesaya_realtime.domain.errors import AuthError, InvalidPayload, OwnershipUnavailable, Refused
from mesaya_realtime.interface.masking import MaskedFramesOnly
from mesaya_realtime.interface.websocket import (
    ExpiryHeap,
    SocketConnection,
    WebSocketLike,
    WriteScheduler,
    serve_session,
)

__all__ = [
    "EXPIRIES",
    "PROTOCOL_ERROR_CLOSE",
    "SCHEDULER",
    "SERVICES",
    "GatewayServices",
    "SocketRequest",
    "create_app",
    "drive_socket",
    "entity_gate",
    "heartbeat_of",
    "refusal_seen",
    "token_from",
]

log = logging.getLogger(__name__)
_REFUSALS = RateLimitedLog(log)
_CLOSES = RateLimitedLog(log)

#: Heartbeats are spread over the last fifth of ``WS_HEARTBEAT`` (see entity_socket).
_HEARTBEAT_JITTER = 0.2


@dataclass(slots=True)
class GatewayServices:
    """What the HTTP interface needs, built by the composition root."""

    connect: ConnectUseCase
    commands: CommandService
    hub: Hub
    sockets: SocketLifecycle
    metrics: Metrics
    max_message_bytes: int
    send_buffer_bytes: int
    heartbeat: float
    max_inflight_commands: int
    render_metrics: Callable[[], bytes]
    readiness: Callable[[], dict[str, object]]
    health: Callable[[], dict[str, object]]
    notifications: NotificationFeed
    broadcasts: BroadcastService
    analytics: AnalyticsService
    #: Who may call POST /broadcast: the static secret (n8n), and/or ADMIN JWTs.
    broadcast_secret: str = ""
    broadcast_admin_tokens: bool = True
    #: Browser origins allowed to open sockets; empty allows every origin.
    allowed_origins: frozenset[str] = frozenset()
    #: Open sockets this node accepts at most (0: no limit); past it, 503 (v2: 4429).
    max_connections: int = 0
    #: Seconds a v2 socket has to send its ``authenticate`` frame (``WS_AUTH_TIMEOUT``).
    auth_timeout: float = 5.0
    #: v2 sockets upgraded and not yet admitted (they count against ``max_connections``).
    authenticating: int = 0
    #: The node is stopping: its sockets were told 1001, and any admitted later is closed so.
    stopping: bool = False
    #: ``GET /asyncapi.json``: the AsyncAPI document of this node's routes (interface/asyncapi.py).
    description: dict[str, object] = field(default_factory=dict)


class SocketRequest(Protocol):
    """A socket request as :func:`drive_socket` sees it, whoever parsed it."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def query(self) -> Mapping[str, str]: ...

    @property
    def match_info(self) -> Mapping[str, str]: ...

    @property
    def path(self) -> str: ...

    @property
    def remote(self) -> str | None: ...

    @property
    def expiries(self) -> ExpiryHeap: ...

    def is_upgrade(self, v2: bool) -> bool:
        """RFC 6455 §4.2.1: an HTTP/1.1 GET with the upgrade headers."""

    async def refuse(self, status: int, message: str) -> None:
        """Protocol v1's refusal: ``{"message": ...}`` with ``status``, before any upgrade."""

    async def upgrade(self, v2: bool) -> tuple[WebSocketLike, SocketConnection] | None:
        """Answer 101 (selecting ``mesaya.v2`` when ``v2``); None when the client is gone."""

    def finished(self) -> None:
        """The socket's session has ended."""


def token_from(request: SocketRequest | web.Request) -> str:
    token = request.match_info.get("token", "").strip()
    if token:
        return token
    token = request.query.get("token", "").strip()
    if token:
        return token
    return _bearer(request)


def refusal_seen(
    request: SocketRequest | web.Request, services: GatewayServices, status: int, message: str
) -> None:
    """A refused socket, counted and logged (never the token; rate-limited per status and
    reason, so a reconnect storm writes a line per kind per 10 s)."""
    services.metrics.handshake_rejected(status)
    _REFUSALS.info(
        "handshake refused",
        kind=f"{status} {message}",
        status=status,
        reason=message,
        path=_without_token(request),
        remote=request.remote or "",
    )


def _reject(request: web.Request, services: GatewayServices, status: int, message: str) -> web.Response:
    """A refusal before the upgrade (protocol v1), answered in JSON."""
    refusal_seen(request, services, status, message)
    return web.json_response({"message": message}, status=status)


def _without_token(request: SocketRequest | web.Request) -> str:
    """The request's path as logged: a token in the path is replaced by ``<token>``."""
    token = request.match_info.get("token", "")
    path = request.path
    return path.replace(token, "<token>") if token else path


def _node_refusal(services: GatewayServices, request: SocketRequest) -> Refused | None:
    """The checks every socket route makes first: the origin allow-list, the node's limit
    (sockets still authenticating count)."""
    if services.allowed_origins:
        origin = request.headers.get("Origin", "").strip().rstrip("/").lower()
        if origin and origin not in services.allowed_origins:
            return Refused(403, "origin not allowed")
    if services.max_connections and len(services.hub) + services.authenticating >= services.max_connections:
        return Refused(503, "too many connections", close_code=4429)
    return None


def heartbeat_of(services: GatewayServices) -> float:
    """A socket's heartbeat period: ``WS_HEARTBEAT``, up to a fifth shorter, differently per
    socket. Sockets opened together (a reconnect storm, a benchmark) would otherwise all be
    pinged in the same loop turn, every period (10,000 pings held the loop ~200 ms in the soak)."""
    return services.heartbeat * (1.0 - _HEARTBEAT_JITTER * random.random())


def _websocket(services: GatewayServices, v2: bool = False) -> web.WebSocketResponse:
    return web.WebSocketResponse(
        # aiohttp refuses a message of exactly max_msg_size; gorilla's read limit (and ours)
        # accepts up to and including the limit, and refuses one byte more with 1009.
        max_msg_size=services.max_message_bytes + 1,
        heartbeat=heartbeat_of(services),
        compress=False,
        autoping=True,
        protocols=_V2_PROTOCOLS if v2 else (),
    )


_V2_PROTOCOLS = (PROTOCOL_V2,)


def _wants_v2(request: SocketRequest) -> bool:
    """True when the client offers the ``mesaya.v2`` subprotocol."""
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    return bool(offered) and PROTOCOL_V2 in (part.strip() for part in offered.split(","))


def _not_an_upgrade(request: web.Request, ws: web.WebSocketResponse) -> bool:
    # RFC 6455 §4.2.1: an opening handshake is an HTTP/1.1 (or later) GET.
    return request.version < HttpVersion11 or not ws.can_prepare(request).ok


#: A socket route's checks that need the token: given it, they return the admission (the
#: checks that come after the upgrade check in v1, often a REST call), which returns what
#: opens the session. Both raise :class:`Refused`.
Opener = Callable[[SocketConnection, Hello], Session]
Admission = Callable[[], Awaitable[Opener]]
Gate = Callable[[str], Awaitable[Admission]]


async def drive_socket(request: SocketRequest, services: GatewayServices, url_token: str, gate: Gate) -> None:
    """One socket route, in both protocols (docs/WEBSOCKET_ENDPOINTS.md "Protocol v2").

    v1 refuses before the upgrade, with an HTTP status and ``{"message": ...}``. v2 upgrades
    first (selecting ``mesaya.v2``), takes the token from the URL or the first frame, and
    refuses with a close frame (4000 + the status, or the refusal's own code) whose reason is
    the same message, which browser JavaScript can read.
    """
    if not _wants_v2(request):
        try:
            refused = _node_refusal(services, request)
            if refused is not None:
                raise refused
            admission = await gate(url_token)
            if not request.is_upgrade(False):
                await request.refuse(400, "Bad Request")
                return
            opener = await admission()
        except Refused as rejected:
            await request.refuse(rejected.status, rejected.message)
            return
        upgraded = await request.upgrade(False)
        if upgraded is not None:
            await _run(request, services, *upgraded, opener, V1)
        return
    if not request.is_upgrade(True):
        await request.refuse(400, "Bad Request")
        return
    refused = _node_refusal(services, request)
    services.authenticating += 1
    try:
        upgraded = await request.upgrade(True)
        if upgraded is None:
            return
        ws, connection = upgraded
        try:
            if refused is not None:
                raise refused
            hello = Hello(v2=True, since=request.query.get("since", "").strip())
            token = url_token
            if not token:
                first = await _first_frame(ws, services.auth_timeout)
                if first is None:
                    return  # the client went away
                token, sent = first
                hello = Hello(v2=True, since=sent.since or hello.since, request_id=sent.request_id)
            opener = await (await gate(token))()
            resumes = services.sockets.resumes
            if hello.since and resumes is not None:
                # This node may be a little behind the one that issued the cursor.
                await resumes.prepare(hello.since)
        except Refused as rejected:
            refusal_seen(request, services, rejected.status, rejected.message)
            await _close(ws, rejected.close_code, rejected.message)
            return
    finally:
        services.authenticating -= 1
    await _run(request, services, ws, connection, opener, hello)


class _AiohttpSocket:
    """:class:`SocketRequest` over aiohttp's request; ``response`` is what the handler returns."""

    __slots__ = ("_request", "_services", "response", "ws")

    def __init__(self, request: web.Request, services: GatewayServices) -> None:
        self._request = request
        self._services = services
        self.ws: web.WebSocketResponse | None = None
        self.response: web.StreamResponse | None = None

    @property
    def headers(self) -> Mapping[str, str]:
        return self._request.headers

    @property
    def query(self) -> Mapping[str, str]:
        return self._request.query

    @property
    def match_info(self) -> Mapping[str, str]:
        return self._request.match_info

    @property
    def path(self) -> str:
        return self._request.path

    @property
    def remote(self) -> str | None:
        return self._request.remote

    @property
    def expiries(self) -> ExpiryHeap:
        return self._request.app[EXPIRIES]

    def is_upgrade(self, v2: bool) -> bool:
        self.ws = ws = _websocket(self._services, v2)
        return not _not_an_upgrade(self._request, ws)

    async def refuse(self, status: int, message: str) -> None:
        self.response = _reject(self._request, self._services, status, message)

    async def upgrade(self, v2: bool) -> tuple[WebSocketLike, SocketConnection] | None:
        ws = self.ws
        assert ws is not None  # is_upgrade came first
        self.response = ws
        connection = await _upgrade(self._request, ws, self._services)
        return None if connection is None else (ws, connection)

    def finished(self) -> None:
        # aiohttp keeps the heartbeat's data callback (a bound method of ``ws``) on the
        # protocol after the socket ends: protocol -> ws -> request -> protocol, a cycle that
        # only a full collection frees. Dropped here, a closed socket's objects go at once.
        protocol = self._request.protocol
        if getattr(protocol, "_data_received_cb", None) is not None:
            protocol._data_received_cb = None


async def _handle(request: web.Request, url_token: str, gate: Gate) -> web.StreamResponse:
    """An aiohttp handler's run of :func:`drive_socket`."""
    services: GatewayServices = request.app[SERVICES]
    adapter = _AiohttpSocket(request, services)
    await drive_socket(adapter, services, url_token, gate)
    assert adapter.response is not None  # every path refuses or upgrades
    return adapter.response


#: Close code of a v2 socket whose ``authenticate`` frame did not come in time.
AUTH_TIMEOUT_CLOSE = 4408


async def _first_frame(ws: WebSocketLike, within: float) -> tuple[str, Hello] | None:
    """The token (and resume cursor) of a v2 socket's first frame, ``{"action":
    "authenticate", "payload": {"token": ..., "since"?: ...}, "requestId"?: ...}``; None when
    the client closed first. Anything else is refused (4401), and so is silence (4408)."""
    try:
        # One deadline: aiohttp's own receive timeout starts again with every ping.
        async with asyncio.timeout(within):
            frame = await ws.receive()
    except TimeoutError:
        raise Refused(408, "authentication timeout", close_code=AUTH_TIMEOUT_CLOSE) from None
    if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return None
    required = Refused(401, "authentication required")
    if frame.type is not WSMsgType.TEXT:
        raise required
    try:
        envelope = Envelope.parse(orjson.loads(frame.data))
    except (orjson.JSONDecodeError, InvalidPayload):
        raise required from None
    payload = envelope.payload
    if envelope.action not in AUTHENTICATE_ACTIONS or not isinstance(payload, dict):
        raise required
    token = payload.get("token", "")
    since = payload.get("since", "")
    if not isinstance(token, str) or not isinstance(since, str) or len(token) > 16_384 or len(since) > 4096:
        raise Refused(400, "invalid payload")
    return token.strip(), Hello(v2=True, since=since.strip(), request_id=envelope.request_id)


async def _close(ws: WebSocketLike, code: int, reason: str) -> None:
    """Close a refused v2 socket; a client that does not answer the close is not waited for."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()), 2.0)


def entity_gate(services: GatewayServices, raw_entity: str, raw_section: str) -> Gate:
    """The entity route's checks (reference §2.2), for :func:`drive_socket`."""

    async def gate(token: str) -> Admission:
        spec, principal = services.connect.authorize(raw_entity, raw_section, token)
        section = raw_section.strip()

        async def admission() -> Opener:
            if services.connect.needs_admission(spec, principal, section):
                await services.connect.admit(spec, principal, section)
            return lambda connection, hello: services.sockets.open(
                connection, principal, spec, section, hello=hello
            )

        return admission

    return gate


async def entity_socket(request: web.Request) -> web.StreamResponse:
    services: GatewayServices = request.app[SERVICES]
    gate = entity_gate(services, request.match_info["entity"], request.match_info["section"])
    return await _handle(request, token_from(request), gate)


async def notifications_socket(request: web.Request) -> web.StreamResponse:
    """``GET /ws/notifications``: token from ``?token=`` (as the reference) or the header."""
    services: GatewayServices = request.app[SERVICES]

    async def gate(token: str) -> Admission:
        try:
            if not token:
                raise AuthError("missing token")
            principal = services.connect.verifier.verify(token)
        except AuthError:
            raise Refused(401, "invalid or missing token") from None

        async def admission() -> Opener:
            feed = services.notifications
            try:
                owned = await feed.admit(principal)
            except OwnershipUnavailable as error:
                raise Refused(503, error.reason) from None
            starting = feed.topics(principal)
            return lambda connection, hello: services.sockets.open(
                connection,
                principal,
                NOTIFICATIONS,
                "",
                starting=starting,
                greeting=(),
                owned=owned,
                hello=hello,
            )

        return admission

    return await _handle(request, request.query.get("token", "").strip() or _bearer(request), gate)


async def analytics_socket(request: web.Request) -> web.StreamResponse:
    """``GET /ws/analytics/{scope}/{entity}[/{token}]``: token from the header (as the
    reference), ``?token=`` or the path, so that browsers can connect."""
    services: GatewayServices = request.app[SERVICES]

    async def gate(token: str) -> Admission:
        key = key_of(request.match_info["scope"], request.match_info["entity"])
        if key is None:
            raise Refused(404, "analytics endpoint not available")
        principal = None
        if token:
            try:
                principal = services.connect.verifier.verify(token)
            except AuthError:
                raise Refused(401, "invalid token") from None
        elif key.token_required:
            raise Refused(400, "missing token", close_code=4401)
        query = await services.analytics.check(key, principal, request.query)

        async def admission() -> Opener:
            admitted = await services.analytics.admit(key, principal, query)
            return lambda connection, hello: services.sockets.open(
                connection,
                admitted.principal,
                admitted.spec,
                admitted.state.query.identifier,
                starting=admitted.starting,
                greeting=admitted.greeting,
                state=admitted.state,
                hello=hello,
            )

        return admission

    return await _handle(request, token_from(request), gate)


def _bearer(request: SocketRequest | web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


async def _upgrade(
    request: web.Request, ws: web.WebSocketResponse, services: GatewayServices
) -> SocketConnection | None:
    """Answer the upgrade (101) and wrap the socket; None when the client is already gone."""
    await ws.prepare(request)
    transport = request.transport
    if transport is None:
        return None
    scheduler: WriteScheduler = request.app[SCHEDULER]
    connection = SocketConnection(
        ws,
        transport,
        scheduler,
        services.send_buffer_bytes,
        services.metrics,
    )
    _require_masked_frames(request, connection, services)
    return connection


async def _run(
    request: SocketRequest,
    services: GatewayServices,
    ws: WebSocketLike,
    connection: SocketConnection,
    opener: Opener,
    hello: Hello,
) -> None:
    """Open the session (the application's lifecycle), run it, close it."""
    if services.stopping:
        await _close(ws, 1001, "server shutting down")
        return
    session = opener(connection, hello)
    try:
        await serve_session(
            ws,
            session,
            connection,
            services.commands,
            services.metrics,
            services.max_inflight_commands,
            request.expiries,
        )
    finally:
        await services.sockets.close(session)
        _CLOSES.debug(
            "socket closed",
            kind=f"{session.entity.name} {ws.close_code}",
            entity=session.entity.name,
            code=ws.close_code,
            remote=request.remote or "",
        )
        request.finished()


def _require_masked_frames(
    request: web.Request, connection: SocketConnection, services: GatewayServices
) -> None:
    """Put :class:`MaskedFramesOnly` in front of aiohttp's frame reader (RFC 6455 §5.1)."""
    protocol = request.protocol
    reader = getattr(protocol, "_payload_parser", None)
    if reader is None:
        return

    def unmasked() -> None:
        services.metrics.bad_frame("unmasked")
        connection.close(PROTOCOL_ERROR_CLOSE, "frames must be masked")

    protocol._payload_parser = MaskedFramesOnly(reader, unmasked)


#: Close code for a protocol violation (RFC 6455 §7.4.1).
PROTOCOL_ERROR_CLOSE = 1002


#: The largest ``POST /broadcast`` body (413 beyond).
BROADCAST_MAX_BODY = 64 * 1024


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


async def broadcast(request: web.Request) -> web.Response:
    """``POST /broadcast`` (reference §2.5), authenticated (docs/WEBSOCKET_ENDPOINTS.md)."""
    services: GatewayServices = request.app[SERVICES]
    metrics = services.metrics
    if not services.broadcast_secret and not services.broadcast_admin_tokens:
        metrics.broadcast("refused")
        return _answer(
            503, "broadcast is not configured: set BROADCAST_SECRET or BROADCAST_ADMIN_TOKENS=true"
        )
    if not _may_broadcast(services, _bearer(request)):
        metrics.broadcast("refused")
        return _answer(401, "unauthorized")
    body = await _body_within(request, BROADCAST_MAX_BODY)
    if body is None:
        metrics.broadcast("refused")
        return _answer(413, "request body too large")
    try:
        push = parse_push(body)
        await services.broadcasts.publish(push)
    except BroadcastRejected as rejected:
        metrics.broadcast("refused")
        return _answer(rejected.status, rejected.message)
    except PushUnavailable as error:
        log.warning("broadcast not stored", extra={"error": str(error)})
        metrics.broadcast("unavailable")
        return _answer(503, "broadcast unavailable")
    return web.json_response(
        {"success": True, "message": "Message broadcasted successfully", "event": push.event}
    )


async def _body_within(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is longer than ``limit`` (read no further)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _may_broadcast(services: GatewayServices, token: str) -> bool:
    if not token:
        return False
    secret = services.broadcast_secret.strip()
    if secret and hmac.compare_digest(token.encode(), secret.encode()):
        return True
    if not services.broadcast_admin_tokens:
        return False
    try:
        return services.connect.verifier.verify(token).is_admin
    except AuthError:
        return False


async def health(request: web.Request) -> web.Response:
    services: GatewayServices = request.app[SERVICES]
    return web.json_response(services.health())


async def ready(request: web.Request) -> web.Response:
    services: GatewayServices = request.app[SERVICES]
    state = services.readiness()
    return web.json_response(state, status=200 if state.get("ready") else 503)


async def asyncapi_json(request: web.Request) -> web.Response:
    """``GET /asyncapi.json``: the AsyncAPI 3.0 description of every route (docs/asyncapi.yaml)."""
    services: GatewayServices = request.app[SERVICES]
    return web.json_response(services.description)


async def metrics(request: web.Request) -> web.Response:
    services: GatewayServices = request.app[SERVICES]
    return web.Response(body=services.render_metrics(), content_type="text/plain", charset="utf-8")


_GET_ONLY = re.compile(r"/(health|ready|metrics|asyncapi\.json)|/ws/notifications|/ws/[^/]*/[^/]*(/[^/]+)?")


async def fallback(request: web.Request) -> web.Response:
    """Unmatched requests, answered in JSON as the rest (Echo's ``{"message": ...}``).

    A route instead of a middleware: a middleware would wrap every WebSocket handler in one
    more coroutine for the socket's whole life (memory per idle socket).
    """
    if _GET_ONLY.fullmatch(request.path):
        return web.json_response({"message": "Method Not Allowed"}, status=405, headers={"Allow": "GET"})
    if request.path == "/broadcast":
        return web.json_response({"message": "Method Not Allowed"}, status=405, headers={"Allow": "POST"})
    return web.json_response({"message": "Not Found"}, status=404)


SERVICES = web.AppKey("services", GatewayServices)
SCHEDULER = web.AppKey("scheduler", WriteScheduler)
EXPIRIES = web.AppKey("expiries", ExpiryHeap)


def create_app(
    services: GatewayServices, extra_routes: Callable[[web.Application], None] | None = None
) -> web.Application:
    """The aiohttp application for the gateway's routes (``extra_routes``: the demo's page)."""
    app = web.Application()
    app[SERVICES] = services

    async def start_scheduler(app: web.Application) -> None:
        app[SCHEDULER] = WriteScheduler(asyncio.get_running_loop())
        app[EXPIRIES] = ExpiryHeap(asyncio.get_running_loop())

    async def close_sockets(app: web.Application) -> None:
        # Going away (1001): clients reconnect, through the load balancer, to another node.
        services.stopping = True  # a socket admitted from now on is closed at once (_run)
        for session in services.hub.all_sessions():
            session.connection.close(1001, "server shutting down")
        # aiohttp waits for its own handlers; the front door's sockets are waited for here:
        # those still authenticating (v2: at most WS_AUTH_TIMEOUT), then every leave hook.
        if not await services.sockets.settled(5.0, also=lambda: services.authenticating):
            log.warning("sockets still closing at shutdown", extra={"sockets": len(services.hub)})

    app.on_startup.append(start_scheduler)
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/asyncapi.json", asyncapi_json)
    app.router.add_get("/ws/notifications", notifications_socket)  # before /ws/{entity}/{section}
    app.router.add_post("/broadcast", broadcast)
    # before the entity routes, which /ws/analytics/{scope}/{entity} would also match
    app.router.add_get("/ws/analytics/{scope:[^{}/]*}/{entity:[^{}/]*}", analytics_socket)
    app.router.add_get("/ws/analytics/{scope:[^{}/]*}/{entity:[^{}/]*}/{token}", analytics_socket)
    # Empty entity/section segments match, as in Echo: `/ws//s/t` is the default entity and
    # `/ws/tables//t` is 400 "missing section" (reference §2.2), not a 404.
    app.router.add_get("/ws/{entity:[^{}/]*}/{section:[^{}/]*}", entity_socket)
    app.router.add_get("/ws/{entity:[^{}/]*}/{section:[^{}/]*}/{token}", entity_socket)
    if extra_routes is not None:
        extra_routes(app)
    app.router.add_route("*", "/{tail:.*}", fallback)  # last: only what nothing else matched
    return app
