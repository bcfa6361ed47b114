"""SnapshotCache and SnapshotService with in-memory fetchers and an injected clock.

Covers reference §7.5 with the defects of §13.5 fixed: TTL, LRU bound, per-user entries,
single-flight, errors not cached, 404 drops the entry, indexed invalidation.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mesaya_realtime.application.ports.metrics import NullMetrics
from mesaya_realtime.application.usecases.snapshot_cache import CacheKey, SnapshotCache
from mesaya_realtime.application.usecases.snapshots import SnapshotService
from mesaya_realtime.domain.catalogue import CATALOGUE
from mesaya_realtime.domain.errors import (
    SnapshotForbidden,
    SnapshotNotFound,
    SnapshotRequestFailed,
)
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.queries import ListQuery
from mesaya_realtime.domain.snapshots import SnapshotRequest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingMetrics(NullMetrics):
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def cache(self, outcome: str) -> None:
        self.counts[outcome] += 1


def list_key(entity: str = "tables", section: str = "", partition: str = "", page: int = 1) -> CacheKey:
    params: tuple[tuple[str, str], ...] = (("page", str(page)), ("limit", "20"))
    if section:
        params += (("sectionId", section),)
    return CacheKey(entity, "list", "user", partition, f"/api/v1/{entity}", params, section=section)


def item_key(entity: str = "tables", resource_id: str = "t1", partition: str = "") -> CacheKey:
    return CacheKey(
        entity, "item", "user", partition, f"/api/v1/{entity}/{resource_id}", (), resource_id=resource_id
    )


class Upstream:
    """A fetch factory that counts calls, can hold answers until released, or fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.error: BaseException | None = None
        self.answers: list[Any] = []

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()

    def fetch(self, value: Any = None) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            self.calls += 1
            self.started.set()
            if self.gate is not None:
                await self.gate.wait()
            if self.error is not None:
                raise self.error
            answer = value if value is not None else {"call": self.calls}
            self.answers.append(answer)
            return answer

        return run


def make_cache(**kwargs: Any) -> tuple[SnapshotCache, Clock]:
    clock = Clock()
    options: dict[str, Any] = {"max_entries": 100, "ttl_seconds": 30.0, "clock": clock}
    options.update(kwargs)
    return SnapshotCache(**options), clock


# --- hits, TTL, LRU ---------------------------------------------------------------------------


async def test_a_hit_makes_no_upstream_call() -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    first = await cache.get_or_fetch(list_key(), upstream.fetch())
    second = await cache.get_or_fetch(list_key(), upstream.fetch())
    assert first == second == {"call": 1}
    assert upstream.calls == 1
    assert len(cache) == 1


async def test_an_entry_expires_after_the_ttl() -> None:
    cache, clock = make_cache(ttl_seconds=30.0)
    upstream = Upstream()
    await cache.get_or_fetch(list_key(), upstream.fetch())
    clock.now += 29.9
    assert await cache.get_or_fetch(list_key(), upstream.fetch()) == {"call": 1}
    clock.now += 0.1
    assert await cache.get_or_fetch(list_key(), upstream.fetch()) == {"call": 2}
    assert upstream.calls == 2
    # the fresh answer gets a fresh TTL
    clock.now += 29.0
    assert await cache.get_or_fetch(list_key(), upstream.fetch()) == {"call": 2}


async def test_a_hit_does_not_extend_the_ttl() -> None:
    cache, clock = make_cache(ttl_seconds=10.0)
    upstream = Upstream()
    await cache.get_or_fetch(list_key(), upstream.fetch())
    for _ in range(9):
        clock.now += 1
        await cache.get_or_fetch(list_key(), upstream.fetch())
    clock.now += 1
    await cache.get_or_fetch(list_key(), upstream.fetch())
    assert upstream.calls == 2


async def test_peek_drops_an_expired_entry() -> None:
    cache, clock = make_cache(ttl_seconds=5.0)
    await cache.get_or_fetch(list_key(), Upstream().fetch())
    assert cache.peek(list_key()) == {"call": 1}
    clock.now += 5
    assert cache.peek(list_key()) is None
    assert len(cache) == 0
    assert cache.invalidate("tables") == []


