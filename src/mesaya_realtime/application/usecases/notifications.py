"""The notifications socket: the platform's bell, across sections, filtered by who may see what.

``GET /ws/notifications`` (docs/WEBSOCKET_ENDPOINTS.md "Notifications") receives the domain
events of every section from the node's one event consumer, and the payment pushes of
``POST /broadcast`` (usecases/broadcast.py), under the topics its role's list holds:

- ADMIN: every event of the list;
- OWNER: public entities' events, the private events (reservations, payments, subscriptions)
  of the restaurants they own (``GET /api/v1/restaurants/me``, through the OwnershipGuard's
  cache, re-read every ``OWNERSHIP_CACHE_TTL``) and their own;
- USER (or no role): public entities' events of their list and only their own private ones.

A private event that names no restaurant reaches ADMIN and the user it names, nobody else (fail
closed). The topic lists are reference §10.4's, with the fixes docs/COMPATIBILITY.md lists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.ports.snapshots import SnapshotFetcher
from mesaya_realtime.application.usecases.features import Feature, SocketKindRules
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.ownership import OwnershipGuard
from mesaya_realtime.application.usecases.periodic import Periodic
from mesaya_realtime.application.usecases.sessions import Session
from mesaya_realtime.domain.catalogue import CATALOGUE, NOTIFICATIONS, EntitySpec, Visibility
from mesaya_realtime.domain.errors import OwnershipUnavailable
from mesaya_realtime.domain.events import DomainEvent
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.messages import Message
from mesaya_realtime.domain.snapshots import plan_detail

__all__ = ["PUSH_ENTITY", "NotificationFeed", "PushTarget", "notification_topics"]

log = logging.getLogger(__name__)

#: Reference §10.4's list, with the Kafka spelling ``status_changed`` beside its
#: ``status-changed`` (which no event ever had).
_LIST: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reservations", ("created", "updated", "deleted", "status-changed", "status_changed")),
    ("restaurants", ("created", "updated", "deleted")),
    ("tables", ("created", "updated", "deleted")),
    ("sections", ("created", "updated", "deleted")),
    ("menus", ("created", "updated", "deleted")),
    ("dishes", ("created", "updated", "deleted")),
    ("reviews", ("created", "updated", "deleted")),
    ("payments", ("created", "updated", "status-changed", "status_changed")),
    ("payment", ("processing", "approved", "succeeded", "pending", "failed", "rejected", "refunded")),
    ("subscriptions", ("created", "updated", "status-changed", "status_changed")),
)
#: What a USER's list holds: the reference's three, and what is filtered to the user anyway.
_USER_PREFIXES = ("reservations", "reviews", "restaurants", "payments", "payment", "subscriptions")

#: The pushes of ``POST /broadcast`` (entity ``payment``), and how many reservations the feed
#: remembers the user and restaurant of (from the reservation events it has delivered).
PUSH_ENTITY = "payment"
_KNOWN_RESERVATIONS = 50_000
#: Sections whose restaurant is remembered, for how long, and how soon an unknown one is asked
#: again; events of one section waiting for the answer, at most.
_KNOWN_SECTIONS = 10_000
_SECTION_TTL = 3600.0
_SECTION_RETRY = 30.0
_MAX_WAITING = 1000


def _section_scoped(spec: EntitySpec) -> bool:
    """True when the entity's events name a section, not a restaurant (tables)."""
    paths = spec.delivery.scope_paths
    return bool(paths) and all("section" in path.lower() for path in paths)


_ALL_TOPICS = tuple(f"{prefix}.{action}" for prefix, actions in _LIST for action in actions)
_ANY_TOPIC = frozenset(_ALL_TOPICS)


def notification_topics(principal: Principal) -> list[str]:
    """The topics a notifications socket of ``principal`` starts with (and may subscribe to)."""
    if principal.is_admin:
        return list(_ALL_TOPICS)
    if "OWNER" in principal.upper_roles:
        return [t for t in _ALL_TOPICS if not t.startswith(("users.", "owner-upgrades."))]
    return [t for t in _ALL_TOPICS if t.split(".", 1)[0] in _USER_PREFIXES]


class PushTarget:
    """Who a push names: a user, a restaurant, a reservation (any may be empty)."""

    __slots__ = ("reservation_id", "restaurant_id", "user_id")

    def __init__(self, user_id: str = "", restaurant_id: str = "", reservation_id: str = "") -> None:
        self.user_id = user_id
        self.restaurant_id = restaurant_id
        self.reservation_id = reservation_id


