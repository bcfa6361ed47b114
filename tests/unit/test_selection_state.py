"""The table-selection state machine: pure, deterministic, decided by the log alone."""

from __future__ import annotations

import dataclasses
import random

import orjson
import pytest

from mesaya_realtime.domain.errors import CommandError
from mesaya_realtime.domain.selection import (
    Checkpoint,
    Heartbeat,
    Hold,
    Holder,
    LogEntry,
    Rejected,
    Release,
    Released,
    ReleaseReason,
    Select,
    Selected,
    SelectionDecodeError,
    SelectionRecord,
    SelectionState,
    Unmatched,
    decode_record,
    encode_record,
    plan_replay,
    record_key,
    table_id_from,
)

ADA = Holder("n1#a", "1", "ada")
ADA_OTHER_TAB = Holder("n1#a", "2", "ada")
BOB = Holder("n2#b", "7", "bob")
TTL = 300_000


def select(holder: Holder, at: int, table: str = "t1", section: str = "hall", ttl: int = TTL) -> Select:
    return Select(section, table, holder, at=at, ttl=ttl, request=f"r{at}")


def release(
    holder: Holder, at: int, reason: ReleaseReason = ReleaseReason.RELEASED, table: str = "t1"
) -> Release:
    return Release("hall", table, holder, reason, at=at, writer=holder.node)


def holders(state: SelectionState) -> dict[tuple[str, str], tuple[str, str, int, int]]:
    return {hold.key: (hold.holder.node, hold.holder.session, hold.since, hold.expires_at) for hold in state}


# -- the rules ---------------------------------------------------------------------------------


def test_first_select_of_a_free_table_wins_and_expires_ttl_after_its_time() -> None:
    state = SelectionState()
    [change] = state.apply(select(ADA, 1_000), "0")
    assert change == Selected(Hold("hall", "t1", ADA, since=1_000, expires_at=1_000 + TTL, stream="0"), False)
    assert state.hold("hall", "t1") == change.hold
    assert state.in_section("hall") == [change.hold]
    assert state.of_socket(ADA.node, ADA.session) == [change.hold]


def test_select_by_someone_else_while_held_is_rejected_and_changes_nothing() -> None:
    state = SelectionState()
    state.apply(select(ADA, 1_000), "0")
    before = holders(state)
    for contender in (BOB, ADA_OTHER_TAB):
        [change] = state.apply(select(contender, 2_000), "0")
        assert isinstance(change, Rejected)
        assert change.hold.holder == ADA
    assert holders(state) == before


def test_select_by_the_holder_extends_and_keeps_the_start() -> None:
    state = SelectionState()
    state.apply(select(ADA, 1_000), "0")
    [change] = state.apply(select(ADA, 60_000), "0")
    assert change == Selected(Hold("hall", "t1", ADA, 1_000, 60_000 + TTL, "0"), extended=True)
    [shorter] = state.apply(select(ADA, 61_000, ttl=1), "0")
    assert isinstance(shorter, Selected)
    assert shorter.hold.expires_at == 60_000 + TTL  # an extension never shortens a hold


def test_select_after_expiry_ends_the_old_hold_first() -> None:
    state = SelectionState()
    state.apply(select(ADA, 1_000), "0")
    expired, selected = state.apply(select(BOB, 1_000 + TTL), "0")
    assert expired == Released(Hold("hall", "t1", ADA, 1_000, 1_000 + TTL, "0"), ReleaseReason.EXPIRED)
    assert selected == Selected(Hold("hall", "t1", BOB, 1_000 + TTL, 1_000 + 2 * TTL, "0"), False)


def test_the_holders_select_after_expiry_starts_afresh() -> None:
    state = SelectionState()
    state.apply(select(ADA, 1_000), "0")
    [change] = state.apply(select(ADA, 5_000 + TTL), "0")
    assert change == Selected(Hold("hall", "t1", ADA, 5_000 + TTL, 5_000 + 2 * TTL, "0"), extended=False)


