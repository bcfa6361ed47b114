"""Port: reading a range of the event log again, for a resume whose gap this node's journal
no longer holds (docs/ARCHITECTURE.md "Resume")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

__all__ = ["LogRangeReader", "LogRangeUnavailable", "Range", "RawRecord"]

#: ``(topic, partition) -> (first offset, end offset)``: the records from first up to end.
Range = Mapping[tuple[str, int], tuple[int, int]]


class LogRangeUnavailable(Exception):
    """The range could not be read whole (the log no longer holds it, or the broker is away)."""


class RawRecord(Protocol):
    """A record of the log (the ingest's ``Record``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


class LogRangeReader(Protocol):
    async def read(self, ranges: Range) -> Sequence[RawRecord]:
        """Every record of ``ranges``, in offset order per partition; raises
        :class:`LogRangeUnavailable` when it cannot give all of them."""
        ...
