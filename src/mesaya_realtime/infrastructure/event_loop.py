"""Which asyncio event loop runs the gateway (``EVENT_LOOP``: ``auto``, ``uvloop``, ``asyncio``).

uvloop is the default where it is installed (it is a dependency on Linux and macOS): its
transports are written in Cython and leave no reference cycle per connection. CPython 3.11's
selector transport keeps a bound method of itself (``_read_ready_cb``) until it is collected,
so every closed connection there is a cycle that only a full collection frees; with the
collector's freeze (infrastructure/gc_policy.py) those cycles are frozen and pile up. Measured
with the soak (docs/BENCHMARKS.md "Soak"): one cycle of six objects per connection on the stock
loop, none on uvloop. ``asyncio`` keeps the stock loop (for debugging, or where uvloop is not
available); ``auto`` falls back to it when uvloop cannot be imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["EventLoopChoice", "loop_name", "run"]

T = TypeVar("T")
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]


def _uvloop_runner() -> Any | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice = "auto") -> T:
    """Run ``main`` to completion on the chosen loop (``uvloop`` required but missing: ImportError)."""
    if choice != "asyncio":
        uvloop = _uvloop_runner()
        if uvloop is not None:
            result: T = uvloop.run(main)
            return result
        if choice == "uvloop":
            main.close()
            raise ImportError("EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)")
    return asyncio.run(main)


def loop_name() -> str:
    """The running loop's kind, for the start-up log line: ``uvloop`` or ``asyncio``."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
