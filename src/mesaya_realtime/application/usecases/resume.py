"""Cursors and resume (protocol v2): the node's log position, recent events, replay.

- :class:`Positions` is the node's position in every partition of the event topics: the
  offset of the next record it has not delivered. It is what a cursor encodes
  (domain/cursors.py), per entity (the partitions of the entity's topics), encoded once per
  event and shared by every v2 socket of the entity.
- :class:`Journal` keeps the events this node delivered, once per node, for ``max_age``
  seconds and at most ``max_bytes``, indexed per partition by offset. Each entry builds its v2
  frame (the event's message with the cursor at that event) once, on first need.
- :class:`ResumeService` serves ``since=<cursor>``: it waits (briefly) until this node has
  read as far as the cursor, then, in the same event-loop turn as the socket joins the hub,
  replays every journaled event after the cursor that the socket is entitled to (the hub's
  own rule, :meth:`Hub.entitled`), in partition order, then ``system.resumed``. Live events
  follow with no gap and no duplicate, since nothing else runs in between.

docs/WEBSOCKET_ENDPOINTS.md "Cursors and resume" and docs/ARCHITECTURE.md "Resume".
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from mesaya_realtime.application.handlers.events import Record
from mesaya_realtime.application.ports.connections import Framer
from mesaya_realtime.application.ports.log_reader import LogRangeReader, LogRangeUnavailable, RawRecord
from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.log_limits import RateLimitedLog
from mesaya_realtime.application.usecases.sessions import Session
from mesaya_realtime.domain.catalogue import Visibility
from mesaya_realtime.domain.cursors import Cursor, CursorError, decode_cursor, encode_cursor
from mesaya_realtime.domain.events import DomainEvent
from mesaya_realtime.domain.messages import Message, encode

__all__ = ["Journal", "JournalEntry", "Positions", "ResumeService", "resumed_message"]

Key = tuple[str, int]
Vector = tuple[tuple[Key, int], ...]
#: A record read again from the log, as the ingest decodes it (None: not a delivered event).
Decode = Callable[[RawRecord], DomainEvent | None]

log = logging.getLogger(__name__)
_BACKFILLS = RateLimitedLog(log)
#: Records of a gap decoded in one event-loop turn.
_DECODE_SLICE = 500
#: A cursor further ahead of this node than this (records, in a partition) is not waited for.
_MAX_AHEAD = 100_000
#: Seconds between two reads of the log for resumes.
_FILL_INTERVAL = 1.0

#: Seconds a cached cursor text may be reused (its issue time is at most this old).
_REISSUE = 1.0


@dataclass(slots=True)
class _Space:
    """One entity's partitions: its position vector and cursor text, rebuilt when changed."""

    topics: tuple[str, ...]
    keys: list[Key] = field(default_factory=list)
    vector: Vector | None = ()
    text: str = ""
    text_at: float = 0.0


class Positions:
    """The node's next offset per partition of the event topics, and the cursors of it."""

    def __init__(
        self, entity_topics: Mapping[str, Sequence[str]], clock: Callable[[], float] = time.time
    ) -> None:
        """``entity_topics``: each entity's topics (a topic that several entities share, as
        menus and dishes do, is in each one's space)."""
        self._clock = clock
        self._next: dict[Key, int] = {}
        self._spaces: dict[str, _Space] = {}
        self._spaces_of: dict[str, list[_Space]] = {}
        for entity, topics in entity_topics.items():
            space = self._spaces[entity] = _Space(tuple(dict.fromkeys(topics)))
            for topic in space.topics:
                self._spaces_of.setdefault(topic, []).append(space)
        self._empty = _Space(())

    def topics(self, entity: str) -> tuple[str, ...]:
        return self._spaces.get(entity, self._empty).topics

    def all_topics(self) -> tuple[str, ...]:
        return tuple(self._spaces_of)

    def keys(self, entity: str) -> list[Key]:
        return self._spaces.get(entity, self._empty).keys

    def knows(self, topic: str) -> bool:
        return topic in self._spaces_of

    def started(self, topic: str, partition: int, offset: int) -> None:
        """The event source assigned a partition at ``offset`` (nothing before it is read)."""
        key = (topic, partition)
        if key not in self._next and topic in self._spaces_of:
            self._set(key, offset)

    def advance(self, topic: str, partition: int, offset: int) -> bool:
        """The record at ``offset`` is being delivered; False for a topic of no entity."""
        key = (topic, partition)
        current = self._next.get(key)
        if current is None:
            if topic not in self._spaces_of:
                return False
        elif offset < current:
            return True  # an old record again: the position never goes back
        self._set(key, offset + 1)
        return True

    def _set(self, key: Key, offset: int) -> None:
        known = key in self._next
        self._next[key] = offset
        for space in self._spaces_of[key[0]]:
            if not known:
                bisect.insort(space.keys, key)
            space.vector = None
            space.text = ""

    def position(self, key: Key) -> int | None:
        return self._next.get(key)

    def vector(self, entity: str) -> Vector:
        """The entity's position now (immutable; shared until the next change)."""
        space = self._spaces.get(entity, self._empty)
        vector = space.vector
        if vector is None:
            following = self._next
            vector = space.vector = tuple((key, following[key]) for key in space.keys)
        return vector

    def cursor(self, entity: str) -> str:
        """The entity's cursor now, encoded once per change (or per second when unchanged)."""
        space = self._spaces.get(entity, self._empty)
        now = self._clock()
        if not space.text or now - space.text_at >= _REISSUE:
            space.text = encode_cursor(int(now), self.vector(entity))
            space.text_at = now
        return space.text

    def reached(self, cursor: Cursor) -> bool:
        """True when this node has read every partition at least as far as ``cursor``."""
        following = self._next
        return all(following.get(key, -1) >= offset for key, offset in cursor.positions.items())


