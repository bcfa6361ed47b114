"""KafkaSelectionLog against the real broker: topic creation, per-table order, and how a starting
node rebuilds the state (from a checkpoint, from the start of the log, or from nothing)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from mesaya_realtime.application.ports.selection import SelectionLogUnavailable
from mesaya_realtime.domain.selection import (
    Checkpoint,
    Heartbeat,
    Hold,
    Holder,
    LogEntry,
    Select,
    SelectionState,
    StreamReplay,
    record_key,
)
from mesaya_realtime.infrastructure.selection_log import KafkaSelectionConfig, KafkaSelectionLog

ADA = Holder("n1#a", "1", "ada")
BOB = Holder("n2#b", "2", "bob")
TTL = 300_000


class Sink:
    def __init__(self) -> None:
        self.replays: list[StreamReplay] | None = None
        self.received: list[LogEntry] = []

    def bootstrap(self, replays: Sequence[StreamReplay]) -> None:
        assert self.replays is None, "bootstrap twice"
        self.replays = list(replays)

    def entries(self, entries: Sequence[LogEntry]) -> None:
        assert self.replays is not None, "entries before bootstrap"
        self.received.extend(entries)

    def replay(self, stream: str) -> StreamReplay:
        assert self.replays is not None
        [found] = [replay for replay in self.replays if replay.stream == stream]
        return found


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def topic() -> str:
    return f"test-selections-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def open_log(kafka_brokers: str, topic: str) -> AsyncIterator[Callable[..., KafkaSelectionLog]]:
    opened: list[KafkaSelectionLog] = []

    def make(sink: Sink, window: float = 600.0) -> KafkaSelectionLog:
        log = KafkaSelectionLog(
            KafkaSelectionConfig(
                brokers=kafka_brokers,
                topic=topic,
                group_id=f"test-{uuid.uuid4().hex[:6]}",
                replay_window=window,
            )
        )
        log.start(sink)
        opened.append(log)
        return log

    yield make
    for log in opened:
        await log.stop()


def now_ms() -> int:
    return round(time.time() * 1000)


async def test_the_topic_is_created_with_three_partitions_and_an_empty_log_bootstraps_empty(
    open_log: Callable[..., KafkaSelectionLog], kafka_brokers: str, topic: str
) -> None:
    sink = Sink()
    log = open_log(sink)
    await until(lambda: sink.replays is not None, "bootstrap")
    assert sink.replays == [StreamReplay(str(p), (), (), -1) for p in range(3)]
    assert log.streams() == ("0", "1", "2")
    assert log.status()["ready"] is True
    metadata = AdminClient({"bootstrap.servers": kafka_brokers}).list_topics(topic, timeout=10)
    assert len(metadata.topics[topic].partitions) == 3


async def test_records_of_one_table_come_back_in_append_order(
    open_log: Callable[..., KafkaSelectionLog],
) -> None:
    sink = Sink()
    log = open_log(sink)
    await until(lambda: sink.replays is not None, "bootstrap")
    sent = []
    stored = []
    for index in range(200):
        record = Select("hall", f"t{index % 7}", ADA, at=now_ms(), ttl=TTL, request=str(index))
        sent.append(record)
        stored.append(log.append(record))
    await asyncio.gather(*stored)
    await until(lambda: len(sink.received) >= len(sent), "every record back")
    for table in {record.table for record in sent}:
        mine = [
            entry
            for entry in sink.received
            if isinstance(entry.record, Select) and entry.record.table == table
        ]
        assert [entry.record for entry in mine] == [record for record in sent if record.table == table]
        assert len({entry.stream for entry in mine}) == 1  # one key, one partition
        offsets = [entry.offset for entry in mine]
        assert offsets == sorted(offsets)


async def test_a_starting_node_rebuilds_from_the_last_checkpoint_before_its_window(
    open_log: Callable[..., KafkaSelectionLog],
) -> None:
    writer_sink = Sink()
    writer = open_log(writer_sink)
    await until(lambda: writer_sink.replays is not None, "writer bootstrap")
    held = Select("hall", "t1", ADA, at=now_ms(), ttl=TTL, request="1")
    await writer.append(held)
    await until(lambda: len(writer_sink.received) == 1, "the select")
    [select_entry] = writer_sink.received
    state = SelectionState()
    state.apply(held, select_entry.stream)
    await asyncio.sleep(3.0)  # the select falls out of the 2 s window of the next node
    checkpoint = Checkpoint(
        select_entry.stream,
        select_entry.offset,
        tuple(state.in_stream(select_entry.stream)),
        "n1#a",
        now_ms(),
    )
    await writer.append(checkpoint)
    contender = Select("hall", "t1", BOB, at=now_ms(), ttl=TTL, request="2")
    await writer.append(contender)

    sink = Sink()
    open_log(sink, window=2.0)
    await until(lambda: sink.replays is not None, "bootstrap")
    replay = sink.replay(select_entry.stream)
    assert replay.base == (Hold("hall", "t1", ADA, held.at, held.at + TTL, select_entry.stream),)
    assert [entry.record for entry in replay.entries] == [contender]
    assert replay.through == select_entry.offset + 2
    rebuilt = SelectionState()
    rebuilt.restore(replay.stream, replay.base)
    for entry in replay.entries:
        rebuilt.apply(entry.record, entry.stream)
    hold = rebuilt.hold("hall", "t1")
    assert hold is not None
    assert hold.holder == ADA  # bob's select lost, as it did for the writer
    for other in {"0", "1", "2"} - {select_entry.stream}:
        assert sink.replay(other) == StreamReplay(other, (), (), -1)


async def test_without_a_checkpoint_in_the_window_the_partition_is_read_from_its_start(
    open_log: Callable[..., KafkaSelectionLog],
) -> None:
    writer_sink = Sink()
    writer = open_log(writer_sink)
    await until(lambda: writer_sink.replays is not None, "writer bootstrap")
    old = Select("hall", "t1", ADA, at=now_ms(), ttl=TTL, request="1")
    await writer.append(old)
    await asyncio.sleep(3.0)
    recent = Select("hall", "t1", BOB, at=now_ms(), ttl=TTL, request="2")
    await writer.append(recent)

    sink = Sink()
    open_log(sink, window=2.0)
    await until(lambda: sink.replays is not None, "bootstrap")
    streams = [replay for replay in sink.replays or [] if replay.entries]
    assert len(streams) == 1
    assert streams[0].base == ()
    assert [entry.record for entry in streams[0].entries] == [old, recent]


async def test_a_partition_quiet_for_the_whole_window_starts_empty(
    open_log: Callable[..., KafkaSelectionLog],
) -> None:
    writer_sink = Sink()
    writer = open_log(writer_sink)
    await until(lambda: writer_sink.replays is not None, "writer bootstrap")
    await writer.append(Select("hall", "t1", ADA, at=now_ms(), ttl=1_000, request="1"))
    await asyncio.sleep(3.0)
    sink = Sink()
    open_log(sink, window=2.0)  # a window longer than the TTL, as bootstrap sizes it
    await until(lambda: sink.replays is not None, "bootstrap")
    assert all(replay.base == () and replay.entries == () for replay in sink.replays or [])


async def test_records_after_the_bootstrap_point_follow_it_and_garbage_is_skipped(
    open_log: Callable[..., KafkaSelectionLog], kafka_brokers: str, topic: str
) -> None:
    first_sink = Sink()
    first = open_log(first_sink)
    await until(lambda: first_sink.replays is not None, "bootstrap")
    producer = Producer({"bootstrap.servers": kafka_brokers})
    key = record_key(Select("hall", "t1", ADA, 0, 1)) or b""
    for garbage in (b"not json", b"[1,2,3]", b'{"kind":"select"}', b'{"kind":"heartbeat","writer":1,"at":2}'):
        producer.produce(topic, value=garbage, key=key)
    producer.flush(10)
    beat = Heartbeat("n1#a", now_ms())
    await first.append(beat)
    await until(lambda: len(first_sink.received) == 1, "the heartbeat")
    assert first_sink.received[0].record == beat

    second_sink = Sink()
    second = open_log(second_sink)
    await until(lambda: second_sink.replays is not None, "second bootstrap")
    replayed = [entry.record for replay in second_sink.replays or [] for entry in replay.entries]
    assert replayed == [beat]
    late = Select("hall", "t1", BOB, at=now_ms(), ttl=TTL, request="3")
    await second.append(late)
    await until(lambda: len(second_sink.received) == 1 and len(first_sink.received) == 2, "the select")
    assert second_sink.received[0].record == late == first_sink.received[1].record


async def test_stop_flushes_what_was_appended(open_log: Callable[..., KafkaSelectionLog]) -> None:
    sink = Sink()
    log = open_log(sink)
    await until(lambda: sink.replays is not None, "bootstrap")
    records = [Heartbeat("n1#a", now_ms() + index) for index in range(50)]
    for record in records:
        log.append(record)
    await log.stop()
    reader = Sink()
    open_log(reader)
    await until(lambda: reader.replays is not None, "bootstrap")
    replayed = [entry.record for replay in reader.replays or [] for entry in replay.entries]
    assert replayed == records


async def test_append_fails_cleanly_when_the_log_is_stopped(
    open_log: Callable[..., KafkaSelectionLog],
) -> None:
    sink = Sink()
    log = open_log(sink)
    await until(lambda: sink.replays is not None, "bootstrap")
    await log.stop()
    with pytest.raises(SelectionLogUnavailable):
        await log.append(Heartbeat("n1#a", now_ms()))
