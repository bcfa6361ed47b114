"""KafkaEventSource against the real broker: where it starts, what it assigns, what it keeps.

Each test uses topics of its own (created here), so other tests on the shared broker cannot
disturb the exact counts. The on_batch callback runs on an event loop in a helper thread, as
it runs on the gateway's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mesaya_realtime.application.handlers.events import Record
from mesaya_realtime.infrastructure.kafka_consumer import KafkaEventSource, KafkaSourceConfig
from tests.kafka_support import Delivered, EventProducer, create_topics, unique
from tests.support import free_port


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class LoopThread:
    """An asyncio loop; running in a thread after :meth:`run`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        if self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()


class Collector:
    """Records handed over by a source, in hand-over order."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.batches = 0
        self.lags: dict[tuple[str, int], list[int]] = {}
        self.states: list[bool] = []

    def on_batch(self, records: list[Record]) -> None:
        self.batches += 1
        self.records.extend(records)

    def on_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lags.setdefault((topic, partition), []).append(lag)

    def on_state(self, up: bool) -> None:
        self.states.append(up)

    def keys(self) -> list[tuple[str, int, int, bytes | None]]:
        return [(r.topic, r.partition, r.offset, r.value) for r in self.records]


def as_keys(delivered: list[Delivered]) -> list[tuple[str, int, int, bytes | None]]:
    return [(d.topic, d.partition, d.offset, d.value) for d in delivered]


def in_partition_order(keys: list[tuple[str, int, int, bytes | None]]) -> bool:
    last: dict[tuple[str, int], int] = {}
    for topic, partition, offset, _ in keys:
        if offset <= last.get((topic, partition), -1):
            return False
        last[(topic, partition)] = offset
    return True


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    thread.run()
    yield thread
    thread.close()


@contextlib.contextmanager
def running_source(
    brokers: str,
    topics: list[str],
    loop: LoopThread,
    collector: Collector,
    group_id: str = "",
    **config: Any,
) -> Iterator[KafkaEventSource]:
    source = KafkaEventSource(
        KafkaSourceConfig(brokers=brokers, topics=topics, group_id=group_id or unique("g"), **config),
        loop.loop,
        collector.on_batch,
        on_lag=collector.on_lag,
        on_state=collector.on_state,
    )
    source.start()
    try:
        yield source
    finally:
        if loop.loop.is_running():
            loop.call(source.stop())
        else:
            source._stop.set()
            assert source._thread is not None
            source._thread.join(15)


def ready(source: KafkaEventSource) -> bool:
    return bool(source.status()["ready"])


def test_a_fresh_source_starts_at_the_end_and_keeps_partition_order(
    kafka_brokers: str, loop_thread: LoopThread
) -> None:
    topics = [f"{unique('it')}.a.events", f"{unique('it')}.b.events"]
    create_topics(kafka_brokers, topics)
    producer = EventProducer(kafka_brokers)
    for topic in topics:
        for n in range(5):
            producer.send(topic, {"event_type": "created", "entity_id": f"old-{n}"}, key=f"k{n}")
    producer.flush()
    old = list(producer.delivered)

    collector = Collector()
    with running_source(kafka_brokers, topics, loop_thread, collector) as source:
        wait_until(lambda: ready(source), what="ready")
        status = source.status()
        assert status == {
            "ready": True,
            "reason": "",
            "connected": True,
            "partitions": 6,
            "missingTopics": [],
            "lastError": status["lastError"],
        }
        producer.delivered.clear()
        for n in range(120):
            producer.send(topics[n % 2], {"event_type": "updated", "entity_id": f"new-{n}"}, key=f"k{n % 7}")
        producer.flush()
        wait_until(lambda: len(collector.records) >= 120, what="120 records")
        got = collector.keys()
    assert sorted(got) == sorted(as_keys(producer.delivered))
    assert not set(got) & set(as_keys(old)), "history was replayed"
    assert in_partition_order(got)
    assert collector.states[0] is True


def test_two_sources_with_one_group_id_each_get_every_record(
    kafka_brokers: str, loop_thread: LoopThread
) -> None:
    """No group membership: the same group id does not split the partitions between nodes."""
    topic = f"{unique('it')}.tables.events"
    create_topics(kafka_brokers, [topic])
    first, second = Collector(), Collector()
    group = unique("shared-group")
    with (
        running_source(kafka_brokers, [topic], loop_thread, first, group_id=group) as a,
        running_source(kafka_brokers, [topic], loop_thread, second, group_id=group) as b,
    ):
        wait_until(lambda: ready(a) and ready(b), what="both ready")
        assert a.status()["partitions"] == b.status()["partitions"] == 3
        producer = EventProducer(kafka_brokers)
        for n in range(60):
            producer.send(topic, {"event_type": "updated", "entity_id": f"e-{n}"}, key=f"k{n}")
        producer.flush()
        assert {d.partition for d in producer.delivered} == {0, 1, 2}
        wait_until(lambda: len(first.records) >= 60 and len(second.records) >= 60, what="60 records each")
    expected = sorted(as_keys(producer.delivered))
    assert sorted(first.keys()) == expected
    assert sorted(second.keys()) == expected


def test_a_topic_created_later_is_read_from_its_first_record(
    kafka_brokers: str, loop_thread: LoopThread
) -> None:
    existing = f"{unique('it')}.a.events"
    later = f"{unique('it')}.later.events"
    create_topics(kafka_brokers, [existing])
    collector = Collector()
    with running_source(
        kafka_brokers,
        [existing, later],
        loop_thread,
        collector,
        metadata_interval=0.5,
        missing_topic_grace=600,
    ) as source:
        wait_until(lambda: bool(source.status()["connected"]), what="connected")
        status = source.status()
        assert status["ready"] is False  # a configured topic is missing, within the grace period
        assert status["missingTopics"] == [later]
        assert status["partitions"] == 3
        producer = EventProducer(kafka_brokers)
        # the broker auto-creates the topic on this first produce
        for n in range(3):
            producer.send(later, {"event_type": "created", "entity_id": f"first-{n}"}, key="same")
        producer.flush()
        wait_until(lambda: len(collector.records) >= 3, what="the records of the new topic")
        wait_until(lambda: ready(source), what="ready once every topic is assigned")
        assert source.status()["missingTopics"] == []
        assert source.status()["partitions"] == 6
    assert collector.keys() == as_keys(producer.delivered)


def test_a_topic_missing_past_the_grace_period_does_not_hold_readiness(
    kafka_brokers: str, loop_thread: LoopThread
) -> None:
    existing = f"{unique('it')}.a.events"
    never = f"{unique('it')}.never.events"
    create_topics(kafka_brokers, [existing])
    collector = Collector()
    with running_source(
        kafka_brokers, [existing, never], loop_thread, collector, missing_topic_grace=0.5
    ) as source:
        wait_until(lambda: ready(source), what="ready after the grace period")
        assert source.status()["missingTopics"] == [never]
        producer = EventProducer(kafka_brokers)
        producer.produce_all(existing, [{"event_type": "created", "entity_id": "x"}])
        wait_until(lambda: len(collector.records) == 1, what="the record of the existing topic")


def test_lag_is_reported_per_partition_and_moves_under_back_pressure(kafka_brokers: str) -> None:
    topic = f"{unique('it')}.lag.events"
    create_topics(kafka_brokers, [topic], partitions=1)
    side = LoopThread()  # not running yet: handed-over batches wait, the window fills up
    collector = Collector()
    try:
        with running_source(
            kafka_brokers,
            [topic],
            side,
            collector,
            batch_size=1,
            max_pending_batches=1,
            metadata_interval=0.2,
        ) as source:
            wait_until(lambda: ready(source), what="ready")
            wait_until(
                lambda: collector.lags.get((topic, 0)) == [0] * len(collector.lags[(topic, 0)]), what="lag 0"
            )
            producer = EventProducer(kafka_brokers)
            for n in range(30):
                producer.send(topic, {"event_type": "updated", "entity_id": f"e-{n}"})
            producer.flush()
            wait_until(lambda: max(collector.lags[(topic, 0)]) >= 20, what="lag to grow")
            assert not collector.records  # nothing ran: the loop is not running
            side.run()
            wait_until(lambda: len(collector.records) == 30, what="the backlog to drain")
            wait_until(lambda: collector.lags[(topic, 0)][-1] == 0, what="lag back to 0")
            side.call(source.stop())
    finally:
        side.close()
    assert collector.keys() == as_keys(producer.delivered)


class FlakyConsumer:
    """Wraps a real Consumer; ``consume`` raises once after ``fail_after`` calls with records."""

    def __init__(self, inner: Any, state: dict[str, int]) -> None:
        self._inner = inner
        self._state = state

    def consume(self, *args: Any) -> Any:
        messages = self._inner.consume(*args)
        if messages:
            self._state["calls"] += 1
            if self._state["calls"] == self._state["fail_after"]:
                self._state["failed"] += 1
                raise RuntimeError("simulated consumer failure")
        return messages

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_recreated_consumer_resumes_where_it_was(kafka_brokers: str, loop_thread: LoopThread) -> None:
    """After an error the consumer is rebuilt from the in-memory positions: no loss, no repeat.

    The records of the failing consume() call were never handed over, so they come again.
    """
    topic = f"{unique('it')}.flaky.events"
    create_topics(kafka_brokers, [topic])
    state = {"calls": 0, "fail_after": 2, "failed": 0}

    class FlakySource(KafkaEventSource):
        def _make_consumer(self) -> Any:
            return FlakyConsumer(super()._make_consumer(), state)

    collector = Collector()
    source = FlakySource(
        KafkaSourceConfig(brokers=kafka_brokers, topics=[topic], group_id=unique("g"), batch_size=5),
        loop_thread.loop,
        collector.on_batch,
    )
    source.start()
    try:
        wait_until(lambda: ready(source), what="ready")
        producer = EventProducer(kafka_brokers)
        for n in range(40):
            producer.send(topic, {"event_type": "updated", "entity_id": f"e-{n}"}, key=f"k{n % 3}")
            if n % 10 == 9:
                producer.flush()
        producer.flush()
        wait_until(lambda: state["failed"] == 1, what="the simulated failure")
        wait_until(lambda: ready(source), what="ready again")
        for n in range(40, 60):
            producer.send(topic, {"event_type": "updated", "entity_id": f"e-{n}"}, key=f"k{n % 3}")
        producer.flush()
        wait_until(lambda: len(collector.records) >= 60, what="60 records")
    finally:
        loop_thread.call(source.stop())
    got = collector.keys()
    assert sorted(got) == sorted(as_keys(producer.delivered))
    assert len(set(got)) == len(got), "a record was handed over twice"
    assert in_partition_order(got)


def test_an_unreachable_broker_is_not_ready_and_does_not_disturb_another_source(
    kafka_brokers: str, loop_thread: LoopThread
) -> None:
    topic = f"{unique('it')}.a.events"
    create_topics(kafka_brokers, [topic])
    dead, alive = Collector(), Collector()
    with (
        running_source(f"127.0.0.1:{free_port()}", [topic], loop_thread, dead) as down,
        running_source(kafka_brokers, [topic], loop_thread, alive) as up,
    ):
        wait_until(lambda: ready(up), what="the healthy source")
        wait_until(lambda: bool(down.status()["lastError"]), what="an error on the dead source")
        status = down.status()
        assert status["ready"] is False
        assert status["connected"] is False
        assert status["partitions"] == 0
        producer = EventProducer(kafka_brokers)
        producer.produce_all(topic, [{"event_type": "created", "entity_id": "x"}])
        wait_until(lambda: len(alive.records) == 1, what="the record on the healthy source")
    assert dead.records == []
    assert True not in dead.states