class JournalEntry:
    """One delivered event in the journal.

    The decoded event is held only while it is being delivered (:meth:`settle` lets it go):
    the journal keeps the record's bytes and what replay decides with (entity, scope, users,
    topic), a few objects instead of an event's dozens, and no position vector (a replayed
    frame's cursor is the resuming client's own, moved on by what it is sent). The message
    without its cursor is encoded once, on first need, and shared: a frame is that text with
    the cursor appended (the last key), framed.
    """

    __slots__ = (
        "_body",
        "_decode",
        "_framer",
        "_positions",
        "at",
        "buckets",
        "event",
        "key",
        "offset",
        "raw",
        "scope",
        "seq",
        "size",
        "spec",
        "topic",
        "users",
    )

    def __init__(
        self,
        seq: int,
        key: Key,
        offset: int,
        at: float,
        event: DomainEvent,
        raw: bytes | None,
        positions: Positions,
        framer: Framer,
        decode: Decode | None,
    ) -> None:
        self.seq = seq
        self.key = key
        self.offset = offset
        self.at = at
        self.event: DomainEvent | None = event
        self.spec = event.entity
        self.scope = event.scope
        self.users = event.users
        self.topic = event.topic
        self.buckets = buckets_of(event)
        self.raw = raw
        self.size = len(raw or b"") + _ENTRY_OVERHEAD
        self._positions = positions
        self._framer = framer
        self._decode = decode
        self._body = b""

    def settle(self) -> None:
        """Delivered: keep the bytes, let the decoded event go."""
        if self._decode is not None:
            self.event = None

    def _encoded(self) -> bytes:
        """The message's JSON without a cursor (``cursor`` is the last key when present)."""
        if not self._body:
            event = self.event
            if event is None:
                assert self._decode is not None
                event = self._decode(Record(self.key[0], self.key[1], self.offset, self.raw))
                if event is None:  # cannot be: the same bytes decoded before
                    raise ValueError("journal entry no longer decodes")
            self._body = encode(event.message())
        return self._body

    def frame_with(self, cursor: str) -> bytes:
        """The message with ``cursor`` (only ``[0-9a-z.:;]``: nothing to escape), framed."""
        body = self._encoded()
        return self._framer(b'%s,"cursor":"%s"}' % (body[:-1], cursor.encode()))

    def live_frame(self) -> bytes:
        """The frame every v2 socket receives live: the node's cursor right after this event
        (the ingest delivers each event right after moving the position past it)."""
        return self.frame_with(self._positions.cursor(self.spec.name))


#: What an entry costs beyond its record's bytes (the entry, its indexes, a frame once built).
_ENTRY_OVERHEAD = 400


