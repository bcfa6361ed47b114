"""The benchmark command: ``python -m bench [--quick]`` (``make bench`` / ``make bench-quick``).

Starts each server (the real gateway, ``python -m mesaya_realtime serve``; the floor; the
FastAPI baseline) as a separate process pinned to core 0, drives it from load-generator
processes and a Kafka producer pinned to core 1, measures server CPU from /proc, and writes
``bench/results/<stamp>-<mode>.json`` (plus ``latest-<mode>.json``). A full run also
refreshes the results part of ``docs/BENCHMARKS.md`` and its plots. Exits 1 on any lost or
duplicated delivery (or failed scenario), never on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import report
from bench.common import (
    RESULTS,
    ROOT,
    SECRET,
    SECTION,
    TOPIC,
    CpuMeter,
    child_setup,
    cores,
    descendants,
    machine,
    make_tokens,
    merge,
    percentiles,
    pin,
    proc_rss,
    raise_nofile,
    tcp_sockets,
)
from bench.servers import centrifugo

PYTHON = sys.executable


@dataclass
class Plan:
    """What one run measures; ``quick()`` is the CI-sized version."""

    mode: str = "full"
    sizes: tuple[int, ...] = (1000, 5000, 10000)
    fastapi_sizes: tuple[int, ...] = (1000, 5000)
    # Centrifugo with GOMAXPROCS=1 delivers ~25,000-35,000 frames/s on this machine: at 10,000
    # sockets the steady phase (1.6 M deliveries) would outlast its 60 s wait, as FastAPI's would.
    centrifugo_sizes: tuple[int, ...] = (1000, 5000)
    centrifugo_burst_rounds: int = 4
    #: The gateway with ``--workers 2`` (both cores, shared with the load side).
    workers2_sizes: tuple[int, ...] = (5000,)
    idle_sockets: int = 10000
    burst_events: int = 20
    burst_rounds: int = 10
    fastapi_burst_rounds: int = 4
    steady_rate: float = 20.0
    steady_seconds: float = 8.0
    paced_events: int = 30
    generators: int = 2
    connect_concurrency: int = 200
    handshakes: int = 8000
    handshake_concurrency: int = 250
    command_sockets: int = 1000
    command_seconds: float = 5.0
    command_rate: float = 20000.0
    ingest_seconds: float = 3.0
    kafka_ingest_events: int = 300_000
    servers: tuple[str, ...] = ("gateway", "gateway-v2", "gateway-w2", "floor", "fastapi", "centrifugo")
    #: 0: every socket its own token; N: the sockets share N tokens (64 before the Centrifugo
    #: baseline), so the gateway's verified-token cache answers most handshakes.
    shared_tokens: int = 0
    profile: bool = False

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            mode="quick",
            sizes=(200,),
            fastapi_sizes=(200,),
            centrifugo_sizes=(200,),
            workers2_sizes=(200,),
            idle_sockets=200,
            burst_events=10,
            burst_rounds=3,
            steady_seconds=2.0,
            paced_events=10,
            handshakes=400,
            handshake_concurrency=50,
            command_sockets=200,
            command_seconds=1.5,
            command_rate=2000.0,
            ingest_seconds=0.5,
            kafka_ingest_events=20_000,
        )


@dataclass
class Layout:
    """Which cores the server and the load side get."""

    server: set[int] | None
    load: set[int] | None

    @classmethod
    def detect(cls) -> Layout:
        usable = cores()
        if len(usable) >= 2:
            return cls({usable[0]}, set(usable[1:]))
        return cls(None, None)

    def describe(self) -> str:
        if self.server is None:
            return "not pinned (fewer than 2 usable cores)"
        load = sorted(self.load or [])
        return f"server on core {sorted(self.server)}, generators + producer + orchestrator on {load}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# -- Kafka -----------------------------------------------------------------------------------
def kafka_brokers(layout: Layout) -> tuple[str, int | None]:
    """$KAFKA_BROKERS, else ``scripts/kafka-local start``; returns (brokers, broker pid if ours)."""
    brokers = os.environ.get("KAFKA_BROKERS", "").strip()
    if brokers:
        return brokers, None
    script = str(ROOT / "scripts" / "kafka-local")
    already = subprocess.run([script, "status"], capture_output=True, text=True).returncode == 0
    print("::: Kafka: scripts/kafka-local start", flush=True)
    out = subprocess.run([script, "start"], capture_output=True, text=True, check=True).stdout
    brokers = out.strip().splitlines()[-1].strip()
    port = brokers.rsplit(":", 1)[1]
    pid = None
    with contextlib.suppress(OSError, ValueError):
        cache = Path(os.environ.get("KAFKA_LOCAL_CACHE", ROOT / ".cache" / "kafka"))
        pid = int((cache / f"kafka-{port}.pid").read_text().strip())
        if not already:
            pin(layout.load, pid)  # a broker we started stays off the server's core
    return brokers, pid


class Producer:
    """Produces backend-shaped ``tables`` events with the benchmark marker in ``data``."""

    def __init__(self, brokers: str) -> None:
        from confluent_kafka import Producer as KafkaProducer

        from mesaya_realtime.infrastructure.demo import fixtures

        self._producer = KafkaProducer(
            {"bootstrap.servers": brokers, "linger.ms": 0, "acks": 1, "log_level": 3}
        )
        self._bulk = KafkaProducer(
            {
                "bootstrap.servers": brokers,
                "linger.ms": 5,
                "acks": 1,
                "queue.buffering.max.messages": 1_000_000,
                "log_level": 3,
            }
        )
        self.table = dict(fixtures()["tables"][0], sectionId=SECTION)
        self.bytes = 0
        # Centrifugo's Kafka consumer (publication data mode) reads the channel from a header;
        # the other servers ignore it.
        self.headers = [(centrifugo.HEADER, centrifugo.CHANNEL.encode())]

    def value(self, run: int, seq: int, section: str = SECTION) -> bytes:
        now = time.time_ns()
        data = dict(self.table, id=f"table-{seq % 6 + 1}", sectionId=section)
        data["bench"] = {"r": run, "s": seq, "t": now}
        return orjson.dumps(
            {
                "event_type": "updated",
                "entity_id": data["id"],
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "data": data,
            }
        )

    def send(self, run: int, seqs: range) -> None:
        for seq in seqs:
            value = self.value(run, seq)
            self.bytes = len(value)
            self._producer.produce(TOPIC, value, partition=0, headers=self.headers)
        self._producer.poll(0)
        self._producer.flush(10)

    def bulk(self, count: int, section: str) -> float:
        """``count`` events to a section nobody listens to; returns the seconds it took."""
        start = time.perf_counter()
        value = self.value(0, 0, section)
        for index in range(count):
            while True:
                try:
                    self._bulk.produce(TOPIC, value, partition=index % 3)
                    break
                except BufferError:
                    self._bulk.poll(0.01)
            if index % 10_000 == 0:
                self._bulk.poll(0)
        self._bulk.flush(60)
        return time.perf_counter() - start


# -- processes -------------------------------------------------------------------------------
class Generator:
    """One ``bench.loadgen`` process, called with JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, layout: Layout) -> Generator:
        args = [PYTHON, "-m", "bench.loadgen"]
        for core in sorted(layout.load or ()):
            args += ["--core", str(core)]
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            limit=1 << 26,
            preexec_fn=child_setup(layout.load),
        )
        generator = cls(process)
        hello = await generator._read()
        assert hello.get("ready"), hello
        return generator

    async def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator {self.pid} exited")
        result: dict[str, Any] = orjson.loads(line)
        return result

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        async with self._lock:
            assert self.process.stdin is not None
            self.process.stdin.write(orjson.dumps({"op": op, **args}) + b"\n")
            await self.process.stdin.drain()
            result = await self._read()
        if "error" in result:
            raise RuntimeError(f"load generator {op}: {result['error']}")
        return result

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("exit"), 10)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()


