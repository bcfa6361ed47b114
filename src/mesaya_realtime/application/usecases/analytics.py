"""Analytics sockets: one REST analytics endpoint per socket, refreshed by the events that make
it stale (reference §2.4, §6.4, §8.6; docs/WEBSOCKET_ENDPOINTS.md "Analytics").

The checks before the upgrade, in order: the key (404 ``analytics endpoint not available``),
the token (400 ``missing token`` where one is required, 401 ``invalid token``), the identifier
(400 ``missing identifier``), who may read the key (403 ``forbidden``: ``admin-*`` ADMIN,
``restaurant-*`` ADMIN or the OWNER of the identifier's restaurant, verified), then the REST
call (403 / 404 ``analytics not found`` / 504 ``analytics timeout`` / 500
``unable to fetch analytics``). The socket then gets the snapshot, then ``system.connected``.

Commands ``refresh`` / ``fetch`` / ``query`` merge their payload into the socket's request and
answer a new snapshot. An event of an entity in :data:`~mesaya_realtime.domain.analytics.
REFRESHED_BY` refreshes the keys it makes stale: coalesced per burst, one REST call per distinct
(key, identifier, query, user), with the freshest unexpired token of that user's sockets; each
socket gets its own ``<key>.snapshot`` (``origin: "refresh"``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.ports.snapshots import SnapshotFetcher
from mesaya_realtime.application.usecases.features import ActionHandler, Feature, SocketKindRules
from mesaya_realtime.application.usecases.ownership import OwnershipGuard
from mesaya_realtime.application.usecases.sessions import Session
from mesaya_realtime.domain.analytics import ANALYTICS, REFRESHED_BY, AnalyticsKey, AnalyticsQuery, Reader
from mesaya_realtime.domain.catalogue import EntitySpec
from mesaya_realtime.domain.errors import (
    CommandError,
    InvalidPayload,
    OwnershipUnavailable,
    Refused,
    SnapshotError,
    SnapshotForbidden,
    SnapshotNotFound,
    SnapshotRequestFailed,
)
from mesaya_realtime.domain.events import DomainEvent
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.messages import Message
from mesaya_realtime.domain.snapshots import SnapshotRequest

__all__ = ["AnalyticsAdmission", "AnalyticsRejected", "AnalyticsService", "AnalyticsState"]

log = logging.getLogger(__name__)

#: Close code of a socket whose owner no longer owns the restaurant (as entity sockets).
FORBIDDEN_CLOSE = 1008
#: The actions that fetch the key again (reference §6.4).
FETCH_ACTIONS = ("refresh", "fetch", "query")
_ids = itertools.count(1)


class AnalyticsRejected(Refused):
    """A refused analytics upgrade (or a refused check before a refresh)."""


@dataclass(slots=True)
class AnalyticsState:
    """An analytics socket's key and current request (``Session.state``)."""

    key: AnalyticsKey
    query: AnalyticsQuery
    #: The token's session id, or ``<key>-<n>`` (reference §2.4), in refreshes' metadata.
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class AnalyticsAdmission:
    """What an accepted upgrade opens with."""

    spec: EntitySpec
    principal: Principal
    state: AnalyticsState
    greeting: tuple[Message, Message]
    starting: tuple[list[str], frozenset[str]]


def _reason(error: SnapshotError) -> tuple[int, str]:
    if isinstance(error, SnapshotForbidden):
        return 403, "forbidden"
    if isinstance(error, SnapshotNotFound):
        return 404, "analytics not found"
    if isinstance(error, SnapshotRequestFailed) and error.timed_out:
        return 504, "analytics timeout"
    return 500, "unable to fetch analytics"


#: The v2 error code of a refused analytics check, by its HTTP status.
_CODES = {
    400: "invalid_payload",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    503: "upstream_unavailable",
}

ANONYMOUS = Principal("", None, "", "")


