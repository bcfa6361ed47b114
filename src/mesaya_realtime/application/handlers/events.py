"""What the gateway does with a domain event: deliver it, then make stale snapshots fresh.

One registry, one key: handlers are looked up by the event's catalogue entity name, the same
key the decoder produces, so no event can be registered under one name and looked up under
another (reference §13.1). Entities without their own entry use :data:`DEFAULT_HANDLERS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from mesaya_realtime.application.ports.log_reader import RawRecord
from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.snapshot_cache import SnapshotCache
from mesaya_realtime.domain.catalogue import Catalogue
from mesaya_realtime.domain.events import DomainEvent, EventDecodeError, decode_event

__all__ = [
    "DEFAULT_HANDLERS",
    "EventContext",
    "EventDispatcher",
    "EventIngest",
    "Record",
    "Refresher",
    "SkipLog",
]

log = logging.getLogger(__name__)


class Refresher(Protocol):
    """Schedules refreshed list/detail snapshots for the sockets an event made stale."""

    def schedule(self, event: DomainEvent) -> None: ...


@dataclass(slots=True)
class EventContext:
    hub: Hub
    cache: SnapshotCache
    allowed_actions: frozenset[str]
    metrics: Metrics = field(default_factory=NullMetrics)
    refresher: Refresher | None = None


EventHandler = Callable[[DomainEvent, EventContext], None]


def deliver(event: DomainEvent, context: EventContext) -> None:
    """Push ``<entity>.<event_type>`` to the sockets entitled to it (catalogue rule)."""
    spec = event.entity
    recipients = context.hub.recipients(spec, event.scope, event.users)
    if not recipients:
        return  # no socket entitled on this node: build nothing
    position = event.position
    # Protocol v2 sockets get the message with its cursor (built once, by the journal entry).
    context.hub.publish(event.message(), recipients, v2=position.live_frame if position is not None else None)


def refresh_snapshots(event: DomainEvent, context: EventContext) -> None:
    """Drop the cache entries the event made stale and schedule the refreshed pushes."""
    context.cache.invalidate(event.entity.name, event.resource_id or None)
    if context.refresher is not None:
        context.refresher.schedule(event)


DEFAULT_HANDLERS: tuple[EventHandler, ...] = (deliver, refresh_snapshots)


class EventDispatcher:
    """Runs the handlers of each event; a failing handler is logged, the next one runs."""

    def __init__(
        self,
        context: EventContext,
        handlers: Mapping[str, Sequence[EventHandler]] | None = None,
        also: Sequence[Callable[[DomainEvent], None]] = (),
    ) -> None:
        self.context = context
        self.handlers = dict(handlers or {})
        #: Run for every event after its entity's handlers (the features' event handlers).
        self.also = tuple(also)

    def dispatch(self, event: DomainEvent) -> bool:
        """Handle one event; False when the allowed-actions filter drops it."""
        if event.action not in self.context.allowed_actions:
            return False
        for handler in self.handlers.get(event.entity.name, DEFAULT_HANDLERS):
            try:
                handler(event, self.context)
            except Exception:
                log.exception(
                    "event handler failed",
                    extra={"entity": event.entity.name, "action": event.action},
                )
        for also in self.also:
            try:
                also(event)
            except Exception:
                log.exception(
                    "event handler failed",
                    extra={"entity": event.entity.name, "action": event.action},
                )
        return True


class Record(NamedTuple):
    """One Kafka record as the event source hands it over. With ``start``, no record but the
    notice that the source reads the partition from ``offset`` on (where cursors begin)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    start: bool = False


class EventJournal(Protocol):
    """Where the ingest reports log positions and journals events for protocol v2
    (application/usecases/resume.py ``Journal``)."""

    def started(self, topic: str, partition: int, offset: int) -> None: ...

    def advance(self, topic: str, partition: int, offset: int) -> bool: ...

    def add(
        self, topic: str, partition: int, offset: int, event: DomainEvent, raw: bytes | None
    ) -> object: ...

    def settle(self, entry: object) -> None: ...

    def processed(self) -> None: ...

    @property
    def keeps(self) -> bool: ...


