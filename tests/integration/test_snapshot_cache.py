"""SnapshotService + SnapshotCache + RestSnapshotClient against real HTTP servers on loopback.

The upstream call count is what the server saw, not what the cache says. Time is an injected
clock where a TTL matters, so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from mesaya_realtime.application.usecases.snapshot_cache import SnapshotCache
from mesaya_realtime.application.usecases.snapshots import SnapshotService
from mesaya_realtime.domain.catalogue import CATALOGUE, EntitySpec
from mesaya_realtime.domain.errors import (
    SnapshotForbidden,
    SnapshotNotFound,
    SnapshotRequestFailed,
    SnapshotUnexpectedStatus,
)
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.queries import ListQuery
from mesaya_realtime.infrastructure.rest_client import RestSnapshotClient
from tests.support import RecordingUpstream

API = "/api/v1"
TABLES = CATALOGUE.by_name["tables"]
RESERVATIONS = CATALOGUE.by_name["reservations"]
REVIEWS = CATALOGUE.by_name["reviews"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def principal(user: str, *roles: str) -> Principal:
    return Principal(user, roles or ("USER",), f"sid-{user}", f"token-of-{user}")


@dataclass
class Stack:
    service: SnapshotService
    cache: SnapshotCache
    client: RestSnapshotClient
    clock: Clock

    async def list(self, spec: EntitySpec, who: Principal, section: str = "S1", **payload: Any) -> Any:
        return await self.service.get_list(spec, who, section, ListQuery.from_payload(payload))

    async def detail(self, spec: EntitySpec, who: Principal, resource_id: str) -> Any:
        return await self.service.get_detail(spec, who, resource_id)


@pytest.fixture
async def make_stack() -> AsyncIterator[Callable[..., Stack]]:
    clients: list[RestSnapshotClient] = []

    def make(base_url: str, *, max_entries: int = 1000, ttl: float = 30.0, timeout: float = 10.0) -> Stack:
        clock = Clock()
        cache = SnapshotCache(max_entries=max_entries, ttl_seconds=ttl, clock=clock)
        client = RestSnapshotClient(base_url, timeout=timeout)
        clients.append(client)
        return Stack(SnapshotService(client, cache), cache, client, clock)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def stack(fresh_upstream: RecordingUpstream, make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(fresh_upstream.url)


# --- a server on the test's loop that can hold its answers --------------------------------------


@dataclass
class HoldingServer:
    """Counts requests per path, holds answers until :attr:`gate` is set, counts completions."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    paths: list[str] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)
    completed: int = 0
    aborted: int = 0
    status: int = 200
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        self.tokens.append(request.headers.get("Authorization"))
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.aborted += 1
            raise
        self.completed += 1
        number = len(self.paths)
        return web.json_response({"data": {"path": request.path, "answer": number}}, status=self.status)

    async def wait_for_requests(self, count: int) -> None:
        for _ in range(1000):
            if len(self.paths) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"server saw {len(self.paths)} requests, expected {count}")


@pytest.fixture
async def holding() -> AsyncIterator[HoldingServer]:
    server = HoldingServer()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    server.gate.set()
    await runner.cleanup()


async def settle() -> None:
    """Let every ready task run (callers join the flight in progress)."""
    for _ in range(20):
        await asyncio.sleep(0)


# --- hits and TTL ---------------------------------------------------------------------------------


async def test_a_cache_hit_makes_no_upstream_call(stack: Stack, fresh_upstream: RecordingUpstream) -> None:
    alice = principal("alice")
    first = await stack.list(TABLES, alice)
    for _ in range(10):
        assert await stack.list(TABLES, alice) == first
    assert len(fresh_upstream.calls(f"{API}/tables")) == 1
    detail = await stack.detail(TABLES, alice, "table-1")
    assert await stack.detail(TABLES, alice, "table-1") == detail
    assert len(fresh_upstream.calls(f"{API}/tables/table-1")) == 1


async def test_different_queries_are_different_entries(
    stack: Stack, fresh_upstream: RecordingUpstream
) -> None:
    alice = principal("alice")
    await stack.list(REVIEWS, alice, page=1)
    await stack.list(REVIEWS, alice, page=2)
    await stack.list(REVIEWS, alice, page=1, search="good")
    await stack.list(REVIEWS, alice, page=1, filters={"rating": "5"})
    await stack.list(REVIEWS, alice, page=1, filters={"rating": "5"})
    assert [c["query_string"] for c in fresh_upstream.calls()] == [
        "page=1&limit=20",
        "page=2&limit=20",
        "page=1&limit=20&q=good",
        "page=1&limit=20&rating=5",
    ]


