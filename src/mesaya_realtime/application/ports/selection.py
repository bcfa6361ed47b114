"""Port: the ordered, shared log of table-selection records (a Kafka topic, or in-process)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol

from mesaya_realtime.domain.errors import GatewayError
from mesaya_realtime.domain.selection import LogEntry, SelectionRecord, StreamReplay

__all__ = ["SelectionLog", "SelectionLogUnavailable", "SelectionSink"]


class SelectionLogUnavailable(GatewayError):
    """The log did not take a record (broker down, queue full, timed out)."""

    reason = "table selection unavailable"


class SelectionSink(Protocol):
    """Where the log hands what it reads; both are called on the event loop, in log order."""

    def bootstrap(self, replays: Sequence[StreamReplay]) -> None:
        """Once, before any :meth:`entries`: how to rebuild the state of every stream."""

    def entries(self, entries: Sequence[LogEntry]) -> None:
        """Records appended after the bootstrap point, in order within each stream."""


class SelectionLog(Protocol):
    """Every node appends to one log and reads all of it.

    ``append`` queues the record at once, so records appended by one node for one table
    (one key) reach the log in the order of the calls, and returns an awaitable that completes
    when the log has stored it (or raises :class:`SelectionLogUnavailable`). ``streams`` are
    the log's independently ordered parts (Kafka partitions) whose state a checkpoint record
    can describe; a log with nothing to replay at start-up has none.
    """

    def start(self, sink: SelectionSink) -> None: ...

    async def stop(self) -> None: ...

    def append(self, record: SelectionRecord) -> Awaitable[None]: ...

    def streams(self) -> tuple[str, ...]: ...

    def status(self) -> dict[str, object]: ...
