"""The WebSocket transport: coalescing frame writes and the per-socket command loop.

Writes never block the caller. A frame goes into its socket's pending list; once per event
loop turn a single :class:`WriteScheduler` callback writes every socket's pending frames in
one ``transport.write``. Under bursts that is one system call for many frames (below the
one-write-per-delivery floor). A socket whose unsent bytes pass the bound is closed (1013).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from typing import Any, Protocol

import orjson
from aiohttp import WSMsgType

from mesaya_realtime.application.ports.metrics import Metrics
from mesaya_realtime.application.usecases.commands import LATER, CommandService, Envelope
from mesaya_realtime.application.usecases.sessions import Session, refusal_message
from mesaya_realtime.domain.errors import InvalidPayload
from mesaya_realtime.domain.messages import Message, encode
from mesaya_realtime.interface.frames import text_frame

__all__ = ["ExpiryHeap", "SocketConnection", "WebSocketLike", "WriteScheduler", "serve_session"]

log = logging.getLogger(__name__)

#: Close code for a socket that does not read fast enough ("try again later").
SLOW_CONSUMER_CLOSE = 1013
#: Close code when the token expires on an open socket.
TOKEN_EXPIRED_CLOSE = 1008
_ABORT_AFTER_CLOSE = 5.0
_ENDS = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
#: Frames one socket may have answered before it lets the other sockets' work run.
_FRAMES_PER_TURN = 32


class WebSocketLike(Protocol):
    """What the driver and :class:`SocketConnection` use of an upgraded socket: aiohttp's
    ``WebSocketResponse``, or the front door's ``DirectWebSocket``
    (interface/front_door.py)."""

    @property
    def close_code(self) -> int | None: ...

    async def receive(self) -> Any: ...

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool: ...


class WriteScheduler:
    """Flushes every socket with pending frames once per event-loop turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[SocketConnection] = []
        self._scheduled = False

    def mark(self, connection: SocketConnection) -> None:
        self._dirty.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection.flush()


class SocketConnection:
    """Implements the application's ``Connection`` port over an upgraded socket."""

    __slots__ = (
        "_fresh",
        "_metrics",
        "_pending",
        "_scheduler",
        "_ws",
        "buffer_limit",
        "closed",
        "transport",
    )

    def __init__(
        self,
        ws: WebSocketLike,
        transport: asyncio.Transport,
        scheduler: WriteScheduler,
        buffer_limit: int,
        metrics: Metrics,
        preamble: bytes = b"",
    ) -> None:
        self._ws = ws
        self.transport = transport
        self._scheduler = scheduler
        self._pending: list[bytes] = []
        #: True while ``preamble`` (an upgrade's 101, written with the first frames in one
        #: system call) is unsent: a close writes it first.
        self._fresh = bool(preamble)
        if preamble:
            self._pending.append(preamble)
            scheduler.mark(self)
        self._metrics = metrics
        self.buffer_limit = buffer_limit
        self.closed = False

    def send(self, payload: bytes) -> None:
        self.send_frame(text_frame(payload))

    def send_frame(self, frame: bytes) -> None:
        if self.closed:
            return
        pending = self._pending
        pending.append(frame)
        if len(pending) == 1:
            self._scheduler.mark(self)

    def flush(self) -> None:
        pending = self._pending
        if not pending or self.closed:
            pending.clear()
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._fresh = False
        transport = self.transport
        if transport.is_closing():
            self.closed = True
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.buffer_limit:
            self._metrics.slow_consumer_closed()
            self.close(SLOW_CONSUMER_CLOSE, "slow consumer")

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._fresh:
            self._fresh = False
            if not self.transport.is_closing():
                self.transport.write(self._pending[0])  # the 101 before the close frame
        self._pending.clear()
        task = asyncio.ensure_future(self._close(code, reason))
        task.add_done_callback(_ignore_result)

    async def _close(self, code: int, reason: str) -> None:
        transport = self.transport
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(code=code, message=reason.encode()), 1.0)
        if not transport.is_closing():
            transport.close()
        # close() waits for buffered bytes; a client that never reads must not hold them.
        asyncio.get_running_loop().call_later(_ABORT_AFTER_CLOSE, transport.abort)


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


