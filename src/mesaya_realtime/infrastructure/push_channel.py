"""The payment pushes' channel: a Kafka topic of the gateway's own, or the process itself.

:class:`KafkaPushChannel` writes each push to ``BROADCAST_TOPIC`` (created if missing) and
returns once the broker acknowledged it (``acks=all``); every node reads the topic through its
one event consumer (infrastructure/kafka_consumer.py) and delivers the push to its own
notifications sockets. :class:`InProcessPushChannel` (``KAFKA_ENABLED=false``) hands the record
back on the next loop turn.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable

from mesaya_realtime.application.ports.push import PushUnavailable
from mesaya_realtime.application.usecases.log_limits import RateLimitedLog
from mesaya_realtime.infrastructure.kafka_writer import KafkaWriter, WriteFailed, ensure_topic

__all__ = ["InProcessPushChannel", "KafkaPushChannel"]

log = logging.getLogger(__name__)


class KafkaPushChannel:
    def __init__(
        self, brokers: str, topic: str, *, partitions: int = 3, retention_ms: int = 3_600_000
    ) -> None:
        self.brokers = brokers
        self.topic = topic
        self.partitions = partitions
        self.retention_ms = retention_ms
        self._writer = KafkaWriter(brokers, name="broadcast")
        self._stop = threading.Event()
        self._ready = False
        self._retry_log = RateLimitedLog(log, interval=60.0)

    def start(self) -> None:
        self._writer.start(asyncio.get_running_loop())
        threading.Thread(target=self._create_topic, name="broadcast-topic", daemon=True).start()

    def _create_topic(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                ensure_topic(
                    self.brokers,
                    self.topic,
                    partitions=self.partitions,
                    retention_ms=self.retention_ms,
                    stop=self._stop,
                )
                self._ready = True
                return
            except Exception as error:
                self._retry_log.warning("broadcast topic not ready; retrying", error=str(error))
                self._stop.wait(backoff * (0.8 + 0.4 * random.random()))  # capped, with jitter
                backoff = min(backoff * 2, 10.0)

    async def stop(self) -> None:
        self._stop.set()
        await self._writer.stop()

    async def send(self, record: bytes) -> None:
        try:
            await self._writer.write(self.topic, record)
        except WriteFailed as error:
            raise PushUnavailable(str(error)) from None

    def status(self) -> dict[str, object]:
        return {"ready": self._ready, "topic": self.topic}


class InProcessPushChannel:
    """One node: the record is delivered on the next loop turn (there is no other node)."""

    def __init__(self) -> None:
        self.deliver: Callable[[bytes], object] | None = None

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, record: bytes) -> None:
        deliver = self.deliver
        if deliver is None:
            raise PushUnavailable("broadcast: not started")
        asyncio.get_running_loop().call_soon(deliver, record)

    def status(self) -> dict[str, object]:
        return {"ready": True, "topic": "in-process"}