class _Run:
    """Entries in delivery order with a sorted key each (offsets of a partition, or seqs of a
    bucket); the oldest leave from the front (``head``), compacted now and then."""

    __slots__ = ("entries", "head", "keys")

    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []
        self.keys: list[int] = []
        self.head = 0

    def append(self, key: int, entry: JournalEntry) -> None:
        self.entries.append(entry)
        self.keys.append(key)

    def drop_first(self) -> int:
        """Drop the oldest entry; returns its key."""
        key = self.keys[self.head]
        self.head += 1
        if self.head > 64 and self.head * 2 > len(self.entries):
            del self.entries[: self.head], self.keys[: self.head]
            self.head = 0
        return key

    def __bool__(self) -> bool:
        return self.head < len(self.entries)

    def index(self, key: int) -> int:
        """The position of the first entry whose key is at least ``key``."""
        return max(self.head, bisect.bisect_left(self.keys, key, self.head))

    def prepend_items(self, items: list[tuple[int, JournalEntry]]) -> None:
        """Entries older than every entry here (a backfill), in key order."""
        head = self.head
        self.entries[head:head] = [entry for _, entry in items]
        self.keys[head:head] = [key for key, _ in items]


class _Partition(_Run):
    """A partition's entries by offset; ``covered``: the offset from which every delivered
    event of the partition is still journaled."""

    __slots__ = ("covered",)

    def __init__(self, covered: int) -> None:
        super().__init__()
        self.covered = covered

    def drop_first(self) -> int:
        offset = super().drop_first()
        self.covered = offset + 1
        return offset

    def prepend(self, first: int, items: list[tuple[int, JournalEntry]]) -> None:
        """A backfill: the events from ``first`` up to ``covered``; now covered from ``first``."""
        self.prepend_items(items)
        self.covered = first


#: A bucket: the entries of one entity (``""``), of one scope value (``"s:<value>"``) or of
#: one user (``"u:<id>"``), so that a resume reads only what its socket may be entitled to.
Bucket = tuple[str, str]


def buckets_of(event: DomainEvent) -> tuple[Bucket, ...]:
    entity = event.entity.name
    return (
        (entity, ""),
        *((entity, f"s:{value}") for value in event.scope),
        *((entity, f"u:{user}") for user in event.users),
    )