class Server:
    """A server process (gateway or baseline) on ``127.0.0.1:port``, pinned to the server core."""

    def __init__(
        self,
        kind: str,
        args: list[str],
        env: dict[str, str],
        port: int,
        layout: Layout,
        cpus: set[int] | None = None,
        ready_path: str = "/ready",
    ) -> None:
        self.kind = kind
        self.port = port
        #: The cores it may run on: the server core, or every core (``gateway-w2``).
        self.cpus = layout.server if cpus is None else cpus
        self.ready_path = ready_path
        self._pids: list[int] = []
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log_path = RESULTS / f"{kind}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=child_setup(self.cpus),
        )
        self.pid = self.process.pid

    @property
    def shares_cores(self) -> bool:
        """Whether it runs beside the load side (``--workers 2``) instead of on its own core."""
        return self.kind == "gateway-w2"

    def pids(self) -> list[int]:
        """The process and its children (the workers of ``--workers 2``), found once it is ready."""
        return self._pids or [self.pid]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if http_get(self.url + self.ready_path, 1.0)[0] == 200:
                    self._pids = descendants(self.pid)
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} not ready: {self.log_path.read_text()[-2000:]}")

    def sockets(self) -> int:
        if self.kind in ("centrifugo", "gateway-w2"):
            # Centrifugo has no live count over HTTP (its node info is refreshed every 3 s), nor
            # have the workers (their state files are periodic): count the accepted connections.
            return tcp_sockets(self.port)
        status, body = http_get(self.url + "/health", 5.0)
        return int(json.loads(body).get("sockets", -1)) if status == 200 else -1

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def start_server(kind: str, brokers: str, upstream: str, layout: Layout) -> Server:
    port = free_port()
    if kind == "centrifugo":
        centrifugo.commit_group_at_end(brokers)
        path = centrifugo.write_config(RESULTS / "centrifugo", port, brokers)
        return Server(
            kind, centrifugo.command(path), centrifugo.environment(), port, layout, ready_path="/health"
        )
    if kind in ("gateway", "gateway-v2", "gateway-w2"):
        workers = 2 if kind == "gateway-w2" else 1
        env = {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "KAFKA_ENABLED": "true",
            "KAFKA_BROKERS": brokers,
            "JWT_SECRET": SECRET,
            "REST_BASE_URL": upstream,
            "LOG_LEVEL": "warn",
            "LOG_FORMAT": "json",
            # pinned to one core: one process; gateway-w2: two workers on every core (shared with
            # the load generators, the producer and the broker)
            "WORKERS": str(workers),
        }
        cpus = (layout.server or set()) | (layout.load or set()) if workers > 1 else None
        return Server(kind, [PYTHON, "-m", "mesaya_realtime", "serve"], env, port, layout, cpus=cpus)
    module = {"floor": "bench.servers.floor", "fastapi": "bench.servers.fastapi_app"}[kind]
    return Server(kind, [PYTHON, "-m", module, "--port", str(port), "--brokers", brokers], {}, port, layout)