async def test_the_lru_bound_evicts_the_least_recently_used() -> None:
    metrics = CountingMetrics()
    cache, _ = make_cache(max_entries=3, metrics=metrics)
    upstream = Upstream()
    a, b, c, d = (list_key(page=n) for n in range(1, 5))
    for key in (a, b, c):
        await cache.get_or_fetch(key, upstream.fetch())
    await cache.get_or_fetch(a, upstream.fetch())  # a is now the most recently used
    await cache.get_or_fetch(d, upstream.fetch())  # evicts b
    assert len(cache) == 3
    assert cache.keys() == [c, a, d]
    assert b not in cache
    assert metrics.counts["evicted"] == 1
    calls = upstream.calls
    await cache.get_or_fetch(b, upstream.fetch())
    assert upstream.calls == calls + 1  # b had to be fetched again (and evicted c)
    assert c not in cache
    # evicted keys are gone from the invalidation index too
    assert set(cache.invalidate("tables")) == {a, d, b}
    assert len(cache) == 0


async def test_the_bound_holds_under_many_keys() -> None:
    cache, _ = make_cache(max_entries=50)
    upstream = Upstream()
    for n in range(500):
        await cache.get_or_fetch(list_key(page=n), upstream.fetch())
    assert len(cache) == 50
    assert cache.keys() == [list_key(page=n) for n in range(450, 500)]
    assert len(cache.invalidate("tables")) == 50


async def test_a_ttl_of_zero_stores_nothing_but_still_shares_calls() -> None:
    cache, _ = make_cache(ttl_seconds=0.0)
    upstream = Upstream()
    upstream.hold()
    tasks = [asyncio.create_task(cache.get_or_fetch(list_key(), upstream.fetch())) for _ in range(5)]
    await upstream.started.wait()
    upstream.release()
    assert await asyncio.gather(*tasks) == [{"call": 1}] * 5
    assert len(cache) == 0
    await cache.get_or_fetch(list_key(), upstream.fetch())
    assert upstream.calls == 2


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [SnapshotForbidden(), SnapshotNotFound(), SnapshotRequestFailed("upstream timeout")],
)
async def test_errors_are_not_cached(error: Exception) -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    upstream.error = error
    with pytest.raises(type(error)):
        await cache.get_or_fetch(list_key(), upstream.fetch())
    assert len(cache) == 0
    upstream.error = None
    assert await cache.get_or_fetch(list_key(), upstream.fetch()) == {"call": 2}


async def test_a_failing_refetch_keeps_the_entry_but_a_404_drops_it() -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    await cache.get_or_fetch(item_key(), upstream.fetch())
    upstream.error = SnapshotForbidden()
    with pytest.raises(SnapshotForbidden):
        await cache.refetch(item_key(), upstream.fetch())
    # refetch drops the old value before calling; an error does not bring it back
    assert item_key() not in cache
    upstream.error = None
    await cache.refetch(item_key(), upstream.fetch())
    assert item_key() in cache
    upstream.error = SnapshotNotFound()
    with pytest.raises(SnapshotNotFound):
        await cache.refetch(item_key(), upstream.fetch())
    assert item_key() not in cache
    assert cache.invalidate("tables") == []


async def test_a_404_on_a_miss_leaves_nothing_behind() -> None:
    cache, clock = make_cache(ttl_seconds=5)
    upstream = Upstream()
    await cache.get_or_fetch(item_key(), upstream.fetch())
    clock.now += 10
    upstream.error = SnapshotNotFound()
    with pytest.raises(SnapshotNotFound):
        await cache.get_or_fetch(item_key(), upstream.fetch())
    assert len(cache) == 0
    assert cache.inflight() == 0


# --- single-flight ----------------------------------------------------------------------------


async def test_one_hundred_concurrent_identical_requests_make_one_call() -> None:
    metrics = CountingMetrics()
    cache, _ = make_cache(metrics=metrics)
    upstream = Upstream()
    upstream.hold()
    tasks = [asyncio.create_task(cache.get_or_fetch(list_key(), upstream.fetch())) for _ in range(100)]
    await upstream.started.wait()
    await asyncio.sleep(0)
    assert cache.inflight() == 1
    upstream.release()
    results = await asyncio.gather(*tasks)
    assert upstream.calls == 1
    assert results == [{"call": 1}] * 100
    assert all(result is results[0] for result in results)
    assert metrics.counts["miss"] == 1
    assert metrics.counts["joined"] == 99
    assert cache.inflight() == 0
    assert await cache.get_or_fetch(list_key(), upstream.fetch()) == {"call": 1}
    assert metrics.counts["hit"] == 1