def test_release_by_the_holder_frees_the_table_and_is_idempotent() -> None:
    state = SelectionState()
    state.apply(select(ADA, 1_000), "0")
    assert isinstance(state.apply(release(BOB, 2_000), "0")[0], Unmatched)
    assert isinstance(state.apply(release(ADA_OTHER_TAB, 2_000), "0")[0], Unmatched)
    [freed] = state.apply(release(ADA, 2_000, ReleaseReason.DISCONNECTED), "0")
    assert freed == Released(Hold("hall", "t1", ADA, 1_000, 1_000 + TTL, "0"), ReleaseReason.DISCONNECTED)
    assert isinstance(state.apply(release(ADA, 2_001), "0")[0], Unmatched)
    assert len(state) == 0
    assert state.in_section("hall") == []
    assert state.of_socket(ADA.node, ADA.session) == []


def test_an_expiry_release_counts_only_once_the_hold_has_expired() -> None:
    state = SelectionState()
    state.apply(select(ADA, 1_000), "0")
    early = release(ADA, 1_000 + TTL - 1, ReleaseReason.EXPIRED)
    assert isinstance(state.apply(early, "0")[0], Unmatched)
    state.apply(select(ADA, 2_000), "0")  # extended to 2_000 + TTL
    stale = release(ADA, 1_000 + TTL, ReleaseReason.EXPIRED)
    assert isinstance(state.apply(stale, "0")[0], Unmatched)
    [change] = state.apply(release(ADA, 2_000 + TTL, ReleaseReason.EXPIRED), "0")
    assert change == Released(Hold("hall", "t1", ADA, 1_000, 2_000 + TTL, "0"), ReleaseReason.EXPIRED)


def test_a_node_down_release_ends_any_hold_of_that_node_and_no_other() -> None:
    state = SelectionState()
    state.apply(select(ADA, 1_000, table="t1"), "0")
    state.apply(select(ADA_OTHER_TAB, 1_000, table="t2"), "0")
    state.apply(select(BOB, 1_000, table="t3"), "0")
    survivor = "n3#c"
    for table in ("t1", "t2", "t3"):
        record = Release("hall", table, Holder(ADA.node, "?", ""), ReleaseReason.NODE_DOWN, 9_000, survivor)
        state.apply(record, "0")
    assert [hold.holder for hold in state] == [BOB]


def test_heartbeats_and_checkpoints_change_nothing() -> None:
    state = SelectionState()
    state.apply(select(ADA, 1_000), "0")
    before = holders(state)
    assert state.apply(Heartbeat("n9#z", 5_000), "0") == []
    assert state.apply(Checkpoint("0", 3, (), "n9#z", 5_000), "0") == []
    assert holders(state) == before


def test_holds_are_indexed_by_section_socket_and_stream() -> None:
    state = SelectionState()
    state.apply(select(ADA, 1, table="t1", section="hall"), "0")
    state.apply(select(ADA, 2, table="t2", section="terrace"), "2")
    state.apply(select(BOB, 3, table="t3", section="hall"), "1")
    assert {hold.table for hold in state.in_section("hall")} == {"t1", "t3"}
    assert {hold.table for hold in state.of_socket(ADA.node, ADA.session)} == {"t1", "t2"}
    assert [hold.table for hold in state.in_stream("2")] == ["t2"]
    state.restore("0", [Hold("hall", "t9", BOB, 5, 6, "0")])
    assert {hold.table for hold in state} == {"t2", "t3", "t9"}


# -- determinism: every node, whatever it started from, ends with the same holds -----------------

SOCKETS = [Holder(f"n{n}#x", str(s), f"user-{n}-{s}") for n in range(3) for s in range(2)]
TABLES = [("hall", "t1"), ("hall", "t2"), ("terrace", "t1"), ("terrace", "t3")]


def random_log(rng: random.Random, length: int, ttl: int = 5_000) -> list[SelectionRecord]:
    """Selects, releases and heartbeats from several nodes with skewed clocks."""
    records: list[SelectionRecord] = []
    clock = 1_000_000
    for index in range(length):
        clock += rng.randint(0, 900)
        at = clock + rng.randint(-300, 300)  # each node's own clock
        holder = rng.choice(SOCKETS)
        section, table = rng.choice(TABLES)
        roll = rng.random()
        if roll < 0.55:
            records.append(Select(section, table, holder, at=at, ttl=ttl, request=str(index)))
        elif roll < 0.9:
            reason = rng.choice(list(ReleaseReason))
            writer = rng.choice(SOCKETS).node if reason is ReleaseReason.NODE_DOWN else holder.node
            records.append(Release(section, table, holder, reason, at=at, writer=writer))
        else:
            records.append(Heartbeat(holder.node, at))
    return records


