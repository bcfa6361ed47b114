"""SelectionService with in-memory fakes: commands, broadcasts, upkeep, several nodes on one log."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mesaya_realtime.application.ports.selection import SelectionLogUnavailable, SelectionSink
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.selection import SelectionPolicy, SelectionService
from mesaya_realtime.application.usecases.sessions import WILDCARD_SECTION, Session, base_topics
from mesaya_realtime.domain.catalogue import CATALOGUE
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.selection import (
    Checkpoint,
    Heartbeat,
    Holder,
    LogEntry,
    Release,
    ReleaseReason,
    Select,
    SelectionRecord,
    SelectionRefused,
    StreamReplay,
)
from tests.support import FakeConnection

TABLES = CATALOGUE.by_name["tables"]
TOPICS = base_topics("tables", ("created", *TABLES.socket_actions))


@dataclass
class Clock:
    wall: float = 1_768_000_000.0
    mono: float = 1_000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@dataclass
class SharedLog:
    """One ordered log several services read, on one event loop."""

    streams: tuple[str, ...] = ()
    records: list[SelectionRecord] = field(default_factory=list)
    readers: list[SelectionSink] = field(default_factory=list)
    failing: bool = False
    delivering: bool = True

    def view(self) -> LogView:
        return LogView(self)


class LogView:
    """One node's handle on a :class:`SharedLog` (the SelectionLog port)."""

    def __init__(self, shared: SharedLog) -> None:
        self.shared = shared
        self.started = False

    def start(self, sink: SelectionSink) -> None:
        shared = self.shared
        shared.readers.append(sink)
        entries = tuple(LogEntry("0", offset, record) for offset, record in enumerate(shared.records))
        asyncio.get_running_loop().call_soon(
            sink.bootstrap, [StreamReplay("0", (), entries, len(shared.records) - 1)]
        )
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def append(self, record: SelectionRecord) -> Awaitable[None]:
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[None] = loop.create_future()
        shared = self.shared
        if shared.failing:
            stored.set_exception(SelectionLogUnavailable("down"))
            return stored
        entry = LogEntry("0", len(shared.records), record)
        shared.records.append(record)
        if shared.delivering:
            for reader in shared.readers:
                loop.call_soon(reader.entries, [entry])
        stored.set_result(None)
        return stored

    def streams(self) -> tuple[str, ...]:
        return self.shared.streams

    def status(self) -> dict[str, object]:
        return {"ready": self.started}


class Node:
    """A node: its hub, its selection service, its sockets."""

    def __init__(
        self, log: SharedLog, clock: Clock, policy: SelectionPolicy, node_id: str, incarnation: str
    ) -> None:
        self.hub = Hub(lambda payload: payload)
        self.service = SelectionService(
            log.view(),
            self.hub,
            TABLES,
            policy,
            node_id,
            clock=lambda: clock.wall,
            monotonic=lambda: clock.mono,
            incarnation=incarnation,
            jitter=lambda low, high: 1.0,
        )

    def connect(self, user: str, section: str = "hall") -> Socket:
        connection = FakeConnection()
        session = Session(
            connection=connection,
            principal=Principal(user, ("USER",) if section != WILDCARD_SECTION else ("ADMIN",), user, "tok"),
            entity=TABLES,
            section=section,
            topics=set(TOPICS),
        )
        self.hub.add(session)
        joined = self.service.join(session)
        return Socket(self, session, connection, joined)


@dataclass
class Socket:
    node: Node
    session: Session
    connection: FakeConnection
    joined: list[Any]

    async def select(self, table: str) -> None:
        await self.node.service.select(self.session, {"tableId": table})

    async def release(self, table: str) -> None:
        await self.node.service.release(self.session, {"tableId": table})

    async def close(self) -> None:
        self.node.hub.remove(self.session)
        await self.node.service.leave(self.session)

    def take(self) -> list[tuple[str, str, str, str]]:
        """(topic, tableId, selectedBy, reason) of each message received since the last take."""
        return [
            (m["topic"], m["data"]["tableId"], m["data"]["selectedBy"], m["data"].get("reason", ""))
            for m in self.connection.take()
        ]