async def serve_session(
    ws: WebSocketLike,
    session: Session,
    connection: SocketConnection,
    commands: CommandService,
    metrics: Metrics,
    max_inflight: int,
    expiries: ExpiryHeap,
) -> None:
    """Run one socket: read commands, answer them in order, enforce token expiry.

    Commands run concurrently (a slow upstream call does not hold up a ping), but each
    reply waits for the previous command's reply to be sent, so replies keep the order in
    which the commands arrived. At most ``max_inflight`` commands run at once; past that,
    reading pauses (TCP back-pressure on the client). Nothing is allocated per idle socket.
    """
    inflight: list[asyncio.Task[None]] = []
    previous: asyncio.Task[None] | None = None
    expiries.watch(session, connection)
    served = 0
    session.ended_cleanly = False
    try:
        while True:
            frame = await ws.receive()
            if frame.type in _ENDS:
                # Only the client's own close frame is a clean end (docs/WEBSOCKET_ENDPOINTS.md
                # "Holds that survive a blip").
                session.ended_cleanly = frame.type == WSMsgType.CLOSE
                break
            served += 1
            if not served % _FRAMES_PER_TURN:
                # Frames already buffered are read without waiting: a client that floods
                # would otherwise hold the loop for a whole read buffer of frames.
                await asyncio.sleep(0)
            if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                if frame.type == WSMsgType.ERROR:
                    metrics.bad_frame("protocol")
                    break
                continue
            parsed = _parse(frame.data, session, metrics)
            if previous is None or previous.done():
                # Nothing pending before it: answer at once when no waiting is needed.
                reply = parsed if isinstance(parsed, Message) else commands.answer_now(session, parsed)
                if reply is not LATER:
                    if isinstance(reply, Message):
                        connection.send(encode(reply))
                    continue
            if inflight:
                inflight = [task for task in inflight if not task.done()]
                if len(inflight) >= max_inflight:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            previous = asyncio.ensure_future(_answer(parsed, previous, session, commands, expiries))
            inflight.append(previous)
    finally:
        expiries.forget(session)
        for task in inflight:
            task.cancel()
        connection.closed = True


def _parse(data: str | bytes, session: Session, metrics: Metrics) -> Envelope | Message:
    """The command of a frame, or the ``invalid payload`` error that answers it."""
    try:
        return Envelope.parse(orjson.loads(data))
    except orjson.JSONDecodeError:
        metrics.bad_frame("invalid payload")
        return refusal_message(session, "unknown", InvalidPayload())
    except InvalidPayload as error:
        metrics.bad_frame("invalid payload")
        return refusal_message(session, "unknown", error)


async def _answer(
    parsed: Envelope | Message,
    previous: asyncio.Task[None] | None,
    session: Session,
    commands: CommandService,
    expiries: ExpiryHeap,
) -> None:
    """Run one command, wait for the reply before it, then send this reply."""
    reply: Message | None
    principal = session.principal
    if isinstance(parsed, Message):
        reply = parsed
    else:
        reply = await commands.handle(session, parsed)
    if previous is not None and not previous.done():
        await asyncio.wait((previous,))
    if session.principal is not principal and isinstance(session.connection, SocketConnection):
        # The command renewed the token, which may expire where the old one did not: watch
        # it (the socket keeps one heap entry; see ExpiryHeap.watch).
        expiries.watch(session, session.connection)
    if reply is not None:
        session.connection.send(encode(reply))


class ExpiryHeap:
    """Closes sockets whose token expired (1008): one heap and one timer per event loop.

    A timer per socket would cost ~200 bytes on every idle socket; here a socket costs one
    heap entry, ``[deadline, id, session, connection]``, that the session points back to
    (``Session.expiry``). An ``authenticate`` that moves the deadline later adds nothing: the
    entry is pushed again with the new time when the old one comes up. Only a renewal that
    moves it earlier adds an entry (the superseded one is emptied), so renewals cannot grow
    the heap. A socket that closes empties its entry at once (:meth:`forget`), so the heap
    never keeps a closed socket's objects alive; empty entries are dropped when they come up,
    or all at once when they are the majority.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[list[Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._empty = 0

    def __len__(self) -> int:
        return len(self._heap)

    def watch(self, session: Session, connection: SocketConnection) -> None:
        expires_at = session.principal.expires_at
        if expires_at is None:
            return
        current = session.expiry
        if current is not None:
            if current[0] <= expires_at:
                return  # the entry there comes up first and re-checks the principal
            self._empty_entry(current)  # superseded by the earlier deadline
        entry = [expires_at, session.id, session, connection]
        session.expiry = entry
        heapq.heappush(self._heap, entry)
        self._arm()

    def forget(self, session: Session) -> None:
        """A socket closed: its entry lets go of it now; compact once most entries are empty."""
        entry, session.expiry = session.expiry, None
        if entry is not None:
            self._empty_entry(entry)
        if self._empty > 64 and self._empty * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2] is not None]
            heapq.heapify(self._heap)
            self._empty = 0

    def _empty_entry(self, entry: list[Any]) -> None:
        entry[2] = entry[3] = None
        self._empty += 1

    def _arm(self) -> None:
        if not self._heap:
            return
        first = self._heap[0][0]
        if first < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = first
            self._timer = self._loop.call_later(max(0.0, first - time.time()), self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        now = time.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            session, connection = entry[2], entry[3]
            if session is None:
                self._empty = max(0, self._empty - 1)
                continue
            session.expiry = None
            if connection.closed:
                continue
            expires_at = session.principal.expires_at
            if expires_at is None:
                continue  # renewed with a token that never expires
            if expires_at > now:
                self.watch(session, connection)
                continue
            connection.close(TOKEN_EXPIRED_CLOSE, "token expired")
        self._arm()
