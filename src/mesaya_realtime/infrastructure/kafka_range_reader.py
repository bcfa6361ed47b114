"""Reads ranges of the event topics again, for resumes older than the node's journal.

One short-lived consumer per read (no group membership: ``assign`` at the range's first offset),
in a thread, closed when the range has been read. The resume service shares each read among
every resume that needs it (application/usecases/resume.py), so a storm of resumes opens one
consumer, not one per socket.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaException, TopicPartition

from mesaya_realtime.application.handlers.events import Record
from mesaya_realtime.application.ports.log_reader import LogRangeUnavailable, Range
from mesaya_realtime.infrastructure.kafka_logs import client_settings

__all__ = ["KafkaRangeReader"]


class KafkaRangeReader:
    """:class:`~mesaya_realtime.application.ports.log_reader.LogRangeReader` over Kafka."""

    def __init__(self, brokers: str, timeout: float = 10.0, max_age: float = 300.0) -> None:
        self.brokers = brokers
        self.timeout = timeout
        #: Nothing older than this (by the records' Kafka timestamps) is read: a cursor's own
        #: issue time is the client's word, the log's timestamps are not.
        self.max_age = max_age
        #: Ranges read so far (for tests and the benchmark).
        self.reads = 0

    async def read(self, ranges: Range) -> Sequence[Record]:
        wanted = {key: span for key, span in ranges.items() if span[0] < span[1]}
        if not wanted:
            return []
        self.reads += 1
        return await asyncio.to_thread(self._read, wanted)

    def _read(self, ranges: Range) -> list[Record]:
        consumer = Consumer(
            {
                **client_settings(),
                "bootstrap.servers": self.brokers,
                "group.id": f"mesaya-realtime-resume-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        try:
            since_ms = int((time.time() - self.max_age) * 1000)
            floors = consumer.offsets_for_times(
                [TopicPartition(topic, partition, since_ms) for topic, partition in ranges],
                timeout=self.timeout,
            )
            for tp in floors:
                first, end = ranges[(tp.topic, tp.partition)]
                # The first record at most max_age old (-1: every record is older, or none).
                floor = tp.offset if tp.offset >= 0 else end
                if floor > first:
                    raise LogRangeUnavailable(f"{tp.topic}/{tp.partition}: before {floor} too old or gone")
            consumer.assign(
                [TopicPartition(topic, partition, first) for (topic, partition), (first, _) in ranges.items()]
            )
            remaining = {key: end for key, (_, end) in ranges.items()}
            found: list[Record] = []
            deadline = time.monotonic() + self.timeout
            while remaining:
                if time.monotonic() > deadline:
                    raise LogRangeUnavailable("timed out reading the range")
                for message in consumer.consume(500, timeout=0.2):
                    if message.error() is not None:
                        continue
                    key = (message.topic() or "", message.partition() or 0)
                    stop = remaining.get(key)
                    offset = message.offset() or 0
                    if stop is None or offset >= stop:
                        if stop is not None:
                            del remaining[key]
                        continue
                    found.append(Record(key[0], key[1], offset, message.value()))
                    if offset + 1 >= stop:
                        del remaining[key]
            return found
        except KafkaException as error:
            raise LogRangeUnavailable(str(error)) from None
        finally:
            consumer.close()
