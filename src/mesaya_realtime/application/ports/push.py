"""Port: how a payment push reaches every node (a Kafka topic of the gateway's own, or the
process itself without Kafka); docs/ARCHITECTURE.md "The payment push"."""

from __future__ import annotations

from typing import Protocol

__all__ = ["PushChannel", "PushUnavailable"]


class PushUnavailable(Exception):
    """The push was not stored; nothing was delivered (the caller answers 503)."""


class PushChannel(Protocol):
    def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def send(self, record: bytes) -> None:
        """Return once every node will read ``record`` (the broker acknowledged it), or raise
        :class:`PushUnavailable`."""
        ...