async def test_different_keys_do_not_share_a_call() -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    upstream.hold()
    tasks = [
        asyncio.create_task(cache.get_or_fetch(list_key(page=n % 4), upstream.fetch())) for n in range(40)
    ]
    await asyncio.sleep(0.01)
    upstream.release()
    await asyncio.gather(*tasks)
    assert upstream.calls == 4


async def test_an_error_reaches_every_waiting_caller_and_is_not_stored() -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    upstream.hold()
    upstream.error = SnapshotRequestFailed("upstream timeout")
    tasks = [asyncio.create_task(cache.get_or_fetch(list_key(), upstream.fetch())) for _ in range(10)]
    await upstream.started.wait()
    upstream.release()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert upstream.calls == 1
    assert all(isinstance(r, SnapshotRequestFailed) for r in results)
    assert {str(r) for r in results} == {"snapshot request failed: upstream timeout"}
    assert len(cache) == 0
    assert cache.inflight() == 0


async def test_a_cancelled_caller_does_not_cancel_the_shared_call() -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    upstream.hold()
    first = asyncio.create_task(cache.get_or_fetch(list_key(), upstream.fetch()))
    others = [asyncio.create_task(cache.get_or_fetch(list_key(), upstream.fetch())) for _ in range(5)]
    await upstream.started.wait()
    first.cancel()
    others[0].cancel()
    await asyncio.sleep(0)
    upstream.release()
    results = await asyncio.gather(*others[1:])
    assert results == [{"call": 1}] * 4
    assert first.cancelled()
    assert others[0].cancelled()
    assert upstream.calls == 1
    assert cache.peek(list_key()) == {"call": 1}


async def test_when_every_caller_is_cancelled_the_call_still_lands_quietly() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        cache, _ = make_cache()
        upstream = Upstream()
        upstream.hold()
        upstream.error = SnapshotForbidden()
        tasks = [asyncio.create_task(cache.get_or_fetch(item_key(), upstream.fetch())) for _ in range(3)]
        await upstream.started.wait()
        for waiting in tasks:
            waiting.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        upstream.release()
        for _ in range(5):
            await asyncio.sleep(0)
        assert cache.inflight() == 0
        # the error's traceback holds the call's frame: drop every reference, then collect
        upstream.error = None
        del tasks, waiting
        gc.collect()
        await asyncio.sleep(0)
        assert reported == []
        # and a good answer that nobody waited for is still stored
        upstream.hold()
        task = asyncio.create_task(cache.get_or_fetch(item_key(), upstream.fetch()))
        await asyncio.sleep(0.01)
        task.cancel()
        upstream.release()
        for _ in range(5):
            await asyncio.sleep(0)
        assert cache.peek(item_key()) == {"call": 2}
    finally:
        loop.set_exception_handler(None)


# --- invalidation -----------------------------------------------------------------------------


async def test_an_invalidate_during_a_call_keeps_the_stale_answer_out() -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    upstream.hold()
    before = asyncio.create_task(cache.get_or_fetch(list_key(), upstream.fetch({"v": "stale"})))
    await upstream.started.wait()
    assert cache.invalidate("tables") == []
    # a caller after the invalidation does not join the stale call: it makes a new one
    held, upstream.gate = upstream.gate, None
    after = await cache.get_or_fetch(list_key(), upstream.fetch({"v": "fresh"}))
    assert after == {"v": "fresh"}
    assert upstream.calls == 2
    # the old call lands later: its caller gets it, the cache keeps the newer answer
    assert held is not None
    held.set()
    assert await before == {"v": "stale"}
    assert cache.peek(list_key()) == {"v": "fresh"}


