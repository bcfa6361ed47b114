"""Cursors, the journal and resume (application/usecases/resume.py), with in-memory sockets.

The e2e tests (tests/e2e/test_resume.py) prove resume across real nodes on the real broker;
these pin the rules: the cursor codec round-trips and refuses what is not a cursor, the
one-socket entitlement rule is exactly the fan-out's, the journal forgets its oldest entries and
then refuses gaps it no longer holds, and a replayed event's cursor never goes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesaya_realtime.application.handlers.events import EventContext, EventDispatcher, EventIngest, Record
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.resume import Journal, Positions, ResumeService
from mesaya_realtime.application.usecases.sessions import Session, base_topics
from mesaya_realtime.application.usecases.snapshot_cache import SnapshotCache
from mesaya_realtime.config import DEFAULT_ALLOWED_ACTIONS
from mesaya_realtime.domain.catalogue import CATALOGUE
from mesaya_realtime.domain.cursors import CursorError, decode_cursor, encode_cursor
from mesaya_realtime.domain.identity import Principal
from tests import kafka_support as ks
from tests.support import FakeConnection

TABLES = "mesa-ya.tables.events"
RESERVATIONS = "mesa-ya.reservations.events"
ALLOWED = tuple(DEFAULT_ALLOWED_ACTIONS.split(","))
MAPPING = {TABLES: "tables", RESERVATIONS: "reservations"}
SPACES = {"tables": (TABLES,), "reservations": (RESERVATIONS,)}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class World:
    def __init__(self, **journal: Any) -> None:
        self.clock = Clock()
        self.hub = Hub(lambda payload: payload)
        self.positions = Positions(SPACES, clock=self.clock)
        self.journal = Journal(self.positions, lambda payload: payload, clock=self.clock, **journal)
        self.resumes = ResumeService(self.journal, self.hub, max_events=50, clock=self.clock)
        context = EventContext(
            hub=self.hub,
            cache=SnapshotCache(max_entries=10, ttl_seconds=30),
            allowed_actions=frozenset(ALLOWED),
        )
        self.ingest = EventIngest(EventDispatcher(context), CATALOGUE, MAPPING, journal=self.journal)
        self.journal.decode = self.ingest.decode  # replays decode the kept bytes again
        self.offsets = dict.fromkeys(range(3), 0)
        for partition in range(3):
            self.ingest.process([Record(TABLES, partition, 0, None, start=True)])

    def session(self, section: str, user: str = "u", *roles: str, v2: bool = True) -> Session:
        spec = CATALOGUE.by_name["tables"]
        return Session(
            connection=FakeConnection(),
            principal=Principal(user, roles or ("USER",), user, "t"),
            entity=spec,
            section=section,
            topics=set(base_topics(spec.name, ALLOWED)),
            v2=v2,
        )

    def table(self, number: int, section: str, partition: int) -> None:
        payload, _ = ks.table_event("updated", f"t{number}", section, number=number)
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        self.ingest.process([Record(TABLES, partition, offset, orjson.dumps(payload))])

    def garbage(self, partition: int) -> None:
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        self.ingest.process([Record(TABLES, partition, offset, b"not json")])

    def resume(self, session: Session, since: str) -> list[dict[str, Any]]:
        self.hub.add(session)
        self.resumes.resume(session, since)
        messages = session.connection.messages()  # type: ignore[attr-defined]
        session.connection.frames.clear()  # type: ignore[attr-defined]
        return messages


# -- the codec ------------------------------------------------------------------------------------

keys = st.tuples(st.sampled_from([TABLES, RESERVATIONS]), st.integers(0, 50))


@given(st.integers(0, 2**40), st.dictionaries(keys, st.integers(0, 2**62), max_size=20))
def test_cursors_round_trip(issued: int, positions: dict[tuple[str, int], int]) -> None:
    decoded = decode_cursor(encode_cursor(issued, sorted(positions.items())), [TABLES, RESERVATIONS])
    assert (decoded.issued, dict(decoded.positions)) == (issued, positions)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x",
        "2.abc.",
        "1.zz",
        "1.zz.a:b",
        "1.zz.nope:0:1",
        f"1.zz.{'a' * 5000}",
        "1.zz.{t}:-1:1",
        "1.zz.{t}:0:-1",
    ],
)
def test_what_is_not_a_cursor_of_these_topics_is_refused(text: str) -> None:
    from mesaya_realtime.domain.cursors import topic_tag

    with pytest.raises(CursorError):
        decode_cursor(text.replace("{t}", topic_tag(TABLES)), [TABLES])
    other = encode_cursor(1, [((RESERVATIONS, 0), 1)])
    with pytest.raises(CursorError):
        decode_cursor(other, [TABLES])


@given(st.text(max_size=200))
def test_decoding_any_text_raises_only_cursor_error(text: str) -> None:
    with contextlib.suppress(CursorError):
        decode_cursor(text, [TABLES])


# -- the one-socket rule is the fan-out's -----------------------------------------------------------

sections = st.sampled_from(["s1", "s2", "*"])
users = st.sampled_from(["u1", "u2", "u3"])
roles = st.sampled_from([("USER",), ("OWNER",), ("ADMIN",), ("USER", "OWNER")])
entities = st.sampled_from(["tables", "reservations", "restaurants", "reviews"])


@settings(max_examples=300)
@given(
    st.lists(st.tuples(entities, sections, users, roles), min_size=1, max_size=12),
    entities,
    st.lists(st.sampled_from(["s1", "s2", "s3"]), max_size=3),
    st.lists(users, max_size=2),
)
def test_entitled_is_exactly_membership_in_the_recipients(
    sockets: list[tuple[str, str, str, tuple[str, ...]]], entity: str, scope: list[str], user_ids: list[str]
) -> None:
    hub = Hub(lambda payload: payload)
    sessions = []
    for name, section, user, held in sockets:
        spec = CATALOGUE.by_name[name]
        session = Session(FakeConnection(), Principal(user, held, user, "t"), spec, section, frozenset())
        hub.add(session)
        sessions.append(session)
    spec = CATALOGUE.by_name[entity]
    chosen = {session.id for session in hub.recipients(spec, scope, user_ids)}
    for session in sessions:
        assert hub.entitled(session, spec, tuple(scope), tuple(user_ids)) == (session.id in chosen), session


# -- the journal and resume ---------------------------------------------------------------------------


def test_a_resume_replays_what_the_socket_may_see_after_the_cursor_in_partition_order() -> None:
    world = World()
    live = world.session("s1")
    world.hub.add(live)
    world.table(0, "s1", 0)
    cursor = live.connection.messages()[-1]["cursor"]  # type: ignore[attr-defined]
    for n in range(1, 31):
        world.table(n, "s1" if n % 2 else "s2", n % 3)
        world.garbage(n % 3)
    replay = world.resume(world.session("s1"), cursor)
    assert replay[-1]["topic"] == "system.resumed"
    assert replay[-1]["data"] == {"recovered": True, "replayed": 15}
    numbers = [int(m["resourceId"][1:]) for m in replay[:-1]]
    assert sorted(numbers) == list(range(1, 31, 2))
    for partition in range(3):
        mine = [n for n in numbers if n % 3 == partition]
        assert mine == sorted(mine)
    # Each replayed event's cursor resumes after exactly that event.
    middle = replay[6]
    again = world.resume(world.session("s1"), middle["cursor"])
    assert [int(m["resourceId"][1:]) for m in again[:-1]] == numbers[7:]


def test_a_v1_socket_gets_no_cursor_and_a_v2_socket_the_same_frame_for_the_same_event() -> None:
    world = World()
    v1, first, second = world.session("s1", v2=False), world.session("s1"), world.session("s1")
    for session in (v1, first, second):
        world.hub.add(session)
    world.table(1, "s1", 0)
    assert "cursor" not in v1.connection.messages()[0]  # type: ignore[attr-defined]
    assert first.connection.frames[0] is second.connection.frames[0]  # type: ignore[attr-defined]


def test_the_oldest_events_go_by_age_and_a_gap_no_longer_held_is_not_recovered() -> None:
    world = World(max_age=60.0)
    live = world.session("s1")
    world.hub.add(live)
    old = world.positions.cursor("tables")  # before event 0
    world.table(0, "s1", 0)
    world.clock.now += 30
    world.table(1, "s1", 0)
    recent = live.connection.messages()[-1]["cursor"]  # type: ignore[attr-defined]
    world.clock.now += 40  # the first event is 70 s old: dropped with the next one's arrival
    world.table(2, "s1", 0)
    assert len(world.journal) == 2
    assert world.resume(world.session("s1"), recent)[-1]["data"] == {"recovered": True, "replayed": 1}
    # The old cursor's gap began before what the journal still holds (and it is 70 s old).
    world.resumes.journal.max_age = 3600
    assert world.resume(world.session("s1"), old)[-1]["data"] == {"recovered": False}


def test_the_journal_keeps_within_its_byte_budget() -> None:
    world = World(max_bytes=20_000)
    for n in range(200):
        world.table(n, "s1", n % 3)
    assert world.journal.bytes <= 20_000
    assert 0 < len(world.journal) < 200


def test_a_gap_larger_than_resume_max_events_is_not_recovered() -> None:
    world = World()
    cursor = world.positions.cursor("tables")
    for n in range(51):
        world.table(n, "s1", n % 3)
    assert world.resume(world.session("s1"), cursor)[-1]["data"] == {"recovered": False}
    assert world.resume(world.session("s2"), cursor)[-1]["data"] == {"recovered": True, "replayed": 0}


def test_a_cursor_ahead_of_this_node_is_not_recovered_until_the_node_reads_that_far() -> None:
    world = World()
    ahead = encode_cursor(int(world.clock.now), [((TABLES, 0), 5), ((TABLES, 1), 0), ((TABLES, 2), 0)])
    assert world.resume(world.session("s1"), ahead)[-1]["data"] == {"recovered": False}
    for n in range(7):
        world.table(n, "s1", 0)
    replay = world.resume(world.session("s1"), ahead)
    assert [m["resourceId"] for m in replay[:-1]] == ["t5", "t6"]


def test_a_replayed_cursor_never_goes_behind_the_client_on_another_partition() -> None:
    """Node B read partition 1 later than node A: B's position at a replayed event of
    partition 0 is behind the client's cursor on partition 1; the replayed cursor is not."""
    world = World()
    world.table(0, "s1", 0)
    world.table(1, "s1", 1)
    world.table(2, "s1", 1)
    client = encode_cursor(int(world.clock.now), [((TABLES, 0), 0), ((TABLES, 1), 2), ((TABLES, 2), 0)])
    replay = world.resume(world.session("s1"), client)
    assert [m["resourceId"] for m in replay[:-1]] == ["t0"]
    positions = decode_cursor(replay[0]["cursor"], [TABLES]).positions
    assert positions[(TABLES, 1)] == 2
    assert positions[(TABLES, 0)] == 1


