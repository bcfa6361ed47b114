"""Shared helpers: process limits and affinity, /proc readings, histograms, tokens, machine."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
TOPIC = "mesa-ya.tables.events"
SECTION = "main-hall"
#: Latency histogram resolution (nanoseconds per bucket).
BUCKET_NS = 10_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(cpus: Iterable[int] | None, pid: int = 0) -> None:
    """Pin ``pid`` (0: this process) and all its threads to ``cpus``; None leaves it alone."""
    if cpus is None:
        return
    wanted = set(cpus)
    with contextlib.suppress(OSError):
        if pid == 0:
            os.sched_setaffinity(0, wanted)
            return
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task), wanted)


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the orchestrator goes away (no orphaned servers)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_setup(cpus: Iterable[int] | None) -> Any:
    """A ``preexec_fn`` for child processes: raise the fd limit, pin, die with the parent."""
    chosen = None if cpus is None else set(cpus)

    def setup() -> None:
        raise_nofile()
        _die_with_parent()
        if chosen is not None:
            os.sched_setaffinity(0, chosen)

    return setup


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (``--workers N``: the supervisor and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tcp_sockets(port: int) -> int:
    """Accepted TCP connections on ``port`` that the server has not closed yet (from /proc/net/tcp):
    established, or closed by the peer and waiting for the server's close."""
    wanted = f":{port:04X}"
    count = 0
    with contextlib.suppress(OSError), open("/proc/net/tcp") as handle:
        next(handle, None)
        for line in handle:
            fields = line.split(None, 4)
            # local address, state: 01 ESTABLISHED, 08 CLOSE_WAIT
            if fields[1].endswith(wanted) and fields[3] in ("01", "08"):
                count += 1
    return count


def proc_rss(pid: int) -> int:
    """Resident set size in bytes from /proc/<pid>/statm."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE
    except OSError:
        return 0


def core_busy() -> dict[int, float]:
    """Busy seconds per core since boot (everything but idle and iowait) from /proc/stat."""
    busy: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *values = line.split()
                ticks = [int(v) for v in values[:8]]
                busy[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS
    return busy


class CpuMeter:
    """CPU seconds of several processes (a name may stand for several), and of each core,
    between two instants."""

    def __init__(self, pids: Mapping[str, int | Sequence[int]]) -> None:
        self.pids = {name: [pid] if isinstance(pid, int) else list(pid) for name, pid in pids.items() if pid}
        self.start_cpu = {name: self._cpu(pids) for name, pids in self.pids.items()}
        self.start_cores = core_busy()
        self.start = time.perf_counter()

    @staticmethod
    def _cpu(pids: list[int]) -> float:
        return sum(proc_cpu(pid) for pid in pids)

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.start
        cpu = {name: self._cpu(pids) - self.start_cpu[name] for name, pids in self.pids.items()}
        cores = {core: busy - self.start_cores.get(core, 0.0) for core, busy in core_busy().items()}
        return {"wall_s": wall, "cpu_s": cpu, "core_busy_s": cores}


def histogram(latencies_ns: Iterable[int]) -> dict[int, int]:
    """Counts per ``BUCKET_NS`` bucket (key = bucket index)."""
    return dict(Counter(value // BUCKET_NS for value in latencies_ns))


def merge(histograms: Iterable[Mapping[Any, int]]) -> dict[int, int]:
    total: Counter[int] = Counter()
    for item in histograms:
        for key, count in item.items():
            total[int(key)] += count
    return dict(total)


def percentiles(hist: Mapping[int, int], points: Iterable[float] = (50, 99)) -> dict[str, float | None]:
    """Latency percentiles in milliseconds (bucket upper bounds) plus the max, from a histogram."""
    total = sum(hist.values())
    result: dict[str, float | None] = {}
    keys = sorted(hist)
    for point in points:
        if not total:
            result[f"p{point:g}"] = None
            continue
        rank = max(1, int(total * point / 100 + 0.999999))
        seen = 0
        for key in keys:
            seen += hist[key]
            if seen >= rank:
                result[f"p{point:g}"] = (key + 1) * BUCKET_NS / 1e6
                break
    result["max"] = (keys[-1] + 1) * BUCKET_NS / 1e6 if keys else None
    return result


def make_token(sub: str, roles: list[str], exp_in: float = 3 * 3600) -> str:
    import jwt

    return jwt.encode({"sub": sub, "roles": roles, "exp": int(time.time() + exp_in)}, SECRET, "HS256")


def make_tokens(prefix: str, count: int, roles: list[str] | None = None) -> list[str]:
    """``count`` distinct HS256 tokens (subs ``prefix-0`` ...): one per socket."""
    import jwt

    exp = int(time.time() + 3 * 3600)
    claims = roles or ["USER"]
    return [
        jwt.encode({"sub": f"{prefix}-{i}", "roles": claims, "exp": exp}, SECRET, "HS256")
        for i in range(count)
    ]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def gateway_source() -> dict[str, Any]:
    """Where the measured gateway's code comes from (``PYTHONPATH=<worktree>/src`` measures another
    checkout): its folder, that tree's commit, and whether it had uncommitted changes under src/."""
    import importlib.util

    spec = importlib.util.find_spec("mesaya_realtime")
    folder = Path(spec.origin).parent if spec and spec.origin else ROOT / "src" / "mesaya_realtime"
    tree = folder.parent.parent
    found: dict[str, Any] = {"path": str(folder)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=tree, capture_output=True, text=True, timeout=5
        ).stdout
        found["uncommitted_src_files"] = len(status.splitlines())
    return found


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    load = os.getloadavg()
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    source = gateway_source()
    return {
        "gateway_source": source,
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "usable_cores": cores(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "loadavg_at_start": [round(x, 2) for x in load],
        "commit": commit,
        "nofile": raise_nofile(),
        "versions": {
            name: _version(name)
            for name in (
                "aiohttp",
                "orjson",
                "confluent-kafka",
                "PyJWT",
                "fastapi",
                "uvicorn",
                "websockets",
                "uvloop",
            )
        },
    }
