"""The Kafka event source: confluent-kafka in a thread, batches handed to the event loop.

Every node must see every event, so the consumer uses no consumer group membership: it
assigns itself every partition of the configured topics (``assign``, never ``subscribe``).
Where each partition starts:

- partitions that exist when the node first reaches the broker start at their end offset,
  resolved before the node reports ready (a fresh node does not replay history);
- partitions that appear later (a topic created after the node started, or new partitions)
  start at the first record produced since the node first reached the broker
  (``offsets_for_times``), so the record whose produce created the topic is not lost;
- a partition the node already read keeps its in-memory position, across broker restarts
  and across a re-created consumer, so nothing produced while the node was connected is lost.

The thread, the retried consumer and the bounded hand-over (one batch per loop turn) are
:class:`~mesaya_realtime.infrastructure.kafka_reader.KafkaReader`'s, shared with the table
selection log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from mesaya_realtime.application.handlers.events import Record
from mesaya_realtime.infrastructure.kafka_reader import KafkaReader, fetch_batch

__all__ = ["KafkaEventSource", "KafkaSourceConfig", "fetch_batch"]

log = logging.getLogger(__name__)

_Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class KafkaSourceConfig:
    brokers: str
    topics: Sequence[str]
    group_id: str
    #: Records taken from librdkafka at once, and run in one event-loop turn. With 1,000, a
    #: burst of 100,000 records delayed another client's ping by 60-110 ms; with 100, by
    #: 10-60 ms, with the same fan-out cost per delivery and ingest rate (docs/BENCHMARKS.md,
    #: "Hostile input"). Slicing batches by time was tried and cost bursts 4x per delivery:
    #: the frames of a burst are coalesced per loop turn.
    batch_size: int = 100
    poll_timeout: float = 0.05
    #: Seconds between topic metadata refreshes (new topics/partitions) and lag reports.
    metadata_interval: float = 5.0
    max_pending_batches: int = 64
    #: Seconds after first reaching the broker during which a missing topic keeps the node
    #: unready (topics are often created just after the broker starts). After that the node
    #: is ready anyway, lists the topic in ``missingTopics`` and assigns it when it appears.
    missing_topic_grace: float = 15.0
    #: False replays partitions that exist at start from their beginning (tools, tests).
    start_at_end: bool = True
    #: Hand over a ``Record(..., start=True)`` notice where each partition starts, before its
    #: records (the gateway's cursors begin there; application/usecases/resume.py).
    announce_starts: bool = False


class KafkaEventSource(KafkaReader[list[Record]]):
    """Consumes ``topics`` and calls ``on_batch(records)`` on ``loop`` for each batch.

    ``on_lag(topic, partition, lag)`` receives the records behind the end of each assigned
    partition; ``on_state(connected)`` is told when the broker connection comes and goes.
    Both are called from the consumer thread.
    """

    name = "kafka-consumer"

    def __init__(
        self,
        config: KafkaSourceConfig,
        loop: asyncio.AbstractEventLoop,
        on_batch: Callable[[list[Record]], None],
        on_lag: Callable[[str, int, int], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.config = config
        self._loop = loop
        self._on_batch = on_batch
        self._on_lag = on_lag
        self._on_state = on_state
        # Replaced, never mutated: status() reads it from the event loop thread.
        self._assigned: frozenset[_Key] = frozenset()
        #: Next offset to hand over per partition (consumer thread only).
        self._positions: dict[_Key, int] = {}
        self._high: dict[_Key, int] = {}
        #: Wall-clock ms when the node first reached the broker; None until then.
        self._since_ms: int | None = None
        self._since_monotonic = 0.0
        self._warned_missing: set[str] = set()
        self._next_lag = 0.0
        self._lag_consumer: Consumer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        assert self._loop is not None
        self.start_reading(self._loop)

    async def stop(self) -> None:
        await self.stop_reading()

    def status(self) -> dict[str, object]:
        """Liveness for ``GET /ready``: connected, and every configured topic assigned.

        A topic still missing ``missing_topic_grace`` seconds after the node first reached the
        broker no longer holds readiness back (one absent topic must not keep every node out
        of service); it stays listed in ``missingTopics`` and is read from its first record
        when it appears.
        """
        assigned = self._assigned
        topics = {topic for topic, _ in assigned}
        missing = sorted(set(self.config.topics) - topics)
        connected = self._connected
        started = self._since_ms is not None
        waited = time.monotonic() - self._since_monotonic >= self.config.missing_topic_grace
        ready = connected and started and (not missing or waited)
        if not connected:
            reason = "broker unreachable"
        elif not started:
            reason = "assigning partitions"
        elif missing and not waited:
            reason = "missing topics"
        else:
            reason = ""
        return {
            "ready": ready,
            "reason": reason,
            "connected": connected,
            "partitions": len(assigned),
            "missingTopics": missing,
            "lastError": self._last_error,
        }

    # -- the reader's parts ----------------------------------------------------------------
    def _consumer_settings(self) -> dict[str, Any]:
        return {
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 100,
            "topic.metadata.refresh.interval.ms": 5000,
        }

    def _connection_changed(self, connected: bool) -> None:
        if self._on_state is not None:
            self._on_state(connected)

    def _consumer_closed(self) -> None:
        # A new consumer re-assigns from self._positions: nothing read is lost.
        self._assigned = frozenset()

    def _deliver(self, item: list[Record]) -> None:
        self._on_batch(item)

    def _while_waiting(self) -> None:
        if self._lag_consumer is not None:
            self._maybe_report_lag(self._lag_consumer)  # back-pressure is when lag matters most

    def _start_offsets(self, consumer: Consumer, keys: list[_Key], initial: bool) -> list[TopicPartition]:
        """Where each newly assigned partition starts (see the module docstring)."""
        chosen: list[TopicPartition] = []
        late: list[tuple[_Key, int]] = []
        for key in keys:
            known = self._positions.get(key)
            if known is not None:
                chosen.append(TopicPartition(*key, known))
            elif initial and not self.config.start_at_end:
                chosen.append(TopicPartition(*key, OFFSET_BEGINNING))
            else:
                # The end now; for a late partition, the fallback when nothing is newer.
                _, high = consumer.get_watermark_offsets(TopicPartition(*key), timeout=5.0)
                self._high[key] = high
                if initial:
                    chosen.append(TopicPartition(*key, high))
                else:
                    late.append((key, high))
        if late:
            since = self._since_ms or 0
            found = consumer.offsets_for_times([TopicPartition(*key, since) for key, _ in late], timeout=5.0)
            ends = dict(late)
            for tp in found:
                key = (tp.topic, tp.partition)
                offset = tp.offset if tp.offset >= 0 else ends[key]
                chosen.append(TopicPartition(*key, min(offset, ends[key])))
        return chosen

    def _refresh_assignment(self, consumer: Consumer) -> list[Record]:
        """Assign new partitions; the start notices of those with a known offset (cursors
        begin there, application/usecases/resume.py)."""
        attempted_ms = int(time.time() * 1000)
        metadata = consumer.list_topics(timeout=5.0)
        initial = self._since_ms is None
        fresh: list[_Key] = []
        starts: list[Record] = []
        for topic in self.config.topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                if topic not in self._warned_missing:
                    self._warned_missing.add(topic)
                    log.warning(
                        "kafka topic not found; will assign it when it appears", extra={"topic": topic}
                    )
                continue
            self._warned_missing.discard(topic)
            fresh.extend((topic, p) for p in sorted(found.partitions) if (topic, p) not in self._assigned)
        if fresh:
            offsets = self._start_offsets(consumer, fresh, initial)
            consumer.incremental_assign(offsets)
            for tp in offsets:
                if tp.offset >= 0:
                    self._positions[(tp.topic, tp.partition)] = tp.offset
                    starts.append(Record(tp.topic, tp.partition, tp.offset, None, start=True))
            self._assigned = self._assigned | {(tp.topic, tp.partition) for tp in offsets}
            log.info("kafka partitions assigned", extra={"count": len(offsets), "initial": initial})
        if initial:
            self._since_ms = attempted_ms
            self._since_monotonic = time.monotonic()
        self._set_connected(True)
        return starts

    def _read(self, consumer: Consumer) -> None:
        self._lag_consumer = consumer
        next_metadata = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_metadata or not self._connected:
                try:
                    starts = self._refresh_assignment(consumer)
                    if starts and self.config.announce_starts and not self._hand_over(starts):
                        return
                    interval = self.config.metadata_interval
                    if self._warned_missing:  # look again soon for topics being created
                        interval = min(interval, 1.0)
                    next_metadata = now + interval
                except KafkaException as error:
                    self._last_error = str(error)
                    self._set_connected(False)
                    self._outage()
                    self._stop.wait(1.0)
                    continue
            self._maybe_report_lag(consumer)
            records = [
                Record(m.topic() or "", m.partition() or 0, m.offset() or 0, m.value())
                for m in self._fetch(consumer)
            ]
            if records:
                self._set_connected(True)
                if not self._hand_over(records):
                    return
                positions = self._positions
                for record in records:
                    positions[(record.topic, record.partition)] = record.offset + 1

    def _maybe_report_lag(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if self._on_lag is None or now < self._next_lag:
            return
        self._next_lag = now + self.config.metadata_interval
        for key in sorted(self._assigned):
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
            except KafkaException:
                high = -1
            if high >= 0:
                self._high[key] = high
            else:
                high = self._high.get(key, -1)
            position = self._positions.get(key)
            if high >= 0 and position is not None:
                self._on_lag(key[0], key[1], max(0, high - position))
