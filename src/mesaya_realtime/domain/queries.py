"""List and detail queries: validation of command payloads and the pagination contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mesaya_realtime.domain.errors import InvalidPayload

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "DetailQuery", "ListQuery"]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_MAX_TEXT = 1024
_MAX_FILTERS = 32


def _optional_int(payload: Mapping[str, Any], key: str) -> int:
    value = payload.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidPayload(field=f"payload.{key}")
    return value


def _optional_str(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise InvalidPayload(field=f"payload.{key}")
    return value


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A normalised paged query (reference §5.9).

    >>> ListQuery.from_payload({"page": 0, "sortOrder": " desc "}).canonical_key
    'page=1&limit=20&search=&sortBy=&sortOrder=DESC'
    """

    page: int = 1
    limit: int = DEFAULT_LIMIT
    search: str = ""
    sort_by: str = ""
    sort_order: str = ""
    filters: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_payload(cls, payload: object) -> ListQuery:
        """Validate a ``list`` payload; a wrongly typed field raises :class:`InvalidPayload`."""
        if payload is None:
            payload = {}
        if not isinstance(payload, Mapping):
            raise InvalidPayload(field="payload")
        page = _optional_int(payload, "page")
        limit = _optional_int(payload, "limit")
        raw_filters = payload.get("filters")
        filters: dict[str, str] = {}
        if raw_filters is not None:
            if not isinstance(raw_filters, Mapping) or len(raw_filters) > _MAX_FILTERS:
                raise InvalidPayload(field="payload.filters")
            for key, value in raw_filters.items():
                if value is None:  # Go decodes null as "", which sanitising drops
                    continue
                if not isinstance(value, str) or len(value) > _MAX_TEXT or len(key) > _MAX_TEXT:
                    raise InvalidPayload(field="payload.filters")
                key, value = key.strip().lower(), value.strip()
                if key and value:
                    filters[key] = value
        return cls(
            page=page if page > 0 else 1,
            limit=DEFAULT_LIMIT if limit <= 0 else min(limit, MAX_LIMIT),
            search=_optional_str(payload, "search").strip(),
            sort_by=_optional_str(payload, "sortBy").strip(),
            sort_order=_optional_str(payload, "sortOrder").strip().upper(),
            filters=MappingProxyType(dict(sorted(filters.items()))),
        )

    @property
    def canonical_key(self) -> str:
        """The cache key of the query: equal queries, equal keys."""
        key = (
            f"page={self.page}&limit={self.limit}&search={self.search.lower()}"
            f"&sortBy={self.sort_by.lower()}&sortOrder={self.sort_order}"
        )
        if self.filters:
            key += "&filters=" + ";".join(f"{k}={v}" for k, v in self.filters.items())
        return key

    def metadata(self) -> dict[str, str]:
        """The query's part of a list message's metadata (reference §5.6)."""
        meta = dict(self.filters)
        meta.update(page=str(self.page), limit=str(self.limit))
        if self.search:
            meta["search"] = self.search
        if self.sort_by:
            meta["sortBy"] = self.sort_by
        if self.sort_order:
            meta["sortOrder"] = self.sort_order
        return meta


@dataclass(frozen=True, slots=True)
class DetailQuery:
    """A detail request: ``{"id": "<resource id>"}``."""

    resource_id: str

    @classmethod
    def from_payload(cls, payload: object) -> DetailQuery:
        if not isinstance(payload, Mapping):
            raise InvalidPayload(field="payload")
        value = payload.get("id")
        if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
            raise InvalidPayload(field="payload.id")
        return cls(value.strip())