async def test_a_stale_call_landing_does_not_detach_the_new_call() -> None:
    cache, _ = make_cache()
    old_gate, new_gate = asyncio.Event(), asyncio.Event()
    calls = 0

    def fetch(gate: asyncio.Event, value: str) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            nonlocal calls
            calls += 1
            await gate.wait()
            return {"v": value}

        return run

    old = asyncio.create_task(cache.get_or_fetch(item_key(), fetch(old_gate, "old")))
    await asyncio.sleep(0)
    cache.invalidate("tables", "t1")
    new = asyncio.create_task(cache.get_or_fetch(item_key(), fetch(new_gate, "new")))
    await asyncio.sleep(0)
    old_gate.set()
    assert await old == {"v": "old"}
    # the new call is still registered: a third caller joins it instead of calling again
    joiner = asyncio.create_task(cache.get_or_fetch(item_key(), fetch(new_gate, "third")))
    await asyncio.sleep(0)
    new_gate.set()
    assert await new == await joiner == {"v": "new"}
    assert calls == 2
    assert cache.peek(item_key()) == {"v": "new"}


async def test_an_invalidate_of_another_id_or_entity_does_not_touch_a_call() -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    upstream.hold()
    task = asyncio.create_task(cache.get_or_fetch(item_key(resource_id="t1"), upstream.fetch()))
    await upstream.started.wait()
    cache.invalidate("tables", "t2")
    cache.invalidate("reviews")
    upstream.release()
    await task
    assert cache.peek(item_key(resource_id="t1")) == {"call": 1}


async def test_a_404_of_a_stale_call_does_not_drop_the_newer_entry() -> None:
    cache, _ = make_cache()
    gate = asyncio.Event()

    async def gone() -> Any:
        await gate.wait()
        raise SnapshotNotFound()

    old = asyncio.create_task(cache.get_or_fetch(item_key(), gone))
    await asyncio.sleep(0)
    cache.invalidate("tables", "t1")
    await cache.get_or_fetch(item_key(), Upstream().fetch({"v": "new"}))
    gate.set()
    with pytest.raises(SnapshotNotFound):
        await old
    assert cache.peek(item_key()) == {"v": "new"}


async def _fill(cache: SnapshotCache, *keys: CacheKey) -> None:
    upstream = Upstream()
    for key in keys:
        await cache.get_or_fetch(key, upstream.fetch())


async def test_invalidate_an_entity_drops_its_lists_and_details_only() -> None:
    cache, _ = make_cache()
    tables = [list_key(), list_key(section="s1"), item_key(resource_id="t1"), item_key(resource_id="t2")]
    others = [list_key("reviews"), item_key("reviews", "t1")]
    await _fill(cache, *tables, *others)
    assert set(cache.invalidate("tables")) == set(tables)
    assert set(cache.keys()) == set(others)
    assert cache.invalidate("tables") == []
    assert cache.invalidate("unknown-entity") == []


async def test_invalidate_a_resource_drops_every_list_and_that_detail() -> None:
    cache, _ = make_cache()
    lists = [list_key(), list_key(section="s1"), list_key(partition="u1")]
    t1 = [item_key(resource_id="t1"), item_key(resource_id="t1", partition="u1")]
    t2 = item_key(resource_id="t2")
    await _fill(cache, *lists, *t1, t2)
    assert set(cache.invalidate("tables", "t1")) == {*lists, *t1}
    assert cache.keys() == [t2]


async def test_invalidate_by_section_keeps_the_lists_of_other_sections() -> None:
    cache, _ = make_cache()
    independent = list_key()
    s1 = [list_key(section="s1"), list_key(section="s1", page=2), list_key(section="s1", partition="u9")]
    s2 = list_key(section="s2")
    s3 = list_key(section="s3")
    detail = item_key(resource_id="t1")
    await _fill(cache, independent, *s1, s2, s3, detail)
    dropped = cache.invalidate("tables", "t1", sections=["s1", "s1"])
    # the section-independent list may hold the item too, so it goes
    assert sorted(dropped, key=repr) == sorted([independent, *s1, detail], key=repr)
    assert set(cache.keys()) == {s2, s3}
    assert set(cache.invalidate("tables", sections=("s2", "s3"))) == {s2, s3}


