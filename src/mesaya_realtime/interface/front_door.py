"""The front door: the entity route's WebSocket upgrades, without aiohttp's per-request machinery.

Every connection to the gateway's port starts at a :class:`FrontDoor`. When its first bytes are
a complete, plain upgrade request for ``/ws/{entity}/{section}[/{token}]`` (HTTP/1.1 GET, the
upgrade headers, nothing after the head, nothing percent-encoded), the front door runs the
route's driver itself (:func:`~mesaya_realtime.interface.http.drive_socket`, the same checks,
refusals and counters as every other route), answers the 101 and hands the socket to a
:class:`DirectWebSocket`: aiohttp's C frame reader behind the project's unmasked-frame guard,
the heartbeat, the close handshake. Anything else, from ``GET /health`` to a request the front
door would have to interpret (an encoded path, a body, a head split past 8 KiB, an HTTP/1.0
upgrade), goes to aiohttp unread: its request handler is given the connection and the bytes.

Why (docs/BENCHMARKS.md "Handshakes with fresh tokens"): aiohttp's request, router, response
and WebSocket objects were two thirds of a handshake's server CPU, and a socket's idle memory.
docs/ARCHITECTURE.md "The front door" says what each side answers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.http_websocket import WS_CLOSED_MESSAGE, WS_CLOSING_MESSAGE, WebSocketError, WSMessage
from aiohttp.streams import EofStream

from mesaya_realtime.application.usecases.sessions import PROTOCOL_V2
from mesaya_realtime.interface.http import (
    EXPIRIES,
    PROTOCOL_ERROR_CLOSE,
    SCHEDULER,
    SERVICES,
    GatewayServices,
    drive_socket,
    entity_gate,
    heartbeat_of,
    refusal_seen,
    token_from,
)
from mesaya_realtime.interface.masking import MaskedFramesOnly
from mesaya_realtime.interface.websocket import ExpiryHeap, SocketConnection, WebSocketLike

__all__ = ["DirectWebSocket", "FrontDoor", "FrontDoorSite"]

log = logging.getLogger(__name__)

#: The longest request head the front door reads; a longer one is aiohttp's to answer.
MAX_HEAD = 8190
#: Bytes a client may send before its upgrade is answered (it should send none).
_MAX_EARLY = 64 * 1024
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The request line the front door takes: a GET of a plain ``/ws/`` path (no ``%``, braces,
#: ``+`` or fragment) over HTTP/1.1. Anything else does not match and goes on.
_REQUEST_LINE = re.compile(
    rb"GET (/ws/[^ ?#%{}\x00-\x20\x7f-\xff]*)(?:\?([^ #%+\x00-\x20\x7f-\xff]*))? HTTP/1\.1"
)
#: The bytes a header block may hold (deleted, nothing may be left): printable ASCII, tab, CRLF.
_FIELD_BYTES = bytes([9, 10, 13, *range(0x20, 0x7F)])
#: The characters of a header name (RFC 9110 token, without the ``%`` and ``+`` the front door
#: leaves to aiohttp), mapped to None: a name is valid when nothing is left of it.
_TOKEN_CHARS = str.maketrans(
    dict.fromkeys("!#$&'*.^_`|~-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
)
_CLOSE_TIMEOUT = 10.0
#: Header lines a head may have (aiohttp's limit is 128); more go to aiohttp.
_MAX_HEADERS = 100
#: aiohttp's SINGLETON_HEADERS: a repeated one is a 400, from aiohttp.
_SINGLETON_HEADERS = frozenset(
    {
        "content-length",
        "content-location",
        "content-range",
        "content-type",
        "etag",
        "host",
        "max-forwards",
        "server",
        "transfer-encoding",
        "user-agent",
    }
)


class _Headers(dict[str, str]):
    """Request headers by lower-case name; :meth:`get` takes any case (the first of a
    repeated header wins, as in aiohttp)."""

    __slots__ = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)


class FrontDoor(asyncio.Protocol):
    """A connection's first protocol: reads the request head and takes or hands it on.

    While the driver runs, the front door is also its :class:`SocketRequest`.
    """

    __slots__ = (
        "_buffer",
        "_door",
        "_head_end",
        "_key",
        "_remote",
        "_state",
        "headers",
        "match_info",
        "path",
        "query",
        "transport",
    )

    def __init__(self, door: _Door) -> None:
        self._door = door
        self._buffer: bytes | bytearray = b""
        self._head_end = 0
        self._key = ""
        self._remote: str | None = None
        #: reading, driving (the driver has the request), upgraded, handed (to aiohttp), lost
        self._state = "reading"
        self.transport: asyncio.Transport | None = None
        self.headers: Mapping[str, str] = _NO_HEADERS
        self.query: dict[str, str] = {}
        self.match_info: dict[str, str] = {}
        self.path = ""

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._door.waiting[self] = time.monotonic() + self._door.handshake_timeout
        self._door.reap_soon()

    def data_received(self, data: bytes) -> None:
        if self._state != "reading":
            # Sent before the 101 (a client should not): kept for the socket, bounded.
            self._buffer += data
            if len(self._buffer) - self._head_end > _MAX_EARLY and self.transport is not None:
                self.transport.pause_reading()
            return
        start = 0
        if self._buffer:  # a head in pieces: gathered in a bytearray, searched from the seam
            start = max(0, len(self._buffer) - 3)
            self._buffer += data
            buffer: bytes | bytearray = self._buffer
        else:
            buffer = data
        end = buffer.find(b"\r\n\r\n", start, MAX_HEAD + 4)
        if end < 0:
            if not self._buffer:
                self._buffer = bytearray(data)
            if len(buffer) > MAX_HEAD:
                self._hand_over()
            return
        self._buffer = buffer = bytes(buffer)
        self._door.waiting.pop(self, None)
        if self._door.stopping or end + 4 != len(buffer) or not self._parse(buffer, end):
            self._hand_over()
            return
        self._head_end = end + 4
        self._state = "driving"
        door = self._door
        gate = entity_gate(door.services, self.match_info["entity"], self.match_info["section"])
        task = door.loop.create_task(drive_socket(self, door.services, token_from(self), gate))
        door.tasks.add(task)
        task.add_done_callback(self._driven)

    def _driven(self, task: asyncio.Task[None]) -> None:
        """The driver ended: a failure is logged and its connection dropped (aiohttp would
        have answered 500 and closed)."""
        self._door.tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        transport = self.transport
        if error is not None:
            log.error("socket driver failed", exc_info=error)
        if transport is not None and self._state != "handed" and (error is not None or task.cancelled()):
            transport.abort()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._door.waiting.pop(self, None)
        if self._state == "reading":
            self._buffer = b""
        self._state = "lost"

    # -- the request -----------------------------------------------------------------------

    def _parse(self, buffer: bytes, end: int) -> bool:
        """Read an upgrade request for the entity route; False for anything else."""
        line_end = buffer.find(b"\r\n", 0, end)
        match = _REQUEST_LINE.fullmatch(buffer, 0, line_end)
        if line_end < 0 or match is None:
            return False
        path = match.group(1).decode()
        parts = path.split("/")
        if len(parts) not in (4, 5) or parts[2] == "analytics" or (len(parts) == 5 and not parts[4]):
            return False  # another route (or none): aiohttp's router decides
        block = buffer[line_end + 2 : end]
        # Printable ASCII, tabs and CRLF line ends only (no bare CR or LF, no obs-fold).
        crlf = block.count(b"\r\n")
        if block.translate(None, _FIELD_BYTES) or block.count(b"\r") != crlf or block.count(b"\n") != crlf:
            return False
        if crlf >= _MAX_HEADERS:
            return False
        headers = _Headers()
        for line in block.decode("ascii").split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon or not name or name.translate(_TOKEN_CHARS):
                return False  # not a header line aiohttp would read alike
            key = name.lower()
            if key in headers:
                if key in _SINGLETON_HEADERS:
                    return False  # aiohttp refuses a repeated singleton (400): it answers that
                continue  # the first one counts, as aiohttp's headers.get
            headers[key] = value.strip(" \t")
        get = dict.get
        if (
            "host" not in headers
            or "content-length" in headers
            or "transfer-encoding" in headers
            or get(headers, "upgrade", "").lower().strip() != "websocket"
            or "upgrade" not in (part.strip().lower() for part in get(headers, "connection", "").split(","))
            or get(headers, "sec-websocket-version", "") not in ("13", "8")
        ):
            return False
        key = headers.get("sec-websocket-key", "")
        try:
            if len(base64.b64decode(key)) != 16:
                return False
        except (binascii.Error, ValueError):
            return False
        query: dict[str, str] = {}
        raw_query = match.group(2)
        if raw_query:
            for pair in raw_query.decode().split("&"):
                if pair:
                    name, _, value = pair.partition("=")
                    query.setdefault(name, value)
        self.path = path
        self.headers = headers
        self.query = query
        self._key = key
        self.match_info = {"entity": parts[2], "section": parts[3]}
        if len(parts) == 5:
            self.match_info["token"] = parts[4]
        return True

    def _hand_over(self) -> None:
        """Give the connection, and every byte read so far, to aiohttp's request handler."""
        transport = self.transport
        self._door.waiting.pop(self, None)
        buffer, self._buffer = self._buffer, b""
        self._state = "handed"
        if transport is None or transport.is_closing():
            return
        handler = self._door.aiohttp()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        transport.resume_reading()
        if buffer:
            handler.data_received(bytes(buffer))

    # -- SocketRequest ---------------------------------------------------------------------

    @property
    def remote(self) -> str | None:
        if self._remote is None and self.transport is not None:
            peer = self.transport.get_extra_info("peername")
            self._remote = str(peer[0]) if peer else ""
        return self._remote

    @property
    def expiries(self) -> ExpiryHeap:
        return self._door.expiries

    def is_upgrade(self, v2: bool) -> bool:
        return True  # the head was checked before the driver started

    async def refuse(self, status: int, message: str) -> None:
        """v1's refusal, in aiohttp's format; the connection then goes on to aiohttp
        (keep-alive), with whatever the client sent after the head."""
        refusal_seen(self, self._door.services, status, message)
        transport = self.transport
        if transport is None or transport.is_closing():
            self._state = "lost"
            return
        body = json.dumps({"message": message}).encode()
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s"
            % (status, HTTPStatus(status).phrase.encode(), len(body), body)
        )
        self._buffer = self._buffer[self._head_end :]
        self._hand_over()

    async def upgrade(self, v2: bool) -> tuple[WebSocketLike, SocketConnection] | None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self._state = "lost"
            return None
        accept = base64.b64encode(hashlib.sha1(self._key.encode() + _GUID).digest())
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + (_V2_HEADER if v2 else b"") + b"\r\n\r\n"
        )
        if v2:
            # v2 may close (a refusal) before any frame is queued: the 101 goes now.
            transport.write(response)
        door = self._door
        services = door.services
        ws = DirectWebSocket(door.loop, services.max_message_bytes + 1, heartbeat_of(services))
        early = bytes(self._buffer[self._head_end :])
        self._buffer = b""
        self.headers = _NO_HEADERS  # the socket lives on; the head is not needed
        self._state = "upgraded"
        transport.set_protocol(ws)
        ws.connection_made(transport)
        transport.resume_reading()
        connection = SocketConnection(
            ws,
            transport,
            door.scheduler,
            services.send_buffer_bytes,
            services.metrics,
            # v1: the 101 and system.connected in one write (the session opens in this turn)
            preamble=b"" if v2 else response,
        )

        def unmasked() -> None:
            services.metrics.bad_frame("unmasked")
            connection.close(PROTOCOL_ERROR_CLOSE, "frames must be masked")

        ws.on_unmasked = unmasked
        if early:
            # Frames sent before the 101 (a client should wait for it): the 101 goes first,
            # so that no answer to them can overtake it.
            connection.flush()
            ws.data_received(early)
        return ws, connection

    def finished(self) -> None:
        self.transport = None


