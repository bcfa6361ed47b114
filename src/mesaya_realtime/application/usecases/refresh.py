"""Snapshot refresh after events: one upstream call per distinct query, bursts coalesced.

When an event makes an entity's snapshots stale, every socket entitled to the event that holds
a list (its last list query) or a detail of the changed resource gets a refreshed
``<entity>.list`` / ``<entity>.detail`` with ``metadata.origin = "refresh"``.

- Sockets are grouped by cache key, so N sockets looking at the same query cause one call.
- Events are coalesced: a refresh runs once the stream of events for an entity has been quiet
  for ``quiet`` seconds (or ``max_delay`` after the first, so a steady stream still refreshes).
- The call is made with the token of a socket of the group that is valid now; a group whose
  tokens have all expired is skipped (those sockets are closed at expiry anyway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.sessions import (
    Session,
    detail_message,
    list_message,
)
from mesaya_realtime.application.usecases.snapshot_cache import CacheKey
from mesaya_realtime.application.usecases.snapshots import SnapshotService
from mesaya_realtime.domain.catalogue import EntitySpec
from mesaya_realtime.domain.errors import SnapshotError, SnapshotNotFound
from mesaya_realtime.domain.events import DomainEvent
from mesaya_realtime.domain.messages import encode

__all__ = ["SnapshotRefresher"]

log = logging.getLogger(__name__)

#: A token must stay valid at least this long to be used for a refresh call.
TOKEN_MARGIN_SECONDS = 5.0


@dataclass(slots=True)
class _Pending:
    """What one entity's coalescing window has collected so far (cheap to add to)."""

    first_at: float
    scope: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    #: Resource ids whose detail snapshots changed; None means "any" (id unknown).
    resource_ids: set[str] | None = field(default_factory=set)
    deadline: float = 0.0
    handle: asyncio.TimerHandle | None = None


