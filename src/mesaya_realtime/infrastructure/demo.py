"""The embedded default: a small REST upstream with fixture data and an in-process event source.

``mesaya-realtime demo`` starts both beside the gateway, so it runs with no external service.
The upstream answers like the platform's backend: lists as ``{"data": [...], "pagination":
{...}}`` and details as ``{"data": {...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
import orjson
from aiohttp import web

from mesaya_realtime.application.handlers.events import Record

__all__ = [
    "DEMO_RESTAURANT",
    "DEMO_SECTIONS",
    "OWNERS",
    "ROWS",
    "DemoEventSource",
    "create_demo_upstream",
    "fixtures",
]

DEMO_RESTAURANT = "rest-1"
DEMO_SECTIONS = ("main-hall", "terrace")
_STAMP = "2026-01-10T12:00:00.000Z"
#: The fixture rows an upstream app serves (mutable: the demo event source edits them).
ROWS = web.AppKey("rows", dict)
#: Extra restaurant ids each ``sub`` owns, beyond the restaurants whose ``ownerId`` it is.
OWNERS = web.AppKey("owners", dict)


def _subject(request: web.Request) -> str:
    """The ``sub`` of the bearer token, read without verification: this is a fixture API,
    standing in for the backend that verifies it."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return ""
    try:
        claims = jwt.decode(header[7:].strip(), options={"verify_signature": False})
    except jwt.PyJWTError:
        return ""
    subject = claims.get("sub")
    return subject if isinstance(subject, str) else ""