class Journal:
    """The events this node delivered recently, once per node (bounded by age and bytes),
    indexed per partition by offset and per bucket (:func:`buckets_of`) by delivery order."""

    def __init__(
        self,
        positions: Positions,
        framer: Framer,
        *,
        max_age: float = 300.0,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.positions = positions
        self.max_age = max_age
        self.max_bytes = max_bytes
        self._framer = framer
        self._clock = clock
        self._order: deque[JournalEntry] = deque()
        #: Decodes an entry's bytes again for a replay (the ingest's); None keeps the events.
        self.decode: Decode | None = None
        self._partitions: dict[Key, _Partition] = {}
        self._buckets: dict[Bucket, _Run] = {}
        self._seq = 0
        self.bytes = 0
        #: Bytes of backfilled entries kept beyond ``max_bytes`` until their resumes have run.
        self.reserved = 0
        #: Called after each batch the ingest processed (resumes waiting to be read up to).
        self.on_processed: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._order)

    @property
    def keeps(self) -> bool:
        """False with ``max_age`` 0 (``RESUME_MAX_AGE=0``): no event is journaled."""
        return self.max_age > 0 and self.max_bytes > 0

    def processed(self) -> None:
        if self.on_processed is not None:
            self.on_processed()

    def unreserve(self, size: int) -> None:
        self.reserved = max(0, self.reserved - size)

    def advance(self, topic: str, partition: int, offset: int) -> bool:
        return self.positions.advance(topic, partition, offset)

    def started(self, topic: str, partition: int, offset: int) -> None:
        self.positions.started(topic, partition, offset)
        key = (topic, partition)
        if key not in self._partitions and self.positions.knows(topic):
            self._partitions[key] = _Partition(offset)

    def settle(self, entry: object) -> None:
        """The entry's event has been delivered (see :meth:`JournalEntry.settle`)."""
        if isinstance(entry, JournalEntry):
            entry.settle()

    def add(
        self, topic: str, partition: int, offset: int, event: DomainEvent, raw: bytes | None
    ) -> JournalEntry:
        """Journal an event being delivered (after :meth:`Positions.advance` of its record)."""
        key = (topic, partition)
        part = self._partitions.get(key)
        if part is None:
            part = self._partitions[key] = _Partition(offset)
        now = self._clock()
        self._seq = seq = self._seq + 1
        entry = JournalEntry(seq, key, offset, now, event, raw, self.positions, self._framer, self.decode)
        # The hot path of every event: the appends inlined.
        part.entries.append(entry)
        part.keys.append(offset)
        buckets_index = self._buckets
        for bucket in entry.buckets:
            run = buckets_index.get(bucket)
            if run is None:
                run = buckets_index[bucket] = _Run()
            run.entries.append(entry)
            run.keys.append(seq)
        self._order.append(entry)
        self.bytes += entry.size
        self._evict(now)
        return entry

    def _evict(self, now: float) -> None:
        order = self._order
        oldest = now - self.max_age
        while order and (self.bytes > self.max_bytes + self.reserved or order[0].at < oldest):
            entry = order.popleft()
            self.bytes -= entry.size
            self._partitions[entry.key].drop_first()
            for bucket in entry.buckets:
                run = self._buckets[bucket]
                run.drop_first()
                if not run:
                    del self._buckets[bucket]

    def backfill(
        self,
        ranges: Mapping[Key, tuple[int, int]],
        decoded: Sequence[tuple[RawRecord, DomainEvent | None]],
    ) -> int:
        """Put in front the events of records read again from the log (a resume's gap older
        than the journal), each with its event (None: not one): each range ``[first, end)``
        must end where its partition's journal begins (else it is left out: the journal moved
        meanwhile). Returns the bytes added, held in :attr:`reserved` (beyond ``max_bytes``) until
        :meth:`unreserve`: the resumes that waited for them run first."""
        usable = {key: span for key, span in ranges.items() if self.covered(key) == span[1]}
        oldest = self._order[0].at if self._order else self._clock()
        fresh: list[JournalEntry] = []
        for record, event in sorted(
            decoded, key=lambda pair: (pair[0].topic, pair[0].partition, pair[0].offset)
        ):
            key = (record.topic, record.partition)
            span = usable.get(key)
            if span is None or not span[0] <= record.offset < span[1] or event is None:
                continue
            entry = JournalEntry(
                0, key, record.offset, oldest, event, record.value, self.positions, self._framer, self.decode
            )
            entry.settle()
            fresh.append(entry)
        low = self._order[0].seq if self._order else self._seq + 1
        for index, entry in enumerate(fresh):
            entry.seq = low - len(fresh) + index
        for key, (first, _) in usable.items():
            self._partitions[key].prepend(first, [(e.offset, e) for e in fresh if e.key == key])
        by_bucket: dict[Bucket, list[tuple[int, JournalEntry]]] = {}
        for entry in fresh:
            for bucket in entry.buckets:
                by_bucket.setdefault(bucket, []).append((entry.seq, entry))
        for bucket, items in by_bucket.items():
            run = self._buckets.get(bucket)
            if run is None:
                run = self._buckets[bucket] = _Run()
            run.prepend_items(items)
        self._order.extendleft(reversed(fresh))
        added = sum(entry.size for entry in fresh)
        self.bytes += added
        self.reserved += added
        return added

    def covered(self, key: Key) -> int | None:
        """The offset from which every delivered event of the partition is journaled."""
        part = self._partitions.get(key)
        return part.covered if part is not None else None

    def after(self, starts: Mapping[Key, int], buckets: list[Bucket]) -> Iterator[JournalEntry]:
        """The entries of ``buckets`` at or after ``starts`` in their partitions, in delivery
        order, each once. Reads only those buckets from the first such entry on."""
        first = None
        for key, offset in starts.items():
            part = self._partitions.get(key)
            if part is not None:
                index = part.index(offset)
                if index < len(part.entries) and (first is None or part.entries[index].seq < first):
                    first = part.entries[index].seq
        if first is None:
            return iter(())
        runs = []
        for bucket in buckets:
            run = self._buckets.get(bucket)
            if run is not None:
                runs.append(_from(run, run.index(first), starts))
        if len(runs) == 1:
            return runs[0]
        return _once(heapq.merge(*runs, key=lambda entry: entry.seq))


def _from(run: _Run, index: int, starts: Mapping[Key, int]) -> Iterator[JournalEntry]:
    entries = run.entries
    for position in range(index, len(entries)):
        entry = entries[position]
        start = starts.get(entry.key)
        if start is not None and entry.offset >= start:
            yield entry


def _once(entries: Iterator[JournalEntry]) -> Iterator[JournalEntry]:
    """Drop repeats of an entry found in two buckets (merged in order, repeats are adjacent)."""
    last: int | None = None
    for entry in entries:
        if entry.seq != last:
            last = entry.seq
            yield entry


