"""Garbage-collector policy: no full collections over every open socket.

CPython's full (generation-2) collection walks every tracked object; a gateway's live objects
are mostly its sockets', so with thousands of sockets and churn a full collection came every
30-60 s and held the event loop 150-360 ms at 2,000 sockets and 0.9-1.5 s at 10,000 (measured
with the soak, docs/BENCHMARKS.md "Soak").

:class:`GcFreezer` moves every object that survived a young collection into the permanent
generation (``gc.freeze()``, O(1)) every ``interval`` seconds: the collector then only scans
what was allocated since, so its pauses stay short however many sockets are open. Frozen
objects are still freed by reference counting; a closed socket leaves no reference cycle (the
one aiohttp's heartbeat leaves is broken in interface/http.py), so nothing is lost to the
freeze. As a safety net for cycles made elsewhere, every ``full_every`` intervals (10 minutes
by default) it unfreezes and runs one full collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

__all__ = ["GcFreezer"]


class GcFreezer:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Freeze what start-up made (modules, the catalogue, settings), then keep freezing."""
        if self.interval <= 0 or self._task is not None:
            return
        gc.collect()
        gc.freeze()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            gc.collect(1)  # young garbage first, so that it is not frozen
            gc.freeze()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
