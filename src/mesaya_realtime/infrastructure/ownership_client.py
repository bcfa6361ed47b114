"""The ownership check's REST adapter: ``GET /api/v1/restaurants/me``, paginated to the end.

The backend's owner variant of the restaurants list (docs/WEBSOCKET_ENDPOINTS.md, entity
tables) answers, for the bearer of the token, ``{"data":[{"id":...}, ...],
"pagination":{"page","totalPages","hasNext",...}}``. Calls go through the gateway's one REST
client (same pool, timeout and upstream metrics as snapshots).
"""

from __future__ import annotations

import logging
from typing import Any

from mesaya_realtime.application.ports.snapshots import SnapshotFetcher
from mesaya_realtime.domain.errors import (
    OwnershipUnavailable,
    SnapshotError,
    SnapshotForbidden,
    SnapshotNotFound,
)
from mesaya_realtime.domain.snapshots import SnapshotRequest

__all__ = ["OWNED_RESTAURANTS_PATH", "RestOwnershipSource"]

log = logging.getLogger(__name__)

OWNED_RESTAURANTS_PATH = "/api/v1/restaurants/me"


class RestOwnershipSource:
    """Implements :class:`~mesaya_realtime.application.ports.ownership.OwnershipSource`.

    - 401/403: the platform refuses the token, so it owns nothing here (the socket is refused);
    - 404 on the first page: no such list, nothing owned; on a later page: the end;
    - any other failure (network, timeout, 5xx, a body without a list): unavailable.

    At most ``max_pages`` pages are read (a backend that ignores ``page`` cannot loop it
    forever); restaurants past them are not owned as far as the gateway knows (fail closed).
    """

    def __init__(
        self,
        fetcher: SnapshotFetcher,
        *,
        path: str = OWNED_RESTAURANTS_PATH,
        page_size: int = 100,
        max_pages: int = 100,
    ) -> None:
        self._fetcher = fetcher
        self.path = path
        self.page_size = page_size
        self.max_pages = max_pages

    async def owned_restaurants(self, token: str) -> frozenset[str]:
        owned: set[str] = set()
        for page in range(1, self.max_pages + 1):
            request = SnapshotRequest(
                self.path, params=(("page", str(page)), ("limit", str(self.page_size))), shared=False
            )
            try:
                body = await self._fetcher.fetch(request, token)
            except SnapshotForbidden:
                return frozenset()
            except SnapshotNotFound:
                return frozenset(owned)
            except SnapshotError as error:
                raise OwnershipUnavailable() from error
            items, more = _page(body, page)
            for item in items:
                ident = _identifier(item)
                if ident:
                    owned.add(ident)
            if not more:
                return frozenset(owned)
        log.warning("owned restaurants truncated", extra={"pages": self.max_pages, "restaurants": len(owned)})
        return frozenset(owned)


def _page(body: Any, page: int) -> tuple[list[Any], bool]:
    """The items of one page and whether another follows."""
    if not isinstance(body, dict):
        raise OwnershipUnavailable()
    items = body.get("data", body.get("items"))
    if not isinstance(items, list):
        raise OwnershipUnavailable()
    pagination = body.get("pagination")
    if not isinstance(pagination, dict) or not items:
        return items, False
    has_next = pagination.get("hasNext")
    if isinstance(has_next, bool):
        return items, has_next
    total = pagination.get("totalPages")
    return items, isinstance(total, int) and not isinstance(total, bool) and page < total


def _identifier(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    for key in ("id", "restaurantId"):
        value = item.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return ""
