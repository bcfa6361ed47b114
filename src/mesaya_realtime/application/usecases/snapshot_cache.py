"""The snapshot cache: bounded LRU, TTL, per-user when the upstream answer is, single-flight.

>>> cache = SnapshotCache(max_entries=1000, ttl_seconds=30.0)

``await cache.get_or_fetch(key, fetch)`` returns the cached value or makes one upstream call
for all concurrent callers with the same key. The event pipeline calls :meth:`invalidate`.

Fixes of the reference cache (§7.5, §13.5): entries expire after ``ttl_seconds``; at most
``max_entries`` are kept (least recently used go first); the key carries the user for
answers that depend on the caller (``CacheKey.partition``), so one user's answer is never
served to another; errors are never stored and a 404 drops the entry.

Invalidation is indexed: entity -> section -> list keys and entity -> resource id -> detail
keys, so an event costs the entries it drops, not a scan of the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.domain.errors import SnapshotNotFound

__all__ = ["CacheKey", "SnapshotCache"]

Fetch = Callable[[], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class CacheKey:
    """What identifies one upstream answer.

    ``partition`` is the user id for answers that depend on the caller and ``""`` for answers
    shared by an audience. ``resource_id`` is set for detail entries (``kind == "item"``).
    ``section`` is the socket section a list answer depends on (``""`` when the same request
    serves every section); it only feeds the invalidation index, the request itself is in
    ``path`` and ``params``.
    """

    entity: str
    kind: str
    audience: str
    partition: str
    path: str
    params: tuple[tuple[str, str], ...]
    resource_id: str = ""
    section: str = ""

    @property
    def is_list(self) -> bool:
        return self.kind == "list"


@dataclass(slots=True)
class _Entry:
    value: Any
    expires_at: float


@dataclass(slots=True)
class _Flight:
    """One upstream call in progress; ``stale`` once an invalidation overtook it."""

    task: asyncio.Task[Any] | None = None
    stale: bool = False


@dataclass(slots=True)
class _EntityIndex:
    #: section ("" = section-independent) -> list keys
    lists: dict[str, set[CacheKey]] = field(default_factory=dict)
    #: resource id -> detail keys
    items: dict[str, set[CacheKey]] = field(default_factory=dict)
    #: upstream calls in progress for this entity
    flights: dict[CacheKey, _Flight] = field(default_factory=dict)

    def bucket(self, key: CacheKey) -> tuple[dict[str, set[CacheKey]], str]:
        if key.is_list:
            return self.lists, key.section
        return self.items, key.resource_id

    def add(self, key: CacheKey) -> None:
        groups, name = self.bucket(key)
        keys = groups.get(name)
        if keys is None:
            groups[name] = {key}
        else:
            keys.add(key)

    def discard(self, key: CacheKey) -> None:
        groups, name = self.bucket(key)
        keys = groups.get(name)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del groups[name]

    @property
    def empty(self) -> bool:
        return not (self.lists or self.items or self.flights)


def _consume_result(task: asyncio.Task[Any]) -> None:
    # Every caller may have gone away (cancelled); fetch the outcome so asyncio does not
    # report "exception was never retrieved".
    if not task.cancelled():
        task.exception()


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
        self._index: dict[str, _EntityIndex] = {}
        self._metrics = metrics or NullMetrics()
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[CacheKey]:
        """The stored keys, least recently used first (expired ones included until touched)."""
        return list(self._entries)

    def inflight(self) -> int:
        """How many upstream calls the cache is waiting for."""
        return sum(len(index.flights) for index in self._index.values())

    def peek(self, key: CacheKey) -> Any | None:
        """The fresh cached value, or None; counts as a use for the LRU order."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def lookup(self, key: CacheKey) -> Any | None:
        """Like :meth:`peek`, counted as a hit when found (for answers given without waiting)."""
        value = self.peek(key)
        if value is not None:
            self._metrics.cache("hit")
        return value

    async def get_or_fetch(self, key: CacheKey, fetch: Fetch) -> Any:
        """The cached value for ``key``, else the result of one shared call to ``fetch``.

        Concurrent callers with an equal key share one call. A caller that is cancelled
        leaves the call running for the others; errors reach every caller and are not stored.
        """
        value = self.peek(key)
        if value is not None:
            self._metrics.cache("hit")
            return value
        index = self._index.get(key.entity)
        flight = index.flights.get(key) if index is not None else None
        if flight is not None and flight.task is not None:
            self._metrics.cache("joined")
            task = flight.task
        else:
            self._metrics.cache("miss")
            task = self._start(key, fetch)
        # Shielded: a caller that goes away must not cancel the call others wait for.
        return await asyncio.shield(task)

    async def refetch(self, key: CacheKey, fetch: Fetch) -> Any:
        """Fetch anew (ignoring a cached value) and store the answer; single-flight too."""
        index = self._index.get(key.entity)
        flight = index.flights.get(key) if index is not None else None
        if flight is not None and flight.task is not None:
            task = flight.task
        else:
            self._drop(key)
            task = self._start(key, fetch)
        return await asyncio.shield(task)

    def _start(self, key: CacheKey, fetch: Fetch) -> asyncio.Task[Any]:
        flight = _Flight()
        index = self._index.get(key.entity)
        if index is None:
            index = self._index[key.entity] = _EntityIndex()
        index.flights[key] = flight
        task = asyncio.ensure_future(self._fill(key, fetch, flight))
        task.add_done_callback(_consume_result)
        flight.task = task
        return task

    async def _fill(self, key: CacheKey, fetch: Fetch, flight: _Flight) -> Any:
        try:
            value = await fetch()
        except SnapshotNotFound:
            if not flight.stale:
                self._drop(key)
            raise
        finally:
            self._land(key, flight)
        # An invalidation while the call was in flight wins: the answer goes to the callers
        # that asked before it, but is not kept.
        if not flight.stale and value is not None:
            self._store(key, value)
        return value

    def _land(self, key: CacheKey, flight: _Flight) -> None:
        flight.task = None  # no task -> frame -> flight -> task cycle once the call is over
        index = self._index.get(key.entity)
        if index is not None and index.flights.get(key) is flight:
            del index.flights[key]
            if index.empty:
                del self._index[key.entity]

    def _store(self, key: CacheKey, value: Any) -> None:
        if self.ttl_seconds <= 0 or self.max_entries <= 0:
            return
        entry = self._entries.get(key)
        expires_at = self._clock() + self.ttl_seconds
        if entry is not None:
            entry.value, entry.expires_at = value, expires_at
            self._entries.move_to_end(key)
            return
        self._entries[key] = _Entry(value, expires_at)
        index = self._index.get(key.entity)
        if index is None:
            index = self._index[key.entity] = _EntityIndex()
        index.add(key)
        while len(self._entries) > self.max_entries:
            oldest, _ = self._entries.popitem(last=False)
            self._unindex(oldest)
            self._metrics.cache("evicted")

    def _drop(self, key: CacheKey) -> bool:
        if self._entries.pop(key, None) is None:
            return False
        self._unindex(key)
        return True

    def _unindex(self, key: CacheKey) -> None:
        index = self._index.get(key.entity)
        if index is not None:
            index.discard(key)
            if index.empty:
                del self._index[key.entity]

    def invalidate(
        self,
        entity: str,
        resource_id: str | None = None,
        *,
        sections: Collection[str] | None = None,
    ) -> list[CacheKey]:
        """Drop what an event of ``entity`` makes stale and return the dropped keys.

        - List entries: all of the entity when ``sections`` is None; else the lists that do
          not depend on the section (any of them may hold the changed item) plus the lists
          of the given sections. Pass None when the event's sections are unknown.
        - Detail entries: those of ``resource_id``; every detail entry when it is None.

        Upstream calls in progress for a matching key are detached: their answer still
        reaches the callers that were waiting, but is not stored, and the next caller makes
        a fresh call.
        """
        index = self._index.get(entity)
        if index is None:
            return []
        stale: list[CacheKey] = []
        if sections is None:
            for keys in index.lists.values():
                stale.extend(keys)
        else:
            for name in {"", *sections}:
                stale.extend(index.lists.get(name, ()))
        if resource_id is None:
            for keys in index.items.values():
                stale.extend(keys)
        else:
            stale.extend(index.items.get(resource_id, ()))
        for key in stale:
            self._entries.pop(key, None)
            index.discard(key)
        if index.flights:
            wanted = None if sections is None else {"", *sections}
            for key in [k for k in index.flights if _matches(k, resource_id, wanted)]:
                index.flights.pop(key).stale = True
        if index.empty:
            del self._index[entity]
        return stale

    def clear(self) -> None:
        """Drop every entry; calls in progress are detached and their answers not kept."""
        self._entries.clear()
        for index in self._index.values():
            for flight in index.flights.values():
                flight.stale = True
        self._index.clear()


def _matches(key: CacheKey, resource_id: str | None, sections: set[str] | None) -> bool:
    if key.is_list:
        return sections is None or key.section in sections
    return resource_id is None or key.resource_id == resource_id
