"""``serve`` with ``WORKERS=2``: two worker processes on one port under one supervisor, on the real
broker, with real WebSocket clients (infrastructure/workers.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import orjson

from tests import kafka_support as ks
from tests.kafka_support import EventClient, EventProducer, http_get, scrape, unique
from tests.support import RecordingUpstream, gateway_env, make_token, running_gateway


def ready_of(url: str) -> tuple[int, dict[str, object]]:
    """``/ready``; a connection the kernel had queued to a worker just killed is reset (the
    client retries, as a load balancer's health check would)."""
    for _ in range(20):
        try:
            status, body = http_get(url + "/ready")
            return status, orjson.loads(body)
        except ConnectionError:
            time.sleep(0.1)
    raise AssertionError("no answer from /ready")


def workers_of(url: str) -> list[dict[str, object]]:
    workers: list[dict[str, object]] = ready_of(url)[1].get("workers", [])  # type: ignore[assignment]
    return workers


def wait_for(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not {what} within {timeout}s")


async def test_two_workers_share_the_port_the_events_the_metrics_and_the_shutdown(
    tmp_path: Path, upstream: RecordingUpstream, kafka_brokers: str, http: aiohttp.ClientSession
) -> None:
    env = gateway_env(upstream.url, KAFKA_ENABLED="true", KAFKA_BROKERS=kafka_brokers, WORKERS="2")
    p = unique("wk")
    section = f"{p}-s"
    with running_gateway(env, tmp_path, ready=True) as gateway:
        workers = workers_of(gateway.url)
        assert [w["index"] for w in workers] == [0, 1]
        # each worker's state file is a second old at most: both agree within a second or two
        wait_for(lambda: all(w["ready"] for w in workers_of(gateway.url)), "both ready", 10)
        clients = [
            await EventClient.connect(
                http, gateway.ws_url, "tables", section, make_token(f"{p}-{i}"), prefix=p
            )
            for i in range(24)
        ]
        # the kernel spread the connections over both workers (each reports its own)
        wait_for(lambda: all(int(w["sockets"]) > 0 for w in workers_of(gateway.url)), "on both workers")
        wait_for(lambda: sum(int(w["sockets"]) for w in workers_of(gateway.url)) == 24, "24 counted")
        # /health agrees, whichever worker answers (each reads the other's state of <= 1 s ago)
        wait_for(lambda: orjson.loads(http_get(gateway.url + "/health")[1])["sockets"] == 24, "health")
        assert "worker exited" not in gateway.log(), gateway.log()[-3000:]
        # one /metrics for both (the Prometheus client's multiprocess mode)
        assert scrape(gateway.url).value("mesaya_open_sockets", entity="tables") == 24
        # an event reaches every socket, whichever worker holds it
        event = ks.table_event("updated", f"{p}-t1", section)
        producer = EventProducer(kafka_brokers)
        producer.send("mesa-ya.tables.events", event[0], key=section)
        producer.flush()
        for client in clients:
            await client.expect([event[1]])
        # a killed worker: /ready says so while it is down, then it is replaced
        victim = workers_of(gateway.url)[1]
        os.kill(int(victim["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        wait_for(lambda: not next(w for w in workers_of(gateway.url) if w["index"] == 1)["up"], "down", 10)
        assert ready_of(gateway.url)[0] == 503
        wait_for(
            lambda: (
                all(w["ready"] for w in workers_of(gateway.url))
                and workers_of(gateway.url)[1]["pid"] != victim["pid"]
            ),
            "replaced",
            60,
        )
        # the sockets of the killed worker are gone; the others are still served
        alive = []
        for client in clients:
            try:
                await client.expect_nothing_more(timeout=5)
                alive.append(client)
            except (AssertionError, TimeoutError, ConnectionError):
                pass
        assert 0 < len(alive) < len(clients)
        # SIGTERM: every remaining socket is closed with 1001, the supervisor exits 0
        gateway.process.send_signal(signal.SIGTERM)
        for client in alive:
            frame = await asyncio.wait_for(client._frames.get(), 20)
            while frame.type == aiohttp.WSMsgType.TEXT:
                frame = await asyncio.wait_for(client._frames.get(), 20)
            assert client.ws.close_code == 1001, (frame.type, client.ws.close_code)
        assert gateway.process.wait(30) == 0
