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

Batches (``consume(1000)``) cross to the event loop through a bounded window so a slow loop
pauses fetching instead of growing memory. Back-off, errors and logging belong to this one
consumer, never to the process.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from mesaya_realtime.application.handlers.events import Record

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


def fetch_batch(consumer: Consumer, size: int, timeout: float) -> list[Message]:
    """Up to ``size`` messages, returning as soon as one is there.

    ``consume(n, timeout)`` waits the whole timeout unless ``n`` messages arrive, which adds
    up to ``timeout`` of latency to a lone event; ``poll`` returns on the first message and
    ``consume(n - 1, 0)`` then takes whatever else is already fetched.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(size - 1, 0)] if size > 1 else [first]


class KafkaEventSource:
    """Consumes ``topics`` and calls ``on_batch(records)`` on ``loop`` for each batch.

    ``on_lag(topic, partition, lag)`` receives the records behind the end of each assigned
    partition; ``on_state(connected)`` is told when the broker connection comes and goes.
    Both are called from the consumer thread.
    """

    def __init__(
        self,
        config: KafkaSourceConfig,
        loop: asyncio.AbstractEventLoop,
        on_batch: Callable[[list[Record]], None],
        on_lag: Callable[[str, int, int], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self._loop = loop
        self._on_batch = on_batch
        self._on_lag = on_lag
        self._on_state = on_state
        self._stop = threading.Event()
        self._window = threading.BoundedSemaphore(config.max_pending_batches)
        # Batches handed over and not yet run; the loop runs one per turn (see _run_next).
        self._pending: collections.deque[list[Record]] = collections.deque()
        self._pending_lock = threading.Lock()
        self._draining = False
        self._thread: threading.Thread | None = None
        # Replaced, never mutated: status() reads it from the event loop thread.
        self._assigned: frozenset[_Key] = frozenset()
        #: Next offset to hand over per partition (consumer thread only).
        self._positions: dict[_Key, int] = {}
        self._high: dict[_Key, int] = {}
        #: Wall-clock ms when the node first reached the broker; None until then.
        self._since_ms: int | None = None
        self._since_monotonic = 0.0
        self._warned_missing: set[str] = set()
        self._connected = False
        self._last_error = ""
        self._next_lag = 0.0
        self._consumer: Consumer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kafka-consumer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 10.0)

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
        return {
            "ready": connected and started and (not missing or waited),
            "connected": connected,
            "partitions": len(assigned),
            "missingTopics": missing,
            "lastError": self._last_error,
        }

    # -- the consumer thread ---------------------------------------------------------------
    def _make_consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.config.brokers,
                "group.id": self.config.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 100,
                "fetch.queue.backoff.ms": 5,
                "reconnect.backoff.ms": 100,
                "reconnect.backoff.max.ms": 2000,
                "socket.keepalive.enable": True,
                "topic.metadata.refresh.interval.ms": 5000,
                "error_cb": self._on_error,
                "log_level": 3,
            }
        )

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        if connected:
            log.info("kafka consumer connected", extra={"brokers": self.config.brokers})
        else:
            log.warning("kafka connection lost", extra={"error": self._last_error})
        if self._on_state is not None:
            self._on_state(connected)

    def _on_error(self, error: KafkaError) -> None:
        # Called from inside poll/consume of this consumer's thread.
        self._last_error = str(error)
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._set_connected(False)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._consumer = consumer = self._make_consumer()
                self._consume(consumer)
                backoff = 0.5
            except Exception as error:
                self._last_error = str(error)
                self._set_connected(False)
                log.warning("kafka consumer error; retrying", extra={"error": str(error), "backoff": backoff})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                if self._consumer is not None:
                    try:
                        self._consumer.close()
                    except Exception:
                        log.debug("kafka consumer close failed", exc_info=True)
                    self._consumer = None
                # A new consumer re-assigns from self._positions: nothing read is lost.
                self._assigned = frozenset()
        self._set_connected(False)

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

    def _refresh_assignment(self, consumer: Consumer) -> None:
        attempted_ms = int(time.time() * 1000)
        metadata = consumer.list_topics(timeout=5.0)
        initial = self._since_ms is None
        fresh: list[_Key] = []
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
            self._assigned = self._assigned | {(tp.topic, tp.partition) for tp in offsets}
            log.info("kafka partitions assigned", extra={"count": len(offsets), "initial": initial})
        if initial:
            self._since_ms = attempted_ms
            self._since_monotonic = time.monotonic()
        self._set_connected(True)

    def _consume(self, consumer: Consumer) -> None:
        next_metadata = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_metadata or not self._connected:
                try:
                    self._refresh_assignment(consumer)
                    interval = self.config.metadata_interval
                    if self._warned_missing:  # look again soon for topics being created
                        interval = min(interval, 1.0)
                    next_metadata = now + interval
                except KafkaException as error:
                    self._last_error = str(error)
                    self._set_connected(False)
                    self._stop.wait(1.0)
                    continue
            self._maybe_report_lag(consumer)
            records: list[Record] = []
            for message in fetch_batch(consumer, self.config.batch_size, self.config.poll_timeout):
                problem = message.error()
                if problem is not None:
                    if problem.code() != KafkaError._PARTITION_EOF:
                        self._last_error = str(problem)
                    continue
                records.append(
                    Record(
                        message.topic() or "",
                        message.partition() or 0,
                        message.offset() or 0,
                        message.value(),
                    )
                )
            if records:
                self._set_connected(True)
                self._hand_over(consumer, records)

    def _hand_over(self, consumer: Consumer, records: list[Record]) -> None:
        while not self._window.acquire(timeout=0.5):
            if self._stop.is_set():
                return
            self._maybe_report_lag(consumer)  # back-pressure is when lag matters most

        with self._pending_lock:
            self._pending.append(records)
            wake = not self._draining
            self._draining = True
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._run_next)
            except RuntimeError:  # the loop is closed: we are shutting down
                self._window.release()
                self._stop.set()
                return
        positions = self._positions
        for record in records:
            positions[(record.topic, record.partition)] = record.offset + 1

    def _run_next(self) -> None:
        """Run one handed-over batch, then let the loop turn before the next one.

        Callbacks queued with ``call_soon_threadsafe`` all run in the same loop turn, so a
        burst (64 pending batches of 1,000 records) would hold every socket for the whole
        burst; one batch per turn lets the sockets' I/O in between.
        """
        with self._pending_lock:
            records = self._pending.popleft() if self._pending else None
        try:
            if records is not None:
                self._on_batch(records)
        finally:
            if records is not None:
                self._window.release()
            with self._pending_lock:
                more = bool(self._pending)
                self._draining = more
            if more:
                self._loop.call_soon(self._run_next)

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
