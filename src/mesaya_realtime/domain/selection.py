"""Table selection ("someone is choosing table 12") as a pure function of an ordered log.

Every gateway node appends selection records to one log (a Kafka topic, keyed by
``<sectionId>:<tableId>`` so that the records of one table keep one order) and applies every
record of that log, in log order, to a :class:`SelectionState`. The state machine decides
with nothing but the records: their order and the time the *producing* node wrote into each
record (``at``, milliseconds since the epoch). It never reads the local clock, so every node
that applies the same records computes the same holder of every table::

    >>> state = SelectionState()
    >>> ada = Holder(node="n1#a", session="7", user="ada")
    >>> bob = Holder(node="n2#b", session="3", user="bob")
    >>> state.apply(Select("hall", "t1", ada, at=1_000, ttl=300_000, request="1"), "0")[-1].kind
    'selected'
    >>> state.apply(Select("hall", "t1", bob, at=1_001, ttl=300_000, request="2"), "0")[-1].kind
    'rejected'

The rules:

* ``select`` on a free table creates a hold that expires ``ttl`` after the record's ``at``.
  A ``select`` by the holder (same node and session) extends it. A ``select`` by anyone else
  is rejected while the hold lasts; once the record's ``at`` is past the hold's expiry the
  old hold ends (``expired``) and the new one starts. So a hold that had expired before a
  record was written never changes the state that record leads to (only whether a release is
  reported): a node that rebuilds the state may leave out holds that expired before every
  record it will apply.
* ``release`` ends a hold only if it names the hold's holder (for ``node_down``: the hold's
  node). An ``expired`` release also needs ``at`` past the hold's expiry, so a release written
  just before a late extension loses. A release that matches nothing is ignored, which makes
  releases idempotent: several nodes may release a dead node's hold, the first one counts.
* ``detach`` (written by the holder's node when its protocol v2 socket drops without a close
  frame) keeps the hold but marks it detached until ``until``; ``adopt`` by a socket of the
  same user before then moves the hold to that socket, unchanged otherwise (a client that
  resumes, on any node, keeps its tables). A detached hold that nobody adopts is released by
  its node (``disconnected``) or, if that node dies, by the others (``node_down``).
* ``heartbeat`` and ``checkpoint`` records change no hold. A checkpoint carries the holds
  of one log stream (Kafka partition) as of one offset, so a node that starts later rebuilds
  the state from the last checkpoint and the records after it (:func:`plan_replay`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

import orjson

from mesaya_realtime.domain.errors import CommandError
from mesaya_realtime.domain.messages import format_epoch

__all__ = [
    "MAX_TABLE_ID",
    "Adopt",
    "Adopted",
    "Change",
    "Checkpoint",
    "Detach",
    "Detached",
    "Heartbeat",
    "Hold",
    "Holder",
    "LogEntry",
    "Rejected",
    "Release",
    "ReleaseReason",
    "Released",
    "Select",
    "Selected",
    "SelectionDecodeError",
    "SelectionRecord",
    "SelectionRefused",
    "SelectionState",
    "StreamReplay",
    "Unmatched",
    "decode_record",
    "encode_record",
    "epoch_timestamp",
    "plan_replay",
    "record_key",
    "table_id_from",
]

#: The longest accepted ``tableId`` (the platform's ids are 36-character UUIDs).
MAX_TABLE_ID = 128
_TABLE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_MAX_TEXT = 512
_MAX_TTL_MS = 7 * 24 * 3600 * 1000
_MAX_CHECKPOINT_HOLDS = 1_000_000
_RECORD_VERSION = 1


class SelectionRefused(CommandError):
    """A selection command the gateway will not carry out; ``reason`` is the wire text."""

    reason = "table selection refused"
    code = "selection_refused"


def table_id_from(payload: object) -> str:
    """The ``tableId`` of a command payload, or :class:`SelectionRefused` saying what is wrong.

    >>> table_id_from({"tableId": "table-3"})
    'table-3'
    """
    if not isinstance(payload, dict) or payload.get("tableId") is None:
        raise SelectionRefused("tableId is required", code="invalid_payload", field="payload.tableId")
    value = payload["tableId"]
    if not isinstance(value, str):
        raise SelectionRefused("tableId must be a string", code="invalid_payload", field="payload.tableId")
    if not value:
        raise SelectionRefused("tableId is required", code="invalid_payload", field="payload.tableId")
    if len(value) > MAX_TABLE_ID:
        raise SelectionRefused("tableId is too long", code="invalid_payload", field="payload.tableId")
    if _TABLE_ID.fullmatch(value) is None:
        raise SelectionRefused("tableId is malformed", code="invalid_payload", field="payload.tableId")
    return value


def epoch_timestamp(milliseconds: int) -> str:
    """Milliseconds since the epoch as the gateway's RFC 3339 UTC text.

    >>> epoch_timestamp(1_768_057_445_500)
    '2026-01-10T15:04:05.5Z'
    """
    return format_epoch(milliseconds / 1000)


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a table: one socket (``session``) of one node incarnation, and its user."""

    node: str
    session: str
    user: str

    def same_socket(self, other: Holder) -> bool:
        return self.node == other.node and self.session == other.session