def fixtures() -> dict[str, list[dict[str, Any]]]:
    """Fixture rows per REST resource (the path segment after ``/api/v1/``)."""
    tables = []
    for index in range(1, 13):
        section = DEMO_SECTIONS[(index - 1) // 6]
        tables.append(
            {
                "id": f"table-{index}",
                "sectionId": section,
                "number": index,
                "capacity": 2 + (index % 3) * 2,
                # Two rows of three per section; a table's size follows its seats.
                "posX": 30 + 95 * ((index - 1) % 3),
                "posY": 30 + 90 * (((index - 1) % 6) // 3),
                "width": {2: 30, 4: 40, 6: 64}[2 + (index % 3) * 2],
                "height": {2: 30, 4: 40, 6: 40}[2 + (index % 3) * 2],
                "tableImageId": None,
                "chairImageId": None,
                "status": "AVAILABLE",
                "isAvailable": True,
                "createdAt": _STAMP,
                "updatedAt": _STAMP,
            }
        )
    return {
        "restaurants": [
            {
                "id": DEMO_RESTAURANT,
                "name": "La Mesa",
                "description": "Demo restaurant",
                "location": {"city": "Quito", "country": "Ecuador", "address": "Av. Amazonas 1"},
                "openTime": "12:00",
                "closeTime": "23:00",
                "daysOpen": ["MONDAY", "FRIDAY", "SATURDAY"],
                "totalCapacity": 48,
                "status": "ACTIVE",
                "active": True,
                "ownerId": "owner-1",
                "createdAt": _STAMP,
                "updatedAt": _STAMP,
            },
            {
                "id": "rest-2",
                "name": "El Patio",
                "description": "Second demo restaurant",
                "status": "ACTIVE",
                "active": True,
                "ownerId": "owner-2",
                "createdAt": _STAMP,
                "updatedAt": _STAMP,
            },
        ],
        "sections": [
            {"id": s, "restaurantId": DEMO_RESTAURANT, "name": s.replace("-", " ").title()}
            for s in DEMO_SECTIONS
        ],
        "tables": tables,
        "reservations": [
            {
                "id": f"res-{i}",
                "restaurantId": DEMO_RESTAURANT,
                "userId": f"user-{i}",
                "tableId": f"table-{i}",
                "reservationDate": "2026-02-14",
                "reservationTime": "20:00",
                "numberOfGuests": 2,
                "status": "CONFIRMED",
                "createdAt": _STAMP,
                "updatedAt": _STAMP,
            }
            for i in range(1, 4)
        ],
        "reviews": [
            {
                "id": "review-1",
                "restaurantId": DEMO_RESTAURANT,
                "userId": "user-1",
                "rating": 5,
                "comment": "Great",
            },
        ],
        "objects": [{"id": "object-1", "name": "Plant", "width": 20, "height": 20}],
        "section-objects": [
            {"id": "so-1", "sectionId": "main-hall", "objectId": "object-1", "posX": 10, "posY": 10}
        ],
        "menus": [{"id": "menu-1", "menuId": "menu-1", "restaurantId": DEMO_RESTAURANT, "name": "Dinner"}],
        "dishes": [
            {
                "id": "dish-1",
                "dishId": "dish-1",
                "restaurantId": DEMO_RESTAURANT,
                "menuId": "menu-1",
                "name": "Locro",
                "price": 6.5,
            },
        ],
        "images": [{"id": "image-1", "entityId": DEMO_RESTAURANT, "url": "https://example.invalid/1.jpg"}],
        "payments": [
            {
                "id": "pay-1",
                "paymentId": "pay-1",
                "reservationId": "res-1",
                "restaurantId": DEMO_RESTAURANT,
                "userId": "user-1",
                "amount": 12.5,
                "status": "COMPLETED",
            }
        ],
        "subscriptions": [
            {"id": "sub-1", "restaurantId": DEMO_RESTAURANT, "planId": "plan-1", "state": "ACTIVE"}
        ],
        "subscription-plans": [{"id": "plan-1", "name": "Basic", "price": 10}],
        "users": [{"id": "user-1", "email": "ana@example.invalid", "roles": ["USER"]}],
        "owner-upgrades": [{"id": "upgrade-1", "userId": "user-2", "status": "PENDING"}],
    }


def _page(rows: list[dict[str, Any]], query: Any) -> dict[str, Any]:
    try:
        page = max(1, int(query.get("page", "1")))
        limit = max(1, int(query.get("limit", "20")))
    except ValueError:
        page, limit = 1, 20
    for key, value in query.items():
        if key in ("page", "limit", "q", "sortBy", "sortOrder"):
            continue
        rows = [row for row in rows if str(row.get(key, value)) == value]
    search = query.get("q", "").lower()
    if search:
        rows = [row for row in rows if search in orjson.dumps(row).decode().lower()]
    total = len(rows)
    chunk = rows[(page - 1) * limit : page * limit]
    pages = max(1, -(-total // limit))
    return {
        "data": chunk,
        "pagination": {
            "page": page,
            "pageSize": limit,
            "totalItems": total,
            "totalPages": pages,
            "hasNext": page < pages,
            "hasPrev": page > 1,
            "offset": (page - 1) * limit,
        },
    }


def create_demo_upstream(data: dict[str, list[dict[str, Any]]] | None = None) -> web.Application:
    """An aiohttp app that serves ``/api/v1/<resource>[/<id>]`` from fixtures."""
    rows = data if data is not None else fixtures()

    def respond(body: object, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    async def list_rows(request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        if resource not in rows:
            return respond({"message": "Not Found"}, 404)
        return respond(_page(rows[resource], request.query))

    async def detail(request: web.Request) -> web.Response:
        resource, ident = request.match_info["resource"], request.match_info["id"]
        if resource == "restaurants" and ident == "me":
            return respond(_page(_owned(request), request.query))
        for row in rows.get(resource, []):
            if row.get("id") == ident:
                return respond({"data": row})
        return respond({"message": "Not Found"}, 404)

    def _owned(request: web.Request) -> list[dict[str, Any]]:
        """The restaurants of the token's ``sub`` (``ownerId``, plus :data:`OWNERS`)."""
        subject = _subject(request)
        if not subject:
            return []
        owned = [row for row in rows["restaurants"] if row.get("ownerId") == subject]
        known = {row["id"] for row in owned}
        extra = app[OWNERS].get(subject, ())
        owned += [{"id": ident, "ownerId": subject} for ident in extra if ident not in known]
        return owned

    async def tables_of_section(request: web.Request) -> web.Response:
        section = request.match_info["section"]
        return respond(_page([t for t in rows["tables"] if t["sectionId"] == section], request.query))

    async def analytics(request: web.Request) -> web.Response:
        """``/api/v1/<resource>/analytics`` (and reviews' ``/analytics/stats``): counts of the
        fixtures, with the query it was asked with (docs/WEBSOCKET_ENDPOINTS.md "Analytics")."""
        resource = request.match_info["resource"]
        found = rows.get(resource, [])
        restaurant = request.query.get("restaurantId")
        if restaurant:
            found = [row for row in found if row.get("restaurantId", restaurant) == restaurant]
        body = {"resource": resource, "total": len(found), "query": dict(sorted(request.query.items()))}
        return respond({"data": body})

    app = web.Application()
    app[ROWS] = rows
    app[OWNERS] = {}
    app.router.add_get("/api/v1/{resource}/analytics", analytics)
    app.router.add_get("/api/v1/{resource}/analytics/stats", analytics)
    app.router.add_get("/api/v1/tables/section/{section}", tables_of_section)
    app.router.add_get("/api/v1/{resource}", list_rows)
    app.router.add_get("/api/v1/{resource}/{id}", detail)
    return app


class DemoEventSource:
    """Every few seconds, a table changes status: a backend-shaped ``tables.updated`` event."""

    def __init__(
        self,
        on_batch: Callable[[list[Record]], None],
        upstream_rows: dict[str, list[dict[str, Any]]],
        interval: float = 3.0,
    ) -> None:
        self._on_batch = on_batch
        self._rows = upstream_rows
        self._interval = interval
        self._offsets = itertools.count()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def status(self) -> dict[str, object]:
        return {"ready": True, "source": "demo"}

    async def _run(self) -> None:
        randomizer = random.Random(7)
        while True:
            await asyncio.sleep(self._interval)
            table = randomizer.choice(self._rows["tables"])
            status = "OCCUPIED" if table["status"] == "AVAILABLE" else "AVAILABLE"
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            table.update(status=status, isAvailable=status == "AVAILABLE", updatedAt=now)
            value = orjson.dumps(
                {"timestamp": now, "event_type": "updated", "entity_id": table["id"], "data": table}
            )
            self._on_batch([Record("mesa-ya.tables.events", 0, next(self._offsets), value)])
