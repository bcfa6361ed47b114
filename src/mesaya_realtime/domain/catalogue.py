"""The entity catalogue: the one declarative table every other part reads.

Each :class:`EntitySpec` says, for one WebSocket entity, how URLs name it, which command
names it answers, who may connect, which REST endpoints serve its snapshots, which Kafka
topics and subtypes feed it, and which sockets an event of it may reach.

Adding an entity is one entry in :data:`ENTITIES` plus tests::

    spec = CATALOGUE.resolve("Table")      # -> the ``tables`` entry
    spec.list_actions                       # ('list_tables', 'list', 'fetch_all')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

__all__ = [
    "ADMIN",
    "ALL_ROLES",
    "CATALOGUE",
    "DEFAULT_ENTITY_ALIASES",
    "ENTITIES",
    "NOTIFICATIONS",
    "OWNER",
    "USER",
    "Catalogue",
    "DeliveryRule",
    "EntitySpec",
    "RestVariant",
    "Visibility",
]

ADMIN = "ADMIN"
OWNER = "OWNER"
USER = "USER"
ALL_ROLES: frozenset[str] = frozenset({ADMIN, OWNER, USER})
STAFF_ROLES: frozenset[str] = frozenset({ADMIN, OWNER})
ADMIN_ONLY: frozenset[str] = frozenset({ADMIN})

#: URL entity segments that mean "the configured default entity" (``WS_DEFAULT_ENTITY``).
#: ``section`` is the legacy singular route ``/ws/section/{id}`` (see docs/COMPATIBILITY.md).
DEFAULT_ENTITY_ALIASES: frozenset[str] = frozenset({"", "-", "default", "section"})


class Visibility(Enum):
    """Which sockets of an entity an event may reach."""

    #: Every socket of the entity (public catalogue data such as restaurants).
    PUBLIC = "public"
    #: Sockets whose section equals one of the event's scope values (``data.sectionId`` ...).
    SCOPED = "scoped"
    #: Like SCOPED for staff (OWNER/ADMIN); a USER only receives events that are their own.
    PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class DeliveryRule:
    """The event-scoping rule of one entity.

    ``scope_paths`` are dotted paths into the event (``data.sectionId``,
    ``metadata.restaurant_id``) whose values are compared with a socket's section.
    ``user_paths`` name the user an event belongs to (for :attr:`Visibility.PRIVATE`).
    ADMIN sockets on the wildcard section receive every event of the entity.
    ``owner_must_own_section`` marks entities whose events carry a restaurant's private data.
    """

    visibility: Visibility
    scope_paths: tuple[str, ...] = ()
    user_paths: tuple[str, ...] = ()
    #: The tenant boundary: the section of an OWNER's socket (without ADMIN) is a restaurant
    #: id, and the owner must own it (checked at the handshake, on renewals and again when
    #: the cached answer expires; docs/ARCHITECTURE.md "Who may see what").
    owner_must_own_section: bool = False


@dataclass(frozen=True, slots=True)
class RestVariant:
    """REST endpoints of one entity for one audience.

    ``list_path`` may contain ``{section}``; ``detail_path`` contains ``{id}``. Filter keys are
    lower-cased, then looked up in ``filter_aliases``; an alias to ``""`` drops the filter.
    ``section_query_key`` adds ``<key>=<section>`` to list calls.
    """

    list_path: str
    detail_path: str
    filter_aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    section_query_key: str | None = None
    #: True when the upstream answer does not depend on who asks (public data), so one cache
    #: entry may serve every user of the same audience. False keys the cache by user.
    shared: bool = True


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """Everything the gateway knows about one WebSocket entity."""

    name: str
    aliases: tuple[str, ...]
    plural: str
    singular: str
    roles: frozenset[str] | None
    detail_id_key: str
    rest: RestVariant | None
    owner_rest: RestVariant | None = None
    kafka_topics: tuple[str, ...] = ()
    #: ``entity_subtype`` values of a shared topic that belong to this entity.
    kafka_subtypes: tuple[str, ...] = ()
    delivery: DeliveryRule = DeliveryRule(Visibility.PUBLIC)
    legacy_actions: tuple[tuple[str, str], ...] = ()
    #: Actions that only travel between sockets (no Kafka event, no REST call), such as table
    #: selection; their ``<entity>.<action>`` topics are in every socket's topic set.
    socket_actions: tuple[str, ...] = ()

    @property
    def list_actions(self) -> tuple[str, ...]:
        extra = tuple(f"list_{plural}" for plural, _ in self.legacy_actions)
        return (f"list_{self.plural}", "list", "fetch_all", *extra)

    @property
    def detail_actions(self) -> tuple[str, ...]:
        extra = tuple(f"get_{singular}" for _, singular in self.legacy_actions)
        return (f"get_{self.singular}", "detail", "fetch_one", *extra)

    def rest_variant(self, audience: str) -> RestVariant | None:
        """The REST endpoints for an audience (``admin``, ``owner`` or ``user``)."""
        if audience == "owner" and self.owner_rest is not None:
            return self.owner_rest
        return self.rest

    def allows(self, roles: tuple[str, ...]) -> bool:
        """Role policy: any role of the token in the entity's allowed set (upper-cased)."""
        if self.roles is None:
            return True
        return any(role.upper() in self.roles for role in roles)