async def test_invalidate_with_no_sections_drops_only_section_independent_lists() -> None:
    cache, _ = make_cache()
    independent, s1 = list_key(), list_key(section="s1")
    await _fill(cache, independent, s1, item_key())
    assert cache.invalidate("tables", "other", sections=()) == [independent]
    assert set(cache.keys()) == {s1, item_key()}


async def test_invalidate_by_section_detaches_only_matching_calls() -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    upstream.hold()
    s1 = asyncio.create_task(cache.get_or_fetch(list_key(section="s1"), upstream.fetch()))
    s2 = asyncio.create_task(cache.get_or_fetch(list_key(section="s2"), upstream.fetch()))
    await asyncio.sleep(0.01)
    cache.invalidate("tables", sections=["s1"])
    upstream.release()
    await asyncio.gather(s1, s2)
    assert list_key(section="s1") not in cache
    assert list_key(section="s2") in cache


async def test_clear_detaches_calls_in_progress() -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    await _fill(cache, list_key(page=9))
    upstream.hold()
    task = asyncio.create_task(cache.get_or_fetch(list_key(), upstream.fetch()))
    await upstream.started.wait()
    cache.clear()
    assert len(cache) == 0
    assert cache.inflight() == 0
    upstream.release()
    await task
    assert len(cache) == 0


async def test_refetch_replaces_a_cached_value() -> None:
    cache, _ = make_cache()
    upstream = Upstream()
    await cache.get_or_fetch(list_key(), upstream.fetch())
    assert await cache.refetch(list_key(), upstream.fetch()) == {"call": 2}
    assert await cache.get_or_fetch(list_key(), upstream.fetch()) == {"call": 2}
    assert upstream.calls == 2


# --- SnapshotService: keys, per-user separation ------------------------------------------------


class RecordingFetcher:
    def __init__(self) -> None:
        self.calls: list[tuple[SnapshotRequest, str]] = []

    async def fetch(self, request: SnapshotRequest, token: str) -> Any:
        self.calls.append((request, token))
        await asyncio.sleep(0)
        return {"path": request.path, "token": token}


def principal(user: str, *roles: str) -> Principal:
    return Principal(user, roles or ("USER",), f"sid-{user}", f"token-{user}")


def service() -> tuple[SnapshotService, RecordingFetcher]:
    fetcher = RecordingFetcher()
    return SnapshotService(fetcher, SnapshotCache(max_entries=100, ttl_seconds=60)), fetcher


@pytest.mark.parametrize(
    ("entity", "roles"),
    [
        ("reservations", ("USER",)),
        ("reservations", ("ADMIN",)),
        ("reservations", ("OWNER",)),
        ("payments", ("OWNER",)),
        ("payments", ("ADMIN",)),
        ("subscriptions", ("OWNER",)),
        ("subscriptions", ("ADMIN",)),
        ("restaurants", ("OWNER",)),
        ("tables", ("OWNER",)),
        ("sections", ("OWNER",)),
    ],
)
async def test_answers_that_depend_on_the_user_are_never_shared(entity: str, roles: tuple[str, ...]) -> None:
    snapshots, fetcher = service()
    spec = CATALOGUE.by_name[entity]
    alice, bob = principal("alice", *roles), principal("bob", *roles)
    a = await snapshots.get_list(spec, alice, "s1", ListQuery())
    b = await snapshots.get_list(spec, bob, "s1", ListQuery())
    assert a["token"] == "token-alice"
    assert b["token"] == "token-bob"
    da = await snapshots.get_detail(spec, alice, "x1")
    db = await snapshots.get_detail(spec, bob, "x1")
    assert da["token"] == "token-alice"
    assert db["token"] == "token-bob"
    assert len(fetcher.calls) == 4
    # each user still gets their own hits
    await snapshots.get_list(spec, alice, "s1", ListQuery())
    await snapshots.get_detail(spec, bob, "x1")
    assert len(fetcher.calls) == 4


@pytest.mark.parametrize(
    ("entity", "roles"),
    [("tables", ("USER",)), ("tables", ("ADMIN",)), ("reviews", ("USER",)), ("restaurants", ("USER",))],
)
async def test_shared_answers_are_shared_within_the_audience(entity: str, roles: tuple[str, ...]) -> None:
    snapshots, fetcher = service()
    spec = CATALOGUE.by_name[entity]
    first = await snapshots.get_list(spec, principal("alice", *roles), "s1", ListQuery())
    second = await snapshots.get_list(spec, principal("bob", *roles), "s1", ListQuery())
    assert first == second
    await snapshots.get_detail(spec, principal("alice", *roles), "x1")
    await snapshots.get_detail(spec, principal("bob", *roles), "x1")
    assert len(fetcher.calls) == 2


