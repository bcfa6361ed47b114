"""Holds that survive a blip (protocol v2): ``detach`` and ``adopt`` in the selection state
machine (domain/selection.py), and their wire format. The e2e test across two nodes is in
tests/e2e/test_resume.py."""

from __future__ import annotations

import pytest

from mesaya_realtime.domain.selection import (
    Adopt,
    Adopted,
    Checkpoint,
    Detach,
    Detached,
    Hold,
    Holder,
    Release,
    Released,
    ReleaseReason,
    Select,
    SelectionRecord,
    SelectionState,
    Unmatched,
    decode_record,
    encode_record,
    record_key,
)

ADA = Holder("n1#a", "1", "ada")
ADA_BACK = Holder("n2#b", "9", "ada")
BOB = Holder("n2#b", "7", "bob")
TTL = 300_000


def held(at: int = 1_000) -> SelectionState:
    state = SelectionState()
    state.apply(Select("hall", "t1", ADA, at=at, ttl=TTL, request="r"), "0")
    return state


def test_a_detached_hold_is_adopted_by_its_user_within_the_grace() -> None:
    state = held()
    [detached] = state.apply(Detach("hall", "t1", ADA, until=11_000, at=1_500), "0")
    assert isinstance(detached, Detached)
    assert detached.hold.detached_until == 11_000
    [adopted] = state.apply(Adopt("hall", "t1", ADA_BACK, at=5_000, request="a"), "0")
    assert isinstance(adopted, Adopted)
    assert adopted.previous == ADA
    hold = state.hold("hall", "t1")
    assert hold is not None
    assert (hold.holder, hold.since, hold.expires_at, hold.detached_until) == (
        ADA_BACK,
        1_000,
        1_000 + TTL,
        0,
    )
    # The old socket's late release no longer matches; the new one's does.
    assert isinstance(
        state.apply(Release("hall", "t1", ADA, ReleaseReason.DISCONNECTED, 12_000, "n1#a"), "0")[0], Unmatched
    )
    assert isinstance(
        state.apply(Release("hall", "t1", ADA_BACK, ReleaseReason.RELEASED, 12_000, "n2#b"), "0")[0], Released
    )


@pytest.mark.parametrize(
    ("adopt", "why"),
    [
        (Adopt("hall", "t1", BOB, at=5_000), "another user"),
        (Adopt("hall", "t1", ADA_BACK, at=11_000), "after the grace"),
        (Adopt("hall", "t2", ADA_BACK, at=5_000), "no such hold"),
    ],
)
def test_no_adoption_by_another_user_after_the_grace_or_of_nothing(adopt: Adopt, why: str) -> None:
    state = held()
    state.apply(Detach("hall", "t1", ADA, until=11_000, at=1_500), "0")
    assert isinstance(state.apply(adopt, "0")[0], Unmatched), why
    hold = state.hold("hall", "t1")
    assert hold is not None
    assert hold.holder == ADA


def test_a_hold_that_is_not_detached_cannot_be_adopted() -> None:
    state = held()
    assert isinstance(state.apply(Adopt("hall", "t1", ADA_BACK, at=2_000), "0")[0], Unmatched)


def test_only_the_holder_detaches_and_its_own_select_reattaches() -> None:
    state = held()
    assert isinstance(state.apply(Detach("hall", "t1", BOB, until=9_000, at=1_500), "0")[0], Unmatched)
    state.apply(Detach("hall", "t1", ADA, until=9_000, at=1_500), "0")
    state.apply(Select("hall", "t1", ADA, at=2_000, ttl=TTL, request="r2"), "0")
    hold = state.hold("hall", "t1")
    assert hold is not None
    assert hold.detached_until == 0


def test_a_node_down_release_ends_a_detached_hold_of_the_dead_node() -> None:
    state = held()
    state.apply(Detach("hall", "t1", ADA, until=11_000, at=1_500), "0")
    [released] = state.apply(Release("hall", "t1", ADA, ReleaseReason.NODE_DOWN, 6_000, "n2#b"), "0")
    assert isinstance(released, Released)
    assert released.reason is ReleaseReason.NODE_DOWN


@pytest.mark.parametrize(
    "record",
    [
        Detach("hall", "t1", ADA, until=11_000, at=1_500),
        Adopt("hall", "t1", ADA_BACK, at=5_000, request="a1"),
        Checkpoint("0", 3, (Hold("hall", "t1", ADA, 1, 2, "0", detached_until=9),), "n1#a", 4),
    ],
)
def test_the_new_records_survive_the_wire_and_keep_their_tables_order(record: SelectionRecord) -> None:
    assert decode_record(encode_record(record)) == record
    if not isinstance(record, Checkpoint):
        assert record_key(record) == b"hall:t1"
