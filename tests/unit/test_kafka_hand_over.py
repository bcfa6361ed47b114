"""The Kafka source's hand-over to the event loop: every batch in order, one batch per loop
turn (queued callbacks would otherwise all run in one turn, holding every socket for a whole
burst). The consumer thread is not started: batches are handed over as it would."""

from __future__ import annotations

import asyncio

from mesaya_realtime.application.handlers.events import Record
from mesaya_realtime.infrastructure.kafka_consumer import KafkaEventSource, KafkaSourceConfig


def records(count: int, start: int = 0) -> list[Record]:
    return [Record("t", 0, offset, b"{}") for offset in range(start, start + count)]


async def test_batches_run_in_order_one_per_loop_turn() -> None:
    loop = asyncio.get_running_loop()
    timeline: list[str] = []
    seen: list[int] = []

    def on_batch(batch: list[Record]) -> None:
        timeline.append("batch")
        seen.extend(record.offset for record in batch)

    config = KafkaSourceConfig(brokers="unused", topics=("t",), group_id="g")
    source = KafkaEventSource(config, loop, on_batch)
    for index in range(10):  # handed over before the loop runs any of them
        source._hand_over(records(100, index * 100))

    async def other_socket() -> None:
        while len(seen) < 1000:
            timeline.append("other")
            await asyncio.sleep(0)

    await other_socket()
    assert seen == list(range(1000))
    assert "batch,batch" not in ",".join(timeline)  # another task ran between every two


def test_the_pending_batches_are_bounded() -> None:
    config = KafkaSourceConfig(brokers="unused", topics=("t",), group_id="g")
    assert config.batch_size * config.max_pending_batches <= 10_000  # records waiting at most
