"""Centrifugo v6 as a baseline: the Go realtime server fed from the bench's Kafka topic.

``make bench`` installs it with ``go install`` into ``.venv/bin/centrifugo`` (see the Makefile);
without Go, or when the install failed, the bench skips it and says so. The configuration
written here:

- every socket authenticates with its own HS256 JWT (``client.token.hmac_secret_key`` is the
  bench's secret, the same the gateway verifies) in the ``connect`` command, then subscribes to
  ``tables:main-hall`` (namespace ``tables`` with ``allow_subscribe_for_client``);
- a ``consumers`` entry of type ``kafka`` reads the topic the gateway reads, in
  ``publication_data_mode``: each record's value is published as is to the channels named by its
  ``centrifugo-channels`` header, which the bench's producer adds to the records it produces;
- the consumer group's offsets are committed at the end of the topic before Centrifugo starts, so
  it begins with what is produced from then on (franz-go would otherwise start a new group at the
  beginning and replay every earlier run);
- ``log.level`` error, no history, no presence; everything else at its defaults.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from bench.common import ROOT, SECRET, SECTION, TOPIC

VERSION = "v6.9.1"
MODULE = "github.com/centrifugal/centrifugo/v6"
BINARY = Path(os.environ.get("CENTRIFUGO_BIN", ROOT / ".venv" / "bin" / "centrifugo"))
GROUP = "mesaya-bench-centrifugo"
NAMESPACE = "tables"
CHANNEL = f"{NAMESPACE}:{SECTION}"
HEADER = "centrifugo-channels"
API_KEY = "mesaya-bench-api-key"


def installed() -> tuple[str | None, str]:
    """(version, why not) of the installed binary; version None when it cannot be used."""
    if not BINARY.exists():
        return None, (
            f"{BINARY.relative_to(ROOT) if BINARY.is_relative_to(ROOT) else BINARY} not found "
            "(`make bench` installs it with `go install` when Go is present)"
        )
    try:
        out = subprocess.run([str(BINARY), "version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"{BINARY} does not run: {error}"
    match = re.search(r"v?(\d+\.\d+\.\d+)", out)
    if not match:
        return None, f"{BINARY} version: {out.strip()[:80]!r}"
    return match.group(1), ""


def config(port: int, brokers: str) -> dict[str, object]:
    return {
        "http_server": {"address": "127.0.0.1", "port": port},
        "log": {"level": "error"},
        "health": {"enabled": True},
        "usage_stats": {"disabled": True},
        "http_api": {"key": API_KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [{"name": NAMESPACE, "allow_subscribe_for_client": True}]},
        "consumers": [
            {
                "name": "bench",
                "enabled": True,
                "type": "kafka",
                "kafka": {
                    "brokers": brokers.split(","),
                    "topics": [TOPIC],
                    "consumer_group": GROUP,
                    "publication_data_mode": {"enabled": True, "channels_header": HEADER},
                },
            }
        ],
    }


def write_config(folder: Path, port: int, brokers: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "centrifugo.json"
    path.write_text(json.dumps(config(port, brokers), indent=2))
    return path


def command(config_path: Path) -> list[str]:
    return [str(BINARY), "--config", str(config_path)]


def environment() -> dict[str, str]:
    # One core, like the gateway's process (the affinity mask says so too; this makes it explicit).
    return {"GOMAXPROCS": "1"}


def commit_group_at_end(brokers: str) -> None:
    """Commit the consumer group's offsets at the end of every partition (no member is running)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": GROUP,
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    try:
        metadata = consumer.list_topics(TOPIC, timeout=10)
        ends = []
        for partition in metadata.topics[TOPIC].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
            ends.append(TopicPartition(TOPIC, partition, high))
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def wait_group_stable(brokers: str, timeout: float = 60.0) -> bool:
    """Wait until Centrifugo's consumer has joined its group and holds every partition."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": brokers, "log_level": 3})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            described = admin.describe_consumer_groups([GROUP], request_timeout=5)[GROUP].result(10)
        except Exception:
            time.sleep(0.2)
            continue
        if described.state == ConsumerGroupState.STABLE and described.members:
            held = sum(len(m.assignment.topic_partitions) for m in described.members if m.assignment)
            if held:
                return True
        time.sleep(0.2)
    return False
