"""GcFreezer: long-lived objects leave the collector's reach; young garbage is still collected."""

from __future__ import annotations

import asyncio
import gc
import weakref

from mesaya_realtime.infrastructure.gc_policy import GcFreezer, resident_bytes


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_survivors_are_frozen_and_young_cycles_collected() -> None:
    freezer = GcFreezer(interval=0.01)
    try:
        freezer.start()
        assert gc.get_freeze_count() > 0  # start-up's objects
        frozen = gc.get_freeze_count()
        kept = [Cycle() for _ in range(1000)]  # survivors
        for _ in range(1000):
            Cycle()  # young cyclic garbage
        await asyncio.sleep(0.05)
        grown = gc.get_freeze_count() - frozen
        # the 1,000 survivors (each with its __dict__) were frozen; the 1,000 garbage cycles
        # were collected before the freeze, not frozen with them
        assert 1000 <= grown < 1300, grown  # 1,600+ had the garbage been frozen too
        assert all(k.me is k for k in kept)
    finally:
        await freezer.stop()
        gc.unfreeze()  # leave the test process as it was


async def test_interval_zero_leaves_the_collector_alone() -> None:
    freezer = GcFreezer(interval=0)
    freezer.start()
    assert gc.get_freeze_count() == 0
    await freezer.stop()


async def test_the_safety_net_frees_frozen_cycles_once_the_frozen_set_has_doubled() -> None:
    # ticks driven by the test; growth measured in frozen objects (deterministic here)
    freezer = GcFreezer(interval=3600, min_gap=0, measure=gc.get_freeze_count)
    try:
        freezer.start()
        freezer.tick()  # the node has settled: its size is the baseline
        baseline = gc.get_freeze_count()
        leaked = [Cycle() for _ in range(baseline // 4)]  # cycles that live a while, then leak
        freezer.tick()  # frozen with the rest: below the doubling, no full collection
        assert freezer.full_collections == 1
        probe = weakref.ref(leaked[0])
        del leaked  # now only a full collection can free them
        gc.collect()
        assert probe() is not None  # frozen: out of the ordinary collections' reach
        more = [Cycle() for _ in range(baseline)]  # live growth past twice the baseline
        freezer.tick()
        assert freezer.full_collections == 2
        assert probe() is None  # the safety net freed the leaked cycles
        assert all(m.me is m for m in more)  # and kept the live ones
    finally:
        await freezer.stop()
        gc.unfreeze()


async def test_the_safety_net_waits_for_its_minimum_gap() -> None:
    freezer = GcFreezer(interval=3600, min_gap=3600, measure=gc.get_freeze_count)
    try:
        freezer.start()
        more = [Cycle() for _ in range(2 * gc.get_freeze_count())]
        freezer.tick()
        assert freezer.full_collections == 1  # grown, but the last full collection is too recent
        assert freezer._baseline == 0  # and not settled yet either
        assert more
    finally:
        await freezer.stop()
        gc.unfreeze()


def test_resident_memory_is_read_cheaply_from_proc() -> None:
    first = resident_bytes()
    assert first is not None
    assert first > 10 * 2**20  # a Python process with the gateway loaded
    grown = bytearray(64 * 2**20)
    grown[::4096] = b"\x01" * (len(grown) // 4096)  # every page touched: resident
    after = resident_bytes()
    assert after is not None
    assert after - first >= 60 * 2**20
    del grown