class SnapshotRefresher:
    """Implements the event handlers' ``Refresher`` port."""

    def __init__(
        self,
        hub: Hub,
        snapshots: SnapshotService,
        *,
        quiet: float = 0.15,
        max_delay: float = 1.0,
        metrics: Metrics | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.snapshots = snapshots
        self.quiet = quiet
        self.max_delay = max_delay
        self.metrics = metrics or NullMetrics()
        self._wall_clock = wall_clock
        # The event loop's clock (loop.time() is time.monotonic() in asyncio).
        self._monotonic = monotonic
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, event: DomainEvent) -> None:
        """Note the event; the sockets it concerns are found once per coalescing window.

        Per event this is a few set updates: the timer is armed once per window and, when it
        fires early (more events came), re-armed at the moved deadline.
        """
        spec = event.entity
        if not self.hub.count(spec.name):
            return  # no socket of the entity on this node: nothing to refresh
        now = self._monotonic()
        pending = self._pending.get(spec.name)
        if pending is None:
            pending = self._pending[spec.name] = _Pending(first_at=now)
            pending.deadline = now + self.quiet
            loop = asyncio.get_running_loop()
            pending.handle = loop.call_at(pending.deadline, self._flush, spec)
        else:
            pending.deadline = min(now + self.quiet, pending.first_at + self.max_delay)
        pending.scope.update(event.scope)
        pending.users.update(event.users)
        if pending.resource_ids is not None:
            if event.resource_id:
                pending.resource_ids.add(event.resource_id)
            else:
                pending.resource_ids = None

    def _flush(self, spec: EntitySpec) -> None:
        pending = self._pending.get(spec.name)
        if pending is None:
            return
        if pending.deadline > self._monotonic():
            # Events kept coming: wait for the quiet period (bounded by max_delay).
            loop = asyncio.get_running_loop()
            pending.handle = loop.call_at(pending.deadline, self._flush, spec)
            return
        del self._pending[spec.name]
        task = asyncio.ensure_future(self._refresh(spec, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for pending in self._pending.values():
            if pending.handle is not None:
                pending.handle.cancel()
        self._pending.clear()
        for task in list(self._tasks):
            task.cancel()

    async def _refresh(self, spec: EntitySpec, pending: _Pending) -> None:
        lists: dict[CacheKey, list[Session]] = {}
        details: dict[tuple[CacheKey, str], list[Session]] = {}
        sessions = self.hub.recipients(spec, pending.scope, pending.users)
        for session in sessions:
            if session.list_query is None and not session.detail_ids:
                continue
            if session.list_query is not None:
                key, _ = self.snapshots.list_key(spec, session.principal, session.section, session.list_query)
                lists.setdefault(key, []).append(session)
            ids = session.detail_ids
            if pending.resource_ids is not None:
                ids = ids & pending.resource_ids
            for resource_id in ids:
                key, _ = self.snapshots.detail_key(spec, session.principal, resource_id)
                details.setdefault((key, resource_id), []).append(session)
        jobs = [self._refresh_list(spec, key, group) for key, group in lists.items()]
        jobs += [
            self._refresh_detail(spec, key, resource_id, group)
            for (key, resource_id), group in details.items()
        ]
        if jobs:
            await asyncio.gather(*jobs)

    def _token_for(self, group: list[Session]) -> str | None:
        now = self._wall_clock()
        for session in group:
            if session.principal.valid_at(now, TOKEN_MARGIN_SECONDS):
                return session.principal.token
        return None

    async def _refresh_list(self, spec: EntitySpec, key: CacheKey, group: list[Session]) -> None:
        token = self._token_for(group)
        if token is None:
            self.metrics.command(spec.name, "refresh", "no valid token")
            return
        query = group[0].list_query
        assert query is not None
        _, request = self.snapshots.list_key(spec, group[0].principal, group[0].section, query)
        try:
            data, watermark = await self.snapshots.fetch(spec, key, request, token)
        except SnapshotError as error:
            self.metrics.command(spec.name, "refresh", "error")
            log.warning("list refresh failed", extra={"entity": spec.name, "reason": error.reason})
            return
        self.metrics.command(spec.name, "refresh", "ok")
        frames: dict[tuple[str, bool], bytes] = {}
        list_topic = f"{spec.name}.list"
        for session in group:
            # The socket may have asked for another page while the call was in flight.
            if (
                session.list_query != query
                or list_topic not in session.topics
                or not self.hub.is_connected(session)
            ):
                continue
            payload = frames.get((session.section, session.v2))
            if payload is None:
                message = list_message(spec.name, session.section, query, data, "refresh")
                if session.v2:
                    message.cursor = watermark
                payload = frames[(session.section, session.v2)] = encode(message)
            session.connection.send(payload)

    async def _refresh_detail(
        self, spec: EntitySpec, key: CacheKey, resource_id: str, group: list[Session]
    ) -> None:
        token = self._token_for(group)
        if token is None:
            self.metrics.command(spec.name, "refresh", "no valid token")
            return
        _, request = self.snapshots.detail_key(spec, group[0].principal, resource_id)
        try:
            data, watermark = await self.snapshots.fetch(spec, key, request, token)
        except SnapshotNotFound:
            # Deleted: the delete event itself told the sockets; stop refreshing it.
            for session in group:
                session.forget_detail(resource_id)
            return
        except SnapshotError as error:
            self.metrics.command(spec.name, "refresh", "error")
            log.warning("detail refresh failed", extra={"entity": spec.name, "reason": error.reason})
            return
        self.metrics.command(spec.name, "refresh", "ok")
        frames: dict[tuple[str, bool], bytes] = {}
        detail_topic = f"{spec.name}.detail"
        for session in group:
            if (
                resource_id not in session.detail_ids
                or detail_topic not in session.topics
                or not self.hub.is_connected(session)
            ):
                continue
            payload = frames.get((session.section, session.v2))
            if payload is None:
                message = detail_message(spec, session.section, resource_id, data, "refresh")
                if session.v2:
                    message.cursor = watermark
                payload = frames[(session.section, session.v2)] = encode(message)
            session.connection.send(payload)
