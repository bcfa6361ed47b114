"""Property-based tests of what hostile clients and records reach: the masking guard, the
event decoder, command handling and the skip log. A small example count runs in `make test`,
many in `make fuzz` (tests/conftest.py profiles).

The invariants: nothing raises but the documented error; a record never reaches another
aggregate's entity; a socket's topics stay bounded; a guard never passes an unmasked frame.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesaya_realtime.application.handlers.events import Record, SkipLog
from mesaya_realtime.application.usecases.commands import CommandService, Envelope
from mesaya_realtime.application.usecases.sessions import Session, base_topics
from mesaya_realtime.application.usecases.snapshot_cache import SnapshotCache
from mesaya_realtime.application.usecases.snapshots import SnapshotService
from mesaya_realtime.domain.catalogue import CATALOGUE
from mesaya_realtime.domain.errors import InvalidPayload
from mesaya_realtime.domain.events import EventDecodeError, decode_event
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.messages import format_epoch
from mesaya_realtime.interface.masking import MaskedFramesOnly
from tests.kafka_support import PLATFORM_TOPICS
from tests.unit.test_commands import FakeConnection, FakeFetcher

# -- client frames ------------------------------------------------------------------------------


def frame(payload: bytes, *, masked: bool, opcode: int = 1) -> bytes:
    size = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    return head + (b"\x01\x02\x03\x04" if masked else b"") + payload


class Inner:
    def __init__(self) -> None:
        self.fed = b""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.fed += data
        return False, b""

    def feed_eof(self) -> None:
        pass


frames = st.lists(
    st.tuples(st.binary(max_size=70_000), st.sampled_from([1, 2, 8, 9, 10])), min_size=1, max_size=6
)


def feed_in_pieces(stream: bytes, cuts: list[int]) -> tuple[Inner, list[bool]]:
    """Feed ``stream`` to a fresh guard in the pieces ``cuts`` make (as TCP may deliver it)."""
    inner, flagged = Inner(), []
    guard = MaskedFramesOnly(inner, lambda: flagged.append(True))
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        guard.feed_data(stream[start:cut])
        start = cut
    return inner, flagged


@given(frames, st.data())
def test_masked_frames_pass_whole_in_any_split(parts: list[tuple[bytes, int]], data: st.DataObject) -> None:
    stream = b"".join(frame(p, masked=True, opcode=o) for p, o in parts)
    inner, flagged = feed_in_pieces(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    assert inner.fed == stream
    assert not flagged


@given(frames, st.integers(0, 5), st.data())
def test_an_unmasked_frame_is_never_passed_on(
    parts: list[tuple[bytes, int]], bad_index: int, data: st.DataObject
) -> None:
    bad = bad_index % len(parts)
    encoded = [frame(p, masked=i != bad, opcode=o) for i, (p, o) in enumerate(parts)]
    stream = b"".join(encoded)
    good_prefix = len(b"".join(encoded[:bad]))
    inner, flagged = feed_in_pieces(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    assert flagged == [True]
    # not one byte of the unmasked frame reached the reader: only (a prefix of) the good frames
    assert stream[:good_prefix].startswith(inner.fed)


# -- Kafka records ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
entity_names = st.sampled_from(
    [name for spec in CATALOGUE.entities for name in (spec.name, spec.singular, *spec.aliases)]
)
fields = {
    "event_type": st.sampled_from(["created", "updated", "deleted"]) | json_values,
    "action": json_values,
    "entity_id": st.text(max_size=300) | json_values,
    "resourceId": json_values,
    "entity_subtype": st.sampled_from(["dish", "menu", "plan", "subscription", "nope"]) | json_values,
    "entity": entity_names | json_values,
    "timestamp": st.text(max_size=40) | json_values,
    "data": json_values,
    "metadata": json_values,
}
records = st.fixed_dictionaries({}, optional=fields)


def aggregate(topic: str) -> set[str]:
    return {spec.name for spec in CATALOGUE.entities if topic in spec.kafka_topics}


@given(st.sampled_from(PLATFORM_TOPICS), records)
def test_a_record_is_an_event_of_its_topics_aggregate_or_skipped(topic: str, payload: dict[str, Any]) -> None:
    raw = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    try:
        event = decode_event(topic, raw, CATALOGUE)
    except EventDecodeError:
        return  # skipped and counted: the one failure a record may cause
    assert event.entity.name in aggregate(topic)
    assert all(isinstance(value, str) for value in (*event.scope, *event.users))


@given(st.sampled_from(PLATFORM_TOPICS), st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_a_skip(topic: str, value: bytes) -> None:
    try:
        event = decode_event(topic, value, CATALOGUE)
    except EventDecodeError:
        return
    assert event.entity.name in aggregate(topic)


def test_the_skip_log_writes_one_line_then_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    skips = SkipLog(interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for offset in range(100_000):
            skips.skipped(Record("t", 0, offset, b"x"), "not json")
        skips.flush()
        assert [r.getMessage() for r in caplog.records] == ["skipped kafka record"]
        now[0] = 10.0
        skips.flush()
    summary = caplog.records[-1]
    assert summary.getMessage() == "skipped kafka records"
    assert summary.count == 99_999  # type: ignore[attr-defined]
    assert summary.reasons == {"not json": 99_999}  # type: ignore[attr-defined]
    assert summary.sample == {"partition": 0, "offset": 1, "reason": "not json"}  # type: ignore[attr-defined]


# -- commands -------------------------------------------------------------------------------------

TABLES = CATALOGUE.by_name["tables"]
actions = st.sampled_from(
    [
        *TABLES.list_actions,
        *TABLES.detail_actions,
        "ping",
        "subscribe",
        "unsubscribe",
        "authenticate",
        "select_table",
        "nope",
    ]
)


def session() -> Session:
    principal = Principal("u", ("USER",), "u", "token", None)
    topics = frozenset(base_topics("tables", ("created",)))
    return Session(
        connection=FakeConnection(), principal=principal, entity=TABLES, section="s", topics=topics
    )


@given(st.lists(st.tuples(actions, st.text(max_size=40), json_values), max_size=200))
def test_commands_never_fail_inside_and_topics_stay_bounded(commands: list[tuple[str, str, Any]]) -> None:
    service = CommandService(
        SnapshotService(FakeFetcher(), SnapshotCache(max_entries=10, ttl_seconds=1)), max_topics=20
    )
    socket = session()

    async def run() -> None:
        for action, topic, payload in commands:
            try:
                envelope = Envelope.parse({"action": action, "topic": f"tables.{topic}", "payload": payload})
            except InvalidPayload:
                continue
            reply = await service.handle(socket, envelope)
            if reply is not None and reply.topic.endswith(".error"):
                assert reply.data["error"] != "internal error"
            assert len(socket.topics) <= 20

    asyncio.run(run())


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70))
def test_every_epoch_has_a_timestamp(seconds: float) -> None:
    text = format_epoch(float(seconds))
    assert text.endswith("Z")
    assert 20 <= len(text) <= 27


# -- delivery ---------------------------------------------------------------------------------------

SECTIONS = ["r-1", "r-2", "s-1", "*"]
USERS = ["u-1", "u-2", "u-3"]
ROLE_SETS = [("USER",), ("OWNER",), ("ADMIN",), ("OWNER", "USER"), ()]
sockets_strategy = st.lists(
    st.tuples(
        st.sampled_from([spec.name for spec in CATALOGUE.entities]),
        st.sampled_from(SECTIONS),
        st.sampled_from(USERS),
        st.sampled_from(ROLE_SETS),
    ),
    min_size=1,
    max_size=30,
)
events_strategy = st.fixed_dictionaries(
    {
        "data": st.fixed_dictionaries(
            {},
            optional={
                "restaurantId": st.sampled_from(SECTIONS[:3]),
                "sectionId": st.sampled_from(SECTIONS[:3]),
                "userId": st.sampled_from(USERS),
                "id": st.sampled_from(SECTIONS[:3]),
            },
        ),
        "metadata": st.fixed_dictionaries(
            {},
            optional={"restaurant_id": st.sampled_from(SECTIONS[:3]), "user_id": st.sampled_from(USERS)},
        ),
    }
)


def entitled(spec: Any, session: Session, data: dict[str, Any], metadata: dict[str, Any]) -> bool:
    """The rule of docs/ARCHITECTURE.md "Who may see what", written out independently."""
    rule = spec.delivery
    if session.section == "*":
        return True  # only ADMIN sockets are on `*` (the handshake refuses others)
    if rule.visibility.value == "public":
        return True
    values = {
        str(source[key])
        for path in rule.scope_paths
        for root, key in [path.split(".", 1)]
        for source in [data if root == "data" else metadata]
        if key in source
    }
    users = {
        str(source[key])
        for path in rule.user_paths
        for root, key in [path.split(".", 1)]
        for source in [data if root == "data" else metadata]
        if key in source
    }
    if rule.visibility.value == "scoped":
        return session.section in values
    staff = session.principal.audience != "user"
    return (staff and session.section in values) or session.principal.user_id in users


@given(sockets_strategy, st.sampled_from(list(CATALOGUE.entities)), events_strategy)
def test_an_event_reaches_exactly_the_entitled_sockets(
    population: list[tuple[str, str, str, tuple[str, ...]]], spec: Any, event: dict[str, Any]
) -> None:
    from mesaya_realtime.application.usecases.hub import Hub

    hub = Hub(lambda payload: payload)
    sessions = []
    for entity, where, user, roles in population:
        if where == "*" and "ADMIN" not in roles:
            continue  # refused at the handshake
        principal = Principal(user, roles, user, "t", None)
        session = Session(
            connection=FakeConnection(),
            principal=principal,
            entity=CATALOGUE.by_name[entity],
            section=where,
            topics=frozenset(),
        )
        hub.add(session)
        sessions.append(session)
    topic = sorted(
        t
        for t in CATALOGUE.topic_entities
        if CATALOGUE.topic_entities[t] == spec.name or (t in spec.kafka_topics)
    )[0]
    payload = {"event_type": "updated", "entity_id": "x", **event}
    if spec.kafka_subtypes:
        payload["entity_subtype"] = spec.kafka_subtypes[0]
    decoded = decode_event(topic, orjson.dumps(payload), CATALOGUE)
    assert decoded.entity is spec
    got = {s.id for s in hub.recipients(spec, decoded.scope, decoded.users)}
    want = {
        s.id for s in sessions if s.entity is spec and entitled(spec, s, event["data"], event["metadata"])
    }
    assert got == want
