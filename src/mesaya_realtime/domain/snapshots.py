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

__all__ = ["SnapshotRequest", "path_segment", "plan_detail", "plan_list", "unwrap"]

#: A filter key equal to this (in any case) is never sent (reference §7.2).
_DROPPED_FILTER = "ownerid"


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """One upstream GET: a path below ``REST_BASE_URL`` and its query parameters.

    ``path`` is already percent-encoded (ids and sections are escaped as one path segment);
    clients must send it as is.
    """

    path: str
    params: tuple[tuple[str, str], ...] = ()
    #: False when the answer depends on the caller, so caches must key it by user.
    shared: bool = True
    #: The socket section the answer depends on (in the path or the section query key);
    #: ``""`` when the same request serves every section. Caches index list entries by it.
    section: str = ""


def path_segment(value: str) -> str:
    """``value`` escaped as one URL path segment (Go's ``url.PathEscape``, plus dots).

    ``/``, ``?``, ``#``, ``%`` and spaces are percent-encoded; the dot segments ``.`` and
    ``..`` are encoded too, so an id can never walk up the upstream's path::

        >>> path_segment("a/b c"), path_segment("..")
        ('a%2Fb%20c', '%2E%2E')
    """
    escaped = quote(value, safe="")
    if escaped in (".", ".."):
        return escaped.replace(".", "%2E")
    return escaped


def plan_list(spec: EntitySpec, audience: str, section: str, query: ListQuery) -> SnapshotRequest:
    """The list call: ``page`` and ``limit`` always; ``q``, ``sortBy``, ``sortOrder`` when set;
    the filters through the variant's aliases (unknown keys pass lower-cased, ``ownerId`` is
    dropped, a filter never overrides the paging, search or sort parameters); last the
    variant's section query key, which overrides a filter of the same name. An empty
    ``section`` (every section, e.g. the ADMIN wildcard) sends no section query key."""
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
    reserved = frozenset(params)
    for raw_key, value in query.filters.items():
        key = raw_key.lower()
        if key == _DROPPED_FILTER:
            continue
        name = variant.filter_aliases.get(key, key)
        if name and name not in reserved:
            params[name] = value
    depends_on_section = False
    if variant.section_query_key and section:
        params[variant.section_query_key] = section
        depends_on_section = True
    path = variant.list_path
    if "{section}" in path:
        path = path.replace("{section}", path_segment(section))
        depends_on_section = True
    return SnapshotRequest(path, tuple(params.items()), variant.shared, section if depends_on_section else "")


def plan_detail(spec: EntitySpec, audience: str, resource_id: str) -> SnapshotRequest:
    """The detail call: the variant's detail path with the escaped id; never the section."""
    variant = spec.rest_variant(audience)
    if variant is None:
        raise SnapshotUnsupported()
    path = variant.detail_path.replace("{id}", path_segment(resource_id))
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
