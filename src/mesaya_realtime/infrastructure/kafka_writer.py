"""The gateway's own Kafka topics: making sure one exists, and writing to it durably.

Two features write records that every node must read: table selection (infrastructure/
selection_log.py) and the payment pushes of ``POST /broadcast`` (infrastructure/
push_channel.py). Both need the same two things: the topic, created if missing
(:func:`ensure_topic`), and a producer whose every write is a future settled on the event loop
once the broker has acknowledged it on all in-sync replicas (:class:`KafkaWriter`: ``acks=all``,
idempotent, one polling thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from mesaya_realtime.infrastructure.kafka_logs import client_settings

__all__ = ["KafkaWriter", "WriteFailed", "ensure_topic"]

log = logging.getLogger(__name__)


class WriteFailed(Exception):
    """A record was not stored (the broker did not acknowledge it in time, or the writer is
    stopped); its text says why."""


def ensure_topic(
    brokers: str,
    topic: str,
    *,
    partitions: int,
    retention_ms: int,
    stop: threading.Event,
    timeout: float = 30.0,
) -> tuple[int, ...]:
    """The topic's partitions, creating the topic when it is missing (blocking; a thread's)."""
    admin = AdminClient({**client_settings(), "bootstrap.servers": brokers, "log_level": 3})
    deadline = time.monotonic() + timeout
    created = False
    while True:
        metadata = admin.list_topics(timeout=5.0)
        found = metadata.topics.get(topic)
        if found is not None and found.error is None and found.partitions:
            return tuple(sorted(found.partitions))
        if not created:
            new = NewTopic(
                topic,
                num_partitions=partitions,
                replication_factor=-1,
                config={"retention.ms": str(retention_ms), "cleanup.policy": "delete"},
            )
            try:
                admin.create_topics([new], operation_timeout=10.0)[topic].result(15.0)
                log.info("kafka topic created", extra={"topic": topic})
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            created = True
        if time.monotonic() > deadline or stop.is_set():
            raise RuntimeError(f"kafka topic {topic} has no partitions")
        stop.wait(0.2)


def _ignore_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class KafkaWriter:
    """An idempotent ``acks=all`` producer whose writes settle futures on the event loop."""

    def __init__(
        self,
        brokers: str,
        *,
        name: str,
        delivery_timeout: float = 10.0,
        on_error: Callable[[KafkaError], None] | None = None,
    ) -> None:
        self.brokers = brokers
        self.name = name
        self.delivery_timeout = delivery_timeout
        self._on_error = on_error
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Writes not yet acknowledged: failed at stop, so no caller waits for ever.
        self._inflight: set[asyncio.Future[None]] = set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._producer = Producer(
            {
                **client_settings(),
                "bootstrap.servers": self.brokers,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
                "message.timeout.ms": round(self.delivery_timeout * 1000),
                "partitioner": "consistent_random",
                "socket.keepalive.enable": True,
                "reconnect.backoff.ms": 100,
                "reconnect.backoff.max.ms": 2000,
                "error_cb": self._error,
                "log_level": 3,
            }
        )
        self._thread = threading.Thread(target=self._poll, name=f"{self.name}-producer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Flush what was written (up to 5 s), then stop."""
        producer = self._producer
        loop = asyncio.get_running_loop()
        if producer is not None:
            await loop.run_in_executor(None, producer.flush, 5.0)
        self._stop.set()
        if self._thread is not None:
            await loop.run_in_executor(None, self._thread.join, 10.0)
        self._producer = None
        for stored in list(self._inflight):
            if not stored.done():
                stored.set_exception(WriteFailed(f"{self.name}: stopped before the broker answered"))
        self._inflight.clear()

    def write(
        self, topic: str, value: bytes, key: bytes | str | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        """Write one record; the future settles once the broker acknowledged it, or fails
        with :class:`WriteFailed`."""
        loop = self._loop or asyncio.get_running_loop()
        stored: asyncio.Future[None] = loop.create_future()
        stored.add_done_callback(_ignore_exception)
        self._inflight.add(stored)
        stored.add_done_callback(self._inflight.discard)
        producer = self._producer
        if producer is None:
            stored.set_exception(WriteFailed(f"{self.name}: stopped"))
            return stored

        def delivered(error: KafkaError | None, _message: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                loop.call_soon_threadsafe(self._settle, stored, error)

        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        try:
            producer.produce(topic, value=value, key=key, on_delivery=delivered, **extra)
        except (BufferError, KafkaException) as error:
            stored.set_exception(WriteFailed(f"{self.name}: {error}"))
        return stored

    def _settle(self, stored: asyncio.Future[None], error: KafkaError | None) -> None:
        if stored.done():
            return
        if error is None:
            stored.set_result(None)
        else:
            stored.set_exception(WriteFailed(f"{self.name}: {error}"))

    def _error(self, error: KafkaError) -> None:
        if self._on_error is not None:
            self._on_error(error)

    def _poll(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            if producer is None:
                return
            try:
                producer.poll(0.1)
            except Exception:
                log.exception("kafka producer poll failed", extra={"writer": self.name})
                self._stop.wait(0.5)