class ReleaseReason(StrEnum):
    RELEASED = "released"
    DISCONNECTED = "disconnected"
    EXPIRED = "expired"
    NODE_DOWN = "node_down"


@dataclass(frozen=True, slots=True)
class Select:
    """A socket asks for a table (or to extend its hold): ``ttl`` ms from ``at``."""

    section: str
    table: str
    holder: Holder
    at: int
    ttl: int
    request: str = ""
    kind: Literal["select"] = "select"

    @property
    def writer(self) -> str:
        return self.holder.node


@dataclass(frozen=True, slots=True)
class Release:
    """Ends the hold of ``holder`` (for ``node_down``: any hold of ``holder.node``).

    ``writer`` is the node that wrote the record: the holder's own node, or a surviving node
    releasing the holds of a dead one.
    """

    section: str
    table: str
    holder: Holder
    reason: ReleaseReason
    at: int
    writer: str
    request: str = ""
    kind: Literal["release"] = "release"


@dataclass(frozen=True, slots=True)
class Detach:
    """The holder's socket dropped: its hold stays, adoptable by its user until ``until`` (ms)."""

    section: str
    table: str
    holder: Holder
    until: int
    at: int
    kind: Literal["detach"] = "detach"

    @property
    def writer(self) -> str:
        return self.holder.node


@dataclass(frozen=True, slots=True)
class Adopt:
    """A socket of the same user takes over a detached hold (a resume, on any node)."""

    section: str
    table: str
    holder: Holder
    at: int
    request: str = ""
    kind: Literal["adopt"] = "adopt"

    @property
    def writer(self) -> str:
        return self.holder.node


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A node says it is alive; survivors release the holds of nodes that stop saying it."""

    writer: str
    at: int
    kind: Literal["heartbeat"] = "heartbeat"


@dataclass(frozen=True, slots=True)
class Hold:
    """A table held by one socket until ``expires_at`` (ms), unless released earlier."""

    section: str
    table: str
    holder: Holder
    since: int
    expires_at: int
    stream: str
    #: Until when (ms) its user may adopt it after its socket dropped; 0: not detached.
    detached_until: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.section, self.table)

    @property
    def expires_at_text(self) -> str:
        return epoch_timestamp(self.expires_at)

    @property
    def since_text(self) -> str:
        return epoch_timestamp(self.since)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The holds of ``stream`` after applying its records up to offset ``through``."""

    stream: str
    through: int
    holds: tuple[Hold, ...]
    writer: str
    at: int
    kind: Literal["checkpoint"] = "checkpoint"


