"""Garbage-collector policy: no full collections over every open socket.

CPython's full (generation-2) collection walks every tracked object; a gateway's live objects
are mostly its sockets', so with thousands of sockets and churn a full collection came every
30-60 s and held the event loop 150-360 ms at 2,000 sockets and 0.9-1.5 s at 10,000 (measured
with the soak, docs/BENCHMARKS.md "Soak").

:class:`GcFreezer` moves every object that survived a young collection into the permanent
generation (``gc.freeze()``, O(1)) every ``interval`` seconds: the collector then only scans
what was allocated since, so its pauses stay short however many sockets are open. Frozen
objects are still freed by reference counting; a closed socket leaves no reference cycle (the
one aiohttp's heartbeat leaves is broken in interface/http.py, and uvloop's transports make
none: infrastructure/event_loop.py), so nothing is lost to the freeze.

The safety net, for cycles made elsewhere: the node's settled size is its resident memory
``min_gap`` seconds (10 minutes) after start. When resident memory has grown ``growth`` times
(twice) past it, or past the size after the last full collection, and that collection is at
least ``min_gap`` old, the freezer unfreezes and runs one full collection, logged with what it
freed and how long it held the loop (1.3 s at 10,000 sockets on the soak's machine: the soak
measured it when the first version took the start-up size as the baseline). Memory held by
leaked cycles is so bounded, and the pause happens only when a settled node doubles, never
periodically at a steady size. Resident memory, not ``gc.get_freeze_count()``: counting the
frozen objects walks all of them (tens of milliseconds with 10,000 sockets, on every tick: the
soak saw it as a stall every 10 s); reading ``/proc/self/statm`` costs microseconds. Where
there is no ``/proc`` the frozen count is used, at most once a minute.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable

from mesaya_realtime.application.usecases.periodic import Periodic

__all__ = ["GcFreezer"]

log = logging.getLogger("mesaya_realtime.gc")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """The process's resident memory (Linux), or None where it cannot be read cheaply."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class GcFreezer:
    def __init__(
        self,
        interval: float,
        *,
        growth: float = 2.0,
        min_gap: float = 600.0,
        measure: Callable[[], int | None] = resident_bytes,
    ) -> None:
        self.interval = interval
        self.growth = growth
        self.min_gap = min_gap
        self.full_collections = 0
        self._measure = measure
        self._baseline = 0
        self._last_full = 0.0
        self._next_count = 0.0
        self._periodic = Periodic("garbage-collector freeze", interval, self.tick)

    def start(self) -> None:
        """Freeze what start-up made (modules, the catalogue, settings), then keep freezing."""
        if self.interval <= 0 or self._periodic.running:
            return
        self._full_collection()
        self._periodic.start()

    def tick(self) -> None:
        """One interval's work: collect the young garbage, freeze the survivors, maybe the net."""
        gc.collect(1)  # young garbage first, so that it is not frozen
        gc.freeze()
        now = time.monotonic()
        if now - self._last_full < self.min_gap:
            return
        size = self._size(now)
        if size is None:
            return
        if not self._baseline:
            self._baseline = max(size, 1)  # settled: what later growth is measured from
        elif size >= self.growth * self._baseline:
            self._full_collection()

    def _size(self, now: float) -> int | None:
        size = self._measure()
        if size is not None:
            return size
        if now < self._next_count:
            return None
        self._next_count = now + 60.0
        return gc.get_freeze_count()

    def _full_collection(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self._last_full = time.monotonic()
        self.full_collections += 1
        if self.full_collections == 1:
            self._baseline = 0  # at start: the baseline is taken once the node has settled
            return
        measured = self._measure()
        self._baseline = max(measured if measured is not None else gc.get_freeze_count(), 1)
        log.info(
            "full garbage collection",
            extra={
                "unreachable": freed,
                "pause_ms": round((time.perf_counter() - started) * 1000),
                "baseline": self._baseline,
            },
        )

    async def stop(self) -> None:
        await self._periodic.stop()