class AnalyticsService(Feature):
    """The analytics sockets of this node: admission, commands, refresh after events."""

    def __init__(
        self,
        fetcher: SnapshotFetcher,
        guard: OwnershipGuard,
        *,
        quiet: float = 0.15,
        max_delay: float = 1.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fetcher = fetcher
        self.guard = guard
        self.quiet = quiet
        self.max_delay = max_delay
        self.metrics = metrics or NullMetrics()
        self._clock = clock
        #: One socket kind per key, each with its own command table and topics.
        self.specs: dict[str, EntitySpec] = {
            name: EntitySpec(
                name=name,
                aliases=(),
                plural=name,
                singular=name,
                roles=None,
                detail_id_key="identifier",
                rest=None,
            )
            for name in ANALYTICS
        }
        self._by_key: dict[str, dict[int, Session]] = {}
        self._pending: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._first_pending = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the socket kinds --------------------------------------------------------------------
    def socket_kinds(self) -> Mapping[str, SocketKindRules]:
        return {
            name: SocketKindRules(allows_topic=_own_topics(name), ignore_unknown=False) for name in self.specs
        }

    def actions(self) -> Mapping[str, Mapping[str, ActionHandler]]:
        handlers: dict[str, ActionHandler] = dict.fromkeys(FETCH_ACTIONS, self._fetch_command)
        return dict.fromkeys(self.specs, handlers)

    def event_handler(self) -> Callable[[DomainEvent], None]:
        return self.on_event

    # -- admission ---------------------------------------------------------------------------
    async def check(
        self, key: AnalyticsKey, principal: Principal | None, params: Mapping[str, str]
    ) -> AnalyticsQuery:
        """The checks after the key and the token: the identifier, who may read the key."""
        query = AnalyticsQuery.seed(key, params)
        if key.identifier_param and not query.identifier:
            raise AnalyticsRejected(400, "missing identifier")
        await self._authorize(key, principal or ANONYMOUS, query)
        return query

    async def admit(
        self, key: AnalyticsKey, principal: Principal | None, query: AnalyticsQuery
    ) -> AnalyticsAdmission:
        """The first fetch, and what the socket opens with (after :meth:`check`)."""
        who = principal or ANONYMOUS
        try:
            data = await self._get(key, query, who.token)
        except SnapshotError as error:
            status, message = _reason(error)
            raise AnalyticsRejected(status, message) from None
        spec = self.specs[key.name]
        topics = [f"{key.name}.snapshot", f"{key.name}.error"]
        session_id = who.session_id or f"{key.name}-{next(_ids)}"
        state = AnalyticsState(key, query, session_id)
        connected_metadata = {"scope": key.scope, "analyticsKey": key.name, "sessionId": session_id}
        if who.user_id:
            connected_metadata["userId"] = who.user_id
        connected = Message(
            topic="system.connected",
            entity="system",
            action="connected",
            data={
                "mode": "analytics",
                "entity": key.entity,
                "topics": topics,
                "identifier": query.identifier,
                "query": dict(query.query),
                "roles": list(who.roles) if who.roles is not None else None,
            },
            metadata=connected_metadata,
        )
        greeting = (snapshot_message(state, data, "connect"), connected)
        return AnalyticsAdmission(spec, who, state, greeting, (topics, frozenset(topics)))

    async def _authorize(self, key: AnalyticsKey, principal: Principal, query: AnalyticsQuery) -> None:
        reader = key.reader
        if reader is Reader.ANYONE or principal.is_admin:
            return
        if reader is Reader.ADMIN or "OWNER" not in principal.upper_roles:
            raise AnalyticsRejected(403, "forbidden")
        restaurant = query.identifier or dict(query.query).get("restaurantId", "")
        if not restaurant:
            raise AnalyticsRejected(403, "forbidden")
        try:
            owned = await self.guard.owned(principal)
        except OwnershipUnavailable as error:
            self.metrics.ownership("unavailable")
            raise AnalyticsRejected(503, error.reason) from None
        if restaurant not in owned:
            self.metrics.ownership("denied")
            raise AnalyticsRejected(403, "forbidden")
        self.metrics.ownership("allowed")

    async def _get(self, key: AnalyticsKey, query: AnalyticsQuery, token: str) -> Any:
        request = SnapshotRequest(path=key.path, params=query.params(key), shared=False)
        return await self.fetcher.fetch(request, token)

    # -- open sockets ------------------------------------------------------------------------
    def join(self, session: Session) -> list[Message]:
        if isinstance(session.state, AnalyticsState):
            self._by_key.setdefault(session.entity.name, {})[session.id] = session
        return []

    async def leave(self, session: Session) -> None:
        bucket = self._by_key.get(session.entity.name)
        if bucket is not None and bucket.pop(session.id, None) is not None and not bucket:
            del self._by_key[session.entity.name]

    def sockets(self, key: str) -> int:
        return len(self._by_key.get(key, ()))

    # -- commands ----------------------------------------------------------------------------
    async def _fetch_command(self, session: Session, payload: Any) -> Message | None:
        state = session.state
        assert isinstance(state, AnalyticsState)
        try:
            query = state.query.merged(state.key, payload)
        except ValueError:
            raise InvalidPayload(field="payload") from None
        if state.key.identifier_param and not query.identifier:
            raise CommandError("missing identifier", code="invalid_payload", field="payload.identifier")
        await self._authorize_quietly(state.key, session.principal, query)
        try:
            data = await self._get(state.key, query, session.principal.token)
        except SnapshotError as error:
            raise CommandError(_reason(error)[1], code=error.code) from None
        state.query = query
        return snapshot_message(state, data, "request")

    async def _authorize_quietly(
        self, key: AnalyticsKey, principal: Principal, query: AnalyticsQuery
    ) -> None:
        """The same reader rule for a changed identifier (an owner may not switch restaurants)."""
        try:
            await self._authorize(key, principal, query)
        except AnalyticsRejected as rejected:
            raise CommandError(rejected.message, code=_CODES.get(rejected.status, "refused")) from None

    # -- refresh after events ----------------------------------------------------------------
    def on_event(self, event: DomainEvent) -> None:
        keys = REFRESHED_BY.get(event.entity.name)
        if not keys:
            return
        stale = [key for key in keys if key in self._by_key]
        if not stale:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._pending:
            self._first_pending = now
        self._pending.update(stale)
        if self._timer is not None:
            self._timer.cancel()
        deadline = min(now + self.quiet, self._first_pending + self.max_delay)
        self._timer = loop.call_at(deadline, self._flush)

    def _flush(self) -> None:
        self._timer = None
        keys, self._pending = self._pending, set()
        now = self._clock()
        groups: dict[tuple[str, AnalyticsQuery, str], list[Session]] = {}
        for key in keys:
            for session in self._by_key.get(key, {}).values():
                state = session.state
                if not isinstance(state, AnalyticsState):
                    continue
                expires = session.principal.expires_at
                if expires is not None and expires <= now:
                    continue  # never with an expired token; the socket is about to close
                groups.setdefault((key, state.query, session.principal.user_id), []).append(session)
        for (key, query, _user), sessions in groups.items():
            task = asyncio.ensure_future(self._refresh_group(ANALYTICS[key], query, sessions))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _refresh_group(self, key: AnalyticsKey, query: AnalyticsQuery, sessions: list[Session]) -> None:
        principal = max(sessions, key=lambda s: s.principal.expires_at or float("inf")).principal
        token = principal.token
        if key.reader is Reader.ADMIN_OR_OWNER and not principal.is_admin:
            # The tenant boundary again: an owner who lost the restaurant gets no more of it.
            try:
                await self._authorize(key, principal, query)
            except AnalyticsRejected as rejected:
                if rejected.status == 403:
                    self.metrics.ownership("revoked")
                    for session in sessions:
                        session.connection.close(FORBIDDEN_CLOSE, "forbidden")
                return
        try:
            data = await self._get(key, query, token)
        except SnapshotError as error:
            reason = _reason(error)[1]
            for session in sessions:
                session.send(refresh_error(key, query, session, reason))
            return
        except Exception:
            log.exception("analytics refresh failed", extra={"key": key.name})
            return
        for session in sessions:
            state = session.state
            if isinstance(state, AnalyticsState) and state.query == query:
                session.send(snapshot_message(state, data, "refresh", refresh=True))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _own_topics(name: str) -> Callable[[Session, str], bool]:
    allowed = frozenset((f"{name}.snapshot", f"{name}.error"))
    return lambda _session, topic: topic in allowed


def snapshot_message(state: AnalyticsState, data: Any, origin: str, *, refresh: bool = False) -> Message:
    key, query = state.key, state.query
    metadata = query.metadata(key)
    metadata["origin"] = origin
    if refresh:  # reference §8.6: a refresh names the socket it is for
        metadata["analyticsKey"] = key.name
        metadata["sessionId"] = state.session_id
    return Message(
        topic=f"{key.name}.snapshot",
        entity=key.name,
        action="snapshot",
        resource_id=query.identifier,
        data=data,
        metadata=metadata,
    )


def refresh_error(key: AnalyticsKey, query: AnalyticsQuery, session: Session, reason: str) -> Message:
    metadata = {
        "scope": key.scope,
        "analyticsKey": key.name,
        "sessionId": state.session_id if isinstance(state := session.state, AnalyticsState) else "",
        "action": "refresh",
        "reason": reason,
    }
    if query.identifier:
        metadata["identifier"] = query.identifier
    return Message(
        topic=f"{key.name}.error",
        entity=key.name,
        action="error",
        resource_id=query.identifier,
        data={"error": reason},
        metadata=metadata,
    )