POLICY = SelectionPolicy(
    ttl=60.0,
    max_per_socket=3,
    rate_per_second=5.0,
    request_timeout=0.5,
    heartbeat_interval=1.0,
    node_timeout=5.0,
    checkpoint_interval=10.0,
    sweep_interval=3600.0,  # upkeep runs when a test calls it
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def shared() -> SharedLog:
    return SharedLog()


@pytest.fixture
async def nodes(shared: SharedLog, clock: Clock) -> Any:
    started: list[Node] = []

    async def make(node_id: str = "n1", incarnation: str = "", policy: SelectionPolicy = POLICY) -> Node:
        node = Node(shared, clock, policy, node_id, incarnation or f"{node_id}#{len(started)}")
        node.service.start()
        started.append(node)
        await settle()
        return node

    yield make
    for node in started:
        await node.service.stop()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def refused(reason: str) -> Any:
    return pytest.raises(SelectionRefused, match=f"^{reason}$")


# -- one node --------------------------------------------------------------------------------------


async def test_select_is_broadcast_to_the_section_and_the_admins_only(nodes: Any) -> None:
    node = await nodes()
    ada, bob = node.connect("ada"), node.connect("bob")
    admin, elsewhere = node.connect("root", WILDCARD_SECTION), node.connect("cy", "terrace")
    assert await node.service.select(ada.session, {"tableId": "t1"}) is None
    expected = [("tables.selecting", "t1", "ada", "")]
    assert ada.take() == expected
    assert bob.take() == expected
    assert admin.take() == expected
    assert elsewhere.take() == []


async def test_the_broadcast_carries_the_hold(nodes: Any, clock: Clock) -> None:
    clock.wall = 1_768_057_445.5
    node = await nodes()
    ada = node.connect("ada")
    await ada.select("t1")
    [message] = ada.connection.take()
    assert message["topic"] == "tables.selecting"
    assert message["entity"] == "tables"
    assert message["action"] == "selecting"
    assert message["resourceId"] == "t1"
    assert message["data"] == {
        "tableId": "t1",
        "sectionId": "hall",
        "selectedBy": "ada",
        "selectedAt": "2026-01-10T15:04:05.5Z",
        "expiresAt": "2026-01-10T15:05:05.5Z",
    }
    assert message["metadata"] == {"origin": "live", "sectionId": "hall"}


async def test_a_held_table_is_refused_to_others_and_extended_for_its_holder(
    nodes: Any, clock: Clock
) -> None:
    node = await nodes()
    ada, ada_tab, bob = node.connect("ada"), node.connect("ada"), node.connect("bob")
    await ada.select("t1")
    with refused("table already selected"):
        await bob.select("t1")
    with refused("table already selected"):
        await ada_tab.select("t1")
    first = node.service.state.hold("hall", "t1")
    clock.advance(10)
    await ada.select("t1")
    extended = node.service.state.hold("hall", "t1")
    assert first is not None
    assert extended is not None
    assert extended.expires_at == first.expires_at + 10_000
    assert extended.since == first.since
    assert bob.take()[-1] == ("tables.selecting", "t1", "ada", "")


async def test_release_by_the_holder_only(nodes: Any) -> None:
    node = await nodes()
    ada, bob = node.connect("ada"), node.connect("bob")
    with refused("table not selected by this socket"):
        await ada.release("t1")
    await ada.select("t1")
    with refused("table not selected by this socket"):
        await bob.release("t1")
    await ada.release("t1")
    assert bob.take() == [("tables.selecting", "t1", "ada", ""), ("tables.released", "t1", "ada", "released")]
    await bob.select("t1")
    assert ada.take()[-1] == ("tables.selecting", "t1", "bob", "")


async def test_a_socket_holds_at_most_max_per_socket_tables(nodes: Any, clock: Clock) -> None:
    node = await nodes()
    ada = node.connect("ada")
    for table in ("t1", "t2", "t3"):
        await ada.select(table)
    with refused("too many selections"):
        await ada.select("t4")
    clock.advance(1.0)  # stay under the rate limit
    await ada.select("t2")  # extending one it holds is fine
    await ada.release("t1")
    await ada.select("t4")


async def test_requests_per_second_are_limited_per_socket(nodes: Any, clock: Clock) -> None:
    node = await nodes()
    ada, bob = node.connect("ada"), node.connect("bob")
    for _ in range(5):
        await ada.select("t1")
    with refused("too many requests"):
        await ada.select("t1")
    with refused("too many requests"):
        await ada.release("t1")
    await bob.select("t2")  # another socket has its own budget
    clock.advance(0.2)  # one more token
    await ada.release("t1")
    with refused("too many requests"):
        await ada.select("t1")


async def test_the_wildcard_section_cannot_select(nodes: Any) -> None:
    node = await nodes()
    admin = node.connect("root", WILDCARD_SECTION)
    with refused("table selection needs a section"):
        await admin.select("t1")
    with refused("table selection needs a section"):
        await admin.release("t1")


async def test_closing_a_socket_releases_what_it_held(nodes: Any) -> None:
    node = await nodes()
    ada, bob = node.connect("ada"), node.connect("bob")
    await ada.select("t1")
    await ada.select("t2")
    await ada.close()
    await settle()
    assert bob.take()[2:] == [
        ("tables.released", "t1", "ada", "disconnected"),
        ("tables.released", "t2", "ada", "disconnected"),
    ]
    assert len(node.service.state) == 0


async def test_a_select_still_in_flight_when_its_socket_closes_is_released(
    nodes: Any, shared: SharedLog
) -> None:
    node = await nodes()
    ada, bob = node.connect("ada"), node.connect("bob")
    shared.delivering = False
    selecting = asyncio.ensure_future(ada.select("t1"))
    await settle()
    await ada.close()
    selecting.cancel()  # what closing the socket does to its running commands
    shared.delivering = True
    for offset, record in enumerate(shared.records):  # now the log delivers, in order
        node.service.entries([LogEntry("0", offset, record)])
    assert [m[0] for m in bob.take()] == ["tables.selecting", "tables.released"]
    assert len(node.service.state) == 0


async def test_a_joining_socket_gets_the_current_selections_of_its_section(nodes: Any) -> None:
    node = await nodes()
    ada = node.connect("ada")
    elsewhere = node.connect("cy", "terrace")
    await ada.select("t2")
    await ada.select("t1")
    await elsewhere.select("t9")
    bob = node.connect("bob")
    assert [(m.topic, m.resource_id, m.metadata["origin"]) for m in bob.joined] == [
        ("tables.selecting", "t1", "current"),
        ("tables.selecting", "t2", "current"),
    ]
    admin = node.connect("root", WILDCARD_SECTION)
    assert [m.resource_id for m in admin.joined] == ["t1", "t2", "t9"]


async def test_holds_expire_after_the_ttl(nodes: Any, clock: Clock) -> None:
    node = await nodes()
    ada, bob = node.connect("ada"), node.connect("bob")
    await ada.select("t1")
    clock.advance(59.0)
    node.service.upkeep()
    await settle()
    assert node.service.state.hold("hall", "t1") is not None
    clock.advance(1.0)
    node.service.upkeep()
    await settle()
    assert bob.take()[-1] == ("tables.released", "t1", "ada", "expired")
    assert node.connect("cy").joined == []


async def test_an_expired_hold_does_not_block_others_even_before_its_release(
    nodes: Any, clock: Clock
) -> None:
    node = await nodes()
    ada, bob = node.connect("ada"), node.connect("bob")
    await ada.select("t1")
    clock.advance(61)
    await bob.select("t1")
    assert bob.take()[-2:] == [
        ("tables.released", "t1", "ada", "expired"),
        ("tables.selecting", "t1", "bob", ""),
    ]


async def test_commands_wait_for_the_log_and_report_when_it_is_unavailable(
    nodes: Any, shared: SharedLog
) -> None:
    node = await nodes()
    ada = node.connect("ada")
    shared.failing = True
    with refused("table selection unavailable"):
        await ada.select("t1")
    shared.failing = False
    shared.delivering = False
    with refused("table selection timed out"):
        await ada.select("t1")


async def test_commands_before_the_state_is_rebuilt_wait_then_give_up(clock: Clock) -> None:
    class Silent(LogView):
        def start(self, sink: SelectionSink) -> None:
            self.started = True

    node = Node(SharedLog(), clock, POLICY, "n1", "n1#a")
    node.service.log = Silent(SharedLog())
    node.service.start()
    try:
        ada = node.connect("ada")
        assert ada.joined == []
        with refused("table selection unavailable"):
            await ada.select("t1")
        assert node.service.status()["ready"] is False
    finally:
        await node.service.stop()


async def test_sockets_that_joined_before_the_state_was_rebuilt_get_it_then(
    shared: SharedLog, clock: Clock
) -> None:
    shared.records.append(Select("hall", "t1", Holder("n2#b", "1", "bob"), int(clock.wall * 1000), 60_000))
    node = Node(shared, clock, POLICY, "n1", "n1#a")
    ada = node.connect("ada")  # before start: the state is not known yet
    assert ada.joined == []
    node.service.start()
    await settle()
    try:
        [message] = ada.connection.take()
        assert (message["topic"], message["resourceId"], message["metadata"]["origin"]) == (
            "tables.selecting",
            "t1",
            "current",
        )
    finally:
        await node.service.stop()


async def test_a_hold_whose_socket_is_gone_is_released_by_its_node(nodes: Any, shared: SharedLog) -> None:
    node = await nodes()
    bob = node.connect("bob")
    ghost = Holder(node.service.node, "999", "ghost")  # e.g. an append that failed on close
    node.service.log.append(Select("hall", "t1", ghost, 1_768_000_000_000, 60_000))
    await settle()
    node.service.upkeep()
    await settle()
    assert bob.take() == [
        ("tables.selecting", "t1", "ghost", ""),
        ("tables.released", "t1", "ghost", "disconnected"),
    ]


async def test_stop_releases_the_nodes_holds(nodes: Any, shared: SharedLog) -> None:
    one = await nodes("n1")
    two = await nodes("n2")
    ada, bob = one.connect("ada"), two.connect("bob")
    await ada.select("t1")
    await one.service.stop()
    await settle()
    assert bob.take()[-1] == ("tables.released", "t1", "ada", "disconnected")


# -- several nodes on one log ---------------------------------------------------------------------


async def test_simultaneous_selects_on_two_nodes_end_with_one_holder_everywhere(
    nodes: Any, clock: Clock
) -> None:
    one, two = await nodes("n1"), await nodes("n2")
    ada, bob = one.connect("ada"), two.connect("bob")
    watch_one, watch_two = one.connect("w1"), two.connect("w2")
    for round_number in range(20):
        clock.advance(1.0)  # stay under the rate limit
        table = f"t{round_number}"
        outcomes = await asyncio.gather(ada.select(table), bob.select(table), return_exceptions=True)
        assert sorted(type(outcome).__name__ for outcome in outcomes) == ["NoneType", "SelectionRefused"]
        winner = "ada" if outcomes[0] is None else "bob"
        for node in (one, two):
            hold = node.service.state.hold("hall", table)
            assert hold is not None
            assert hold.holder.user == winner
        await (ada if winner == "ada" else bob).release(table)
    assert watch_one.take() == watch_two.take()


async def test_a_silent_nodes_holds_are_released_by_the_survivors(nodes: Any, clock: Clock) -> None:
    one, two = await nodes("n1"), await nodes("n2")
    ada, bob = one.connect("ada"), two.connect("bob")
    await ada.select("t1")
    await settle()
    bob.take()
    # n1 keeps beating: nothing happens
    for _ in range(8):
        clock.advance(1.0)
        one.service.upkeep()
        two.service.upkeep()
        await settle()
    assert two.service.state.hold("hall", "t1") is not None
    # n1 goes silent (it died): after node_timeout n2 releases its hold
    for _ in range(5):
        clock.advance(1.0)
        two.service.upkeep()
        await settle()
    assert two.service.state.hold("hall", "t1") is not None
    clock.advance(1.0)
    two.service.upkeep()
    await settle()
    assert bob.take()[-1] == ("tables.released", "t1", "ada", "node_down")
    assert one.service.state.hold("hall", "t1") is None


async def test_holds_of_an_earlier_incarnation_of_this_node_are_released_at_once(
    shared: SharedLog, clock: Clock, nodes: Any
) -> None:
    holder = Holder("n1#before-restart", "4", "ada")
    shared.records.append(Select("hall", "t1", holder, int(clock.wall * 1000), 60_000))
    node = await nodes("n1", "n1#after-restart")  # its first upkeep runs right after the rebuild
    await settle()
    assert node.service.state.hold("hall", "t1") is None
    [release] = [record for record in shared.records if isinstance(record, Release)]
    assert (release.holder, release.reason, release.writer) == (
        holder,
        ReleaseReason.NODE_DOWN,
        "n1#after-restart",
    )


async def test_holds_long_expired_are_released_by_any_node(nodes: Any, clock: Clock) -> None:
    node = await nodes("n1")
    bob = node.connect("bob")
    stuck = Holder("n3#z", "1", "ada")  # alive (it beats) but never releases its hold
    log = node.service.log
    log.append(Select("hall", "t1", stuck, int(clock.wall * 1000), 60_000))
    for _ in range(65):
        clock.advance(1.0)
        log.append(Heartbeat("n3#z", int(clock.wall * 1000)))
        await settle()
        node.service.upkeep()
        await settle()
        if len(node.service.state) == 0:
            break
    assert bob.take()[-1] == ("tables.released", "t1", "ada", "expired")
    assert clock.wall * 1000 >= 1_768_000_000_000 + 60_000 + 5_000  # TTL + node timeout


async def test_checkpoints_are_written_at_start_then_per_interval_unless_someone_just_did(
    shared: SharedLog, nodes: Any, clock: Clock
) -> None:
    shared.streams = ("0",)
    one, two = await nodes("n1"), await nodes("n2")

    def checkpoints() -> list[Checkpoint]:
        return [record for record in shared.records if isinstance(record, Checkpoint)]

    # one wrote a checkpoint as soon as it was ready; two, starting right after, read it
    assert [checkpoint.writer for checkpoint in checkpoints()] == [one.service.node]
    ada = one.connect("ada")
    await ada.select("t1")
    written = len(checkpoints())
    clock.advance(9.0)
    one.service.upkeep()  # not due yet
    await settle()
    assert len(checkpoints()) == written
    clock.advance(4.0)  # due for both
    one.service.upkeep()
    await settle()
    two.service.upkeep()  # it has just seen one's
    await settle()
    [*_, checkpoint] = checkpoints()
    assert len(checkpoints()) == written + 1
    assert checkpoint.writer == one.service.node
    assert checkpoint.stream == "0"
    assert [hold.table for hold in checkpoint.holds] == ["t1"]
    select_at = next(i for i, record in enumerate(shared.records) if isinstance(record, Select))
    assert select_at <= checkpoint.through < shared.records.index(checkpoint)


async def test_no_heartbeat_before_the_state_is_rebuilt(clock: Clock) -> None:
    shared = SharedLog()

    class Silent(LogView):
        def start(self, sink: SelectionSink) -> None:
            self.started = True

    node = Node(shared, clock, POLICY, "n1", "n1#a")
    node.service.log = Silent(shared)
    node.service.start()
    try:
        await settle()
        node.service.upkeep()
        assert shared.records == []
    finally:
        await node.service.stop()


def test_policy_defaults() -> None:
    policy = SelectionPolicy()
    assert (policy.ttl, policy.max_per_socket, policy.rate_per_second) == (300.0, 3, 10.0)
    assert (policy.heartbeat_interval, policy.node_timeout) == (2.0, 10.0)


async def test_nodes_long_gone_are_forgotten_unless_they_still_hold_something(
    nodes: Any, clock: Clock, shared: SharedLog
) -> None:
    node = await nodes("n1")
    log = node.service.log
    log.append(Heartbeat("n7#gone", int(clock.wall * 1000)))
    log.append(Select("hall", "t1", Holder("n8#holding", "1", "ada"), int(clock.wall * 1000), 3_600_000))
    await settle()
    assert {"n7#gone", "n8#holding"} <= set(node.service._seen)
    clock.mono += 10 * POLICY.node_timeout + 1  # only the monotonic clock: the hold stays valid
    node.service._asked.clear()
    shared.failing = True  # the node_down release cannot be written: n8 keeps its hold
    node.service.upkeep()
    await settle()
    assert "n7#gone" not in node.service._seen
    assert "n8#holding" in node.service._seen


async def test_a_node_that_does_not_read_its_own_records_back_judges_no_other_node(
    nodes: Any, clock: Clock, shared: SharedLog
) -> None:
    one, two = await nodes("n1"), await nodes("n2")
    ada = one.connect("ada")
    await ada.select("t1")
    await settle()
    shared.delivering = False  # two's reading stalls: it hears from nobody, itself included
    for _ in range(7):
        clock.advance(1.0)
        one.service.upkeep()
        two.service.upkeep()
        await settle()
    releases = [record for record in shared.records if isinstance(record, Release)]
    assert releases == []  # two does not blame n1 for its own deafness
    assert two.service.state.hold("hall", "t1") is not None


async def test_selects_that_timed_out_do_not_count_against_the_socket(
    nodes: Any, shared: SharedLog, clock: Clock
) -> None:
    node = await nodes()
    ada = node.connect("ada")
    shared.delivering = False
    for table in ("t1", "t2", "t3"):
        with refused("table selection timed out"):
            await ada.select(table)
        clock.advance(1.0)  # stay under the rate limit
    assert node.service._inflight == {}
    assert node.service._unapplied == {}
    shared.delivering = True
    await ada.select("t4")  # not "too many selections"
    assert [m["topic"] for m in ada.connection.take()][-1] == "tables.selecting"


async def test_a_closed_socket_leaves_no_tracking_behind(nodes: Any, shared: SharedLog) -> None:
    node = await nodes()
    ada = node.connect("ada")
    shared.delivering = False
    pending = asyncio.ensure_future(ada.select("t1"))
    await settle()
    node.hub.remove(ada.session)
    await node.service.leave(ada.session)
    assert node.service._inflight == {}
    assert node.service._unapplied == {}
    pending.cancel()
    await asyncio.gather(pending, return_exceptions=True)


async def test_holds_already_expired_when_the_state_is_rebuilt_are_not_shown(
    shared: SharedLog, clock: Clock
) -> None:
    long_ago = int((clock.wall - 120) * 1000)
    shared.records.append(Select("hall", "old", Holder("n2#b", "1", "bob"), long_ago, 60_000))
    shared.records.append(Select("hall", "new", Holder("n2#b", "2", "eve"), int(clock.wall * 1000), 60_000))
    node = Node(shared, clock, POLICY, "n1", "n1#a")
    ada = node.connect("ada")
    node.service.start()
    await settle()
    try:
        shown = [(m["topic"], m["resourceId"]) for m in ada.connection.take()]
        assert [r for topic, r in shown if topic == "tables.selecting"] == ["new"]
    finally:
        await node.service.stop()
