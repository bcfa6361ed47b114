"""The plumbing every Kafka consumer of the gateway shares: one thread, a retried consumer, a
bounded hand-over to the event loop.

A :class:`KafkaReader` runs its consumer in a thread of its own. :meth:`KafkaReader._read` (the
subclass's) reads with a consumer made by :meth:`KafkaReader._make_consumer`; when it raises,
the consumer is closed and a new one is made after a back-off (0.5 s doubling to 10 s), so a
broker outage costs one client at a time, never a storm of them. What is read crosses to the
event loop with :meth:`KafkaReader._hand_over`: at most ``max_pending`` items are waiting at
once (a slow loop pauses fetching instead of growing memory), and the loop runs one item per
turn. Callbacks queued with ``call_soon_threadsafe`` would all run in the same turn, so a
burst (64 pending batches) would hold every socket for the whole burst; one per turn lets the
sockets' I/O run in between (docs/BENCHMARKS.md "Hostile input").

The gateway's readers: the event source (infrastructure/kafka_consumer.py) and the table
selection log (infrastructure/selection_log.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import threading
import time
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, Message

from mesaya_realtime.application.usecases.log_limits import RateLimitedLog
from mesaya_realtime.infrastructure.kafka_logs import client_settings

__all__ = ["KafkaReader", "ReaderConfig", "fetch_batch"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 10.0
#: Seconds between the log lines of one outage.
_OUTAGE_REPORT = 60.0


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


class ReaderConfig(Protocol):
    """What every reader's configuration says (the event source's, the selection log's)."""

    @property
    def brokers(self) -> str: ...
    @property
    def group_id(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def poll_timeout(self) -> float: ...
    @property
    def max_pending_batches(self) -> int: ...


class KafkaReader(Generic[T]):
    """A consumer thread handing items of type ``T`` to the event loop (see the module doc).

    Subclasses implement :meth:`_read` (runs in the thread until stopped or failing),
    :meth:`_deliver` (runs on the loop, one item per turn) and :meth:`_consumer_settings`.
    """

    #: The thread's name, and the label of this reader's log lines.
    name = "kafka-reader"

    def __init__(self, config: ReaderConfig) -> None:
        self.brokers = config.brokers
        self.group_id = config.group_id
        self.batch_size = config.batch_size
        self.poll_timeout = config.poll_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._window = threading.BoundedSemaphore(config.max_pending_batches)
        self._pending: collections.deque[T] = collections.deque()
        self._pending_lock = threading.Lock()
        self._draining = False
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._connected = False
        self._last_error = ""
        #: An outage is logged once when it starts (or at start-up, before the first
        #: connection), then every _OUTAGE_REPORT seconds with its duration, once when it ends.
        self._down_since: float | None = time.monotonic()
        self._outage_logged = False
        self._next_outage_report = 0.0
        self._retry_log = RateLimitedLog(log, interval=_OUTAGE_REPORT)

    # -- what subclasses provide -------------------------------------------------------------
    def _consumer_settings(self) -> dict[str, Any]:
        """librdkafka settings over :meth:`_make_consumer`'s common ones."""
        return {}

    def _read(self, consumer: Consumer) -> None:
        """Read until :attr:`_stop` is set; raise to have the consumer made again."""
        raise NotImplementedError

    def _deliver(self, item: T) -> None:
        """Run one handed-over item on the event loop."""
        raise NotImplementedError

    def _while_waiting(self) -> None:
        """Called from the thread while the hand-over window is full (back-pressure)."""

    def _connection_changed(self, connected: bool) -> None:
        """Called from the thread when the broker connection comes or goes."""

    # -- lifecycle ---------------------------------------------------------------------------
    def start_reading(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    async def stop_reading(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 10.0)

    # -- the thread --------------------------------------------------------------------------
    def _make_consumer(self) -> Consumer:
        settings: dict[str, Any] = {
            **client_settings(),
            "bootstrap.servers": self.brokers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.queue.backoff.ms": 5,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 2000,
            "socket.keepalive.enable": True,
            "error_cb": self._on_error,
            "log_level": 3,
        }
        settings.update(self._consumer_settings())
        return Consumer(settings)

    def _run(self) -> None:
        backoff = _BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                self._consumer = consumer = self._make_consumer()
                self._read(consumer)
                backoff = _BACKOFF_FIRST
            except Exception as error:
                self._last_error = str(error)
                self._set_connected(False)
                self._outage()
                self._retry_log.warning("kafka reader error; retrying", reader=self.name, error=str(error))
                # exponential, capped, with jitter: nodes restarted together do not retry together
                self._stop.wait(backoff * (0.8 + 0.4 * random.random()))
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                if self._consumer is not None:
                    try:
                        self._consumer.close()
                    except Exception:
                        log.debug("kafka consumer close failed", exc_info=True)
                    self._consumer = None
                self._consumer_closed()
        self._set_connected(False)

    def _consumer_closed(self) -> None:
        """Called from the thread after each consumer is closed (before a new one is made)."""

    def _on_error(self, error: KafkaError) -> None:
        # Called from inside poll/consume of this reader's thread.
        self._last_error = str(error)
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._set_connected(False)
            self._outage()
        if error.fatal():
            log.error("fatal kafka error", extra={"reader": self.name, "error": str(error)})

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        now = time.monotonic()
        if connected:
            if self._outage_logged and self._down_since is not None:
                log.info(
                    "kafka reachable again",
                    extra={"reader": self.name, "down_for_s": round(now - self._down_since, 1)},
                )
            else:
                log.info("kafka connected", extra={"reader": self.name, "brokers": self.brokers})
            self._down_since, self._outage_logged = None, False
        else:
            self._down_since = now
            self._outage_logged = False
            self._outage()
        self._connection_changed(connected)

    def _outage(self) -> None:
        """Log the outage that is going on: once at its start, then once a period."""
        if self._connected or self._down_since is None or self._stop.is_set():
            return
        now = time.monotonic()
        if not self._outage_logged:
            self._outage_logged = True
            self._next_outage_report = now + _OUTAGE_REPORT
            log.warning(
                "kafka unreachable",
                extra={"reader": self.name, "brokers": self.brokers, "error": self._last_error},
            )
        elif now >= self._next_outage_report:
            self._next_outage_report = now + _OUTAGE_REPORT
            log.warning(
                "kafka still unreachable",
                extra={
                    "reader": self.name,
                    "down_for_s": round(now - self._down_since),
                    "error": self._last_error,
                },
            )

    def _fetch(self, consumer: Consumer) -> list[Message]:
        """The next batch's messages without errors (a partition's end is not one)."""
        messages: list[Message] = []
        for message in fetch_batch(consumer, self.batch_size, self.poll_timeout):
            problem = message.error()
            if problem is not None:
                if problem.code() != KafkaError._PARTITION_EOF:
                    self._last_error = str(problem)
                continue
            messages.append(message)
        return messages

    def _hand_over(self, item: T) -> bool:
        """Queue ``item`` for the loop, waiting while the window is full; False when stopping."""
        while not self._window.acquire(timeout=0.5):
            if self._stop.is_set():
                return False
            self._while_waiting()
        with self._pending_lock:
            self._pending.append(item)
            wake = not self._draining
            self._draining = True
        if wake:
            loop = self._loop
            try:
                if loop is None:
                    raise RuntimeError("not started")
                loop.call_soon_threadsafe(self._run_next)
            except RuntimeError:  # the loop is closed: we are shutting down
                with self._pending_lock:
                    self._pending.clear()
                    self._draining = False
                self._window.release()
                self._stop.set()
                return False
        return True

    def _run_next(self) -> None:
        """Run one handed-over item, then let the loop turn before the next one."""
        with self._pending_lock:
            found = bool(self._pending)
            item = self._pending.popleft() if found else None
        try:
            if found:
                self._deliver(item)  # type: ignore[arg-type]
        finally:
            if found:
                self._window.release()
            with self._pending_lock:
                more = bool(self._pending)
                self._draining = more
            if more and self._loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon(self._run_next)
