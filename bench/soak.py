"""The soak: a gateway under hours-shaped load for minutes, watched for growth and stalls.

Usage::

    python -m bench.soak                         # make soak: 10 minutes, 10,000 sockets
    python -m bench.soak --minutes 1 --sockets 2000

It runs the gateway (its own process, on the server core) on a real Kafka broker with:

- ``--sockets`` tables sockets held by the load generators, spread over ``--sections``
  sections (restaurants' floors), with churn: every second ``--churn`` of them are closed
  and as many new ones opened (each new one handshakes with a JWT and gets
  ``system.connected``);
- a steady stream of ``--events`` table events per second, each to one section in turn, and
  a stream of ``--garbage`` random-byte records per second on the same topic;
- a well-behaved client in a process of its own: a ``ping`` every 20 ms (the stall measure)
  and a ``list_tables`` every 0.5 s (its round trip includes the REST call when events made
  the cached list stale; reported apart).

Every 10 s it samples the gateway's RSS, open file descriptors and sockets, and the client's
ping p99 and worst round trip, and its list p99. The verdict: after the warm-up (the first
fifth), RSS and fds do not grow (the last samples within 5 % / 10 MiB, and 1 % / 20 fds, of
the first after warm-up) and no ping of the well-behaved client took over 100 ms. Results go to
``bench/results/soak-*.json`` and the plot to ``docs/benchmarks/soak.png``
(docs/BENCHMARKS.md, "Soak").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import RESULTS, ROOT, TOPIC, make_token, pin, proc_rss, raise_nofile
from bench.run import Bench, Generator, Layout, Plan, Producer, Upstream, kafka_brokers, start_server

SAMPLE_SECONDS = 10.0
STALL_LIMIT_MS = 100.0
PLOT = ROOT / "docs" / "benchmarks" / "soak.png"

#: The well-behaved client: a ping every 20 ms and a list_tables every 0.5 s; one JSON line of
#: round-trip figures per sample window on stdout; stops when stdin closes.
_CLIENT = """
import asyncio, sys, time, aiohttp, orjson

def figures(rtts):
    rtts.sort()
    return {"n": len(rtts), "p99_ms": rtts[int(len(rtts) * 0.99)] * 1000, "max_ms": rtts[-1] * 1000}

async def main(url, window):
    pings, lists = [], []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_reader(sys.stdin.fileno(), stop.set)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)
        await ws.receive(timeout=10)
        print(orjson.dumps({"ready": True}).decode(), flush=True)
        turn, window_end = 0, time.monotonic() + window
        while not stop.is_set():
            # a ping every 20 ms (the stall measure); a list_tables every 25th turn (0.5 s),
            # whose round trip includes the REST call when events made the cache stale
            listing = turn % 25 == 0
            started = time.perf_counter()
            await ws.send_str('{"action":"list_tables"}' if listing else '{"action":"ping"}')
            reply = "tables.list" if listing else "system.pong"
            while orjson.loads((await ws.receive(timeout=30)).data)["topic"] != reply:
                pass
            (lists if listing else pings).append(time.perf_counter() - started)
            turn += 1
            if time.monotonic() >= window_end:
                line = figures(pings)
                line["list"] = figures(lists)
                print(orjson.dumps(line).decode(), flush=True)
                pings, lists, window_end = [], [], time.monotonic() + window
            await asyncio.sleep(0.02)
        await ws.close()

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def section(index: int) -> str:
    return f"soak-{index}"