class Upstream:
    """The demo fixture REST API (infrastructure/demo.py) in a thread of the orchestrator."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("upstream did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        from aiohttp import web

        from mesaya_realtime.infrastructure.demo import create_demo_upstream

        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            runner = web.AppRunner(create_demo_upstream(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()


# -- the run ---------------------------------------------------------------------------------
@dataclass
class Bench:
    plan: Plan
    layout: Layout
    brokers: str
    broker_pid: int | None
    upstream: Upstream
    producer: Producer
    generators: list[Generator] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    runs: Iterator[int] = field(default_factory=lambda: itertools.count(int(time.time()) % 1_000_000 * 100))
    tokens: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def profiled(self, server: Server, name: str) -> AsyncIterator[None]:
        """With ``--profile``: py-spy samples the server (non-blocking) during the block."""
        if not self.plan.profile:
            yield
            return
        spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
        folder = RESULTS / "profiles"
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{name}.collapsed"
        process = subprocess.Popen(
            [
                spy,
                "record",
                "--nonblocking",
                "--format",
                "raw",
                "-r",
                "200",
                "-o",
                str(out),
                "-p",
                str(server.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_setup(self.layout.load),
        )
        await asyncio.sleep(0.5)
        try:
            yield
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            if out.exists():
                summary = profile_summary(out.read_text())
                (folder / f"{name}.txt").write_text(summary["text"])
                self.results.setdefault("profiles", {})[name] = summary["top"]
                self.note(f"profile {name}: {folder / (name + '.txt')}")

    def note(self, text: str) -> None:
        print(f"::: {text}", flush=True)

    def others_on_server_core(self, usage: dict[str, Any], server: Server | None = None) -> float | None:
        """Percent of the server core used by other processes (other people's work, the kernel)."""
        if not self.layout.server or (server is not None and server.shares_cores):
            return None
        core = min(self.layout.server)
        busy = usage["core_busy_s"].get(core)
        if busy is None:
            return None
        return max(0.0, 100 * (busy - usage["cpu_s"]["server"]) / usage["wall_s"])

    def meter(self, server: Server) -> CpuMeter:
        pids: dict[str, int | list[int]] = {"server": server.pids(), "orchestrator": os.getpid()}
        for index, generator in enumerate(self.generators):
            pids[f"gen{index}"] = generator.pid
        if self.broker_pid:
            pids["broker"] = self.broker_pid
        return CpuMeter(pids)

    async def each(
        self, op: str, split: list[dict[str, Any]] | None = None, **args: Any
    ) -> list[dict[str, Any]]:
        calls = [
            generator.call(op, **{**args, **(split[index] if split else {})})
            for index, generator in enumerate(self.generators)
        ]
        return list(await asyncio.gather(*calls))

    def paths(self, server: Server, count: int, tokens: list[str] | None = None) -> list[list[str]]:
        """``count`` socket paths split over the generators, each with its own token (Centrifugo:
        the tokens themselves, sent in its connect command)."""
        tokens = tokens or self.tokens
        if self.plan.shared_tokens:
            shared = tokens[: self.plan.shared_tokens]
            tokens = [shared[i % len(shared)] for i in range(count)]
        if count > len(tokens):
            raise ValueError(f"{count} sockets but {len(tokens)} tokens")
        per = [count // len(self.generators)] * len(self.generators)
        for index in range(count % len(self.generators)):
            per[index] += 1
        result = []
        offset = 0
        for share in per:
            chosen = tokens[offset : offset + share]
            if server.kind == "centrifugo":
                result.append(chosen)
            else:
                result.append([f"/ws/tables/{SECTION}/{token}" for token in chosen])
            offset += share
        return result

    def split(
        self, server: Server, count: int, keep: bool = True, tokens: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """The ``connect`` arguments of each generator."""
        extra: dict[str, str] = {}
        if server.kind == "centrifugo":
            extra["centrifugo"] = centrifugo.CHANNEL
        elif server.kind == "gateway-v2":
            extra["protocol"] = "mesaya.v2"  # every socket speaks protocol v2 (cursors on events)
        return [
            {"paths": paths, "host": "127.0.0.1", "port": server.port, "keep": keep, **extra}
            for paths in self.paths(server, count, tokens)
        ]

    async def connect(self, server: Server, count: int, keep: bool = True) -> dict[str, Any]:
        split = self.split(server, count, keep)
        answers = await self.each(
            "connect", split, concurrency=max(1, self.plan.connect_concurrency // len(self.generators))
        )
        opened = sum(a["opened"] for a in answers)
        failed = sum(a["failed"] for a in answers)
        if failed:
            reasons: dict[str, int] = {}
            for answer in answers:
                for reason, n in answer["failures"].items():
                    reasons[reason] = reasons.get(reason, 0) + n
            self.failures.append(f"{server.kind}: {failed} of {count} connects failed: {reasons}")
        start = min(a["start_ns"] for a in answers)
        end = max(a["end_ns"] for a in answers)
        return {
            "opened": opened,
            "failed": failed,
            "seconds": (end - start) / 1e9,
            "latency": percentiles(merge(a["latency_hist"] for a in answers)),
        }

    async def settle_sockets(self, server: Server, count: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            seen = server.sockets()
            if seen == count:
                return seen
            await asyncio.sleep(0.1)
        self.failures.append(f"{server.kind}: server reports {seen} sockets, expected {count}")
        return seen

    async def close_to(self, server: Server, count: int) -> None:
        live = sum(a["clients"] for a in await self.each("status"))
        if live > count:
            excess = live - count
            share = [excess // len(self.generators)] * len(self.generators)
            for index in range(excess % len(self.generators)):
                share[index] += 1
            await self.each("close", [{"count": n} for n in share])
        await self.settle_sockets(server, count)

    def phase_result(
        self,
        server: Server,
        scenario: str,
        sockets: int,
        events: int,
        meter: CpuMeter,
        answers: list[dict[str, Any]],
        **extra: Any,
    ) -> dict[str, Any]:
        usage = meter.stop()
        cpu = usage["cpu_s"]
        deliveries = sum(a["received"] for a in answers)
        expected = sum(a["expected"] for a in answers)
        lost = sum(a["lost"] for a in answers)
        dup = sum(a["dup"] for a in answers)
        gaps = sum(a["gaps"] for a in answers)
        foreign = sum(a["foreign"] for a in answers)
        closed = sum(a["closed_by_server"] for a in answers)
        timed_out = any(a["timed_out"] for a in answers)
        gen_cpu = sum(v for k, v in cpu.items() if k.startswith("gen"))
        row = {
            "server": server.kind,
            "scenario": scenario,
            "sockets": sockets,
            "events": events,
            "expected": expected,
            "deliveries": deliveries,
            "lost": lost,
            "dup": dup,
            "gaps": gaps,
            "foreign": foreign,
            "closed_by_server": closed,
            "timed_out": timed_out,
            "wall_s": usage["wall_s"],
            "server_cpu_s": cpu["server"],
            "us_per_delivery": cpu["server"] / deliveries * 1e6 if deliveries else None,
            "generator_cpu_s": gen_cpu,
            "generator_cpu_pct": 100 * gen_cpu / usage["wall_s"],
            "load_core_pct": 100
            * (gen_cpu + cpu.get("orchestrator", 0) + cpu.get("broker", 0))
            / usage["wall_s"]
            / max(1, len(self.layout.load or {0})),
            "server_cpu_pct": 100 * cpu["server"] / usage["wall_s"],
            "others_on_server_core_pct": self.others_on_server_core(usage, server),
            "cpu_s": cpu,
            "core_busy_s": usage["core_busy_s"],
            "latency_ms": percentiles(merge(a["latency_hist"] for a in answers)),
            **extra,
        }
        if lost or dup or gaps or foreign or closed or timed_out:
            self.failures.append(
                f"{server.kind} {scenario} N={sockets}: lost={lost} dup={dup} gaps={gaps} "
                f"foreign={foreign} closed={closed} timed_out={timed_out}"
            )
        self.note(
            f"{server.kind:8} {scenario:6} N={sockets:<6} deliveries={deliveries} "
            f"({row['us_per_delivery'] or 0:.2f} µs server CPU each, "
            f"{row.get('deliveries_per_s', 0):,.0f}/s) p99={row['latency_ms']['p99']} ms "
            f"lost={lost} dup={dup} server CPU {row['server_cpu_pct']:.0f}%, others on its core "
            f"{row['others_on_server_core_pct'] or 0:.0f}%, gen CPU {row['generator_cpu_pct']:.0f}%"
        )
        return row

    async def burst(self, server: Server, sockets: int) -> dict[str, Any]:
        size, rounds = self.plan.burst_events, self.plan.burst_rounds
        if server.kind == "fastapi":
            rounds = min(rounds, self.plan.fastapi_burst_rounds)
        elif server.kind == "centrifugo":
            rounds = min(rounds, self.plan.centrifugo_burst_rounds)
        run = next(self.runs)
        await self.each("expect", run=run, target=size * rounds, round_size=size)
        meter = self.meter(server)
        starts = []
        for index in range(rounds):
            starts.append(time.time_ns())
            self.producer.send(run, range(index * size, (index + 1) * size))
            await self.each("wait_round", round=index, timeout=60.0)
        answers = await self.each("wait", timeout=30.0)
        durations = []
        for index, start in enumerate(starts):
            ends = [a["round_last"].get(str(index)) or a["round_last"].get(index) for a in answers]
            ends = [e for e in ends if e]
            if ends:
                durations.append((max(ends) - start) / 1e9)
        busy = sum(durations)
        deliveries = sum(a["received"] for a in answers)
        return self.phase_result(
            server,
            "burst",
            sockets,
            size * rounds,
            meter,
            answers,
            burst_events=size,
            rounds=rounds,
            delivery_seconds=busy,
            deliveries_per_s=deliveries / busy if busy else None,
            event_bytes=self.producer.bytes,
        )

    async def steady(self, server: Server, sockets: int) -> dict[str, Any]:
        rate, seconds = self.plan.steady_rate, self.plan.steady_seconds
        total = int(rate * seconds)
        run = next(self.runs)
        await self.each("expect", run=run, target=total)
        meter = self.meter(server)
        began = time.perf_counter()
        for seq in range(total):
            delay = began + seq / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.producer.send(run, range(seq, seq + 1))
        answers = await self.each("wait", timeout=60.0)
        span = time.perf_counter() - began
        deliveries = sum(a["received"] for a in answers)
        return self.phase_result(
            server,
            "steady",
            sockets,
            total,
            meter,
            answers,
            rate=rate,
            deliveries_per_s=deliveries / span,
            event_bytes=self.producer.bytes,
        )

    async def paced(self, server: Server, sockets: int) -> dict[str, Any]:
        """One event at a time: the next is produced once every client has the previous one."""
        total = self.plan.paced_events
        run = next(self.runs)
        await self.each("expect", run=run, target=total, round_size=1)
        meter = self.meter(server)
        busy = 0.0
        for seq in range(total):
            start = time.perf_counter()
            self.producer.send(run, range(seq, seq + 1))
            await self.each("wait_round", round=seq, timeout=60.0)
            busy += time.perf_counter() - start
            await asyncio.sleep(0.01)
        answers = await self.each("wait", timeout=30.0)
        deliveries = sum(a["received"] for a in answers)
        return self.phase_result(
            server,
            "paced",
            sockets,
            total,
            meter,
            answers,
            deliveries_per_s=deliveries / busy if busy else None,
            event_bytes=self.producer.bytes,
        )

    async def fanout(self, kind: str) -> None:
        plan = self.plan
        sizes = {
            "fastapi": plan.fastapi_sizes,
            "centrifugo": plan.centrifugo_sizes,
            "gateway-w2": plan.workers2_sizes,
        }.get(kind, plan.sizes)
        if not sizes:
            return
        server = start_server(kind, self.brokers, self.upstream.url, self.layout)
        try:
            server.wait_ready()
            if server.shares_cores:
                self.note(f"{kind}: {len(server.pids())} processes on cores {sorted(server.cpus or ())}")
            if kind == "centrifugo":
                joined = await asyncio.to_thread(centrifugo.wait_group_stable, self.brokers)
                self.note(f"centrifugo: Kafka consumer group {'joined' if joined else 'NOT joined in 60 s'}")
            await asyncio.sleep(1.0)
            rss0 = proc_rss(server.pid)
            # gateway-w2 is in the fan-out and handshake scenarios only (two processes' RSS and a
            # shared core would make its idle row a different measurement).
            idle = max(sizes) if server.shares_cores else max(plan.idle_sockets, *sizes)
            self.note(f"{kind}: connecting {idle} sockets")
            meter = CpuMeter({"server": server.pids()})
            connect = await self.connect(server, idle)
            usage = meter.stop()
            await self.settle_sockets(server, connect["opened"])
            idle_meter = CpuMeter({"server": server.pids()})
            await asyncio.sleep(2.0)
            idle_usage = idle_meter.stop()
            rss1 = proc_rss(server.pid)
            memory = {
                "server": kind,
                "sockets": connect["opened"],
                "rss_before_mib": rss0 / 2**20,
                "rss_after_mib": rss1 / 2**20,
                "kib_per_socket": (rss1 - rss0) / 1024 / max(1, connect["opened"]),
                "connect_seconds": connect["seconds"],
                "connects_per_s": connect["opened"] / connect["seconds"] if connect["seconds"] else None,
                "connect_server_cpu_s": usage["cpu_s"]["server"],
                "connect_latency_ms": connect["latency"],
                "idle_cpu_pct": 100 * idle_usage["cpu_s"]["server"] / idle_usage["wall_s"],
            }
            if not server.shares_cores:
                self.results.setdefault("idle_memory", []).append(memory)
                self.note(
                    f"{kind}: idle RSS {memory['kib_per_socket']:.1f} KiB per socket at {connect['opened']}"
                    f", connects {memory['connects_per_s'] or 0:,.0f}/s"
                )
            for size in sorted(sizes, reverse=True):
                await self.close_to(server, size)
                await asyncio.sleep(0.5)
                for phase in (self.paced, self.burst, self.steady):
                    name = f"{kind}-{phase.__name__}-{size}"
                    async with self.profiled(server, name):
                        row = await phase(server, size)
                    self.results.setdefault("fanout", []).append(row)
            await self.close_to(server, 0)
            if kind == "gateway":
                async with self.profiled(server, "gateway-ingest-kafka"):
                    await self.kafka_ingest(server)
            if kind in ("gateway", "gateway-w2", "centrifugo"):
                async with self.profiled(server, f"{kind}-handshakes"):
                    await self.handshakes(server)
            if kind == "gateway":
                async with self.profiled(server, "gateway-commands"):
                    await self.commands(server)
        finally:
            server.stop()

    async def kafka_ingest(self, server: Server) -> None:
        count = self.plan.kafka_ingest_events

        def consumed() -> float:
            try:
                _, body = http_get(server.url + "/metrics", 30.0)
            except OSError:
                return -1.0
            total = 0.0
            for line in body.decode().splitlines():
                if line.startswith("mesaya_events_consumed_total") and TOPIC in line:
                    total += float(line.rsplit(" ", 1)[1])
            return total

        before = consumed()
        meter = self.meter(server)
        produce_s = await asyncio.to_thread(self.producer.bulk, count, "bench-nobody")
        deadline = time.monotonic() + 120
        while await asyncio.to_thread(consumed) < before + count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        got = await asyncio.to_thread(consumed) - before
        usage = meter.stop()
        cpu = usage["cpu_s"]["server"]
        row = {
            "path": "kafka",
            "events": count,
            "consumed": got,
            "wall_s": usage["wall_s"],
            "produce_s": produce_s,
            "server_cpu_s": cpu,
            "us_per_event": cpu / got * 1e6 if got else None,
            "events_per_cpu_s": got / cpu if cpu else None,
            "events_per_s": got / usage["wall_s"],
            "cpu_s": usage["cpu_s"],
        }
        if got < count:
            self.failures.append(f"gateway kafka ingest: consumed {got} of {count}")
        self.results.setdefault("ingest", []).append(row)
        self.note(
            f"gateway ingest via Kafka: {row['events_per_s']:,.0f} events/s wall, "
            f"{row['events_per_cpu_s'] or 0:,.0f} per server CPU second"
        )

    async def handshakes(self, server: Server) -> None:
        count = self.plan.handshakes
        # Tokens no socket has used yet: the gateway's verified-token cache must not have them.
        tokens = await asyncio.to_thread(
            make_tokens, f"bench-hs-{next(self.runs)}", min(count, self.plan.shared_tokens or count)
        )
        split = self.split(server, count, tokens=tokens)
        meter = self.meter(server)
        answers = await self.each(
            "connect", split, concurrency=max(1, self.plan.handshake_concurrency // len(self.generators))
        )
        usage = meter.stop()
        opened = sum(a["opened"] for a in answers)
        failed = sum(a["failed"] for a in answers)
        span = (max(a["end_ns"] for a in answers) - min(a["start_ns"] for a in answers)) / 1e9
        cpu = usage["cpu_s"]
        gen_cpu = sum(v for k, v in cpu.items() if k.startswith("gen"))
        row = {
            "server": server.kind,
            "handshakes": count,
            "opened": opened,
            "failed": failed,
            "concurrency": self.plan.handshake_concurrency,
            "seconds": span,
            "per_s": opened / span if span else None,
            "server_cpu_s": cpu["server"],
            "us_per_handshake": cpu["server"] / opened * 1e6 if opened else None,
            "server_capacity_per_s": opened / cpu["server"] if cpu["server"] else None,
            "generator_cpu_pct": 100 * gen_cpu / usage["wall_s"],
            "others_on_server_core_pct": self.others_on_server_core(usage, server),
            "latency_ms": percentiles(merge(a["latency_hist"] for a in answers)),
            "cpu_s": cpu,
        }
        if failed:
            reasons: dict[str, int] = {}
            for answer in answers:
                for reason, n in answer["failures"].items():
                    reasons[reason] = reasons.get(reason, 0) + n
            self.failures.append(f"{server.kind} handshakes: {failed} of {count} failed: {reasons}")
        self.results.setdefault("handshakes", []).append(row)
        self.note(
            f"{server.kind} handshakes: {row['per_s'] or 0:,.0f}/s "
            f"({row['us_per_handshake'] or 0:.0f} µs server CPU each),"
            f" gen CPU {row['generator_cpu_pct']:.0f}%"
        )
        await self.close_to(server, 0)

    async def commands(self, server: Server) -> None:
        plan = self.plan
        connect = await self.connect(server, plan.command_sockets)
        await self.settle_sockets(server, connect["opened"])
        rows = []
        for rate in (0.0, plan.command_rate):
            if rows and rows[0]["per_s"] and rows[0]["per_s"] < rate:
                # Offering more than the measured maximum only measures an ever-growing queue:
                # measure the latency at 80 % of the maximum instead (the target is then not met).
                rate = round(0.8 * rows[0]["per_s"], -2)
            meter = self.meter(server)
            answers = await self.each(
                "commands",
                duration=plan.command_seconds,
                rate=rate / len(self.generators),
                warmup=rate == 0.0,
            )
            usage = meter.stop()
            span = (max(a["end_ns"] for a in answers) - min(a["start_ns"] for a in answers)) / 1e9
            replies = sum(a["replies_in_window"] for a in answers)
            errors = sum(a["errors"] for a in answers)
            cpu = usage["cpu_s"]
            gen_cpu = sum(v for k, v in cpu.items() if k.startswith("gen"))
            row = {
                "mode": "closed loop (1 in flight per socket)"
                if rate == 0
                else f"open loop at {rate:,.0f}/s",
                "offered_per_s": rate or None,
                "sockets": connect["opened"],
                "replies": replies,
                "errors": errors,
                "outstanding_after": sum(a["outstanding"] for a in answers),
                "per_s": replies / span if span else None,
                "server_cpu_s": cpu["server"],
                "us_per_command": cpu["server"] / max(1, sum(a["replies"] for a in answers)) * 1e6,
                "generator_cpu_pct": 100 * gen_cpu / usage["wall_s"],
                "others_on_server_core_pct": self.others_on_server_core(usage, server),
                "latency_ms": percentiles(merge(a["latency_hist"] for a in answers)),
                "cpu_s": cpu,
            }
            if errors or row["outstanding_after"]:
                self.failures.append(
                    f"commands ({row['mode']}): {errors} errors, {row['outstanding_after']} unanswered"
                )
            rows.append(row)
            self.note(
                f"gateway commands {row['mode']}: {row['per_s'] or 0:,.0f}/s "
                f"p99={row['latency_ms']['p99']} ms"
                f" ({row['us_per_command']:.1f} µs server CPU each), gen CPU {row['generator_cpu_pct']:.0f}%"
            )
        self.results["commands"] = rows
        await self.close_to(server, 0)

    def calibrate(self) -> None:
        args = [PYTHON, "-m", "bench.calibrate"]
        if self.layout.server and self.layout.load:
            args += [
                "--server-core",
                str(min(self.layout.server)),
                "--client-core",
                str(min(self.layout.load)),
            ]
        out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        self.results["calibration"] = row
        self.note(
            f"calibration: loopback send() {row['us_per_send_spaced']:.1f} µs (idle reader), "
            f"{row['us_per_send_back_to_back']:.1f} µs (back to back)"
        )

    def ingest_in_process(self) -> None:
        args = [PYTHON, "-m", "bench.ingest", "--seconds", str(self.plan.ingest_seconds)]
        for core in sorted(self.layout.server or ()):
            args += ["--core", str(core)]
        out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300, check=True).stdout
        row = {"path": "in-process", **json.loads(out.strip().splitlines()[-1])}
        self.results.setdefault("ingest", []).insert(0, row)
        self.note(f"gateway ingest in-process: {row['events_per_cpu_s']:,.0f} events per CPU second")


def profile_summary(collapsed: str, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [
            f.split(" (", 1)[0] + " (" + f.split(" (", 1)[1].rsplit(":", 1)[0] + ")" if " (" in f else f
            for f in stack.split(";")
        ]
        frames = frames[1:] if frames and frames[0].startswith("process ") else frames
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    total = max(total, 1)
    by_own = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    by_incl = sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]
    text = [f"{total} samples", "", "self %  function"]
    text += [f"{100 * n / total:6.1f}  {name}" for name, n in by_own]
    text += ["", "total % function (inclusive)"]
    text += [f"{100 * n / total:6.1f}  {name}" for name, n in by_incl]
    return {
        "text": "\n".join(text) + "\n",
        "top": {
            "samples": total,
            "self": [[name, round(100 * n / total, 1)] for name, n in by_own],
            "inclusive": [[name, round(100 * n / total, 1)] for name, n in by_incl],
        },
    }


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


async def run(plan: Plan) -> int:
    started = time.monotonic()
    layout = Layout.detect()
    pin(layout.load)
    raise_nofile()
    brokers, broker_pid = kafka_brokers(layout)
    upstream = Upstream()
    producer = Producer(brokers)
    # One token per socket (distinct subs), as browsers have: no server verifies a token twice.
    tokens = make_tokens("bench-user", max(plan.idle_sockets, *plan.sizes, *plan.centrifugo_sizes))
    bench = Bench(plan, layout, brokers, broker_pid, upstream, producer, tokens=tokens)
    servers = list(plan.servers)
    skipped = []
    if "fastapi" in servers and not (have("fastapi") and have("uvicorn")):
        servers.remove("fastapi")
        skipped.append("fastapi baseline: fastapi/uvicorn not installed (pip install -e '.[bench]')")
    if "centrifugo" in servers:
        version, why = centrifugo.installed()
        if version is None:
            servers.remove("centrifugo")
            skipped.append(f"centrifugo baseline: {why}")
        else:
            bench.results["centrifugo_version"] = version
            if version != centrifugo.VERSION.lstrip("v"):
                skipped.append(
                    f"centrifugo: version {version} installed, the bench expects {centrifugo.VERSION}"
                )
    if "gateway-w2" in servers and not (layout.server and layout.load):
        servers.remove("gateway-w2")
        skipped.append("gateway --workers 2: fewer than 2 usable cores")
    for line in skipped:
        print(f"::: skipping {line}", flush=True)
    bench.results["machine"] = machine()
    bench.results["plan"] = asdict(plan)
    bench.results["layout"] = layout.describe()
    bench.results["brokers"] = brokers
    bench.note(f"{plan.mode} run; {layout.describe()}; Kafka at {brokers}")
    try:
        bench.generators = [await Generator.start(layout) for _ in range(plan.generators)]
        bench.calibrate()
        bench.ingest_in_process()
        for kind in servers:
            await bench.fanout(kind)
    finally:
        for generator in bench.generators:
            await generator.stop()
    bench.results["skipped"] = skipped
    bench.results["failures"] = bench.failures
    bench.results["seconds"] = time.monotonic() - started
    bench.results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    bench.results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = save(bench.results, plan.mode)
    print(report.table(bench.results))
    if plan.mode == "full":
        report.update_docs(bench.results)
        print(f"::: docs/BENCHMARKS.md updated from {path.relative_to(ROOT)}")
    print(f"::: results: {path.relative_to(ROOT)} ({bench.results['seconds']:.0f} s)")
    for line in skipped:
        print(f"::: skipped: {line}")
    if bench.failures:
        for line in bench.failures:
            print(f"::: FAILED: {line}")
        return 1
    print("::: zero lost, zero duplicated deliveries")
    return 0


def save(results: dict[str, Any], mode: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{stamp}-{mode}.json"
    body = orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    path.write_bytes(body)
    (RESULTS / f"latest-{mode}.json").write_bytes(body)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small version of everything (<1 min)")
    parser.add_argument(
        "--servers",
        default="",
        help="comma-separated subset of gateway,gateway-w2,floor,fastapi,centrifugo (default: all)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field of the plan, e.g. --set sizes=5000 --set steady_seconds=20",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record py-spy profiles of the gateway (needs py-spy; numbers of such a run are perturbed)",
    )
    parser.add_argument("--report", metavar="JSON", help="only re-render docs/BENCHMARKS.md from a result")
    args = parser.parse_args(argv)
    if args.report:
        report.update_docs(json.loads(Path(args.report).read_text()))
        return 0
    plan = Plan.quick() if args.quick else Plan()
    if args.servers:
        plan.servers = tuple(s.strip() for s in args.servers.split(",") if s.strip())
    for item in args.set:
        name, _, raw = item.partition("=")
        current = getattr(plan, name)
        if isinstance(current, tuple):
            kind = type(current[0]) if current else str
            value: Any = tuple(kind(part) for part in raw.split(",") if part)
        else:
            value = type(current)(raw)
        setattr(plan, name, value)
    if args.set and plan.mode == "full":
        plan.mode = "custom"
    plan.profile = args.profile

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop the servers

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return asyncio.run(run(plan))
    except KeyboardInterrupt:
        print("::: interrupted", file=sys.stderr)
        return 130
