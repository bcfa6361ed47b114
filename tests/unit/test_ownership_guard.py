"""OwnershipGuard with an in-memory source: the rule, the cache, single-flight, fail closed,
re-checks of open sockets, and renewals through CommandService.

The REST adapter is tested against a real HTTP server in tests/integration/test_ownership_source.py
and the whole boundary end to end in tests/e2e/test_tenant_isolation.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from mesaya_realtime.application.usecases.commands import CommandService, Envelope
from mesaya_realtime.application.usecases.ownership import FORBIDDEN_CLOSE, OwnershipGuard
from mesaya_realtime.application.usecases.sessions import Session
from mesaya_realtime.application.usecases.snapshot_cache import SnapshotCache
from mesaya_realtime.application.usecases.snapshots import SnapshotService
from mesaya_realtime.domain.catalogue import CATALOGUE, EntitySpec
from mesaya_realtime.domain.errors import AccessDenied, OwnershipUnavailable
from mesaya_realtime.domain.identity import Principal
from tests.unit.test_commands import FakeConnection, FakeFetcher

RESERVATIONS = CATALOGUE.by_name["reservations"]
PAYMENTS = CATALOGUE.by_name["payments"]
TABLES = CATALOGUE.by_name["tables"]


@dataclass
class FakeSource:
    """Owned restaurants per token; counts calls; can fail or hold calls until released."""

    owned: dict[str, set[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    down: bool = False
    gate: asyncio.Event | None = None

    async def owned_restaurants(self, token: str) -> frozenset[str]:
        self.calls.append(token)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise OwnershipUnavailable()
        return frozenset(self.owned.get(token, set()))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def owner(user: str = "o-1", roles: tuple[str, ...] = ("OWNER",), exp: float | None = None) -> Principal:
    token = f"token-{user}-{'-'.join(roles)}"
    return Principal(user, roles, user, token, exp if exp is not None else time.time() + 3600)


def session(principal: Principal, section: str, spec: EntitySpec = RESERVATIONS) -> Session:
    return Session(
        connection=FakeConnection(), principal=principal, entity=spec, section=section, topics=set()
    )


def guard_for(source: FakeSource, clock: Clock | None = None, **kwargs: float) -> OwnershipGuard:
    options = {"ttl": 60.0, "max_entries": 100, **kwargs}
    return OwnershipGuard(source, clock=clock or Clock(), **options)  # type: ignore[arg-type]


# -- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "roles", "section", "applies"),
    [
        (RESERVATIONS, ("OWNER",), "r-1", True),
        (PAYMENTS, ("owner",), "r-1", True),
        (CATALOGUE.by_name["subscriptions"], ("OWNER", "USER"), "r-1", True),
        (RESERVATIONS, ("OWNER", "ADMIN"), "r-1", False),  # ADMIN sees every restaurant
        (RESERVATIONS, ("USER",), "r-1", False),  # a USER sees only their own events
        (RESERVATIONS, ("ADMIN",), "*", False),
        (TABLES, ("OWNER",), "s-1", False),  # public floor-plan data
        (CATALOGUE.by_name["reviews"], ("OWNER",), "r-1", False),
        (CATALOGUE.by_name["section-objects"], ("OWNER",), "s-1", False),
    ],
)
def test_the_rule_applies_to_owners_on_private_entities_only(
    spec: object, roles: tuple[str, ...], section: str, applies: bool
) -> None:
    assert OwnershipGuard.applies(spec, owner(roles=roles), section) is applies  # type: ignore[arg-type]


async def test_an_owner_is_admitted_on_their_restaurant_and_refused_on_another() -> None:
    source = FakeSource(owned={"token-o-1-OWNER": {"r-a"}})
    guard = guard_for(source)
    await guard.admit(RESERVATIONS, owner(), "r-a")
    with pytest.raises(AccessDenied):
        await guard.admit(RESERVATIONS, owner(), "r-b")
    with pytest.raises(AccessDenied):
        await guard.admit(PAYMENTS, owner(), "r-b")
    assert len(source.calls) == 1  # one answer serves every check of the user within the TTL


async def test_sockets_the_rule_does_not_cover_make_no_call() -> None:
    source = FakeSource()
    guard = guard_for(source)
    await guard.admit(TABLES, owner(), "anything")
    await guard.admit(RESERVATIONS, owner(roles=("ADMIN",)), "r-b")
    await guard.admit(RESERVATIONS, owner(roles=("USER",)), "r-b")
    assert source.calls == []


# -- cache, single-flight, fail closed -------------------------------------------------------------


async def test_a_reconnect_storm_makes_one_call() -> None:
    source = FakeSource(owned={"token-o-1-OWNER": {"r-a"}}, gate=asyncio.Event())
    guard = guard_for(source)
    checks = [asyncio.ensure_future(guard.admit(RESERVATIONS, owner(), "r-a")) for _ in range(200)]
    await asyncio.sleep(0)
    source.gate.set()  # type: ignore[union-attr]
    await asyncio.gather(*checks)
    assert len(source.calls) == 1


async def test_a_waiter_that_goes_away_does_not_cancel_the_shared_call() -> None:
    source = FakeSource(owned={"token-o-1-OWNER": {"r-a"}}, gate=asyncio.Event())
    guard = guard_for(source)
    first = asyncio.ensure_future(guard.admit(RESERVATIONS, owner(), "r-a"))
    second = asyncio.ensure_future(guard.admit(RESERVATIONS, owner(), "r-a"))
    await asyncio.sleep(0)
    first.cancel()
    source.gate.set()  # type: ignore[union-attr]
    await second
    assert len(source.calls) == 1


async def test_the_answer_expires_after_the_ttl() -> None:
    clock = Clock()
    source = FakeSource(owned={"token-o-1-OWNER": {"r-a"}})
    guard = guard_for(source, clock, ttl=60.0)
    await guard.admit(RESERVATIONS, owner(), "r-a")
    clock.now += 59.9
    await guard.admit(RESERVATIONS, owner(), "r-a")
    assert len(source.calls) == 1
    clock.now += 0.2
    source.owned["token-o-1-OWNER"] = set()
    with pytest.raises(AccessDenied):
        await guard.admit(RESERVATIONS, owner(), "r-a")
    assert len(source.calls) == 2


async def test_the_cache_is_bounded() -> None:
    source = FakeSource()
    guard = guard_for(source, max_entries=3)
    for index in range(10):
        with pytest.raises(AccessDenied):
            await guard.admit(RESERVATIONS, owner(f"o-{index}"), "r-a")
    assert len(guard) == 3
    # the most recent users are the ones kept
    await asyncio.gather(*(guard.owned(owner(f"o-{index}")) for index in (7, 8, 9)))
    assert len(source.calls) == 10


async def test_no_answer_fails_closed_and_is_not_cached() -> None:
    source = FakeSource(owned={"token-o-1-OWNER": {"r-a"}}, down=True)
    guard = guard_for(source)
    with pytest.raises(OwnershipUnavailable) as raised:
        await guard.admit(RESERVATIONS, owner(), "r-a")
    assert raised.value.reason == "ownership check unavailable"
    source.down = False
    await guard.admit(RESERVATIONS, owner(), "r-a")
    assert len(source.calls) == 2


async def test_a_fresh_answer_is_used_while_the_source_is_down() -> None:
    source = FakeSource(owned={"token-o-1-OWNER": {"r-a"}})
    guard = guard_for(source)
    await guard.admit(RESERVATIONS, owner(), "r-a")
    source.down = True
    await guard.admit(RESERVATIONS, owner(), "r-a")


async def test_an_unexpected_source_failure_is_unavailable() -> None:
    class Broken:
        async def owned_restaurants(self, token: str) -> frozenset[str]:
            raise RuntimeError("boom")

    guard = OwnershipGuard(Broken(), ttl=60.0, max_entries=10)
    with pytest.raises(OwnershipUnavailable):
        await guard.admit(RESERVATIONS, owner(), "r-a")


# -- open sockets ----------------------------------------------------------------------------------


async def test_a_recheck_closes_the_sockets_of_a_lost_restaurant_only() -> None:
    clock = Clock()
    source = FakeSource(owned={"token-o-1-OWNER": {"r-a", "r-b"}})
    guard = guard_for(source, clock, ttl=60.0)
    kept, lost = session(owner(), "r-a"), session(owner(), "r-b")
    other_entity = session(owner(), "r-b", TABLES)
    for each in (kept, lost, other_entity):
        await guard.admit(each.entity, each.principal, each.section)
        guard.join(each)
    assert guard.watched == 2  # the tables socket is not bound by the rule
    assert await guard.recheck() == 0  # nothing expired yet
    source.owned["token-o-1-OWNER"] = {"r-a"}
    clock.now += 61
    assert await guard.recheck() == 1
    assert lost.connection.closed == (FORBIDDEN_CLOSE, "forbidden")  # type: ignore[attr-defined]
    assert kept.connection.closed is None  # type: ignore[attr-defined]
    assert guard.watched == 1
    assert len(source.calls) == 2


async def test_a_recheck_without_an_answer_keeps_the_sockets_and_retries_later() -> None:
    clock = Clock()
    source = FakeSource(owned={"token-o-1-OWNER": {"r-a"}})
    guard = guard_for(source, clock, ttl=60.0, retry=5.0)
    watched = session(owner(), "r-a")
    await guard.admit(RESERVATIONS, watched.principal, "r-a")
    guard.join(watched)
    clock.now += 61
    source.down = True
    assert await guard.recheck() == 0
    assert await guard.recheck() == 0  # within the retry delay: no second call
    assert len(source.calls) == 2
    assert watched.connection.closed is None  # type: ignore[attr-defined]
    clock.now += 5
    source.down = False
    source.owned["token-o-1-OWNER"] = set()
    assert await guard.recheck() == 1


async def test_a_closed_socket_is_no_longer_watched() -> None:
    guard = guard_for(FakeSource(owned={"token-o-1-OWNER": {"r-a"}}))
    watched = session(owner(), "r-a")
    guard.join(watched)
    guard.join(watched)
    assert guard.watched == 1
    await guard.leave(watched)
    assert guard.watched == 0


async def test_the_recheck_loop_runs_by_itself() -> None:
    source = FakeSource(owned={"token-o-1-OWNER": {"r-a"}})
    guard = OwnershipGuard(source, ttl=0.05, max_entries=10, tick=0.01)
    watched = session(owner(), "r-a")
    await guard.admit(RESERVATIONS, watched.principal, "r-a")
    guard.join(watched)
    source.owned["token-o-1-OWNER"] = set()
    guard.start()
    try:
        for _ in range(200):
            if watched.connection.closed:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
    finally:
        await guard.stop()
    assert watched.connection.closed == (FORBIDDEN_CLOSE, "forbidden")  # type: ignore[attr-defined]


# -- renewals --------------------------------------------------------------------------------------


def commands_with(guard: OwnershipGuard, verified: Principal) -> CommandService:
    class Verifier:
        def verify(self, token: str) -> Principal:
            return verified

    cache = SnapshotCache(max_entries=10, ttl_seconds=60)
    return CommandService(SnapshotService(FakeFetcher(), cache), verifier=Verifier(), guard=guard)


async def test_a_renewal_that_makes_a_user_an_owner_is_checked() -> None:
    source = FakeSource(owned={"token-u-1-OWNER": {"r-mine"}})
    guard = guard_for(source)
    user_socket = session(owner("u-1", ("USER",)), "r-other")
    renewal = Envelope("authenticate", "", {"token": "new"})
    reply = await commands_with(guard, owner("u-1", ("OWNER",))).handle(user_socket, renewal)
    assert reply is not None
    assert reply.topic == "reservations.error"
    assert reply.data == {"error": "forbidden"}
    assert user_socket.principal.upper_roles == ("USER",)  # still on the old token

    mine = session(owner("u-1", ("USER",)), "r-mine")
    reply = await commands_with(guard, owner("u-1", ("OWNER",))).handle(mine, renewal)
    assert reply is not None
    assert reply.topic == "system.authenticated"
    assert guard.watched == 1  # re-checked from now on


async def test_a_renewal_without_an_answer_is_refused_and_keeps_the_old_token() -> None:
    source = FakeSource(down=True)
    guard = guard_for(source)
    user_socket = session(owner("u-1", ("USER",)), "r-mine")
    renewal = Envelope("authenticate", "", {"token": "new"})
    reply = await commands_with(guard, owner("u-1", ("OWNER",))).handle(user_socket, renewal)
    assert reply is not None
    assert reply.data == {"error": "ownership check unavailable"}
    assert user_socket.principal.upper_roles == ("USER",)