# -- gaps older than the journal: read again from the log, once for every resume needing them -------


class FakeLog:
    """The log's records by partition; counts the reads (a test double of the Kafka reader)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.reads = 0

    async def read(self, ranges: dict[tuple[str, int], tuple[int, int]]) -> list[Record]:
        self.reads += 1
        await asyncio.sleep(0.01)
        return [
            r
            for r in self.records
            if (r.topic, r.partition) in ranges
            and ranges[(r.topic, r.partition)][0] <= r.offset < ranges[(r.topic, r.partition)][1]
        ]


def late_world() -> tuple[World, FakeLog, str]:
    """A node that started at offset 10 of each partition, after a client's cursor at 0."""
    world = World()
    log = FakeLog()
    cursor = encode_cursor(int(world.clock.now), [((TABLES, p), 0) for p in range(3)])
    late = World()
    late.clock.now = world.clock.now
    for n in range(30):
        payload, _ = ks.table_event("updated", f"t{n}", "s1" if n % 2 else "s2", number=n)
        log.records.append(Record(TABLES, n % 3, n // 3, orjson.dumps(payload)))
    late.positions = Positions(SPACES, clock=late.clock)
    late.journal = Journal(late.positions, lambda payload: payload, clock=late.clock)
    late.resumes = ResumeService(
        late.journal, late.hub, max_events=50, clock=late.clock, reader=log, decode=late.ingest.decode
    )
    late.ingest.journal = late.journal
    late.journal.decode = late.ingest.decode
    for partition in range(3):
        late.ingest.process([Record(TABLES, partition, 10, None, start=True)])
    late.offsets = dict.fromkeys(range(3), 10)
    late.table(30, "s1", 0)  # one live event after the node started
    return late, log, cursor


async def test_a_gap_from_before_the_node_started_is_read_from_the_log_once_for_every_resume() -> None:
    world, log, cursor = late_world()
    await asyncio.gather(*(world.resumes.prepare(cursor) for _ in range(20)))
    assert log.reads == 1
    replay = world.resume(world.session("s1"), cursor)
    assert replay[-1]["data"] == {"recovered": True, "replayed": 16}
    numbers = [int(m["resourceId"][1:]) for m in replay[:-1]]
    assert sorted(numbers) == [*range(1, 30, 2), 30]
    for partition in range(3):
        mine = [n for n in numbers if n % 3 == partition]
        assert mine == sorted(mine)
    # Every replayed cursor is a place to resume from again: after it, the rest and nothing more.
    again = world.resume(world.session("s1"), replay[4]["cursor"])
    assert [int(m["resourceId"][1:]) for m in again[:-1]] == numbers[5:]


async def test_a_gap_the_log_cannot_give_is_not_recovered() -> None:
    world, log, cursor = late_world()

    async def unavailable(ranges: object) -> list[Record]:
        from mesaya_realtime.application.ports.log_reader import LogRangeUnavailable

        raise LogRangeUnavailable("retention")

    log.read = unavailable  # type: ignore[method-assign]
    await world.resumes.prepare(cursor)
    assert world.resume(world.session("s1"), cursor)[-1]["data"] == {"recovered": False}


async def test_one_gap_too_large_to_read_fails_only_its_own_resume() -> None:
    world, log, _ = late_world()
    world.resumes.max_backfill = 20
    legit = encode_cursor(int(world.clock.now), [((TABLES, p), 7) for p in range(3)])  # 9 records
    forged = encode_cursor(int(world.clock.now), [((TABLES, p), 0) for p in range(3)])  # 30 records
    await asyncio.gather(world.resumes.prepare(forged), world.resumes.prepare(legit))
    assert log.reads == 1
    assert world.resume(world.session("s1"), legit)[-1]["data"]["recovered"] is True
    assert world.resume(world.session("s1"), forged)[-1]["data"] == {"recovered": False}


async def test_a_cursor_far_ahead_of_the_node_is_not_waited_for_and_a_near_one_until_read() -> None:
    world = World()
    world.resumes.catch_up = 5.0
    now = int(world.clock.now)
    forged = encode_cursor(now, [((TABLES, 0), 10**9), ((TABLES, 1), 0), ((TABLES, 2), 0)])
    await asyncio.wait_for(world.resumes.prepare(forged), 0.5)  # at once, not after 5 s
    near = encode_cursor(now, [((TABLES, 0), 1), ((TABLES, 1), 0), ((TABLES, 2), 0)])
    waiting = asyncio.ensure_future(world.resumes.prepare(near))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    world.table(0, "s1", 0)  # the node reads as far as the cursor: the resume goes on
    await asyncio.wait_for(waiting, 0.5)


def test_an_entry_found_in_two_buckets_is_replayed_once_whatever_its_seq() -> None:
    from mesaya_realtime.application.usecases.resume import _once

    class Entry:
        def __init__(self, seq: int) -> None:
            self.seq = seq

    entries = [Entry(0), Entry(0), Entry(1), Entry(1), Entry(2)]
    assert [e.seq for e in _once(iter(entries))] == [0, 1, 2]  # type: ignore[arg-type]


def test_entities_that_share_a_topic_each_have_its_positions() -> None:
    from mesaya_realtime.bootstrap import entity_topics
    from mesaya_realtime.config import Settings

    spaces = entity_topics(Settings(jwt_secret="x" * 32), CATALOGUE)
    assert spaces["dishes"] == spaces["menus"] == ("mesa-ya.menus.events",)
    positions = Positions(spaces)
    positions.advance("mesa-ya.menus.events", 0, 4)
    assert positions.vector("menus") == positions.vector("dishes") == ((("mesa-ya.menus.events", 0), 5),)