async def test_ttl_expiry_makes_a_new_call(stack: Stack, fresh_upstream: RecordingUpstream) -> None:
    alice = principal("alice")
    await stack.list(TABLES, alice)
    stack.clock.now += 29.0
    await stack.list(TABLES, alice)
    assert len(fresh_upstream.calls()) == 1
    stack.clock.now += 1.0
    await stack.list(TABLES, alice)
    assert len(fresh_upstream.calls()) == 2
    stack.clock.now += 10.0
    await stack.list(TABLES, alice)
    assert len(fresh_upstream.calls()) == 2


async def test_a_short_real_ttl_expires(
    fresh_upstream: RecordingUpstream, make_stack: Callable[..., Stack]
) -> None:
    # the default clock (time.monotonic), with a TTL short enough to pass in the test
    client = RestSnapshotClient(fresh_upstream.url, timeout=10)
    try:
        service = SnapshotService(client, SnapshotCache(max_entries=10, ttl_seconds=0.2))
        alice = principal("alice")
        await service.get_list(REVIEWS, alice, "S1", ListQuery())
        await asyncio.sleep(0.3)
        await service.get_list(REVIEWS, alice, "S1", ListQuery())
        assert len(fresh_upstream.calls()) == 2
    finally:
        await client.close()


# --- LRU bound ----------------------------------------------------------------------------------


async def test_the_lru_bound_evicts_the_least_recently_used(
    fresh_upstream: RecordingUpstream, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(fresh_upstream.url, max_entries=3)
    alice = principal("alice")
    for page in (1, 2, 3):
        await stack.list(REVIEWS, alice, page=page)
    await stack.list(REVIEWS, alice, page=1)  # page 1 is now the most recently used
    await stack.list(REVIEWS, alice, page=4)  # evicts page 2
    assert len(stack.cache) == 3
    pages = [c["query"]["page"] for c in fresh_upstream.calls()]
    assert pages == ["1", "2", "3", "4"]
    await stack.list(REVIEWS, alice, page=1)
    await stack.list(REVIEWS, alice, page=3)
    await stack.list(REVIEWS, alice, page=4)
    assert len(fresh_upstream.calls()) == 4
    await stack.list(REVIEWS, alice, page=2)  # evicted: a new call
    assert [c["query"]["page"] for c in fresh_upstream.calls()] == ["1", "2", "3", "4", "2"]
    assert len(stack.cache) == 3


async def test_the_bound_holds_with_many_users(
    fresh_upstream: RecordingUpstream, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(fresh_upstream.url, max_entries=10)
    for n in range(40):
        await stack.list(RESERVATIONS, principal(f"user-{n}"))
    assert len(stack.cache) == 10
    assert len(fresh_upstream.calls()) == 40


# --- per-user separation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "roles"),
    [
        ("reservations", ("USER",)),
        ("reservations", ("OWNER",)),
        ("reservations", ("ADMIN",)),
        ("payments", ("OWNER",)),
        ("payments", ("ADMIN",)),
        ("subscriptions", ("OWNER",)),
        ("subscriptions", ("ADMIN",)),
        ("restaurants", ("OWNER",)),
        ("tables", ("OWNER",)),
        ("sections", ("OWNER",)),
    ],
)
async def test_per_user_answers_are_never_served_to_another_user(
    stack: Stack, fresh_upstream: RecordingUpstream, entity: str, roles: tuple[str, ...]
) -> None:
    spec = CATALOGUE.by_name[entity]
    alice, bob = principal("alice", *roles), principal("bob", *roles)
    _, request = stack.service.list_key(spec, alice, "S1", ListQuery())
    fresh_upstream.script(request.path, 200, {"data": [{"id": "row"}]})
    for who in (alice, bob, alice, bob, bob):
        await stack.list(spec, who)
    # each user reached the upstream once, with their own token; repeats were hits
    assert [c["authorization"] for c in fresh_upstream.calls()] == [
        "Bearer token-of-alice",
        "Bearer token-of-bob",
    ]
    fresh_upstream.reset()
    fresh_upstream.script(f"{API}/{spec.name}/x1", 200, {"data": {"id": "x1"}})
    for who in (alice, bob, alice, bob):
        await stack.detail(spec, who, "x1")
    assert [c["authorization"] for c in fresh_upstream.calls()] == [
        "Bearer token-of-alice",
        "Bearer token-of-bob",
    ]


async def test_per_user_list_answers_stay_with_their_user(
    fresh_upstream: RecordingUpstream, make_stack: Callable[..., Stack]
) -> None:
    # the upstream answers per token (as a real backend does for a USER's reservations)
    stack = make_stack(fresh_upstream.url)
    path = f"{API}/reservations"
    fresh_upstream.script(path, 200, {"data": [{"id": "r-alice"}]})
    alice_view = await stack.list(RESERVATIONS, principal("alice"))
    fresh_upstream.script(path, 200, {"data": [{"id": "r-bob"}]})
    bob_view = await stack.list(RESERVATIONS, principal("bob"))
    assert alice_view == {"data": [{"id": "r-alice"}]}
    assert bob_view == {"data": [{"id": "r-bob"}]}
    assert await stack.list(RESERVATIONS, principal("alice")) == alice_view


async def test_shared_answers_are_shared_within_the_audience_only(
    stack: Stack, fresh_upstream: RecordingUpstream
) -> None:
    users = [principal(f"user-{n}") for n in range(5)]
    for who in users:
        await stack.list(TABLES, who, section="S1")
    assert len(fresh_upstream.calls()) == 1
    await stack.list(TABLES, principal("root", "ADMIN"), section="S1")
    await stack.list(TABLES, principal("root2", "ADMIN"), section="S1")
    assert len(fresh_upstream.calls()) == 2
    # another section is another request
    await stack.list(TABLES, users[0], section="S2")
    assert [c["query"].get("sectionId") for c in fresh_upstream.calls()] == ["S1", "S1", "S2"]


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, SnapshotForbidden), (403, SnapshotForbidden), (500, SnapshotUnexpectedStatus)],
)
async def test_errors_are_not_cached(
    stack: Stack, fresh_upstream: RecordingUpstream, status: int, error: type[Exception]
) -> None:
    alice = principal("alice")
    fresh_upstream.script(f"{API}/tables", status)
    for _ in range(3):
        with pytest.raises(error):
            await stack.list(TABLES, alice)
    assert len(fresh_upstream.calls()) == 3
    assert len(stack.cache) == 0
    fresh_upstream.scripts.clear()
    assert "pagination" in await stack.list(TABLES, alice)
    assert len(fresh_upstream.calls()) == 4