class SkipLog:
    """Skipped records, logged as one line per topic per interval, never one per record.

    The first skip of a topic in a quiet period is logged at once (with its topic, partition,
    offset and reason); the ones after it, until ``interval`` seconds have passed, are
    counted and reported in one ``skipped kafka records`` line per topic with the count per
    reason and one sample. A burst of 100,000 garbage records writes two lines, not 100,000.
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        #: topic -> (window end, counts per reason, sample)
        self._windows: dict[str, tuple[float, dict[str, int], dict[str, object]]] = {}

    def skipped(self, record: Record, reason: str) -> None:
        now = self._clock()
        window = self._windows.get(record.topic)
        if window is not None and now >= window[0]:
            self._report(record.topic, window)
            window = None
        if window is None:
            log.warning(
                "skipped kafka record",
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": reason,
                },
            )
            self._windows[record.topic] = (now + self.interval, {}, {})
            return
        counts, sample = window[1], window[2]
        counts[reason] = counts.get(reason, 0) + 1
        if not sample:
            sample.update(partition=record.partition, offset=record.offset, reason=reason)

    def flush(self, force: bool = False) -> None:
        """Report the windows that are over (all of them with ``force``)."""
        now = self._clock()
        for topic, window in list(self._windows.items()):
            if force or now >= window[0]:
                self._report(topic, window)
                del self._windows[topic]

    def _report(self, topic: str, window: tuple[float, dict[str, int], dict[str, object]]) -> None:
        counts, sample = window[1], window[2]
        if counts:
            log.warning(
                "skipped kafka records",
                extra={
                    "topic": topic,
                    "count": sum(counts.values()),
                    "reasons": dict(counts),
                    "sample": dict(sample),
                },
            )


class EventIngest:
    """Decodes a batch of records and dispatches each event, in order.

    A record that is not an event is counted per topic and reason and skipped (the batch
    goes on); :class:`SkipLog` writes the log lines.
    """

    def __init__(
        self,
        dispatcher: EventDispatcher,
        catalogue: Catalogue,
        topic_entities: Mapping[str, str],
        metrics: Metrics | None = None,
        skip_log: SkipLog | None = None,
        routes: Mapping[str, Callable[[Record], str | None]] | None = None,
        journal: EventJournal | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.catalogue = catalogue
        self.topic_entities = dict(topic_entities)
        #: Topics of the gateway's own (payment pushes) and what reads their records; the
        #: reader returns a skip reason, or None when the record was taken.
        self.routes = dict(routes or {})
        self.metrics = metrics or NullMetrics()
        self.skip_log = skip_log or SkipLog()
        #: Positions and recent events for protocol v2's cursors and resume; None keeps none.
        self.journal = journal

    def decode(self, record: RawRecord) -> DomainEvent | None:
        """The event a record is, as :meth:`process` would deliver it; None for anything else
        (a resume reading its gap again from the log; nothing is counted or logged)."""
        if record.topic in self.routes:
            return None
        try:
            event = decode_event(record.topic, record.value, self.catalogue, self.topic_entities)
        except EventDecodeError:
            return None
        return event if event.action in self.dispatcher.context.allowed_actions else None

    def process(self, records: Sequence[Record]) -> None:
        consumed: dict[str, int] = {}
        skipped: dict[tuple[str, str], int] = {}
        routes = self.routes
        journal = self.journal
        # RESUME_MAX_AGE=0 keeps no events (cursors still move): no resume, no journal cost.
        keep = journal is not None and journal.keeps
        allowed = self.dispatcher.context.allowed_actions
        for record in records:
            if record.start:
                if journal is not None:
                    journal.started(record.topic, record.partition, record.offset)
                continue
            consumed[record.topic] = consumed.get(record.topic, 0) + 1
            # Every record moves the position, events or not: a cursor says "read up to here".
            journaled = journal is not None and journal.advance(record.topic, record.partition, record.offset)
            route = routes.get(record.topic) if routes else None
            if route is not None:
                try:
                    reason = route(record)
                except Exception:
                    log.exception("record handler failed", extra={"topic": record.topic})
                    reason = "handler failed"
                if reason is not None:
                    key = (record.topic, reason)
                    skipped[key] = skipped.get(key, 0) + 1
                    self.skip_log.skipped(record, reason)
                continue
            try:
                event = decode_event(record.topic, record.value, self.catalogue, self.topic_entities)
            except EventDecodeError as error:
                key = (record.topic, error.reason)
                skipped[key] = skipped.get(key, 0) + 1
                self.skip_log.skipped(record, error.reason)
                continue
            entry = None
            if journaled and keep and event.action in allowed:
                assert journal is not None
                entry = event.position = journal.add(
                    record.topic, record.partition, record.offset, event, record.value
                )
            if not self.dispatcher.dispatch(event):
                key = (record.topic, "action not allowed")
                skipped[key] = skipped.get(key, 0) + 1
            if entry is not None:
                assert journal is not None
                event.position = None  # no cycle between the event and its entry
                journal.settle(entry)
        if journal is not None:
            journal.processed()
        for topic, count in consumed.items():
            self.metrics.events_consumed(topic, count)
        for (topic, reason), count in skipped.items():  # counted per batch: bursts are cheap
            self.metrics.event_skipped(topic, reason, count)
        self.skip_log.flush()
