"""The analytics endpoints (reference §2.4, §4.3, §6.4, §8.6) as plain data.

``/ws/analytics/{scope}/{entity}`` names one of 15 keys (``analytics-admin-payments``); each key
has a REST path, the query parameters it passes on, maybe an identifier (only
``restaurant-users``: the restaurant, sent as ``restaurantId``), whether a token is required,
and who may read it (new: ``admin-*`` ADMIN, ``restaurant-*`` ADMIN or the identifier's owner,
``public-*`` anyone). Events of the entities in :data:`REFRESHED_BY` refresh the keys listed.

>>> key_of("rest", "Restaurant_Users").name
'analytics-restaurant-users'
>>> key_of("adm", "subscriptionplan").path
'/api/v1/subscription-plans/analytics'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any

__all__ = [
    "ANALYTICS",
    "REFRESHED_BY",
    "AnalyticsKey",
    "AnalyticsQuery",
    "Reader",
    "key_of",
    "normalize_scope",
]


class Reader(Enum):
    """Who may read a key (the Go service checked nobody, §13.19)."""

    ANYONE = "anyone"
    ADMIN = "admin"
    ADMIN_OR_OWNER = "admin-or-owner"


@dataclass(frozen=True, slots=True)
class AnalyticsKey:
    scope: str
    entity: str
    path: str
    params: tuple[str, ...]
    identifier_param: str = ""
    token_required: bool = True

    @property
    def name(self) -> str:
        return f"analytics-{self.scope}-{self.entity}"

    @property
    def reader(self) -> Reader:
        return {"admin": Reader.ADMIN, "restaurant": Reader.ADMIN_OR_OWNER}.get(self.scope, Reader.ANYONE)


_API = "/api/v1"
_KEYS = (
    AnalyticsKey("public", "users", f"{_API}/users/analytics", ("startDate",), token_required=False),
    AnalyticsKey("public", "dishes", f"{_API}/dishes/analytics", ("startDate",), token_required=False),
    AnalyticsKey("public", "menus", f"{_API}/menus/analytics", ("startDate",), token_required=False),
    AnalyticsKey(
        "restaurant", "users", f"{_API}/users/analytics", ("startDate",), identifier_param="restaurantId"
    ),
    AnalyticsKey("admin", "users", f"{_API}/users/analytics", ("startDate",)),
    AnalyticsKey("admin", "restaurants", f"{_API}/restaurants/analytics", ("startDate",)),
    AnalyticsKey("admin", "sections", f"{_API}/sections/analytics", ("restaurantId", "startDate")),
    AnalyticsKey("admin", "tables", f"{_API}/tables/analytics", ("sectionId", "restaurantId", "startDate")),
    AnalyticsKey("admin", "images", f"{_API}/images/analytics", ("startDate",)),
    AnalyticsKey("admin", "objects", f"{_API}/objects/analytics", ("startDate",)),
    AnalyticsKey("admin", "subscriptions", f"{_API}/subscriptions/analytics", ("startDate",)),
    AnalyticsKey("admin", "subscription-plans", f"{_API}/subscription-plans/analytics", ("startDate",)),
    AnalyticsKey("admin", "reservations", f"{_API}/reservations/analytics", ("restaurantId", "startDate")),
    AnalyticsKey("admin", "reviews", f"{_API}/reviews/analytics/stats", ("restaurantId", "startDate")),
    AnalyticsKey("admin", "payments", f"{_API}/payments/analytics", ("restaurantId", "startDate")),
)
#: Every key by its name (``analytics-<scope>-<entity>``).
ANALYTICS: Mapping[str, AnalyticsKey] = MappingProxyType({k.name: k for k in _KEYS})

_SCOPES = {
    "public": "public",
    "pub": "public",
    "restaurant": "restaurant",
    "rest": "restaurant",
    "owner": "restaurant",
    "admin": "admin",
    "administrator": "admin",
    "adm": "admin",
    "auth": "admin",
}
_ADMIN_PLURALS = (
    "restaurants",
    "sections",
    "tables",
    "images",
    "objects",
    "subscriptions",
    "reservations",
    "reviews",
    "payments",
)
_ENTITY_ALIASES: dict[str, dict[str, str]] = {
    "public": {
        **dict.fromkeys(("user", "users", "public-user", "public-users"), "users"),
        **dict.fromkeys(("dish", "dishes"), "dishes"),
        **dict.fromkeys(("menu", "menus"), "menus"),
    },
    "restaurant": dict.fromkeys(
        ("user", "users", "restaurant", "restaurant-user", "restaurant-users"), "users"
    ),
    "admin": {
        **dict.fromkeys(("auth", "auth-user", "auth-users", "user", "users"), "users"),
        **{plural[:-1]: plural for plural in _ADMIN_PLURALS},
        **{plural: plural for plural in _ADMIN_PLURALS},
        **dict.fromkeys(
            (
                "subscription-plan",
                "subscription-plans",
                "subscriptionplan",
                "subscriptionplans",
            ),
            "subscription-plans",
        ),
    },
}

#: The keys an event of an entity (catalogue name) makes stale (reference §8.6, with the
#: users row made to work: Go normalised ``auth-users`` to ``users``, which had no entry).
_REFRESHED_BY: dict[str, tuple[str, ...]] = {
    "restaurants": ("admin-restaurants", "admin-sections", "admin-tables", "admin-payments"),
    "sections": ("admin-sections", "admin-tables"),
    "tables": ("admin-tables", "admin-payments"),
    "images": ("admin-images",),
    "objects": ("admin-objects", "admin-sections"),
    "section-objects": ("admin-objects", "admin-sections"),
    "subscriptions": ("admin-subscriptions", "admin-subscription-plans", "admin-payments"),
    "subscription-plans": ("admin-subscription-plans",),
    "reservations": ("admin-reservations", "restaurant-users"),
    "reviews": ("admin-reviews",),
    "payments": ("admin-payments",),
    "users": ("admin-users", "public-users", "restaurant-users"),
    "menus": ("public-menus",),
    "dishes": ("public-dishes",),
}
REFRESHED_BY: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {entity: tuple(f"analytics-{key}" for key in keys) for entity, keys in _REFRESHED_BY.items()}
)


def normalize_scope(raw: str) -> str:
    scope = raw.strip().lower()
    return _SCOPES.get(scope, scope)


def key_of(raw_scope: str, raw_entity: str) -> AnalyticsKey | None:
    """The key a URL names, after the scope and entity aliases; None when there is none."""
    scope = normalize_scope(raw_scope)
    entity = raw_entity.strip().lower().replace("_", "-")
    entity = _ENTITY_ALIASES.get(scope, {}).get(entity, entity)
    return ANALYTICS.get(f"analytics-{scope}-{entity}")


_MAX_VALUE = 256


@dataclass(frozen=True, slots=True)
class AnalyticsQuery:
    """A socket's current request: its identifier and its query, filtered to the key's params."""

    identifier: str = ""
    query: tuple[tuple[str, str], ...] = ()

    @classmethod
    def seed(cls, key: AnalyticsKey, params: Mapping[str, str]) -> AnalyticsQuery:
        """From the upgrade request's query string (the identifier param and allowed params)."""
        identifier = params.get(key.identifier_param, "").strip() if key.identifier_param else ""
        query = {k: v.strip()[:_MAX_VALUE] for k, v in params.items() if k in key.params and v.strip()}
        return cls(identifier[:_MAX_VALUE], tuple(sorted(query.items())))

    def merged(self, key: AnalyticsKey, payload: Any) -> AnalyticsQuery:
        """Reference §6.4: a non-empty identifier replaces the old one; an empty query value
        deletes that key; the result is filtered to the key's params. ValueError: bad shape."""
        if payload is None:
            return self
        if not isinstance(payload, dict):
            raise ValueError("payload")
        identifier = self.identifier
        raw_identifier = payload.get("identifier")
        if raw_identifier is not None:
            if not isinstance(raw_identifier, str | int) or isinstance(raw_identifier, bool):
                raise ValueError("identifier")
            if str(raw_identifier).strip():
                identifier = str(raw_identifier).strip()[:_MAX_VALUE]
        query = dict(self.query)
        raw_query = payload.get("query")
        if raw_query is not None:
            if not isinstance(raw_query, dict):
                raise ValueError("query")
            for name, value in raw_query.items():
                if value is None or (isinstance(value, str) and not value.strip()):
                    query.pop(name, None)
                elif isinstance(value, str | int | float) and not isinstance(value, bool):
                    query[name] = str(value).strip()[:_MAX_VALUE]
                else:
                    raise ValueError("query value")
        allowed = {k: v for k, v in query.items() if k in key.params}
        return AnalyticsQuery(identifier, tuple(sorted(allowed.items())))

    def params(self, key: AnalyticsKey) -> tuple[tuple[str, str], ...]:
        """The REST call's query string: the identifier (as its param), then the query."""
        pairs = list(self.query)
        if key.identifier_param and self.identifier:
            pairs = [
                (key.identifier_param, self.identifier),
                *(p for p in pairs if p[0] != key.identifier_param),
            ]
        return tuple(pairs)

    def metadata(self, key: AnalyticsKey) -> dict[str, str]:
        """The snapshot's metadata: scope, identifier, ``query.<k>``."""
        metadata = {"scope": key.scope}
        if self.identifier:
            metadata["identifier"] = self.identifier
        for name, value in self.query:
            metadata[f"query.{name}"] = value
        return metadata
