"""ExpiryHeap: one entry per socket, let go at close, renewals that cannot grow it."""

from __future__ import annotations

import asyncio
import time

from mesaya_realtime.application.usecases.sessions import Session
from mesaya_realtime.domain.catalogue import CATALOGUE
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.interface.websocket import TOKEN_EXPIRED_CLOSE, ExpiryHeap
from tests.unit.test_commands import FakeConnection


def watched(heap: ExpiryHeap, expires_in: float) -> tuple[Session, FakeConnection]:
    """A socket in the heap; FakeConnection's ``closed`` is falsy until closed, as the transport's."""
    connection = FakeConnection()
    principal = Principal("u", ("USER",), "u", "t", time.time() + expires_in)
    session = Session(
        connection=connection,
        principal=principal,
        entity=CATALOGUE.by_name["tables"],
        section="s",
        topics=set(),
    )
    heap.watch(session, connection)  # type: ignore[arg-type]
    return session, connection


async def test_a_closed_socket_is_let_go_at_once_and_compacted_later() -> None:
    heap = ExpiryHeap(asyncio.get_running_loop())
    sockets = [watched(heap, 3600) for _ in range(200)]
    for session, _ in sockets[:150]:
        entry = session.expiry
        heap.forget(session)
        assert session.expiry is None
        assert entry is not None
        assert entry[2] is None  # the heap no longer holds the session (or its connection)
        assert entry[3] is None
    # compacted when the 101st entry emptied (the majority of 200); 49 empty ones wait
    assert len(heap) == 99


async def test_renewals_keep_one_entry_and_an_earlier_deadline_replaces_it() -> None:
    heap = ExpiryHeap(asyncio.get_running_loop())
    session, connection = watched(heap, 3600)
    for later in range(1000):
        session.principal = Principal("u", ("USER",), "u", "t", time.time() + 3600 + later)
        heap.watch(session, connection)  # type: ignore[arg-type]
    assert len(heap) == 1
    session.principal = Principal("u", ("USER",), "u", "t", time.time() + 0.05)
    heap.watch(session, connection)  # type: ignore[arg-type]
    assert len(heap) == 2  # the superseded entry is empty, and skipped when it comes up
    await asyncio.sleep(0.2)
    assert connection.closed == (TOKEN_EXPIRED_CLOSE, "token expired")
