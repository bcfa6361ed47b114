"""The selection log: a Kafka topic shared by every node, or an in-process stand-in.

:class:`KafkaSelectionLog` produces with ``acks=all`` and idempotence, keyed by
``<sectionId>:<tableId>`` so one table's records keep one order, and reads every partition
itself (``assign``, no consumer group). At start it rebuilds the state from a bounded read:

1. ``offsets_for_times(now - replay_window)`` per partition; records are read up to the end
   offsets taken at that moment;
2. per partition, :func:`~mesaya_realtime.domain.selection.plan_replay` picks the last
   checkpoint the read covers; a partition with no record in the window has only holds that
   expired long ago (the window is longer than a TTL plus the node timeout) and starts empty;
   a partition with records but no usable checkpoint is read again from its first offset;
3. the plans go to the sink once, then records from those end offsets on, batch by batch.

The consumer thread, its retries and the bounded hand-over to the event loop are
:class:`~mesaya_realtime.infrastructure.kafka_reader.KafkaReader`'s, shared with the event source.

Without Kafka (``KAFKA_ENABLED=false``: the demo, one node) :class:`InProcessSelectionLog`
hands each record straight back, in order, with the same port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from mesaya_realtime.application.ports.selection import SelectionLogUnavailable, SelectionSink
from mesaya_realtime.domain.selection import (
    Checkpoint,
    LogEntry,
    SelectionDecodeError,
    SelectionRecord,
    StreamReplay,
    decode_record,
    encode_record,
    plan_replay,
    record_key,
)
from mesaya_realtime.infrastructure.kafka_reader import KafkaReader
from mesaya_realtime.infrastructure.kafka_writer import KafkaWriter, ensure_topic

__all__ = ["InProcessSelectionLog", "KafkaSelectionConfig", "KafkaSelectionLog"]

log = logging.getLogger(__name__)

_STREAM = "0"


def _ignore_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class InProcessSelectionLog:
    """One node's log: every appended record comes back on the next loop turn, in order."""

    def __init__(self) -> None:
        self._sink: SelectionSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._offset = -1

    def start(self, sink: SelectionSink) -> None:
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._loop.call_soon(sink.bootstrap, [StreamReplay(_STREAM, (), (), -1)])

    async def stop(self) -> None:
        self._sink = None

    def append(self, record: SelectionRecord) -> Awaitable[None]:
        loop = self._loop or asyncio.get_running_loop()
        stored: asyncio.Future[None] = loop.create_future()
        stored.add_done_callback(_ignore_exception)
        sink = self._sink
        if sink is None:
            stored.set_exception(SelectionLogUnavailable("selection log stopped"))
            return stored
        self._offset += 1
        loop.call_soon(sink.entries, [LogEntry(_STREAM, self._offset, record)])
        stored.set_result(None)
        return stored

    def streams(self) -> tuple[str, ...]:
        return ()

    def status(self) -> dict[str, object]:
        return {"ready": self._sink is not None, "log": "in-process"}


@dataclass(frozen=True, slots=True)
class KafkaSelectionConfig:
    brokers: str
    topic: str
    group_id: str
    #: How far back a starting node reads (seconds); longer than a TTL plus the node timeout
    #: and than a few checkpoint intervals.
    replay_window: float
    partitions: int = 3
    retention_ms: int = 24 * 3600 * 1000
    #: How long the producer keeps trying one record before the append fails.
    delivery_timeout: float = 10.0
    batch_size: int = 500
    poll_timeout: float = 0.05
    max_pending_batches: int = 64
    read_timeout: float = 60.0


_Delivery = Callable[[SelectionSink], None]


