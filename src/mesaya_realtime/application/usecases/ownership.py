"""The tenant boundary: an OWNER sees a restaurant's private data only if they own it.

Entities whose catalogue rule has ``owner_must_own_section`` (reservations, payments,
subscriptions) carry a restaurant's private data, and their socket section is the
restaurant's id. An OWNER (without ADMIN) may open such a socket only on a restaurant the
platform says they own (``GET /api/v1/restaurants/me`` with their own token, behind the
:class:`~mesaya_realtime.application.ports.ownership.OwnershipSource` port). The rule, role by
role, is in docs/ARCHITECTURE.md ("Who may see what").

- **Cached per user** for ``ttl`` seconds, at most ``max_entries`` users (least recently
  used evicted), and **single-flight**: a reconnect storm of one owner's sockets makes one
  upstream call.
- **Fail closed**: without an answer (upstream down, timeout, 5xx) the socket is refused;
  a fresh cached answer is used while it lasts.
- **Re-checked**: open sockets are watched; when their owner's entry expires it is fetched
  again (with the freshest token of that owner's sockets) and the sockets on restaurants no
  longer owned are closed with 1008 ``forbidden``. A re-check that gets no answer keeps the
  sockets on the last answer and tries again ``retry`` seconds later: an upstream outage
  refuses new sockets but does not disconnect every owner.

>>> guard = OwnershipGuard(source, ttl=60.0, max_entries=10_000)   # doctest: +SKIP
>>> await guard.admit(spec, principal, "restaurant-1")              # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.ports.ownership import OwnershipSource
from mesaya_realtime.application.usecases.features import Feature
from mesaya_realtime.application.usecases.periodic import Periodic
from mesaya_realtime.application.usecases.sessions import WILDCARD_SECTION, Session
from mesaya_realtime.domain.catalogue import EntitySpec
from mesaya_realtime.domain.errors import AccessDenied, OwnershipUnavailable
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.messages import Message

__all__ = ["FORBIDDEN_CLOSE", "OwnershipGuard"]

log = logging.getLogger(__name__)

#: Close code for an open socket whose owner no longer owns its restaurant (policy violation).
FORBIDDEN_CLOSE = 1008
#: Re-checks in flight at once, so that many owners expiring together do not flood the API.
_RECHECK_CONCURRENCY = 16


@dataclass(slots=True)
class _Entry:
    restaurants: frozenset[str]
    expires_at: float


class OwnershipGuard(Feature):
    """Answers "does this principal own this section?" and keeps open sockets honest."""

    def __init__(
        self,
        source: OwnershipSource,
        *,
        ttl: float,
        max_entries: int,
        metrics: Metrics | None = None,
        retry: float | None = None,
        tick: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self.ttl = ttl
        self.max_entries = max_entries
        self._metrics = metrics or NullMetrics()
        self.retry = retry if retry is not None else min(ttl, 5.0)
        self.tick = tick if tick is not None else min(1.0, ttl / 4)
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[frozenset[str]]] = {}
        self._watched: dict[str, dict[int, Session]] = {}
        self._retry_at: dict[str, float] = {}
        self._periodic = Periodic("ownership re-check", lambda: self.tick, self.recheck)

    # -- the rule ------------------------------------------------------------------------

    @staticmethod
    def applies(spec: EntitySpec, principal: Principal, section: str) -> bool:
        """True when ``principal`` must own ``section`` to open a socket of ``spec``."""
        return (
            spec.delivery.owner_must_own_section
            and section != WILDCARD_SECTION
            and principal.audience == "owner"
        )

    async def admit(self, spec: EntitySpec, principal: Principal, section: str) -> None:
        """Return when the principal may open the socket; raise :class:`AccessDenied` or
        :class:`OwnershipUnavailable` otherwise."""
        if not self.applies(spec, principal, section):
            return
        try:
            owned = await self.owned(principal)
        except OwnershipUnavailable:
            self._metrics.ownership("unavailable")
            raise
        if section not in owned:
            self._metrics.ownership("denied")
            raise AccessDenied()
        self._metrics.ownership("allowed")

    async def owned(self, principal: Principal) -> frozenset[str]:
        """The restaurants ``principal`` owns: the cached answer while fresh, else fetched."""
        entry = self._entries.get(principal.user_id)
        if entry is not None and entry.expires_at > self._clock():
            self._entries.move_to_end(principal.user_id)
            return entry.restaurants
        return await self._load(principal.user_id, principal.token)

    def __len__(self) -> int:
        return len(self._entries)

    # -- open sockets --------------------------------------------------------------------

    def join(self, session: Session) -> list[Message]:
        """Watch a socket the rule applies to (a join hook; idempotent)."""
        if self.applies(session.entity, session.principal, session.section):
            self._watched.setdefault(session.principal.user_id, {})[session.id] = session
        return []

    async def leave(self, session: Session) -> None:
        self._unwatch(session)

    def _unwatch(self, session: Session) -> None:
        user = session.principal.user_id
        sessions = self._watched.get(user)
        if sessions is not None and sessions.pop(session.id, None) is not None and not sessions:
            del self._watched[user]
            self._retry_at.pop(user, None)

    @property
    def watched(self) -> int:
        return sum(len(sessions) for sessions in self._watched.values())

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def recheck(self) -> int:
        """Re-check every watched owner whose answer expired; returns the sockets closed."""
        now = self._clock()
        due = []
        for user in self._watched:
            entry = self._entries.get(user)
            if (entry is None or entry.expires_at <= now) and self._retry_at.get(user, 0.0) <= now:
                due.append(user)
        if not due:
            return 0
        limit = asyncio.Semaphore(_RECHECK_CONCURRENCY)

        async def one(user: str) -> int:
            async with limit:
                return await self._recheck_user(user)

        return sum(await asyncio.gather(*(one(user) for user in due)))

    async def _recheck_user(self, user: str) -> int:
        now = time.time()
        sessions: list[Session] = []
        for session in list(self._watched.get(user, {}).values()):
            if self.applies(session.entity, session.principal, session.section):
                sessions.append(session)
            else:
                self._unwatch(session)  # renewed as ADMIN: no longer bound by the rule
        valid = [s for s in sessions if s.principal.valid_at(now)]
        if not valid:
            return 0  # every token expired: the expiry timer closes them
        freshest = max(valid, key=lambda s: s.principal.expires_at or float("inf"))
        try:
            owned = await self._load(user, freshest.principal.token)
        except OwnershipUnavailable:
            self._metrics.ownership("recheck_unavailable")
            self._retry_at[user] = self._clock() + self.retry
            log.warning("ownership re-check unavailable; keeping the last answer", extra={"user": user})
            return 0
        self._retry_at.pop(user, None)
        closed = 0
        for session in sessions:
            if session.section not in owned:
                self._unwatch(session)
                session.connection.close(FORBIDDEN_CLOSE, "forbidden")
                self._metrics.ownership("revoked")
                closed += 1
        if closed:
            log.info("closed sockets of restaurants no longer owned", extra={"user": user, "closed": closed})
        return closed

    # -- the cache -----------------------------------------------------------------------

    async def _load(self, user: str, token: str) -> frozenset[str]:
        task = self._inflight.get(user)
        if task is None:
            task = asyncio.ensure_future(self._fetch(user, token))
            self._inflight[user] = task
            task.add_done_callback(functools.partial(self._settled, user))
        # Shielded: a waiter that goes away (its socket closed) does not cancel the call
        # the other waiters share.
        return await asyncio.shield(task)

    def _settled(self, user: str, task: asyncio.Task[frozenset[str]]) -> None:
        if self._inflight.get(user) is task:
            del self._inflight[user]
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not reported twice

    async def _fetch(self, user: str, token: str) -> frozenset[str]:
        try:
            restaurants = await self._source.owned_restaurants(token)
        except OwnershipUnavailable:
            raise
        except Exception:
            log.exception("ownership source failed", extra={"user": user})
            raise OwnershipUnavailable() from None
        entries = self._entries
        owned = frozenset(restaurants)
        entries[user] = _Entry(owned, self._clock() + self.ttl)
        entries.move_to_end(user)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        return owned
