"""The baselines' Kafka input: confluent-kafka in a thread, every partition of the topic
assigned at its end offset (no group), each batch handed to the event loop.

``poll`` waits for the first record, then ``consume(n, 0)`` drains what is already fetched,
so a lone event is handed over at once (``consume(n, timeout)`` would wait for ``n`` records
or the whole timeout).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition


class KafkaFeed:
    def __init__(
        self,
        brokers: str,
        topic: str,
        loop: asyncio.AbstractEventLoop,
        on_batch: Callable[[list[bytes]], None],
    ) -> None:
        self.brokers = brokers
        self.topic = topic
        self.loop = loop
        self.on_batch = on_batch
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.brokers,
                "group.id": "mesaya-bench-baseline",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
                "fetch.queue.backoff.ms": 5,
                "log_level": 3,
            }
        )
        metadata = consumer.list_topics(self.topic, timeout=10)
        assigned = []
        for partition in metadata.topics[self.topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10)
            assigned.append(TopicPartition(self.topic, partition, high))
        consumer.assign(assigned)
        self.ready.set()
        try:
            while not self._stop.is_set():
                first = consumer.poll(0.05)
                if first is None:
                    continue
                messages = [first, *consumer.consume(999, 0)]
                values = [m.value() for m in messages if m.error() is None and m.value() is not None]
                if values:
                    self.loop.call_soon_threadsafe(self.on_batch, values)
        finally:
            consumer.close()