def resumed_message(session: Session, recovered: bool, replayed: int, cursor: str) -> Message:
    data: dict[str, object] = {"recovered": recovered}
    if recovered:
        data["replayed"] = replayed
    return Message(
        topic="system.resumed",
        entity="system",
        action="resumed",
        data=data,
        metadata={"sectionId": session.section},
        cursor=cursor,
    )


class ResumeService:
    """Serves ``since=<cursor>`` of v2 sockets from the journal (see the module docstring)."""

    def __init__(
        self,
        journal: Journal,
        hub: Hub,
        *,
        max_events: int = 1000,
        catch_up: float = 2.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        reader: LogRangeReader | None = None,
        decode: Decode | None = None,
        max_backfill: int = 20_000,
    ) -> None:
        #: Reads a gap older than the journal from the log (one read shared by every resume
        #: that needs it), and turns its records into events as the ingest does.
        self.reader = reader
        self.decode = decode
        #: The most records one backfill reads (a larger gap: ``recovered: false``).
        self.max_backfill = max_backfill
        self._wanted: dict[Key, int] = {}
        self._fill: asyncio.Future[None] | None = None
        self._next_fill = 0.0
        #: Resumes waiting for this node to read as far as their cursor.
        self._waiters: list[tuple[Cursor, asyncio.Future[None]]] = []
        journal.on_processed = self._reached_some
        self.journal = journal
        self.positions = journal.positions
        self.hub = hub
        self.max_events = max_events
        #: Seconds a resume waits for this node to read as far as the cursor.
        self.catch_up = catch_up
        self.metrics = metrics or NullMetrics()
        self._clock = clock

    def _decode(self, entity: str, since: str) -> Cursor | None:
        """The cursor over the entity's topics (every event topic for ``""``), None when it is
        not one or is older than the journal keeps."""
        topics = self.positions.topics(entity) if entity else self.positions.all_topics()
        try:
            cursor = decode_cursor(since, topics)
        except CursorError:
            return None
        if self._clock() - cursor.issued > self.journal.max_age:
            return None
        return cursor

    async def prepare(self, since: str) -> None:
        """Before a resume opens: wait (at most ``catch_up`` s) until this node has read as far
        as the cursor, then have the journal hold the gap, reading from the log what it lacks
        (shared: every resume waiting meanwhile joins the read in progress or the next one)."""
        cursor = self._decode("", since)
        if cursor is None:
            return
        if not self.positions.reached(cursor) and self._plausible(cursor):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((cursor, waiter))
            try:
                await asyncio.wait_for(waiter, self.catch_up)
            except TimeoutError:
                pass
            finally:
                self._waiters = [(c, w) for c, w in self._waiters if w is not waiter]
        if self.reader is None or self.decode is None:
            return
        for _ in range(3):
            missing = self._missing(cursor)
            if not missing:
                return
            covered = {key: self.journal.covered(key) or first for key, first in missing.items()}
            if sum(covered[key] - first for key, first in missing.items()) > self.max_backfill:
                return  # this gap alone is too large: only this resume is not recovered
            for key, first in missing.items():
                self._wanted[key] = min(first, self._wanted.get(key, first))
            if self._fill is None or self._fill.done():
                self._fill = asyncio.ensure_future(self._backfill())
            try:
                await asyncio.shield(self._fill)
            except Exception:
                return

    def _plausible(self, cursor: Cursor) -> bool:
        """Worth waiting for: every partition known here, none far ahead of this node (a
        forged cursor is answered at once instead)."""
        for key, offset in cursor.positions.items():
            position = self.positions.position(key)
            if position is None or offset - position > _MAX_AHEAD:
                return False
        return True

    def _reached_some(self) -> None:
        """After each ingested batch: release the resumes this node has now read far enough for."""
        if not self._waiters:
            return
        reached = self.positions.reached
        for cursor, waiter in self._waiters:
            if not waiter.done() and reached(cursor):
                waiter.set_result(None)

    def _missing(self, cursor: Cursor) -> dict[Key, int]:
        missing = {}
        for key, first in cursor.positions.items():
            covered = self.journal.covered(key)
            if covered is not None and first < covered:
                missing[key] = first
        return missing

    async def _backfill(self) -> None:
        loop = asyncio.get_running_loop()
        # At most one read of the log per second per node, whatever the resumes ask for.
        await asyncio.sleep(max(0.0, self._next_fill - loop.time()))
        self._next_fill = loop.time() + _FILL_INTERVAL
        wanted, self._wanted = self._wanted, {}
        ranges: dict[Key, tuple[int, int]] = {}
        for key, first in wanted.items():
            covered = self.journal.covered(key)
            if covered is not None and first < covered:
                ranges[key] = (first, covered)
        if not ranges or sum(end - first for first, end in ranges.values()) > self.max_backfill:
            return
        assert self.reader is not None
        assert self.decode is not None
        try:
            records = await self.reader.read(ranges)
        except LogRangeUnavailable as error:
            _BACKFILLS.warning("resume gap not readable", kind="unreadable", reason=str(error))
            self.metrics.resume_backfill("unavailable")
            return
        decoded: list[tuple[RawRecord, DomainEvent | None]] = []
        for start in range(0, len(records), _DECODE_SLICE):
            # Decoded a slice per loop turn: a large gap must not stall the other sockets.
            decoded += [(record, self.decode(record)) for record in records[start : start + _DECODE_SLICE]]
            await asyncio.sleep(0)
        added = self.journal.backfill(ranges, decoded)
        # The waiting resumes run in the next turns; then the entries count as any others.
        loop.call_later(self.catch_up + 1.0, self.journal.unreserve, added)
        self.metrics.resume_backfill("read")
        _BACKFILLS.info("resume gap read from the log", kind="read", records=len(records), bytes=added)

    def valid(self, entity: str, since: str) -> bool:
        """A cursor of the entity's topics, not too old (a socket that may take over its
        dropped table holds must come with one)."""
        return bool(self.positions.topics(entity)) and self._decode(entity, since) is not None

    def resume(self, session: Session, since: str) -> int:
        """Replay to a socket that has just joined the hub, then ``system.resumed``; returns the
        count replayed, or -1 when it could not be (``recovered: false``). Synchronous: no event
        is delivered between the replay and the socket's first live event."""
        entity = session.entity.name
        frames = self._replay(session, since) if self.positions.topics(entity) else None
        connection = session.connection
        if frames is None:
            self.metrics.resume(False)
            session.send(resumed_message(session, False, 0, self.positions.cursor(entity)))
            return -1
        for frame in frames:
            connection.send_frame(frame)
        self.metrics.resume(True)
        session.send(resumed_message(session, True, len(frames), self.positions.cursor(entity)))
        return len(frames)

    @staticmethod
    def _buckets(session: Session) -> list[Bucket]:
        """Where the events the socket may be entitled to are (the hub's rule checks each)."""
        spec = session.entity
        visibility = spec.delivery.visibility
        if visibility is Visibility.PUBLIC or session.is_wildcard:
            return [(spec.name, "")]
        found = [(spec.name, f"s:{session.section}")]
        if visibility is Visibility.PRIVATE:
            found.append((spec.name, f"u:{session.principal.user_id}"))
        return found

    def _replay(self, session: Session, since: str) -> list[bytes] | None:
        entity = session.entity.name
        cursor = self._decode(entity, since)
        if cursor is None or not self.positions.reached(cursor):
            return None
        starts: dict[Key, int] = {}
        for key in self.positions.keys(entity):
            covered = self.journal.covered(key)
            start = cursor.positions.get(key)
            if start is None:
                # The issuing node had not read this partition yet: the client has seen none
                # of it, so it starts where this node's journal of it starts.
                start = covered
            if start is None:
                continue
            if covered is None or start < covered:
                return None  # part of the gap is no longer journaled
            starts[key] = start
        frames: list[bytes] = []
        # The client's position, moved on by each event it is sent: in partition order, every
        # event it may see before that one in its partition has been sent (or was before the
        # cursor), so each replayed frame's cursor is a place to resume from again.
        running = dict(starts)
        running.update(cursor.positions)
        keys = sorted(running)
        entitled = self.hub.entitled
        topics = session.topics
        for entry in self.journal.after(starts, self._buckets(session)):
            if entry.topic not in topics or not entitled(session, entry.spec, entry.scope, entry.users):
                continue
            if len(frames) >= self.max_events:
                return None
            if running[entry.key] <= entry.offset:
                running[entry.key] = entry.offset + 1
            frames.append(
                entry.frame_with(encode_cursor(int(entry.at), [(key, running[key]) for key in keys]))
            )
        return frames