def _aliases(mapping: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(mapping)


_RESTAURANT_ALIAS = {"restaurantid": "restaurantId"}
_PAYMENT_FILTERS = {
    "status": "status",
    "type": "type",
    "reservationid": "reservationId",
    **_RESTAURANT_ALIAS,
    "startdate": "startDate",
    "enddate": "endDate",
    "minamount": "minAmount",
    "maxamount": "maxAmount",
}
_BY_RESTAURANT = ("data.restaurantId", "metadata.restaurant_id")
#: Events of a restaurant: its staff's sockets on that restaurant (and ADMIN ``*``).
_SCOPED_BY_RESTAURANT = DeliveryRule(Visibility.SCOPED, scope_paths=_BY_RESTAURANT)
#: Private events: the owners of the restaurant (checked), ADMIN, and the USER they belong to.
_PRIVATE_BY_RESTAURANT = DeliveryRule(
    Visibility.PRIVATE,
    scope_paths=_BY_RESTAURANT,
    user_paths=("data.userId", "metadata.user_id"),
    owner_must_own_section=True,
)
_API = "/api/v1"


def _rest(resource: str, aliases: dict[str, str] | None = None, **extra: object) -> RestVariant:
    return RestVariant(
        list_path=f"{_API}/{resource}",
        detail_path=f"{_API}/{resource}/{{id}}",
        filter_aliases=_aliases(aliases or {}),
        **extra,  # type: ignore[arg-type]
    )


ENTITIES: tuple[EntitySpec, ...] = (
    EntitySpec(
        name="restaurants",
        aliases=("restaurant", "restaurants"),
        plural="restaurants",
        singular="restaurant",
        roles=ALL_ROLES,
        detail_id_key="restaurantId",
        rest=_rest("restaurants"),
        owner_rest=RestVariant(
            list_path=f"{_API}/restaurants/me",
            detail_path=f"{_API}/restaurants/{{id}}",
            shared=False,
        ),
        kafka_topics=("mesa-ya.restaurants.events",),
        delivery=DeliveryRule(Visibility.PUBLIC),
    ),
    EntitySpec(
        name="tables",
        aliases=("table", "tables"),
        plural="tables",
        singular="table",
        roles=ALL_ROLES,
        detail_id_key="tableId",
        rest=_rest("tables", {**_RESTAURANT_ALIAS, "sectionid": "sectionId"}, section_query_key="sectionId"),
        owner_rest=RestVariant(
            list_path=f"{_API}/tables/section/{{section}}",
            detail_path=f"{_API}/tables/{{id}}",
            filter_aliases=_aliases({**_RESTAURANT_ALIAS, "sectionid": "sectionId"}),
            shared=False,
        ),
        kafka_topics=("mesa-ya.tables.events",),
        delivery=DeliveryRule(Visibility.SCOPED, scope_paths=("data.sectionId",)),
        socket_actions=("selecting", "released"),
    ),
    EntitySpec(
        name="reservations",
        aliases=("reservation", "reservations"),
        plural="reservations",
        singular="reservation",
        roles=ALL_ROLES,
        detail_id_key="reservationId",
        rest=_rest(
            "reservations",
            {"status": "status", **_RESTAURANT_ALIAS, "date": "date"},
            shared=False,
        ),
        owner_rest=_rest(
            "reservations",
            {"status": "status", **_RESTAURANT_ALIAS, "date": "date", "ownerid": ""},
            section_query_key="restaurantId",
            shared=False,
        ),
        kafka_topics=("mesa-ya.reservations.events",),
        delivery=_PRIVATE_BY_RESTAURANT,
    ),
    EntitySpec(
        name="reviews",
        aliases=("review", "reviews"),
        plural="reviews",
        singular="review",
        roles=ALL_ROLES,
        detail_id_key="reviewId",
        rest=_rest("reviews", dict(_RESTAURANT_ALIAS)),
        kafka_topics=("mesa-ya.reviews.events",),
        delivery=_SCOPED_BY_RESTAURANT,
    ),
    EntitySpec(
        name="sections",
        aliases=("sections",),
        plural="sections",
        singular="section",
        roles=ALL_ROLES,
        detail_id_key="resourceSectionId",
        rest=_rest("sections", dict(_RESTAURANT_ALIAS)),
        owner_rest=_rest("sections", dict(_RESTAURANT_ALIAS), section_query_key="restaurantId", shared=False),
        kafka_topics=("mesa-ya.sections.events",),
        delivery=DeliveryRule(
            Visibility.SCOPED, scope_paths=("data.restaurantId", "metadata.restaurant_id", "data.id")
        ),
    ),
    EntitySpec(
        name="objects",
        aliases=("object", "objects"),
        plural="objects",
        singular="object",
        roles=ALL_ROLES,
        detail_id_key="objectId",
        rest=_rest("objects"),
        kafka_topics=("mesa-ya.objects.events",),
        delivery=DeliveryRule(Visibility.PUBLIC),
    ),
    EntitySpec(
        name="menus",
        aliases=("menu", "menus"),
        plural="menus",
        singular="menu",
        roles=ALL_ROLES,
        detail_id_key="menuId",
        rest=_rest("menus", dict(_RESTAURANT_ALIAS)),
        kafka_topics=("mesa-ya.menus.events",),
        kafka_subtypes=("menu",),
        delivery=_SCOPED_BY_RESTAURANT,
    ),
    EntitySpec(
        name="dishes",
        aliases=("dish", "dishes"),
        plural="dishes",
        singular="dish",
        roles=ALL_ROLES,
        detail_id_key="dishId",
        rest=_rest("dishes", dict(_RESTAURANT_ALIAS)),
        kafka_topics=("mesa-ya.menus.events",),
        kafka_subtypes=("dish",),
        delivery=_SCOPED_BY_RESTAURANT,
    ),
    EntitySpec(
        name="images",
        aliases=("image", "images"),
        plural="images",
        singular="image",
        roles=ALL_ROLES,
        detail_id_key="imageId",
        rest=_rest("images", {"entityid": "entityId"}),
        kafka_topics=("mesa-ya.images.events",),
        delivery=DeliveryRule(Visibility.PUBLIC),
    ),
    EntitySpec(
        name="section-objects",
        aliases=(
            "sectionobject",
            "sectionobjects",
            "section-object",
            "section-objects",
            "section_object",
            "section_objects",
        ),
        plural="section_objects",
        singular="section_object",
        roles=STAFF_ROLES,
        detail_id_key="sectionObjectId",
        rest=_rest("section-objects"),
        kafka_topics=("mesa-ya.section-objects.events",),
        delivery=DeliveryRule(Visibility.SCOPED, scope_paths=("data.sectionId",)),
    ),
    EntitySpec(
        name="payments",
        aliases=("payment", "payments"),
        plural="payments",
        singular="payment",
        roles=STAFF_ROLES,
        detail_id_key="paymentId",
        rest=_rest(
            "payments",
            dict(_PAYMENT_FILTERS),
            shared=False,
        ),
        owner_rest=_rest(
            "payments",
            dict(_PAYMENT_FILTERS),
            section_query_key="restaurantId",
            shared=False,
        ),
        kafka_topics=("mesa-ya.payments.events",),
        delivery=_PRIVATE_BY_RESTAURANT,
    ),
    EntitySpec(
        name="subscriptions",
        aliases=("subscription", "subscriptions"),
        plural="subscriptions",
        singular="subscription",
        roles=STAFF_ROLES,
        detail_id_key="subscriptionId",
        rest=_rest("subscriptions", shared=False),
        owner_rest=_rest("subscriptions", section_query_key="restaurantId", shared=False),
        kafka_topics=("mesa-ya.subscriptions.events",),
        kafka_subtypes=("subscription",),
        delivery=_PRIVATE_BY_RESTAURANT,
    ),
    EntitySpec(
        name="subscription-plans",
        aliases=(
            "subscription-plan",
            "subscription-plans",
            "subscription_plan",
            "subscription_plans",
            "subscriptionplan",
            "subscriptionplans",
        ),
        plural="subscription_plans",
        singular="subscription_plan",
        roles=ALL_ROLES,
        detail_id_key="subscriptionPlanId",
        rest=_rest("subscription-plans"),
        kafka_topics=("mesa-ya.subscriptions.events",),
        kafka_subtypes=("plan",),
        delivery=DeliveryRule(Visibility.PUBLIC),
    ),
    EntitySpec(
        name="users",
        aliases=(
            "user",
            "users",
            "auth-user",
            "auth-users",
            "auth_user",
            "auth_users",
            "authuser",
            "authusers",
            "auth",
            "owner",
            "owners",
        ),
        plural="users",
        singular="user",
        roles=ADMIN_ONLY,
        detail_id_key="userId",
        rest=_rest(
            "users",
            {"status": "status", "role": "role", **_RESTAURANT_ALIAS, "active": "active"},
        ),
        kafka_topics=("mesa-ya.auth.events",),
        delivery=DeliveryRule(Visibility.PUBLIC),
        legacy_actions=(("auth_users", "auth_user"), ("owners", "owner")),
    ),
    EntitySpec(
        name="owner-upgrades",
        aliases=(
            "owner-upgrade",
            "owner-upgrades",
            "owner_upgrade",
            "owner_upgrades",
            "ownerupgrade",
            "ownerupgrades",
        ),
        plural="owner_upgrades",
        singular="owner_upgrade",
        roles=ADMIN_ONLY,
        detail_id_key="requestId",
        rest=_rest("owner-upgrades", {"status": "status", "userid": "userId"}),
        kafka_topics=("mesa-ya.owner-upgrade.events",),
        delivery=DeliveryRule(Visibility.PUBLIC),
        legacy_actions=(("owner_upgrade_requests", "owner_upgrade_request"),),
    ),
)


class Catalogue:
    """Lookups derived from :data:`ENTITIES`; build once, read everywhere."""

    def __init__(self, entities: tuple[EntitySpec, ...]) -> None:
        self.entities = entities
        self.by_name: Mapping[str, EntitySpec] = MappingProxyType({e.name: e for e in entities})
        alias_map: dict[str, str] = {}
        for entity in entities:
            for alias in (entity.name, *entity.aliases):
                if alias in alias_map and alias_map[alias] != entity.name:
                    raise ValueError(f"alias {alias!r} names two entities")
                alias_map[alias] = entity.name
        self.alias_map: Mapping[str, str] = MappingProxyType(alias_map)
        self._singulars = {e.singular: e.name for e in entities}
        primary: dict[str, str] = {}
        subtypes: dict[tuple[str, str], str] = {}
        for entity in entities:
            for topic in entity.kafka_topics:
                primary.setdefault(topic, entity.name)
                for subtype in entity.kafka_subtypes:
                    subtypes[(topic, subtype)] = entity.name
        siblings: set[tuple[str, str]] = set()
        for topic in primary:
            sharing = [e.name for e in entities if topic in e.kafka_topics]
            siblings.update((a, b) for a in sharing for b in sharing if a != b)
        self._siblings = frozenset(siblings)
        # (topic, subtype, id(mapping)) -> (mapping, entity); the mapping is kept so its id
        # cannot be reused by another object while the entry lives.
        self._event_memo: dict[tuple[str, str, int], tuple[Mapping[str, str] | None, EntitySpec | None]] = {}
        #: Kafka topic -> the entity of its records that carry no ``entity_subtype``.
        self.topic_entities: Mapping[str, str] = MappingProxyType(primary)
        self._subtypes = subtypes

    def normalize(self, raw: str) -> str:
        """Normalise a URL entity segment (reference §4.1).

        Returns ``""`` for the default-entity aliases and the lower-cased, trimmed input for
        names that are not in the catalogue::

            >>> CATALOGUE.normalize(" Restaurant ")
            'restaurants'
        """
        value = raw.strip().lower()
        if value in DEFAULT_ENTITY_ALIASES:
            return ""
        return self.alias_map.get(value, value)

    def resolve(self, raw: str) -> EntitySpec | None:
        """The entry an alias names, or None."""
        return self.by_name.get(self.normalize(raw))

    def named(self, raw: str) -> EntitySpec | None:
        """The entry a name in a record means: an alias, or an entity's singular
        (``section`` here is the sections entity, not the default-entity alias of URLs)::

            >>> CATALOGUE.named("Section").name
            'sections'
        """
        value = raw.strip().lower()
        found = self.alias_map.get(value) or self._singulars.get(value)
        return self.by_name.get(found) if found else None

    def entity_for_event(
        self, topic: str, subtype: str, topic_entities: Mapping[str, str] | None = None
    ) -> EntitySpec | None:
        """The entity an event belongs to, from its Kafka topic and ``entity_subtype``.

        ``topic_entities`` is the configured topic -> entity map (``WS_ENTITY_TOPICS``); it
        falls back to the catalogue's own. A subtype picks the entity sharing the topic
        (``dish`` on the menus topic -> ``dishes``, ``plan`` -> ``subscription-plans``)::

            >>> CATALOGUE.entity_for_event("mesa-ya.menus.events", "dish").name
            'dishes'
        """
        memo_key = (topic, subtype, id(topic_entities))
        memo = self._event_memo.get(memo_key)
        if memo is not None and memo[0] is topic_entities:
            return memo[1]
        found = self._entity_for_event(topic, subtype, topic_entities)
        if len(self._event_memo) >= 4096:  # garbage subtypes must not grow it without bound
            self._event_memo.clear()
        self._event_memo[memo_key] = (topic_entities, found)
        return found

    def _entity_for_event(
        self, topic: str, subtype: str, topic_entities: Mapping[str, str] | None
    ) -> EntitySpec | None:
        mapping = topic_entities if topic_entities is not None else self.topic_entities
        primary = mapping.get(topic) or self.topic_entities.get(topic)
        primary = self.normalize(primary) if primary else ""
        key = subtype.strip().lower()
        if not key:
            return self.by_name.get(primary)
        name = self._subtypes.get((topic, key)) or self.alias_map.get(key)
        # A subtype only picks the topic's own entity or one sharing a topic with it in the
        # catalogue (menus/dishes, subscriptions/plans): never another aggregate's entity.
        if name and primary and (name == primary or (primary, name) in self._siblings):
            return self.by_name.get(name)
        return None

    def default_topics(self) -> dict[str, tuple[str, ...]]:
        """The ``WS_ENTITY_TOPICS`` default: entity name -> Kafka topics."""
        return {e.name: e.kafka_topics for e in self.entities if e.kafka_topics}

    @property
    def platform_topics(self) -> tuple[str, ...]:
        """The platform's Kafka topics, in catalogue order (one entry per topic)."""
        return tuple(self.topic_entities)

    def entity_topics_setting(self) -> str:
        """The default of ``WS_ENTITY_TOPICS`` (``entity:topic,...``), one entry per topic
        under the entity its records without ``entity_subtype`` belong to."""
        return ",".join(f"{entity}:{topic}" for topic, entity in self.topic_entities.items())


CATALOGUE = Catalogue(ENTITIES)

#: The notifications socket kind (``GET /ws/notifications``): not an entity of the catalogue
#: (no REST endpoints, no Kafka topic, no ``/ws/{entity}`` route); its sessions are counted and
#: indexed under this name (docs/WEBSOCKET_ENDPOINTS.md "Notifications").
NOTIFICATIONS = EntitySpec(
    name="notifications",
    aliases=(),
    plural="notifications",
    singular="notification",
    roles=None,
    detail_id_key="id",
    rest=None,
)
