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

The safety net, for cycles made elsewhere: the frozen set can only grow by live objects or by
leaked cycles. When it has grown ``growth`` times (twice) since the last full collection, and that
collection is at least ``min_gap`` seconds (10 minutes) old, the freezer unfreezes and runs one
full collection, logged with what it freed and how long it held the loop. Memory held by leaked
cycles is so bounded by the live set, and the pause happens only as the node grows (once per
doubling), never periodically at a steady size.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

__all__ = ["GcFreezer"]

log = logging.getLogger("mesaya_realtime.gc")


class GcFreezer:
    def __init__(self, interval: float, *, growth: float = 2.0, min_gap: float = 600.0) -> None:
        self.interval = interval
        self.growth = growth
        self.min_gap = min_gap
        self.full_collections = 0
        self._baseline = 0
        self._last_full = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Freeze what start-up made (modules, the catalogue, settings), then keep freezing."""
        if self.interval <= 0 or self._task is not None:
            return
        self._full_collection()
        self._task = asyncio.ensure_future(self._run())

    def tick(self) -> None:
        """One interval's work: collect the young garbage, freeze the survivors, maybe the net."""
        gc.collect(1)  # young garbage first, so that it is not frozen
        gc.freeze()
        grown = gc.get_freeze_count() >= self.growth * self._baseline
        if grown and time.monotonic() - self._last_full >= self.min_gap:
            self._full_collection()

    def _full_collection(self) -> None:
        before = gc.get_freeze_count()
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self._baseline = max(gc.get_freeze_count(), 1)
        self._last_full = time.monotonic()
        self.full_collections += 1
        if self.full_collections > 1:
            log.info(
                "full garbage collection: frozen objects %d -> %d, %d unreachable freed, %.0f ms",
                before,
                self._baseline,
                freed,
                (time.perf_counter() - started) * 1000,
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.tick()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