class KafkaSelectionLog(KafkaReader[_Delivery]):
    """The shared selection log on a Kafka topic (see the module docstring)."""

    name = "selection-log"

    def __init__(self, config: KafkaSelectionConfig) -> None:
        super().__init__(config)
        self.config = config
        self._sink: SelectionSink | None = None
        self._writer = KafkaWriter(
            config.brokers,
            name="selection-log",
            delivery_timeout=config.delivery_timeout,
            on_error=self._on_error,
        )
        self._partitions: tuple[int, ...] = ()
        self._positions: dict[int, int] = {}
        self._bootstrapped = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, sink: SelectionSink) -> None:
        self._sink = sink
        loop = asyncio.get_running_loop()
        self._writer.start(loop)
        self.start_reading(loop)

    async def stop(self) -> None:
        await self._writer.stop()  # flushes what was appended
        await self.stop_reading()

    def streams(self) -> tuple[str, ...]:
        return tuple(str(partition) for partition in self._partitions) if self._bootstrapped else ()

    def status(self) -> dict[str, object]:
        if not self._connected:
            reason = "broker unreachable"
        elif not self._bootstrapped:
            reason = "rebuilding selections"
        else:
            reason = ""
        return {
            "ready": self._bootstrapped and self._connected,
            "reason": reason,
            "topic": self.config.topic,
            "connected": self._connected,
            "partitions": len(self._partitions),
            "lastError": self._last_error,
        }

    # -- producing -------------------------------------------------------------------------
    def append(self, record: SelectionRecord) -> Awaitable[None]:
        partition = int(record.stream) if isinstance(record, Checkpoint) else None
        stored = self._writer.write(
            self.config.topic, encode_record(record), key=record_key(record), partition=partition
        )
        return _as_unavailable(stored)

    # -- consuming -------------------------------------------------------------------------
    def _consumer_settings(self) -> dict[str, Any]:
        return {
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
        }

    def _read(self, consumer: Consumer) -> None:
        if not self._bootstrapped:
            self._bootstrap(consumer)
        self._consume(consumer)

    def _deliver(self, item: _Delivery) -> None:
        if self._sink is not None:
            item(self._sink)

    def _bootstrap(self, consumer: Consumer) -> None:
        topic = self.config.topic
        partitions = ensure_topic(
            self.config.brokers,
            topic,
            partitions=self.config.partitions,
            retention_ms=self.config.retention_ms,
            stop=self._stop,
        )
        self._set_connected(True)
        since = round((time.time() - self.config.replay_window) * 1000)
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, since) for p in partitions], timeout=10.0
        )
        starts: dict[int, int] = {}
        lows: dict[int, int] = {}
        ends: dict[int, int] = {}
        for partition, located in zip(partitions, found, strict=True):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10.0)
            lows[partition], ends[partition] = low, high
            starts[partition] = high if located.offset < 0 else max(low, located.offset)
        read = self._read_ranges(consumer, {p: (starts[p], ends[p]) for p in partitions})
        replays: dict[int, StreamReplay] = {}
        again: dict[int, tuple[int, int]] = {}
        for partition in partitions:
            quiet = starts[partition] == ends[partition]
            plan = plan_replay(
                str(partition),
                read[partition],
                starts[partition],
                ends[partition],
                from_log_start=quiet or starts[partition] <= lows[partition],
            )
            if plan is None:
                again[partition] = (lows[partition], ends[partition])
            else:
                replays[partition] = plan
        if again:
            log.info("selection log: no checkpoint in the window, reading from the start")
            for partition, entries in self._read_ranges(consumer, again).items():
                low, end = again[partition]
                plan = plan_replay(str(partition), entries, low, end, from_log_start=True)
                if plan is not None:
                    replays[partition] = plan
        self._partitions = partitions
        self._positions = dict(ends)
        # Set before the hand-over: the sink may ask for streams() as soon as it is bootstrapped.
        self._bootstrapped = True
        self._hand_over(_deliver_bootstrap([replays[p] for p in partitions]))
        log.info(
            "selection log bootstrapped",
            extra={"topic": topic, "records": sum(len(r.entries) for r in replays.values())},
        )

    def _read_ranges(
        self, consumer: Consumer, ranges: dict[int, tuple[int, int]]
    ) -> dict[int, list[LogEntry]]:
        """The records of each partition in ``[start, end)``."""
        topic = self.config.topic
        result: dict[int, list[LogEntry]] = {partition: [] for partition in ranges}
        todo = {p: bounds for p, bounds in ranges.items() if bounds[0] < bounds[1]}
        if not todo:
            return result
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in todo.items()])
        deadline = time.monotonic() + self.config.read_timeout
        while todo:
            if self._stop.is_set():
                raise RuntimeError("stopping")
            if time.monotonic() > deadline:
                raise TimeoutError("selection log: replay read timed out")
            messages = consumer.consume(self.config.batch_size, 0.2)
            for message in messages:
                if message.error() is not None:
                    self._last_error = str(message.error())
                    continue
                partition = message.partition() or 0
                offset = message.offset() or 0
                bounds = todo.get(partition)
                if bounds is None or offset >= bounds[1]:
                    continue
                entry = self._entry(message)
                if entry is not None:
                    result[partition].append(entry)
                if offset >= bounds[1] - 1:
                    del todo[partition]
            if not messages and todo:
                positions = consumer.position([TopicPartition(topic, p) for p in todo])
                for position in positions:
                    if position.offset >= todo[position.partition][1]:
                        del todo[position.partition]
        return result

    def _entry(self, message: Any) -> LogEntry | None:
        try:
            record = decode_record(message.value())
        except SelectionDecodeError as error:
            log.warning(
                "skipped selection record",
                extra={
                    "topic": message.topic(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "reason": str(error),
                },
            )
            return None
        return LogEntry(str(message.partition() or 0), message.offset() or 0, record)

    def _consume(self, consumer: Consumer) -> None:
        topic = self.config.topic
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in self._positions.items()])
        consumer.list_topics(topic, timeout=10.0)  # raises while no broker answers
        self._set_connected(True)
        while not self._stop.is_set():
            entries: list[LogEntry] = []
            for message in self._fetch(consumer):
                partition = message.partition() or 0
                offset = message.offset() or 0
                if offset < self._positions.get(partition, 0):
                    continue
                self._positions[partition] = offset + 1
                entry = self._entry(message)
                if entry is not None:
                    entries.append(entry)
            if entries:
                self._set_connected(True)
                self._hand_over(_deliver_entries(entries))


def _deliver_entries(entries: list[LogEntry]) -> _Delivery:
    return lambda sink: sink.entries(entries)


def _deliver_bootstrap(replays: list[StreamReplay]) -> _Delivery:
    return lambda sink: sink.bootstrap(replays)


def _as_unavailable(stored: asyncio.Future[None]) -> asyncio.Future[None]:
    """The writer's future, failing with the port's :class:`SelectionLogUnavailable`."""
    result: asyncio.Future[None] = stored.get_loop().create_future()
    result.add_done_callback(_ignore_exception)

    def settle(done: asyncio.Future[None]) -> None:
        if result.done():
            return
        error = None if done.cancelled() else done.exception()
        if done.cancelled() or error is not None:
            result.set_exception(SelectionLogUnavailable(f"selection log: {error or 'cancelled'}"))
        else:
            result.set_result(None)

    stored.add_done_callback(settle)
    return result
