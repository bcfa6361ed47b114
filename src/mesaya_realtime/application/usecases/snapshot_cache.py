"""The snapshot cache: bounded LRU, TTL, per-user when the upstream answer is, single-flight.

>>> cache = SnapshotCache(max_entries=1000, ttl_seconds=30.0)

``await cache.get_or_fetch(key, fetch)`` returns the cached value or makes one upstream call
for all concurrent callers with the same key. The event pipeline calls :meth:`invalidate`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.domain.errors import SnapshotNotFound

__all__ = ["CacheKey", "SnapshotCache"]


@dataclass(frozen=True, slots=True)
class CacheKey:
    """What identifies one upstream answer.

    ``partition`` is the user id for answers that depend on the caller and ``""`` for answers
    shared by an audience. ``resource_id`` is set for detail entries.
    """

    entity: str
    kind: str
    audience: str
    partition: str
    path: str
    params: tuple[tuple[str, str], ...]
    resource_id: str = ""


@dataclass(slots=True)
class _Entry:
    value: Any
    expires_at: float


class SnapshotCache:
    def __init__(
        self,
        *,
        max_entries: int,
        ttl_seconds: float,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Future[Any]] = {}
        self._generation: dict[str, int] = {}
        self._metrics = metrics or NullMetrics()
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: CacheKey) -> Any | None:
        """The fresh cached value, or None; counts as a use for the LRU order."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.value

    async def get_or_fetch(self, key: CacheKey, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value for ``key``, else the result of one shared call to ``fetch``."""
        value = self.peek(key)
        if value is not None:
            self._metrics.cache("hit")
            return value
        pending = self._inflight.get(key)
        if pending is not None:
            self._metrics.cache("joined")
        else:
            self._metrics.cache("miss")
            pending = asyncio.ensure_future(self._fill(key, fetch))
            self._inflight[key] = pending
        # Shielded: a caller that goes away must not cancel the call others wait for.
        return await asyncio.shield(pending)

    async def refetch(self, key: CacheKey, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """Fetch anew (ignoring a cached value) and store the answer; single-flight too."""
        pending = self._inflight.get(key)
        if pending is None:
            self._entries.pop(key, None)
            pending = asyncio.ensure_future(self._fill(key, fetch))
            self._inflight[key] = pending
        return await asyncio.shield(pending)

    async def _fill(self, key: CacheKey, fetch: Callable[[], Awaitable[Any]]) -> Any:
        generation = self._generation.get(key.entity, 0)
        try:
            value = await fetch()
        except SnapshotNotFound:
            self._entries.pop(key, None)
            raise
        finally:
            self._inflight.pop(key, None)
        # An event that made this entity stale while the call was in flight wins: the
        # answer goes to the callers that asked but is not kept.
        if self._generation.get(key.entity, 0) == generation and value is not None:
            self._store(key, value)
        return value

    def _store(self, key: CacheKey, value: Any) -> None:
        self._entries[key] = _Entry(value, self._clock() + self.ttl_seconds)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self._metrics.cache("evicted")

    def invalidate(self, entity: str, resource_id: str | None = None) -> list[CacheKey]:
        """Drop what an event of ``entity`` makes stale and return the dropped keys.

        Every list entry of the entity goes (any list may contain the changed item), and
        the detail entries of ``resource_id`` (every detail entry when it is None).
        """
        self._generation[entity] = self._generation.get(entity, 0) + 1
        stale = [
            key
            for key in self._entries
            if key.entity == entity
            and (key.kind == "list" or resource_id is None or key.resource_id == resource_id)
        ]
        for key in stale:
            del self._entries[key]
        return stale

    def clear(self) -> None:
        self._entries.clear()