async def test_audiences_never_share_entries() -> None:
    snapshots, fetcher = service()
    spec = CATALOGUE.by_name["tables"]
    await snapshots.get_list(spec, principal("alice", "USER"), "s1", ListQuery())
    await snapshots.get_list(spec, principal("bob", "ADMIN"), "s1", ListQuery())
    await snapshots.get_list(spec, principal("carol", "OWNER"), "s1", ListQuery())
    assert len(fetcher.calls) == 3


async def test_tables_of_different_sections_are_different_entries() -> None:
    snapshots, fetcher = service()
    spec = CATALOGUE.by_name["tables"]
    user = principal("alice")
    await snapshots.get_list(spec, user, "s1", ListQuery())
    await snapshots.get_list(spec, user, "s2", ListQuery())
    assert [dict(r.params)["sectionId"] for r, _ in fetcher.calls] == ["s1", "s2"]
    # and reviews (no section in the request) share one entry across sections
    reviews = CATALOGUE.by_name["reviews"]
    await snapshots.get_list(reviews, user, "s1", ListQuery())
    await snapshots.get_list(reviews, user, "s2", ListQuery())
    assert len(fetcher.calls) == 3


async def test_list_keys_carry_the_section_for_the_invalidation_index() -> None:
    snapshots, _ = service()
    user, owner = principal("alice"), principal("olga", "OWNER")
    key, _ = snapshots.list_key(CATALOGUE.by_name["tables"], user, "s1", ListQuery())
    assert key.section == "s1"
    assert key.partition == ""
    key, _ = snapshots.list_key(CATALOGUE.by_name["tables"], owner, "s1", ListQuery())
    assert key.section == "s1"
    assert key.partition == "olga"
    key, _ = snapshots.list_key(CATALOGUE.by_name["reviews"], user, "s1", ListQuery())
    assert key.section == ""
    key, _ = snapshots.detail_key(CATALOGUE.by_name["tables"], user, "t1")
    assert (key.kind, key.resource_id, key.section) == ("item", "t1", "")


async def test_the_admin_wildcard_section_sends_no_section() -> None:
    snapshots, fetcher = service()
    admin = principal("root", "ADMIN")
    await snapshots.get_list(CATALOGUE.by_name["tables"], admin, "*", ListQuery())
    request, _ = fetcher.calls[0]
    assert request.params == (("page", "1"), ("limit", "20"))


async def test_equal_queries_written_differently_share_an_entry() -> None:
    snapshots, fetcher = service()
    spec = CATALOGUE.by_name["reviews"]
    user = principal("alice")
    await snapshots.get_list(spec, user, "s1", ListQuery.from_payload({"sortOrder": "desc", "page": 0}))
    await snapshots.get_list(spec, user, "s1", ListQuery.from_payload({"sortOrder": " DESC ", "page": 1}))
    assert len(fetcher.calls) == 1


async def test_a_blank_detail_id_is_not_found_without_a_call() -> None:
    snapshots, fetcher = service()
    with pytest.raises(SnapshotNotFound):
        await snapshots.get_detail(CATALOGUE.by_name["tables"], principal("alice"), "  ")
    assert fetcher.calls == []


async def test_service_invalidation_by_event_section() -> None:
    snapshots, fetcher = service()
    spec = CATALOGUE.by_name["tables"]
    user = principal("alice")
    for section in ("s1", "s2"):
        await snapshots.get_list(spec, user, section, ListQuery())
    await snapshots.get_detail(spec, user, "t1")
    dropped = snapshots.cache.invalidate("tables", "t1", sections=["s1"])
    assert {(k.kind, k.section, k.resource_id) for k in dropped} == {("list", "s1", ""), ("item", "", "t1")}
    await snapshots.get_list(spec, user, "s2", ListQuery())
    assert len(fetcher.calls) == 3