_NO_HEADERS: Mapping[str, str] = _Headers()
_V2_HEADER = b"\r\nSec-WebSocket-Protocol: " + PROTOCOL_V2.encode()


def _control_frame(opcode: int, payload: bytes) -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


class _Reading:
    """The flow control aiohttp's message queue asks of its protocol (pause and resume
    reading), apart from the socket so that the queue and the socket make no reference cycle:
    a closed socket is freed by reference counting (tests/integration/test_socket_garbage.py)."""

    __slots__ = ("_reading_paused", "transport")

    def __init__(self) -> None:
        self._reading_paused = False
        self.transport: asyncio.Transport | None = None

    def pause_reading(self) -> None:
        self._reading_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self._reading_paused = False
        if self.transport is not None:
            self.transport.resume_reading()


class DirectWebSocket(asyncio.Protocol):
    """An upgraded socket of the front door: what :func:`drive_socket` and
    :class:`SocketConnection` use of aiohttp's ``WebSocketResponse`` (``receive``, ``close``,
    ``close_code``), with its frame reader, on the transport directly.

    The heartbeat is aiohttp's: a ping after ``heartbeat`` seconds without data from the
    client, and the socket ends (1006) when nothing comes back within half of that.
    """

    __slots__ = (
        "_close_code",
        "_close_wait",
        "_closed",
        "_closing",
        "_flow",
        "_heard",
        "_heartbeat",
        "_loop",
        "_pinged_at",
        "_queue",
        "_reader",
        "_timer",
        "_waiting",
        "on_unmasked",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, max_msg_size: int, heartbeat: float) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._flow = _Reading()
        self._queue = WebSocketDataQueue(self._flow, 2**16, loop=loop)  # type: ignore[arg-type]
        self._reader: Any = MaskedFramesOnly(
            WebSocketReader(self._queue, max_msg_size, compress=False, decode_text=True), self._unmasked
        )
        self._close_code: int | None = None
        self._closed = False
        self._closing = False
        self._waiting = False
        self._close_wait: asyncio.Future[None] | None = None
        self._heartbeat = heartbeat
        self._heard = 0.0
        self._pinged_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.on_unmasked: Callable[[], None] | None = None

    @property
    def close_code(self) -> int | None:
        return self._close_code

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self._flow.transport = transport  # type: ignore[assignment]
        if self._heartbeat:
            self._heard = self._loop.time()
            self._timer = self._loop.call_at(self._heard + self._heartbeat, self._beat)

    def data_received(self, data: bytes) -> None:
        if self._heartbeat:
            self._heard = self._loop.time()
        self._reader.feed_data(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_heartbeat()
        reader = self._reader
        reader.feed_eof()
        # What is left (queued messages, a stalled reader's stash, the end) is read from the
        # queue through aiohttp's reader; the guard in front of it (its callback refers back
        # to this socket) lets go, so that nothing of a closed socket is held in a cycle.
        if isinstance(reader, MaskedFramesOnly):
            self._reader = reader.inner
        self.on_unmasked = None
        self.transport = self._flow.transport = None

    def _unmasked(self) -> None:
        if self.on_unmasked is not None:
            self.on_unmasked()

    # -- the heartbeat ---------------------------------------------------------------------

    def _beat(self) -> None:
        self._timer = None
        if self._closed or self._closing or self.transport is None:
            return
        loop = self._loop
        due = self._heard + self._heartbeat
        now = loop.time()
        if due > now:
            self._timer = loop.call_at(due, self._beat)
            return
        self._pinged_at = now
        self.transport.write(_PING)
        self._timer = loop.call_at(now + self._heartbeat / 2.0, self._pong_due)

    def _pong_due(self) -> None:
        self._timer = None
        if self._closed or self._closing or self.transport is None:
            return
        # >=: the loop's clock is cached per turn (uvloop: whole milliseconds), and a pong
        # on loopback comes back within the millisecond of its ping.
        if self._heard >= self._pinged_at:
            self._beat()
            return
        self._closed = True
        self._close_code = 1006
        self.transport.close()
        if self._waiting:
            self._queue.feed_data(WSMessage(WSMsgType.ERROR, TimeoutError("no pong"), None), 0)

    def _stop_heartbeat(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- WebSocketLike ---------------------------------------------------------------------

    async def receive(self) -> Any:
        while True:
            if self._closed:
                return WS_CLOSED_MESSAGE
            if self._closing:
                return WS_CLOSING_MESSAGE
            self._waiting = True
            try:
                try:
                    message = await self._queue.read()
                finally:
                    # Before any close() below, which waits for this when it sees _waiting.
                    self._waiting = False
                    if self._close_wait is not None and not self._close_wait.done():
                        self._close_wait.set_result(None)
            except EofStream:
                self._close_code = 1000
                await self.close()
                return WSMessage(WSMsgType.CLOSED, None, None)
            except WebSocketError as error:
                self._close_code = error.code
                await self.close(code=error.code)
                return WSMessage(WSMsgType.ERROR, error, None)
            except Exception as error:  # a broken socket, reported as aiohttp does
                self._closing = True
                self._close_code = 1006
                await self.close()
                return WSMessage(WSMsgType.ERROR, error, None)
            kind = message.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                return message
            if kind is WSMsgType.CLOSE:
                self._closing = True
                self._close_code = message.data
                self._stop_heartbeat()
                if not self._closed:
                    await self.close()
                return message
            if kind is WSMsgType.CLOSING:
                self._closing = True
                self._close_code = 1000
                return message
            if kind is WSMsgType.PING:
                if self.transport is not None:
                    self.transport.write(_control_frame(0xA, message.data))
                continue
            if kind is WSMsgType.PONG:
                continue
            return message

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """Send the close frame; wait (up to 10 s) for the client's unless it sent its own."""
        if self._closed:
            return False
        self._closed = True
        self._stop_heartbeat()
        transport = self.transport
        if transport is None or transport.is_closing():
            return True
        reason = message[:123].decode("utf-8", "ignore").encode()  # never half a character
        transport.write(_control_frame(0x8, code.to_bytes(2, "big") + reason))
        if self._waiting:
            # receive() is waiting in another task: it returns CLOSING, then this goes on.
            self._close_wait = self._loop.create_future()
            self._queue.feed_data(WS_CLOSING_MESSAGE, 0)
            await self._close_wait
        if self._closing:
            transport.close()
            return True
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                while True:
                    reply = await self._queue.read()
                    if reply.type is WSMsgType.CLOSE:
                        self._close_code = reply.data
                        break
        except asyncio.CancelledError:
            self._close_code = 1006
            transport.close()
            raise
        except Exception:  # the client went away or sent garbage: closed all the same
            self._close_code = 1006
        transport.close()
        return True


_PING = _control_frame(0x9, b"")


class _Door:
    """What every :class:`FrontDoor` of one listening socket shares."""

    __slots__ = (
        "_reaper",
        "aiohttp",
        "expiries",
        "handshake_timeout",
        "loop",
        "scheduler",
        "services",
        "stopping",
        "tasks",
        "waiting",
    )

    def __init__(self, app: web.Application, aiohttp: web.Server, handshake_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.aiohttp = aiohttp
        self.services: GatewayServices = app[SERVICES]
        self.scheduler = app[SCHEDULER]
        self.expiries = app[EXPIRIES]
        self.handshake_timeout = handshake_timeout
        #: Connections whose head has not come yet, oldest first, with their deadlines.
        self.waiting: dict[FrontDoor, float] = {}
        #: The drivers running (a task the loop does not reference must be kept).
        self.tasks: set[asyncio.Task[None]] = set()
        #: The site stopped: heads still to come go to aiohttp (which is shutting down too).
        self.stopping = False
        self._reaper: asyncio.TimerHandle | None = None

    def __call__(self) -> FrontDoor:
        return FrontDoor(self)

    def reap_soon(self) -> None:
        if self._reaper is None:
            self._reaper = self.loop.call_later(1.0, self._reap)

    def _reap(self) -> None:
        """Close connections that sent no complete head within ``WS_HANDSHAKE_TIMEOUT``."""
        self._reaper = None
        now = time.monotonic()
        waiting = self.waiting
        while waiting:
            door, deadline = next(iter(waiting.items()))
            if deadline > now:
                break
            del waiting[door]
            door._state = "lost"
            if door.transport is not None:
                door.transport.close()
        if waiting:
            self.reap_soon()

    def stop(self) -> None:
        """The site stops listening: connections without a head yet are closed."""
        self.stopping = True
        for door in list(self.waiting):
            door._state = "lost"
            if door.transport is not None:
                door.transport.close()
        self.waiting.clear()


class FrontDoorSite(web.TCPSite):
    """aiohttp's TCP site with a :class:`FrontDoor` on every connection."""

    __slots__ = ("_app", "_door", "_handshake_timeout")

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, handshake_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._app = runner.app
        self._handshake_timeout = handshake_timeout
        self._door: _Door | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None  # the runner is set up
        door = self._door = _Door(self._app, server, self._handshake_timeout)
        self._server = await asyncio.get_running_loop().create_server(
            door,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._door is not None:
            self._door.stop()
        await super().stop()
