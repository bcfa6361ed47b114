"""Work that runs every so often on the event loop, for as long as the gateway runs.

One way to do it for every feature (the ownership re-check, the owners' restaurants of
notifications sockets, the garbage-collector policy, the skipped-records summaries): a task
that waits ``interval`` seconds, runs the work, and outlives any one failure (logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Periodic"]

log = logging.getLogger(__name__)


class Periodic:
    """``work()`` (sync or async) every ``interval`` seconds between :meth:`start` and
    :meth:`stop`; the first run one interval after the start."""

    def __init__(
        self, name: str, interval: Callable[[], float] | float, work: Callable[[], Awaitable[object] | object]
    ) -> None:
        self.name = name
        self._interval = interval
        self._work = work
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            interval = self._interval() if callable(self._interval) else self._interval
            await asyncio.sleep(interval)
            try:
                result = self._work()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # the loop must outlive any one failure
                log.exception("periodic work failed", extra={"work": self.name})