SelectionRecord = Select | Release | Detach | Adopt | Heartbeat | Checkpoint


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A record at its place in the log: ``stream`` (a partition) and ``offset``."""

    stream: str
    offset: int
    record: SelectionRecord


# -- what applying a record changes -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selected:
    """A hold started (``extended`` False) or was extended by its holder."""

    hold: Hold
    extended: bool
    kind: Literal["selected"] = "selected"


@dataclass(frozen=True, slots=True)
class Released:
    hold: Hold
    reason: ReleaseReason
    kind: Literal["released"] = "released"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A select lost: ``hold`` is the hold that stands."""

    select: Select
    hold: Hold
    kind: Literal["rejected"] = "rejected"


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A release (detach, adopt) that named no current hold it may change; nothing changed."""

    release: Release | Detach | Adopt
    kind: Literal["unmatched"] = "unmatched"


@dataclass(frozen=True, slots=True)
class Detached:
    hold: Hold
    kind: Literal["detached"] = "detached"


@dataclass(frozen=True, slots=True)
class Adopted:
    """A detached hold moved to ``hold.holder``; ``previous`` held it."""

    hold: Hold
    previous: Holder
    kind: Literal["adopted"] = "adopted"


Change = Selected | Released | Rejected | Unmatched | Detached | Adopted


# -- the state machine -----------------------------------------------------------------------


@dataclass(slots=True)
class SelectionState:
    """The current holds, changed only by :meth:`apply` (and :meth:`restore` at start-up)."""

    _holds: dict[tuple[str, str], Hold] = field(default_factory=dict)
    _by_section: dict[str, dict[str, Hold]] = field(default_factory=dict)
    _by_socket: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._holds)

    def __iter__(self) -> Iterator[Hold]:
        return iter(tuple(self._holds.values()))

    def hold(self, section: str, table: str) -> Hold | None:
        return self._holds.get((section, table))

    def in_section(self, section: str) -> list[Hold]:
        return list(self._by_section.get(section, {}).values())

    def of_socket(self, node: str, session: str) -> list[Hold]:
        keys = self._by_socket.get((node, session), ())
        return [self._holds[key] for key in keys]

    def in_stream(self, stream: str) -> list[Hold]:
        return [hold for hold in self._holds.values() if hold.stream == stream]

    def apply(self, record: SelectionRecord, stream: str) -> list[Change]:
        """Apply one record; the last change is the record's own outcome (none for
        heartbeats and checkpoints), preceded by what it ended implicitly (an expired hold)."""
        if isinstance(record, Select):
            return self._select(record, stream)
        if isinstance(record, Release):
            return [self._release(record)]
        if isinstance(record, Detach):
            return [self._detach(record)]
        if isinstance(record, Adopt):
            return [self._adopt(record)]
        return []

    def _detach(self, record: Detach) -> Change:
        current = self._holds.get((record.section, record.table))
        if current is None or not current.holder.same_socket(record.holder):
            return Unmatched(record)
        hold = replace(current, detached_until=record.until)
        self._put(hold)
        return Detached(hold)

    def _adopt(self, record: Adopt) -> Change:
        current = self._holds.get((record.section, record.table))
        if (
            current is None
            or current.holder.user != record.holder.user
            or record.at >= current.detached_until
            or record.at >= current.expires_at
        ):
            return Unmatched(record)
        hold = replace(current, holder=record.holder, detached_until=0)
        self._put(hold)
        return Adopted(hold, current.holder)

    def restore(self, stream: str, holds: Iterable[Hold]) -> None:
        """Replace the holds of ``stream`` by ``holds`` (a checkpoint's, at start-up)."""
        for hold in self.in_stream(stream):
            self._remove(hold)
        for hold in holds:
            self._put(hold if hold.stream == stream else _with_stream(hold, stream))

    def _select(self, record: Select, stream: str) -> list[Change]:
        changes: list[Change] = []
        current = self._holds.get((record.section, record.table))
        mine = current is not None and current.holder.same_socket(record.holder)
        if current is not None and not mine and record.at >= current.expires_at:
            self._remove(current)
            changes.append(Released(current, ReleaseReason.EXPIRED))
            current = None
        if current is None:
            hold = Hold(
                record.section,
                record.table,
                record.holder,
                since=record.at,
                expires_at=record.at + record.ttl,
                stream=stream,
            )
            self._put(hold)
            changes.append(Selected(hold, extended=False))
        elif mine:
            # After its expiry the holder's select starts afresh, exactly as if the expired
            # hold had been released: the state then no longer depends on a hold that ended.
            extended = record.at < current.expires_at
            hold = Hold(
                current.section,
                current.table,
                current.holder,
                since=current.since if extended else record.at,
                expires_at=max(current.expires_at, record.at + record.ttl),
                stream=current.stream,
            )
            self._put(hold)  # an extension by its own socket is no longer detached
            changes.append(Selected(hold, extended=extended))
        else:
            changes.append(Rejected(record, current))
        return changes

    def _release(self, record: Release) -> Change:
        current = self._holds.get((record.section, record.table))
        if current is None:
            return Unmatched(record)
        if record.reason is ReleaseReason.NODE_DOWN:
            matches = current.holder.node == record.holder.node
        else:
            matches = current.holder.same_socket(record.holder)
        if record.reason is ReleaseReason.EXPIRED:
            matches = matches and record.at >= current.expires_at
        if not matches:
            return Unmatched(record)
        self._remove(current)
        return Released(current, record.reason)

    def _put(self, hold: Hold) -> None:
        previous = self._holds.get(hold.key)
        if previous is not None and not previous.holder.same_socket(hold.holder):
            self._remove(previous)
        self._holds[hold.key] = hold
        self._by_section.setdefault(hold.section, {})[hold.table] = hold
        self._by_socket.setdefault((hold.holder.node, hold.holder.session), set()).add(hold.key)

    def _remove(self, hold: Hold) -> None:
        self._holds.pop(hold.key, None)
        tables = self._by_section.get(hold.section)
        if tables is not None:
            tables.pop(hold.table, None)
            if not tables:
                del self._by_section[hold.section]
        socket = (hold.holder.node, hold.holder.session)
        keys = self._by_socket.get(socket)
        if keys is not None:
            keys.discard(hold.key)
            if not keys:
                del self._by_socket[socket]


def _with_stream(hold: Hold, stream: str) -> Hold:
    return replace(hold, stream=stream)


# -- rebuilding the state at start-up --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamReplay:
    """How a starting node rebuilds one stream: restore ``base``, then apply ``entries``.

    ``through`` is the offset of the last record the replay covers (``-1`` for none).
    """

    stream: str
    base: tuple[Hold, ...]
    entries: tuple[LogEntry, ...]
    through: int


def plan_replay(
    stream: str,
    entries: Sequence[LogEntry],
    first_offset: int,
    end_offset: int,
    from_log_start: bool,
) -> StreamReplay | None:
    """The replay of one stream from the records read in ``[first_offset, end_offset)``.

    The base is the checkpoint with the highest ``through`` that is at least
    ``first_offset - 1`` (so every record after it was read); any such checkpoint gives the
    same state, the latest one leaves the fewest records to apply. Without one, the records
    are enough only when they start at the beginning of the log (empty base); otherwise this
    returns None: read from the start.

    >>> plan_replay("0", [], first_offset=0, end_offset=0, from_log_start=True).through
    -1
    """
    base: tuple[Hold, ...] | None = None
    through = first_offset - 1
    for entry in entries:
        record = entry.record
        if not isinstance(record, Checkpoint) or not first_offset - 1 <= record.through < entry.offset:
            continue
        if base is None or record.through >= through:
            base, through = record.holds, record.through
    if base is None:
        if not from_log_start:
            return None
        base = ()
    replay = tuple(
        entry for entry in entries if entry.offset > through and not isinstance(entry.record, Checkpoint)
    )
    return StreamReplay(stream, base, replay, end_offset - 1)


# -- the wire format of records --------------------------------------------------------------


class SelectionDecodeError(ValueError):
    """Bytes from the selection log that are not a selection record."""


def record_key(record: SelectionRecord) -> bytes | None:
    """The log key: ``<sectionId>:<tableId>`` orders one table's records; None = explicit stream."""
    if isinstance(record, Select | Release | Detach | Adopt):
        return f"{record.section}:{record.table}".encode()
    if isinstance(record, Heartbeat):
        return f"node:{record.writer}".encode()
    return None


def _holder_fields(holder: Holder) -> dict[str, str]:
    return {"node": holder.node, "session": holder.session, "user": holder.user}


def _hold_fields(hold: Hold) -> dict[str, Any]:
    fields = {
        "section": hold.section,
        "table": hold.table,
        **_holder_fields(hold.holder),
        "since": hold.since,
        "expires": hold.expires_at,
    }
    if hold.detached_until:
        fields["detached"] = hold.detached_until
    return fields


def encode_record(record: SelectionRecord) -> bytes:
    """JSON bytes of a record (``v`` is the format version).

    >>> encode_record(Heartbeat("n1#a", 5))
    b'{"v":1,"kind":"heartbeat","writer":"n1#a","at":5}'
    """
    body: dict[str, Any] = {"v": _RECORD_VERSION, "kind": record.kind}
    if isinstance(record, Select):
        body.update(
            section=record.section,
            table=record.table,
            **_holder_fields(record.holder),
            at=record.at,
            ttl=record.ttl,
            request=record.request,
        )
    elif isinstance(record, Release):
        body.update(
            section=record.section,
            table=record.table,
            **_holder_fields(record.holder),
            reason=record.reason.value,
            at=record.at,
            writer=record.writer,
            request=record.request,
        )
    elif isinstance(record, Detach):
        body.update(
            section=record.section,
            table=record.table,
            **_holder_fields(record.holder),
            until=record.until,
            at=record.at,
        )
    elif isinstance(record, Adopt):
        body.update(
            section=record.section,
            table=record.table,
            **_holder_fields(record.holder),
            at=record.at,
            request=record.request,
        )
    elif isinstance(record, Heartbeat):
        body.update(writer=record.writer, at=record.at)
    else:
        body.update(
            stream=record.stream,
            through=record.through,
            writer=record.writer,
            at=record.at,
            holds=[_hold_fields(hold) for hold in record.holds],
        )
    return orjson.dumps(body)


def _text(body: dict[str, Any], name: str, *, empty: bool = False) -> str:
    value = body.get(name, "" if empty else None)
    if not isinstance(value, str) or len(value) > _MAX_TEXT or (not value and not empty):
        raise SelectionDecodeError(f"bad {name}")
    return value


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SelectionDecodeError(f"bad {name}")
    return value


#: Below year 9999 even with the longest TTL added, so every time formats as RFC 3339.
_EPOCH_MS_MAX = 253_000_000_000_000


def _holder(body: dict[str, Any]) -> Holder:
    return Holder(_text(body, "node"), _text(body, "session"), _text(body, "user", empty=True))


def _hold(body: object, stream: str) -> Hold:
    if not isinstance(body, dict):
        raise SelectionDecodeError("bad hold")
    return Hold(
        _text(body, "section"),
        _text(body, "table"),
        _holder(body),
        since=_integer(body, "since", 0, _EPOCH_MS_MAX),
        expires_at=_integer(body, "expires", 0, _EPOCH_MS_MAX),
        stream=stream,
        detached_until=_integer(body, "detached", 0, _EPOCH_MS_MAX) if "detached" in body else 0,
    )


def decode_record(raw: bytes | None) -> SelectionRecord:
    """A record from its JSON bytes; anything else raises :class:`SelectionDecodeError`."""
    if raw is None:
        raise SelectionDecodeError("empty record")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise SelectionDecodeError("not JSON") from None
    if not isinstance(body, dict):
        raise SelectionDecodeError("not an object")
    kind = body.get("kind")
    if kind == "select":
        return Select(
            _text(body, "section"),
            _text(body, "table"),
            _holder(body),
            at=_integer(body, "at", 0, _EPOCH_MS_MAX),
            ttl=_integer(body, "ttl", 1, _MAX_TTL_MS),
            request=_text(body, "request", empty=True),
        )
    if kind == "release":
        try:
            reason = ReleaseReason(str(body.get("reason")))
        except ValueError:
            raise SelectionDecodeError("bad reason") from None
        return Release(
            _text(body, "section"),
            _text(body, "table"),
            _holder(body),
            reason,
            at=_integer(body, "at", 0, _EPOCH_MS_MAX),
            writer=_text(body, "writer"),
            request=_text(body, "request", empty=True),
        )
    if kind == "detach":
        return Detach(
            _text(body, "section"),
            _text(body, "table"),
            _holder(body),
            until=_integer(body, "until", 0, _EPOCH_MS_MAX),
            at=_integer(body, "at", 0, _EPOCH_MS_MAX),
        )
    if kind == "adopt":
        return Adopt(
            _text(body, "section"),
            _text(body, "table"),
            _holder(body),
            at=_integer(body, "at", 0, _EPOCH_MS_MAX),
            request=_text(body, "request", empty=True),
        )
    if kind == "heartbeat":
        return Heartbeat(_text(body, "writer"), _integer(body, "at", 0, _EPOCH_MS_MAX))
    if kind == "checkpoint":
        stream = _text(body, "stream")
        holds = body.get("holds")
        if not isinstance(holds, list) or len(holds) > _MAX_CHECKPOINT_HOLDS:
            raise SelectionDecodeError("bad holds")
        return Checkpoint(
            stream,
            through=_integer(body, "through", -1, 1 << 62),
            holds=tuple(_hold(item, stream) for item in holds),
            writer=_text(body, "writer"),
            at=_integer(body, "at", 0, _EPOCH_MS_MAX),
        )
    raise SelectionDecodeError("unknown kind")
