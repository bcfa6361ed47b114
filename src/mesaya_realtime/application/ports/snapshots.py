"""Port: the upstream REST API that serves snapshots."""

from __future__ import annotations

from typing import Any, Protocol

from mesaya_realtime.domain.snapshots import SnapshotRequest

__all__ = ["SnapshotFetcher"]


class SnapshotFetcher(Protocol):
    """GETs a snapshot and returns the unwrapped payload.

    Raises a :class:`~mesaya_realtime.domain.errors.SnapshotError` subclass on failure. The
    caller's token (``""`` for none) is forwarded as ``Authorization: Bearer``.
    """

    async def fetch(self, request: SnapshotRequest, token: str) -> Any: ...
