"""The Kafka event source: confluent-kafka in a thread, batches handed to the event loop.

Every node must see every event, so the consumer uses no consumer group membership: it
assigns itself every partition of the configured topics (``assign``, never ``subscribe``),
starting at each partition's end offset, resolved before the node reports ready. A broker
restart keeps the in-memory positions, so nothing produced while the node was connected is
lost. Batches (``consume(1000)``) cross to the event loop through a bounded window so a slow
loop pauses fetching instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from mesaya_realtime.application.handlers.events import Record

__all__ = ["KafkaEventSource", "KafkaSourceConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KafkaSourceConfig:
    brokers: str
    topics: Sequence[str]
    group_id: str
    batch_size: int = 1000
    poll_timeout: float = 0.05
    metadata_interval: float = 5.0
    max_pending_batches: int = 64
    start_at_end: bool = True


class KafkaEventSource:
    """Consumes ``topics`` and calls ``on_batch(records)`` on ``loop`` for each batch."""

    def __init__(
        self,
        config: KafkaSourceConfig,
        loop: asyncio.AbstractEventLoop,
        on_batch: Callable[[list[Record]], None],
        on_lag: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.config = config
        self._loop = loop
        self._on_batch = on_batch
        self._on_lag = on_lag
        self._stop = threading.Event()
        self._window = threading.BoundedSemaphore(config.max_pending_batches)
        self._thread: threading.Thread | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._connected = False
        self._last_error = ""
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
        """Liveness for ``GET /ready``: connected, and partitions of every topic assigned."""
        topics = {topic for topic, _ in self._assigned}
        missing = sorted(set(self.config.topics) - topics)
        return {
            "ready": self._connected and not missing,
            "connected": self._connected,
            "partitions": len(self._assigned),
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

    def _on_error(self, error: KafkaError) -> None:
        # Called from inside poll/consume; per consumer, never process-wide.
        self._last_error = str(error)
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if self._connected:
                log.warning("kafka connection lost", extra={"error": str(error)})
            self._connected = False

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._consumer = consumer = self._make_consumer()
                self._consume(consumer)
                backoff = 0.5
            except Exception as error:
                self._connected = False
                self._last_error = str(error)
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
                    self._assigned.clear()

    def _refresh_assignment(self, consumer: Consumer) -> None:
        metadata = consumer.list_topics(timeout=5.0)
        fresh: list[TopicPartition] = []
        for topic in self.config.topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                continue
            for partition in found.partitions:
                if (topic, partition) in self._assigned:
                    continue
                offset = OFFSET_END
                if self.config.start_at_end:
                    # Resolve the end now, so "ready" means "everything from here on".
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5.0)
                    offset = high
                fresh.append(TopicPartition(topic, partition, offset))
        if fresh:
            consumer.incremental_assign(fresh)
            self._assigned.update((tp.topic, tp.partition) for tp in fresh)
            log.info("kafka partitions assigned", extra={"count": len(fresh)})
        if not self._connected:
            log.info("kafka consumer connected", extra={"brokers": self.config.brokers})
        self._connected = True

    def _consume(self, consumer: Consumer) -> None:
        next_metadata = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_metadata or not self._connected:
                try:
                    self._refresh_assignment(consumer)
                    next_metadata = now + self.config.metadata_interval
                    self._report_lag(consumer)
                except KafkaException as error:
                    self._connected = False
                    self._last_error = str(error)
                    self._stop.wait(1.0)
                    continue
            records: list[Record] = []
            for message in consumer.consume(self.config.batch_size, self.config.poll_timeout):
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
                self._connected = True
                self._hand_over(records)

    def _hand_over(self, records: list[Record]) -> None:
        while not self._window.acquire(timeout=0.5):
            if self._stop.is_set():
                return

        def run() -> None:
            try:
                self._on_batch(records)
            finally:
                self._window.release()

        try:
            self._loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed: we are shutting down
            self._window.release()
            self._stop.set()

    def _report_lag(self, consumer: Consumer) -> None:
        if self._on_lag is None or not self._assigned:
            return
        partitions = [TopicPartition(t, p) for t, p in self._assigned]
        for tp in consumer.position(partitions):
            try:
                _, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if tp.offset >= 0 and high >= 0:
                self._on_lag(tp.topic, tp.partition, max(0, high - tp.offset))
