"""Garbage-collector policy: no full collections over every open socket.

CPython's full (generation-2) collection walks every tracked object; a gateway's live objects
are mostly its sockets', so with thousands of sockets and churn a full collection comes every
minute or so and holds the event loop 150-360 ms at 2,000 sockets (measured with the soak,
docs/BENCHMARKS.md "Soak"). The sockets' objects are freed by reference counting when a socket
closes (the soak found a few cyclic objects per minute), so scanning them is wasted work.

:class:`GcFreezer` moves every object that survived a young collection into the permanent
generation (``gc.freeze()``, O(1)) every ``interval`` seconds: the collector then only ever
scans what was allocated since, so its pauses stay short however many sockets are open.
Cycles among frozen objects are not collected; the soak checks that RSS does not grow.
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