class NotificationFeed(Feature):
    """The notifications sockets of this node and what reaches them."""

    def __init__(
        self,
        hub: Hub,
        guard: OwnershipGuard,
        metrics: Metrics | None = None,
        refresh: float = 60.0,
        sections: SnapshotFetcher | None = None,
    ) -> None:
        self.hub = hub
        self.guard = guard
        self.metrics = metrics or NullMetrics()
        self.refresh = refresh
        #: A section's restaurant (the REST API), for owners' bells: section -> (restaurant,
        #: good until); events waiting for the answer, per section, in order.
        self.sections = sections
        self._section_restaurants: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._resolving: dict[str, list[tuple[Message, EntitySpec]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions: dict[int, Session] = {}
        self._admins: dict[int, Session] = {}
        self._by_user: dict[str, dict[int, Session]] = {}
        #: owner user id -> (restaurants owned, that owner's sockets)
        self._owners: dict[str, tuple[frozenset[str], dict[int, Session]]] = {}
        #: reservation id -> (user id, restaurant id), from reservation events, newest last
        self._reservations: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._periodic = Periodic("owners' restaurants", lambda: self.refresh, self.reread_owners)
        #: The starting topics per role set, shared by the sockets of that role set.
        self._topic_sets: dict[tuple[bool, bool], tuple[list[str], frozenset[str]]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    # -- the socket kind ---------------------------------------------------------------------
    def socket_kinds(self) -> Mapping[str, SocketKindRules]:
        return {NOTIFICATIONS.name: SocketKindRules(allows_topic=self.allows_topic)}

    def event_handler(self) -> Callable[[DomainEvent], None]:
        return self.deliver

    def topics(self, principal: Principal) -> tuple[list[str], frozenset[str]]:
        """The socket's starting topics (both spellings of ``status_changed``)."""
        key = (principal.is_admin, "OWNER" in principal.upper_roles)
        found = self._topic_sets.get(key)
        if found is None:
            topics = notification_topics(principal)
            found = self._topic_sets[key] = (topics, frozenset(topics))
        return found

    def allows_topic(self, session: Session, topic: str) -> bool:
        """A notifications socket subscribes only to its role's topics (reference §13.11)."""
        return topic in self.topics(session.principal)[1]

    # -- opening -----------------------------------------------------------------------------
    @staticmethod
    def is_owner(principal: Principal) -> bool:
        return principal.audience == "owner"

    async def admit(self, principal: Principal) -> frozenset[str]:
        """The restaurants an OWNER's socket will receive private events of (none for others);
        :class:`OwnershipUnavailable` when the REST API cannot say (the socket is refused)."""
        if not self.is_owner(principal):
            return frozenset()
        try:
            owned = await self.guard.owned(principal)
        except OwnershipUnavailable:
            self.metrics.ownership("unavailable")
            raise
        self.metrics.ownership("allowed")
        return owned

    def join(self, session: Session) -> list[Message]:
        """A notifications socket opened: index it (``session.owned``: an OWNER's restaurants)."""
        if session.entity is not NOTIFICATIONS:
            return []
        owned = session.owned
        self._sessions[session.id] = session
        principal = session.principal
        if principal.is_admin:
            self._admins[session.id] = session
        self._by_user.setdefault(principal.user_id, {})[session.id] = session
        if self.is_owner(principal):
            _, sockets = self._owners.get(principal.user_id, (owned, {}))
            sockets[session.id] = session
            # the freshest answer wins, also when it says "nothing any more" (fail closed)
            self._owners[principal.user_id] = (owned, sockets)
        return []

    async def leave(self, session: Session) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        self._admins.pop(session.id, None)
        user = session.principal.user_id
        _drop(self._by_user, user, session.id)
        owner = self._owners.get(user)
        if owner is not None:
            owner[1].pop(session.id, None)
            if not owner[1]:
                del self._owners[user]

    # -- background: owners' restaurants re-read ---------------------------------------------
    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        for pending in list(self._tasks):
            pending.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def reread_owners(self) -> None:
        """Each owner's restaurants again (the guard's cache, or the REST API when expired).
        Without an answer the last one is kept (the tenant check of entity sockets does so)."""
        for user, (_, sockets) in list(self._owners.items()):
            if not sockets:
                continue
            now = time.time()
            valid = [s.principal for s in sockets.values() if s.principal.valid_at(now)]
            if not valid:
                continue  # the sockets are about to close at their tokens' expiry
            principal = max(valid, key=lambda p: p.expires_at or float("inf"))
            try:
                owned = await self.guard.owned(principal)
            except OwnershipUnavailable:
                continue
            current = self._owners.get(user)
            if current is not None:
                self._owners[user] = (owned, current[1])

    # -- delivery ----------------------------------------------------------------------------
    def deliver(self, event: DomainEvent, _context: object = None) -> None:
        """An event handler (usecases/../handlers/events.py): the entitled notifications sockets."""
        if event.entity.delivery.visibility is Visibility.PRIVATE:
            self._remember(event)
        if not self._sessions or event.topic not in _ANY_TOPIC:
            return
        spec = event.entity
        message = event.message()
        if spec.delivery.visibility is Visibility.PRIVATE:
            # Stricter than the entity's role policy: ADMIN, the restaurant's owners, and the
            # user it belongs to (a USER may not open a payments socket, but gets their own).
            self.hub.publish(message, self._entitled(event.users, event.scope))
            return
        # Public data: every socket the role policy allows, but an OWNER's bell gets only the
        # events of the restaurants they own (as far as the event names its restaurant).
        others = [s for s in self._sessions.values() if not self.is_owner(s.principal)]
        self.hub.publish(message, _allowed(others, spec.allows))
        if not self._owners:
            return
        if _section_scoped(spec):
            for section in event.scope:
                self._deliver_by_section(section, message, spec)
            return
        restaurants = (event.resource_id,) if spec.name == "restaurants" else event.scope
        self.hub.publish(message, _allowed(self._owners_of(restaurants), spec.allows))

    def _owners_of(self, restaurants: Iterable[str]) -> list[Session]:
        restaurants = tuple(r for r in restaurants if r)
        chosen: dict[int, Session] = {}
        if restaurants:
            for owned, sockets in self._owners.values():
                if any(r in owned for r in restaurants):
                    chosen.update(sockets)
        return list(chosen.values())

    def _deliver_by_section(self, section: str, message: Message, spec: EntitySpec) -> None:
        """An event that names only a section: its restaurant from the REST API (cached),
        then that restaurant's owners; in order, per section; nobody when it is unknown."""
        if not section or self.sections is None:
            return  # no way to know the restaurant: no owner gets it (fail closed)
        known = self._section_restaurants.get(section)
        waiting = self._resolving.get(section)
        if known is not None and waiting is None and known[1] > time.monotonic():
            self._section_restaurants.move_to_end(section)
            self.hub.publish(message, _allowed(self._owners_of((known[0],)), spec.allows))
            return
        if waiting is not None:
            if len(waiting) < _MAX_WAITING:
                waiting.append((message, spec))
            return
        self._resolving[section] = [(message, spec)]
        task = asyncio.ensure_future(self._resolve(section))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restaurant_of(self, fetcher: SnapshotFetcher, section: str) -> str:
        """``GET /api/v1/sections/{id}``'s ``restaurantId``, asked with an owner's token."""
        now = time.time()
        tokens = [
            s.principal.token
            for _, sockets in self._owners.values()
            for s in sockets.values()
            if s.principal.valid_at(now)
        ]
        request = plan_detail(CATALOGUE.by_name["sections"], "user", section)
        data = await fetcher.fetch(request, tokens[0] if tokens else "")
        restaurant = data.get("restaurantId") if isinstance(data, dict) else None
        return restaurant.strip() if isinstance(restaurant, str) else ""

    async def _resolve(self, section: str) -> None:
        restaurant = ""
        try:
            if self.sections is not None:
                restaurant = await self._restaurant_of(self.sections, section)
        except Exception:
            log.warning("section's restaurant unknown", extra={"section": section}, exc_info=True)
        ttl = _SECTION_TTL if restaurant else _SECTION_RETRY
        self._section_restaurants[section] = (restaurant, time.monotonic() + ttl)
        while len(self._section_restaurants) > _KNOWN_SECTIONS:
            self._section_restaurants.popitem(last=False)
        for message, spec in self._resolving.pop(section, []):
            if restaurant:
                self.hub.publish(message, _allowed(self._owners_of((restaurant,)), spec.allows))

    def push(self, message: Message, target: PushTarget) -> int:
        """A payment push: ADMIN, and the user and restaurant owners it names (or, when it
        names only a reservation, those of that reservation as its events said)."""
        user, restaurant = target.user_id, target.restaurant_id
        if not user and not restaurant and target.reservation_id:
            user, restaurant = self._reservations.get(target.reservation_id, ("", ""))
        if not user and not restaurant:
            self.metrics.broadcast("unresolved")
        else:
            self.metrics.broadcast("resolved")
        users = (user,) if user else ()
        restaurants = (restaurant,) if restaurant else ()
        # A push on a topic no list holds (an event n8n names freely) cannot be subscribed
        # to: it goes to every entitled socket; one on a listed topic, to the subscribed ones.
        unlisted = message.topic not in _ANY_TOPIC
        return self.hub.publish(message, self._entitled(users, restaurants), any_topic=unlisted)

    def _entitled(self, users: Iterable[str], restaurants: Iterable[str]) -> list[Session]:
        chosen: dict[int, Session] = dict(self._admins)
        for user in users:
            chosen.update(self._by_user.get(user, {}))
        for session in self._owners_of(restaurants):
            chosen[session.id] = session
        return list(chosen.values())

    def _remember(self, event: DomainEvent) -> None:
        """Reservations' user and restaurant, for pushes that name only the reservation."""
        if event.entity.name != "reservations" or not event.resource_id:
            return
        user = event.users[0] if event.users else ""
        restaurant = event.scope[0] if event.scope else ""
        if not user and not restaurant:
            return
        known = self._reservations
        known[event.resource_id] = (user, restaurant)
        known.move_to_end(event.resource_id)
        while len(known) > _KNOWN_RESERVATIONS:
            known.popitem(last=False)


def _allowed(sessions: Iterable[Session], allows: Callable[[tuple[str, ...]], bool]) -> list[Session]:
    """The sessions whose roles the entity's role policy allows (as for entity sockets)."""
    return [s for s in sessions if allows(s.principal.upper_roles)]


def _drop(index: dict[str, dict[int, Session]], key: str, session_id: int) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.pop(session_id, None)
        if not bucket:
            del index[key]
