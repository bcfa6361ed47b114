"""Which REST call answers a snapshot request (reference §7.2-7.4), as plain data.

>>> from mesaya_realtime.domain.catalogue import CATALOGUE
>>> plan_list(CATALOGUE.by_name["reservations"], "owner", "rest-1", ListQuery()).params
(('page', '1'), ('limit', '20'), ('restaurantId', 'rest-1'))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from mesaya_realtime.domain.catalogue import EntitySpec
from mesaya_realtime.domain.errors import SnapshotUnsupported
from mesaya_realtime.domain.queries import ListQuery

__all__ = ["SnapshotRequest", "plan_detail", "plan_list", "unwrap"]


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """One upstream GET: a path below ``REST_BASE_URL`` and its query parameters."""

    path: str
    params: tuple[tuple[str, str], ...] = ()
    #: False when the answer depends on the caller, so caches must key it by user.
    shared: bool = True


def plan_list(spec: EntitySpec, audience: str, section: str, query: ListQuery) -> SnapshotRequest:
    variant = spec.rest_variant(audience)
    if variant is None:
        raise SnapshotUnsupported()
    params: dict[str, str] = {"page": str(query.page), "limit": str(query.limit)}
    if query.search:
        params["q"] = query.search
    if query.sort_by:
        params["sortBy"] = query.sort_by
    if query.sort_order:
        params["sortOrder"] = query.sort_order
    for key, value in query.filters.items():
        if key == "ownerid":
            continue
        name = variant.filter_aliases.get(key, key)
        if name:
            params[name] = value
    if variant.section_query_key:
        params[variant.section_query_key] = section
    path = variant.list_path.replace("{section}", quote(section, safe=""))
    return SnapshotRequest(path, tuple(params.items()), variant.shared)


def plan_detail(spec: EntitySpec, audience: str, resource_id: str) -> SnapshotRequest:
    variant = spec.rest_variant(audience)
    if variant is None:
        raise SnapshotUnsupported()
    path = variant.detail_path.replace("{id}", quote(resource_id, safe=""))
    return SnapshotRequest(path, (), variant.shared)


def unwrap(body: Any) -> Any:
    """The payload of a REST body: ``{"data": {...}}`` -> the inner object; lists stay
    whole; an array becomes ``{"items": [...]}``; a scalar ``{"value": x}``."""
    if isinstance(body, dict):
        inner = body.get("data")
        return inner if isinstance(inner, dict) else body
    if isinstance(body, list):
        return {"items": body}
    return {"value": body}
