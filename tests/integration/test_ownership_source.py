"""RestOwnershipSource against a real HTTP server on loopback: pagination to the end, the
token forwarded, and every failure mapped (refused -> owns nothing, down -> unavailable)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from mesaya_realtime.domain.errors import OwnershipUnavailable
from mesaya_realtime.infrastructure.ownership_client import RestOwnershipSource
from mesaya_realtime.infrastructure.rest_client import RestSnapshotClient
from tests.support import ThreadedServer


class Backend:
    """``/api/v1/restaurants/me`` with a scripted answer per token."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.owned: dict[str, list[Any]] = {}
        self.status: int = 200
        self.body: bytes | None = None
        self.delay = 0.0
        self.ignore_page = False
        app = web.Application()
        app.router.add_get("/api/v1/restaurants/me", self.me)
        self.server = ThreadedServer(app)

    async def me(self, request: web.Request) -> web.Response:
        self.requests.append({"query": dict(request.query), "auth": request.headers.get("Authorization")})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200 or self.body is not None:
            return web.Response(status=self.status, body=self.body or b'{"message":"no"}')
        token = request.headers.get("Authorization", "")[7:]
        rows = self.owned.get(token, [])
        page = 1 if self.ignore_page else int(request.query["page"])
        limit = int(request.query["limit"])
        chunk = rows[(page - 1) * limit : page * limit]
        pages = max(1, -(-len(rows) // limit))
        body = {
            "data": chunk,
            "pagination": {"page": page, "totalPages": pages, "hasNext": page < pages},
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend()
    yield server
    server.server.stop()


def source_for(backend: Backend, timeout: float = 5.0, **kwargs: int) -> tuple[RestOwnershipSource, Any]:
    client = RestSnapshotClient(backend.server.url, timeout=timeout)
    return RestOwnershipSource(client, **kwargs), client


async def test_every_page_is_read_with_the_owners_own_token(backend: Backend) -> None:
    backend.owned["tok-a"] = [{"id": f"r-{index}", "name": "x"} for index in range(250)]
    source, client = source_for(backend, page_size=100)
    try:
        owned = await source.owned_restaurants("tok-a")
    finally:
        await client.close()
    assert owned == frozenset(f"r-{index}" for index in range(250))
    assert [r["query"] for r in backend.requests] == [
        {"page": "1", "limit": "100"},
        {"page": "2", "limit": "100"},
        {"page": "3", "limit": "100"},
    ]
    assert {r["auth"] for r in backend.requests} == {"Bearer tok-a"}


async def test_numeric_ids_and_odd_rows(backend: Backend) -> None:
    backend.owned["tok"] = [{"id": 7}, {"restaurantId": "r-2"}, {"name": "no id"}, "junk", {"id": True}]
    source, client = source_for(backend)
    try:
        assert await source.owned_restaurants("tok") == frozenset({"7", "r-2"})
    finally:
        await client.close()


async def test_an_owner_of_nothing(backend: Backend) -> None:
    source, client = source_for(backend)
    try:
        assert await source.owned_restaurants("nobody") == frozenset()
    finally:
        await client.close()


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refused_or_missing_list_owns_nothing(backend: Backend, status: int) -> None:
    backend.status = status
    source, client = source_for(backend)
    try:
        assert await source.owned_restaurants("tok") == frozenset()
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, None),
        (502, None),
        (429, None),
        (200, b"not json"),
        (200, b'{"data":{"id":"r"}}'),
        (200, b'"text"'),
    ],
)
async def test_no_usable_answer_is_unavailable(backend: Backend, status: int, body: bytes | None) -> None:
    backend.status, backend.body = status, body
    source, client = source_for(backend)
    try:
        with pytest.raises(OwnershipUnavailable):
            await source.owned_restaurants("tok")
    finally:
        await client.close()


async def test_a_timeout_is_unavailable(backend: Backend) -> None:
    backend.delay = 2.0
    source, client = source_for(backend, timeout=0.3)
    try:
        with pytest.raises(OwnershipUnavailable):
            await source.owned_restaurants("tok")
    finally:
        await client.close()


async def test_a_backend_down_is_unavailable() -> None:
    client = RestSnapshotClient("http://127.0.0.1:1", timeout=2.0)
    try:
        with pytest.raises(OwnershipUnavailable):
            await RestOwnershipSource(client).owned_restaurants("tok")
    finally:
        await client.close()


async def test_a_backend_that_ignores_the_page_cannot_loop_forever(backend: Backend) -> None:
    backend.owned["tok"] = [{"id": f"r-{index}"} for index in range(20)]
    backend.ignore_page = True  # always page 1 with hasNext true
    source, client = source_for(backend, page_size=10, max_pages=5)
    try:
        owned = await source.owned_restaurants("tok")
    finally:
        await client.close()
    assert owned == frozenset(f"r-{index}" for index in range(10))
    assert len(backend.requests) == 5
