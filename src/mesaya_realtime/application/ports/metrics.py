"""Port: what the application counts. Calls are cheap; hot paths count per batch."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Metrics", "NullMetrics"]


class Metrics(Protocol):
    def events_consumed(self, topic: str, count: int) -> None: ...
    def event_skipped(self, topic: str, reason: str, count: int = 1) -> None: ...
    def delivered(self, entity: str, count: int) -> None: ...
    def socket_opened(self, entity: str) -> None: ...
    def socket_closed(self, entity: str) -> None: ...
    def command(self, entity: str, action: str, outcome: str) -> None: ...
    def handshake_rejected(self, status: int) -> None: ...
    def bad_frame(self, reason: str) -> None: ...
    def cache(self, outcome: str) -> None: ...
    def upstream_call(self, outcome: str, seconds: float) -> None: ...
    def slow_consumer_closed(self) -> None: ...
    def ownership(self, outcome: str) -> None: ...
    def broadcast(self, outcome: str) -> None: ...
    def resume(self, recovered: bool) -> None: ...
    def resume_backfill(self, outcome: str) -> None: ...


class NullMetrics:
    """Counts nothing; for unit tests and tools."""

    def events_consumed(self, topic: str, count: int) -> None:
        pass

    def event_skipped(self, topic: str, reason: str, count: int = 1) -> None:
        pass

    def delivered(self, entity: str, count: int) -> None:
        pass

    def socket_opened(self, entity: str) -> None:
        pass

    def socket_closed(self, entity: str) -> None:
        pass

    def command(self, entity: str, action: str, outcome: str) -> None:
        pass

    def handshake_rejected(self, status: int) -> None:
        pass

    def bad_frame(self, reason: str) -> None:
        pass

    def cache(self, outcome: str) -> None:
        pass

    def upstream_call(self, outcome: str, seconds: float) -> None:
        pass

    def slow_consumer_closed(self) -> None:
        pass

    def ownership(self, outcome: str) -> None:
        pass

    def broadcast(self, outcome: str) -> None:
        pass

    def resume(self, recovered: bool) -> None:
        pass

    def resume_backfill(self, outcome: str) -> None:
        pass