def replay(records: list[SelectionRecord], stream: str = "0") -> SelectionState:
    state = SelectionState()
    for record in records:
        state.apply(record, stream)
    return state


@pytest.mark.parametrize("seed", range(40))
def test_the_same_log_gives_the_same_holds_and_the_same_decisions(seed: int) -> None:
    records = random_log(random.Random(seed), 300)
    first, second = SelectionState(), SelectionState()
    for record in records:
        assert first.apply(record, "0") == second.apply(record, "0")
    assert holders(first) == holders(second)


def with_checkpoints(records: list[SelectionRecord], rng: random.Random) -> list[LogEntry]:
    """The log as Kafka would hold it: checkpoints written by lagging nodes land later."""
    entries: list[LogEntry] = []
    state = SelectionState()
    waiting: list[tuple[int, Checkpoint]] = []
    for record in records:
        offset = len(entries)
        entries.append(LogEntry("0", offset, record))
        state.apply(record, "0")
        if rng.random() < 0.08:
            snapshot = Checkpoint("0", offset, tuple(state.in_stream("0")), "n9#z", 0)
            waiting.append((offset + rng.randint(1, 6), snapshot))
        for due, checkpoint in list(waiting):
            if due <= offset + 1:
                entries.append(LogEntry("0", len(entries), checkpoint))
                waiting.remove((due, checkpoint))
    return entries


@pytest.mark.parametrize("seed", range(40))
def test_a_node_starting_from_any_offset_rebuilds_the_same_holds(seed: int) -> None:
    rng = random.Random(seed)
    records = random_log(rng, 400)
    entries = with_checkpoints(records, rng)
    expected = holders(replay([entry.record for entry in entries]))
    end = len(entries)
    rebuilt = 0
    for first in range(0, end, 7):
        plan = plan_replay("0", entries[first:], first, end, from_log_start=first == 0)
        if plan is None:
            assert not any(
                isinstance(entry.record, Checkpoint) and entry.record.through >= first - 1
                for entry in entries[first:]
            )
            continue
        state = SelectionState()
        state.restore("0", plan.base)
        for entry in plan.entries:
            state.apply(entry.record, "0")
        assert holders(state) == expected, f"started at {first}"
        assert plan.through == end - 1
        rebuilt += 1
    assert rebuilt > 10


@pytest.mark.parametrize("seed", range(40))
def test_holds_that_expired_before_every_later_record_do_not_change_the_outcome(seed: int) -> None:
    rng = random.Random(seed)
    ttl = 5_000
    before = random_log(rng, 200, ttl)
    full = replay(before)
    start = max(record.at for record in before) + ttl  # every hold has expired by then
    later = random_log(rng, 200, ttl)
    shift = start - min(record.at for record in later)
    empty = SelectionState()
    for record in later:
        moved = dataclasses.replace(record, at=record.at + shift)
        full.apply(moved, "0")
        empty.apply(moved, "0")
    assert holders(full) == holders(empty)


# -- rebuilding: which checkpoint, or read from the start ----------------------------------------


def test_plan_replay_takes_the_checkpoint_with_the_highest_offset() -> None:
    hold_a = Hold("hall", "t1", ADA, 1, 2, "0")
    hold_b = Hold("hall", "t1", BOB, 3, 4, "0")
    entries = [
        LogEntry("0", 10, select(ADA, 1)),
        LogEntry("0", 11, Checkpoint("0", 10, (hold_a,), "n1#a", 5)),
        LogEntry("0", 12, select(BOB, 3)),
        LogEntry("0", 13, Checkpoint("0", 12, (hold_b,), "n2#b", 6)),
        LogEntry("0", 14, Checkpoint("0", 10, (hold_a,), "n3#c", 7)),  # a lagging writer
        LogEntry("0", 15, Heartbeat("n1#a", 8)),
    ]
    plan = plan_replay("0", entries, 10, 16, from_log_start=False)
    assert plan is not None
    assert plan.base == (hold_b,)
    assert [entry.offset for entry in plan.entries] == [15]
    assert plan.through == 15