async def test_a_timeout_is_not_cached(
    fresh_upstream: RecordingUpstream, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(fresh_upstream.url, timeout=1.0)
    fresh_upstream.script(f"{API}/reviews", 200, {"data": []}, delay=6.0)
    with pytest.raises(SnapshotRequestFailed) as caught:
        await stack.list(REVIEWS, principal("alice"))
    assert caught.value.reason == "snapshot request failed: upstream timeout"
    fresh_upstream.scripts.clear()
    assert await stack.list(REVIEWS, principal("alice"))
    assert len(stack.cache) == 1


async def test_a_404_drops_the_entry(stack: Stack, fresh_upstream: RecordingUpstream) -> None:
    alice = principal("alice")
    key, _ = stack.service.detail_key(TABLES, alice, "table-1")
    await stack.detail(TABLES, alice, "table-1")
    assert key in stack.cache
    # the table is deleted upstream; the next fetch of the entry (a refresh) gets a 404
    fresh_upstream.script(f"{API}/tables/table-1", 404)
    with pytest.raises(SnapshotNotFound):
        await stack.cache.refetch(key, lambda: stack.client.fetch(_detail_request("table-1"), alice.token))
    assert key not in stack.cache
    # and after expiry, a 404 leaves nothing behind either
    fresh_upstream.scripts.clear()
    await stack.detail(TABLES, alice, "table-1")
    stack.clock.now += 60
    fresh_upstream.script(f"{API}/tables/table-1", 404)
    with pytest.raises(SnapshotNotFound):
        await stack.detail(TABLES, alice, "table-1")
    assert len(stack.cache) == 0


def _detail_request(resource_id: str) -> Any:
    from mesaya_realtime.domain.snapshots import plan_detail

    return plan_detail(TABLES, "user", resource_id)


# --- single-flight --------------------------------------------------------------------------------


async def test_one_hundred_concurrent_identical_requests_make_one_upstream_call(
    stack: Stack, fresh_upstream: RecordingUpstream
) -> None:
    fresh_upstream.script(f"{API}/tables", 200, {"data": [{"id": "t"}]}, delay=0.5)
    users = [principal(f"user-{n}") for n in range(100)]  # shared entry: same audience
    results = await asyncio.gather(*(stack.list(TABLES, who) for who in users))
    assert len(fresh_upstream.calls()) == 1
    assert results == [{"data": [{"id": "t"}]}] * 100


async def test_single_flight_with_a_held_answer(
    holding: HoldingServer, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(holding.url)
    alice = principal("alice")
    tasks = [asyncio.create_task(stack.detail(RESERVATIONS, alice, "r1")) for _ in range(100)]
    await holding.wait_for_requests(1)
    await settle()
    assert stack.cache.inflight() == 1
    holding.gate.set()
    results = await asyncio.gather(*tasks)
    assert holding.paths == [f"{API}/reservations/r1"]
    assert results == [{"path": f"{API}/reservations/r1", "answer": 1}] * 100
    # and the answer is now cached
    await stack.detail(RESERVATIONS, alice, "r1")
    assert len(holding.paths) == 1


async def test_single_flight_shares_an_error_and_does_not_keep_it(
    holding: HoldingServer, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(holding.url)
    holding.status = 503
    tasks = [asyncio.create_task(stack.list(REVIEWS, principal("alice"))) for _ in range(20)]
    await holding.wait_for_requests(1)
    await settle()
    holding.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert {str(r) for r in results} == {"unexpected snapshot response 503"}
    assert len(holding.paths) == 1
    holding.status = 200
    await stack.list(REVIEWS, principal("alice"))
    assert len(holding.paths) == 2


async def test_per_user_requests_are_not_merged_across_users(
    holding: HoldingServer, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(holding.url)
    tasks = [asyncio.create_task(stack.list(RESERVATIONS, principal(f"user-{n % 3}"))) for n in range(30)]
    await holding.wait_for_requests(3)
    await settle()
    holding.gate.set()
    await asyncio.gather(*tasks)
    assert len(holding.paths) == 3
    assert sorted(str(token) for token in holding.tokens) == [f"Bearer token-of-user-{n}" for n in range(3)]


async def test_a_cancelled_caller_does_not_cancel_the_shared_call(
    holding: HoldingServer, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(holding.url)
    tasks = [asyncio.create_task(stack.list(TABLES, principal(f"u{n}"))) for n in range(10)]
    await holding.wait_for_requests(1)
    await settle()
    tasks[0].cancel()  # the caller that started the call goes away
    tasks[5].cancel()
    await settle()
    holding.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[5], asyncio.CancelledError)
    answers = [r for n, r in enumerate(results) if n not in (0, 5)]
    assert answers == [{"path": f"{API}/tables", "answer": 1}] * 8
    assert len(holding.paths) == 1
    assert holding.completed == 1
    assert holding.aborted == 0
    await stack.list(TABLES, principal("late"))
    assert len(holding.paths) == 1


async def test_an_invalidate_during_the_call_keeps_the_stale_answer_out(
    holding: HoldingServer, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(holding.url)
    early = asyncio.create_task(stack.list(TABLES, principal("alice")))
    await holding.wait_for_requests(1)
    stack.cache.invalidate("tables", "table-1")  # an event arrives while the call is out
    late = asyncio.create_task(stack.list(TABLES, principal("bob")))
    await holding.wait_for_requests(2)  # bob did not join the stale call
    holding.gate.set()
    assert (await early)["answer"] in (1, 2)
    assert (await late)["answer"] in (1, 2)
    kept = await stack.list(TABLES, principal("carol"))
    assert len(holding.paths) == 2
    assert kept == await late


# --- invalidation -------------------------------------------------------------------------------


async def test_invalidate_by_entity_and_id_drops_the_right_entries(
    stack: Stack, fresh_upstream: RecordingUpstream
) -> None:
    alice = principal("alice")

    async def touch_all() -> None:
        await stack.list(TABLES, alice, section="S1")
        await stack.list(TABLES, alice, section="S2")
        await stack.detail(TABLES, alice, "table-1")
        await stack.detail(TABLES, alice, "table-2")
        await stack.list(REVIEWS, alice)
        await stack.detail(REVIEWS, alice, "review-1")

    def paths() -> list[str]:
        return [
            c["path"] + ("?" + c["query_string"] if c["query_string"] else "") for c in fresh_upstream.calls()
        ]

    await touch_all()
    assert len(fresh_upstream.calls()) == 6
    fresh_upstream.reset()

    stack.cache.invalidate("tables", "table-1")
    await touch_all()
    assert paths() == [
        f"{API}/tables?page=1&limit=20&sectionId=S1",
        f"{API}/tables?page=1&limit=20&sectionId=S2",
        f"{API}/tables/table-1",
    ]
    fresh_upstream.reset()

    stack.cache.invalidate("tables", "table-9", sections=["S2"])
    await touch_all()
    assert paths() == [f"{API}/tables?page=1&limit=20&sectionId=S2"]
    fresh_upstream.reset()

    stack.cache.invalidate("reviews")
    await touch_all()
    assert paths() == [f"{API}/reviews?page=1&limit=20", f"{API}/reviews/review-1"]
    fresh_upstream.reset()

    stack.cache.invalidate("tables")
    await touch_all()
    assert len(paths()) == 4
    assert all(p.startswith(f"{API}/tables") for p in paths())
