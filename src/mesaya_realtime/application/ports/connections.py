"""Port: one client socket's transport, as the application sees it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Connection", "Framer"]

#: Turns one encoded JSON message into the transport's frame (a WebSocket text frame).
Framer = Callable[[bytes], bytes]


class Connection(Protocol):
    """Where a session's messages go.

    ``send_frame`` queues one frame made by the transport's :data:`Framer` without blocking;
    the transport writes queued frames in order, several in one write when they pile up,
    and closes a socket whose unsent bytes pass its bound. ``send`` frames and queues one
    encoded message.
    """

    def send(self, payload: bytes) -> None: ...

    def send_frame(self, frame: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...