@dataclass
class SoakBench(Bench):
    """The harness's Bench, with sockets spread over ``sections`` sections, in turn."""

    sections: int = 100
    _next: int = 0

    def paths(self, count: int) -> list[list[str]]:
        per = [count // len(self.generators)] * len(self.generators)
        for index in range(count % len(self.generators)):
            per[index] += 1
        result = []
        for share in per:
            paths = []
            for _ in range(share):
                where = section(self._next % self.sections)
                paths.append(f"/ws/tables/{where}/{self.tokens[self._next % len(self.tokens)]}")
                self._next += 1
            result.append(paths)
        return result


class Streams:
    """Steady events and garbage records to the soak's topic, from a thread, paced."""

    def __init__(self, producer: Producer, events_per_s: float, garbage_per_s: float, sections: int) -> None:
        self.producer = producer
        self.sections = sections
        self.events_per_s = events_per_s
        self.garbage_per_s = garbage_per_s
        self.sent = {"events": 0, "garbage": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        kafka = self.producer._bulk
        tick = 0.1
        seq = 0
        while not self._stop.wait(tick):
            for _ in range(round(self.events_per_s * tick)):
                value = self.producer.value(1, seq, section(seq % self.sections))
                kafka.produce(TOPIC, value, partition=seq % 3)
                seq += 1
                self.sent["events"] += 1
            for _ in range(round(self.garbage_per_s * tick)):
                kafka.produce(TOPIC, os.urandom(1 + seq % 64), partition=seq % 3)
                seq += 1
                self.sent["garbage"] += 1
            kafka.poll(0)
        kafka.flush(30)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def churn(bench: Bench, server: Any, per_second: int, stop: asyncio.Event) -> dict[str, int]:
    """Close ``per_second`` sockets and open as many, every second, until ``stop``."""
    totals = {"closed": 0, "opened": 0, "failed": 0}
    share = max(1, per_second // len(bench.generators))
    while not stop.is_set():
        started = time.monotonic()
        closed = await bench.each("close", [{"count": share} for _ in bench.generators])
        totals["closed"] += sum(c["closed"] for c in closed)
        opened = await bench.connect(server, share * len(bench.generators))
        totals["opened"] += opened["opened"]
        totals["failed"] += opened["failed"]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, 1.0 - (time.monotonic() - started)))
    return totals


def verdict(samples: list[dict[str, Any]]) -> dict[str, Any]:
    warm = max(1, len(samples) // 5)
    steady = samples[warm:]
    if len(steady) < 2:
        return {"ok": False, "why": "too few samples after warm-up"}
    first, last = steady[0], steady[-3:]
    rss_growth = max(s["rss_mib"] for s in last) - first["rss_mib"]
    fd_growth = max(s["fds"] for s in last) - first["fds"]
    worst = max(s["max_ms"] for s in samples if s.get("max_ms") is not None)
    rss_ok = rss_growth <= max(10.0, first["rss_mib"] * 0.05)
    fds_ok = fd_growth <= max(20, first["fds"] * 0.01)
    stall_ok = worst <= STALL_LIMIT_MS
    return {
        "ok": rss_ok and fds_ok and stall_ok,
        "rss_growth_mib": round(rss_growth, 1),
        "fd_growth": fd_growth,
        "worst_round_trip_ms": round(worst, 1),
        "rss_ok": rss_ok,
        "fds_ok": fds_ok,
        "stall_ok": stall_ok,
    }


def plot(samples: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(minutes, [s["rss_mib"] for s in samples], marker="o")
    axes[0].set_ylabel("gateway RSS (MiB)")
    axes[1].plot(minutes, [s["fds"] for s in samples], marker="o", label="open fds")
    axes[1].plot(minutes, [s["sockets"] for s in samples], marker=".", label="sockets")
    axes[1].set_ylabel("count")
    axes[1].legend()
    axes[2].plot(minutes, [s.get("p99_ms") for s in samples], marker="o", label="p99")
    axes[2].plot(minutes, [s.get("max_ms") for s in samples], marker=".", label="max")
    axes[2].axhline(STALL_LIMIT_MS, color="red", linestyle="--", linewidth=1, label="100 ms")
    axes[2].set_ylabel("client round trip (ms)")
    axes[2].set_xlabel("minutes")
    axes[2].legend()
    fig.suptitle("Soak: churn, steady events and garbage records")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


async def soak(args: argparse.Namespace) -> int:
    layout = Layout.detect()
    pin(layout.load)
    raise_nofile()
    brokers, broker_pid = kafka_brokers(layout)
    upstream = Upstream()
    producer = Producer(brokers)
    tokens = [make_token(f"soak-user-{i}", ["USER"]) for i in range(64)]
    plan = Plan.quick()
    bench = SoakBench(
        plan, layout, brokers, broker_pid, upstream, producer, tokens=tokens, sections=args.sections
    )
    server = start_server("gateway", brokers, upstream.url, layout)
    samples: list[dict[str, Any]] = []
    client: subprocess.Popen[str] | None = None
    streams = Streams(producer, args.events, args.garbage, args.sections)
    try:
        await asyncio.to_thread(server.wait_ready)
        bench.generators = [await Generator.start(layout) for _ in range(plan.generators)]
        opened = await bench.connect(server, args.sockets)
        print(f"::: soak: {opened['opened']} sockets open in {opened['seconds']:.1f} s", flush=True)
        url = f"ws://127.0.0.1:{server.port}/ws/tables/{section(0)}/{make_token('soak-calm', ['USER'])}"
        client = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, url, str(SAMPLE_SECONDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert client.stdout is not None
        assert orjson.loads(client.stdout.readline()).get("ready")
        streams.start()
        stop = asyncio.Event()
        churning = asyncio.ensure_future(churn(bench, server, args.churn, stop))
        started = time.monotonic()
        while time.monotonic() - started < args.minutes * 60:
            line = await asyncio.to_thread(client.stdout.readline)
            window = orjson.loads(line) if line else {}
            sample = {
                "t": round(time.monotonic() - started, 1),
                "rss_mib": round(proc_rss(server.pid) / 2**20, 1),
                "fds": fds(server.pid),
                "sockets": await asyncio.to_thread(server.sockets),
                "p99_ms": round(window["p99_ms"], 1) if "p99_ms" in window else None,
                "max_ms": round(window["max_ms"], 1) if "max_ms" in window else None,
                "list_p99_ms": round(window["list"]["p99_ms"], 1) if "list" in window else None,
            }
            samples.append(sample)
            print(f"::: soak {sample}", flush=True)
        stop.set()
        totals = await churning
    finally:
        streams.stop()
        if client is not None:
            with contextlib.suppress(Exception):
                client.communicate("stop\n", 30)
        for generator in bench.generators:
            await generator.stop()
        server.stop()
    result = {
        "plan": vars(args),
        "churn": totals,
        "sent": streams.sent,
        "samples": samples,
        "verdict": verdict(samples),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    plot(samples, Path(args.plot))
    print(f"::: soak: churn {totals}, sent {streams.sent}")
    print(f"::: soak verdict: {result['verdict']}")
    print(f"::: results: {out.relative_to(ROOT)}; plot: {args.plot}")
    return 0 if result["verdict"]["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--sections", type=int, default=100, help="sections the sockets are spread over")
    parser.add_argument("--churn", type=int, default=50, help="sockets closed and opened per second")
    parser.add_argument("--events", type=float, default=50.0, help="table events per second")
    parser.add_argument("--garbage", type=float, default=200.0, help="garbage records per second")
    parser.add_argument("--plot", default=str(PLOT))
    return asyncio.run(soak(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
