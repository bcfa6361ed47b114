"""Ingest in-process: Kafka records decoded and routed by the gateway's own EventIngest.

The gateway is wired by its composition root (``build_gateway``, Kafka disabled, nothing
started) and ``EventIngest.process`` is called on pre-built batches of 1,000 backend-shaped
``tables`` records whose sections have no sockets: decode, allowed-action filter, delivery
rule, recipient lookup (empty), cache invalidation, metrics. Prints one JSON object.

    python -m bench.ingest --core 0 --seconds 3
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from bench.common import SECRET, TOPIC, pin
from mesaya_realtime.application.handlers.events import Record
from mesaya_realtime.bootstrap import build_gateway
from mesaya_realtime.config import load_settings
from mesaya_realtime.infrastructure.demo import fixtures

ACTIONS = ("updated", "status_changed", "created")


def batches(count: int, size: int = 1000) -> list[list[Record]]:
    table = fixtures()["tables"][0]
    result = []
    offset = 0
    for _ in range(count):
        batch = []
        for _ in range(size):
            data = dict(table, id=f"table-{offset % 500}", sectionId=f"empty-section-{offset % 64}")
            value = orjson.dumps(
                {
                    "event_type": ACTIONS[offset % len(ACTIONS)],
                    "entity_id": data["id"],
                    "timestamp": "2026-01-10T12:00:00.123Z",
                    "data": data,
                }
            )
            batch.append(Record(TOPIC, offset % 3, offset, value))
            offset += 1
        result.append(batch)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--core", type=int, action="append")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--no-journal", action="store_true", help="without the resume journal (as RESUME_MAX_AGE=0)"
    )
    args = parser.parse_args()
    pin(args.core)
    settings = load_settings(
        {
            "jwt_secret": SECRET,
            "kafka_enabled": False,
            "rest_base_url": "http://127.0.0.1:9",
            "log_level": "warn",
        }
    )
    gateway = build_gateway(settings)
    ingest = gateway.ingest
    if args.no_journal:
        ingest.journal = None
    prepared = batches(20)
    record_bytes = sum(len(r.value or b"") for r in prepared[0]) / len(prepared[0])
    for batch in prepared[:5]:
        ingest.process(batch)
    events = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    passes = 0
    while time.process_time() - cpu0 < args.seconds:
        passes += 1
        shift = passes * 1_000_000  # the log moves on: every pass has offsets of its own
        for batch in prepared:
            ingest.process([record._replace(offset=record.offset + shift) for record in batch])
            events += len(batch)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    skipped = {
        sample.labels.get("reason", ""): sample.value
        for metric in gateway.metrics.events_skipped.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    sys.stdout.write(
        orjson.dumps(
            {
                "events": events,
                "cpu_s": cpu,
                "wall_s": wall,
                "events_per_cpu_s": events / cpu,
                "events_per_s": events / wall,
                "us_per_event": cpu / events * 1e6,
                "record_bytes": round(record_bytes),
                "skipped": skipped,
            }
        ).decode()
        + "\n"
    )


if __name__ == "__main__":
    main()