def test_plan_replay_without_a_usable_checkpoint_needs_the_start_of_the_log() -> None:
    entries = [
        LogEntry("0", 20, Checkpoint("0", 18, (), "n1#a", 5)),  # covers records not read
        LogEntry("0", 21, select(ADA, 1)),
    ]
    assert plan_replay("0", entries, 20, 22, from_log_start=False) is None
    plan = plan_replay("0", entries, 20, 22, from_log_start=True)
    assert plan is not None
    assert plan.base == ()
    assert [entry.offset for entry in plan.entries] == [21]


def test_plan_replay_of_an_empty_read() -> None:
    plan = plan_replay("2", [], 7, 7, from_log_start=True)
    assert plan is not None
    assert (plan.stream, plan.base, plan.entries, plan.through) == ("2", (), (), 6)


# -- the wire format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        select(ADA, 1_768_000_000_000),
        Release("hall", "t1", BOB, ReleaseReason.NODE_DOWN, 5, "n3#c", "9"),
        Heartbeat("n1#a", 17),
        Checkpoint("1", 41, (Hold("hall", "t1", ADA, 1, 2, "1"),), "n2#b", 99),
        Checkpoint("0", -1, (), "n2#b", 99),
    ],
)
def test_records_survive_the_wire(record: SelectionRecord) -> None:
    assert decode_record(encode_record(record)) == record


def test_record_keys_order_one_table_together() -> None:
    assert record_key(select(ADA, 1, table="t1", section="s:1")) == b"s:1:t1"
    assert record_key(release(BOB, 2)) == b"hall:t1"
    assert record_key(Heartbeat("n1#a", 1)) == b"node:n1#a"
    assert record_key(Checkpoint("0", 1, (), "n1#a", 1)) is None


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b"[1, 2]",
        b'{"kind": "select"}',
        b'{"kind": "nope"}',
        b'{"kind": "heartbeat", "writer": "n", "at": true}',
        b'{"kind": "heartbeat", "writer": 5, "at": 1}',
        b'{"kind": "release", "section": "s", "table": "t", "node": "n", "session": "1", "user": "u",'
        b' "reason": "bored", "at": 1, "writer": "n"}',
        orjson.dumps(
            {"kind": "select", "section": "s", "table": "t", "node": "n", "session": "1", "user": "u"}
            | {"at": 1, "ttl": 10**12}
        ),
        orjson.dumps({"kind": "checkpoint", "stream": "0", "through": 1, "writer": "n", "at": 1, "holds": 3}),
        orjson.dumps({"kind": "heartbeat", "writer": "n" * 10_000, "at": 1}),
    ],
)
def test_garbage_is_refused(raw: bytes | None) -> None:
    with pytest.raises(SelectionDecodeError):
        decode_record(raw)


# -- command payloads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "tableId is required"),
        ("t1", "tableId is required"),
        ({}, "tableId is required"),
        ({"tableId": None}, "tableId is required"),
        ({"tableId": ""}, "tableId is required"),
        ({"tableId": 12}, "tableId must be a string"),
        ({"tableId": ["t1"]}, "tableId must be a string"),
        ({"tableId": "t" * 129}, "tableId is too long"),
        ({"tableId": "t 1"}, "tableId is malformed"),
        ({"tableId": "hall:t1"}, "tableId is malformed"),
        ({"tableId": ".hidden"}, "tableId is malformed"),
    ],
)
def test_table_ids_are_validated(payload: object, reason: str) -> None:
    with pytest.raises(CommandError) as refused:
        table_id_from(payload)
    assert refused.value.reason == reason


def test_valid_table_ids() -> None:
    for value in ("t1", "table-12", "3f2a6c1e-7b7d-4c1e-9a0f-5d6e7f809a1b", "T_9.v2", "x" * 128):
        assert table_id_from({"tableId": value}) == value
