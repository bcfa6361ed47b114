"""Every core: ``serve --workers N`` runs N worker processes on one port, under one supervisor.

Each worker is a full gateway node (its own Kafka readers, cache and sockets; table selection
agrees across nodes through Kafka): ``python -m mesaya_realtime serve`` with ``WORKERS=1`` and
the ``MESAYA_WORKER`` variable (``<index>/<count>``), bound with ``SO_REUSEPORT`` so the kernel
spreads connections over them. The :class:`Supervisor` starts them, restarts one that dies
(after a second, doubling to 30 s while it keeps dying), and forwards SIGTERM / SIGINT: every
worker closes its sockets with 1001 and the supervisor exits 0 once they have.

One ``/health``, one ``/ready`` and one ``/metrics`` for all: each worker writes its state to a
file of the shared directory every second (:class:`WorkerStatus`), and whichever worker answers
reports every worker's (``/ready`` is 503 while one is missing, stale or unready). ``/metrics``
uses the Prometheus client's multiprocess mode over the same directory
(docs/ARCHITECTURE.md "Every core").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Supervisor", "WorkerStatus", "available_cpus", "worker_identity"]

log = logging.getLogger(__name__)

#: ``<index>/<count>`` in a worker's environment (set by the supervisor only).
WORKER_VARIABLE = "MESAYA_WORKER"
#: The directory the workers share (their state files, the multiprocess metrics).
DIRECTORY_VARIABLE = "MESAYA_WORKER_DIR"
#: A worker's exit status for a configuration problem (as ``serve``'s).
CONFIG_EXIT = 2
#: A worker whose state file is older than this is reported down.
STALE_AFTER = 5.0


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    index: int
    count: int
    directory: Path


def worker_identity(environ: dict[str, str] | None = None) -> WorkerIdentity | None:
    """This process's place among the workers, or None when it is not a worker."""
    env = os.environ if environ is None else environ
    raw, directory = env.get(WORKER_VARIABLE, ""), env.get(DIRECTORY_VARIABLE, "")
    if not raw or not directory:
        return None
    index, _, count = raw.partition("/")
    return WorkerIdentity(int(index), int(count), Path(directory))


class WorkerStatus:
    """The state files of the workers: each writes its own, anyone reads them all."""

    def __init__(self, identity: WorkerIdentity) -> None:
        self.identity = identity
        self._path = identity.directory / f"worker-{identity.index}.json"

    def publish(self, ready: bool, sockets: int) -> None:
        body = {
            "index": self.identity.index,
            "pid": os.getpid(),
            "ready": ready,
            "sockets": sockets,
            "at": time.time(),
        }
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(json.dumps(body))
        temporary.replace(self._path)  # atomic: a reader never sees half a file

    def workers(self) -> list[dict[str, Any]]:
        """Every expected worker's last state (``up`` false when missing or stale)."""
        now = time.time()
        found: list[dict[str, Any]] = []
        for index in range(self.identity.count):
            path = self.identity.directory / f"worker-{index}.json"
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                found.append({"index": index, "up": False, "ready": False, "sockets": 0})
                continue
            up = now - float(state.get("at", 0)) < STALE_AFTER
            found.append(
                {
                    "index": index,
                    "pid": state.get("pid"),
                    "up": up,
                    "ready": up and bool(state.get("ready")),
                    "sockets": int(state.get("sockets", 0)) if up else 0,
                }
            )
        return found


class Supervisor:
    """Runs ``count`` workers of ``serve`` until SIGTERM / SIGINT (see the module doc)."""

    def __init__(self, count: int, argv: list[str] | None = None) -> None:
        self.count = count
        self.argv = argv or [sys.executable, "-m", "mesaya_realtime", "serve"]
        self._stopping = False
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._backoff: dict[int, float] = {}
        self._restart_at: dict[int, float] = {}
        self._started: dict[int, float] = {}
        self._code = 0

    def _spawn(self, index: int, directory: Path) -> None:
        env = {
            **os.environ,
            "WORKERS": "1",
            WORKER_VARIABLE: f"{index}/{self.count}",
            DIRECTORY_VARIABLE: str(directory),
            "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics"),
        }
        node = os.environ.get("NODE_ID", "")
        if node:
            env["NODE_ID"] = f"{node}-w{index}"
        self._children[index] = subprocess.Popen(self.argv, env=env)
        self._started[index] = time.monotonic()
        log.info("worker started", extra={"worker": index, "pid": self._children[index].pid})

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def run(self) -> int:
        directory = Path(tempfile.mkdtemp(prefix="mesaya-workers-"))
        (directory / "metrics").mkdir()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            for index in range(self.count):
                self._spawn(index, directory)
            while not self._stopping:
                self._watch(directory)
                time.sleep(0.1)
            return max(self._stop(), self._code)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _watch(self, directory: Path) -> None:
        now = time.monotonic()
        for index, child in list(self._children.items()):
            if child.poll() is None:
                continue
            if child.returncode == CONFIG_EXIT:
                # a configuration problem (a port that is taken): restarting cannot help
                log.error("worker cannot start; stopping", extra={"worker": index})
                self._stopping, self._code = True, CONFIG_EXIT
                return
            if index not in self._restart_at:
                backoff = self._backoff.get(index, 0.5) * 2
                self._backoff[index] = min(backoff, 30.0)
                self._restart_at[index] = now + self._backoff[index]
                log.warning(
                    "worker exited; restarting it",
                    extra={
                        "worker": index,
                        "pid": child.pid,
                        "code": child.returncode,
                        "in_s": self._backoff[index],
                    },
                )
                _mark_dead(child.pid)
                with contextlib.suppress(OSError):
                    (directory / f"worker-{index}.json").unlink()
            elif now >= self._restart_at[index]:
                del self._restart_at[index]
                self._spawn(index, directory)
        for index, started in self._started.items():
            if now - started > 60.0:
                self._backoff.pop(index, None)  # lived a while: its next death restarts fast

    def _stop(self) -> int:
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30.0
        code = 0
        for child in self._children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
            if child.returncode not in (0, -signal.SIGTERM):
                code = 1
        return code


def _mark_dead(pid: int) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    with contextlib.suppress(Exception):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
