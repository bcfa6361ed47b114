"""Table selection between the clients of a section, kept the same on every node.

A tables socket sends ``select_table`` (alias ``selecting``) or ``release_table`` (alias
``released``) with ``{"tableId": ...}``. The node checks the command, appends a record to the
shared :class:`~mesaya_realtime.application.ports.selection.SelectionLog` and waits for the
record to come back from the log: only the log's order decides who holds a table, so every
node applies the same records to its :class:`~mesaya_realtime.domain.selection.SelectionState`
and announces the same changes (``tables.selecting`` / ``tables.released``) to its own sockets
of the section. The selector's confirmation is that broadcast; a refusal is ``tables.error``.

Besides commands, each node keeps the shared state moving (:meth:`SelectionService.upkeep`):

* it appends a heartbeat every ``heartbeat_interval`` (once its state is rebuilt);
* it releases its own holds when they expire (``expired``) or when their socket is gone
  (``disconnected``, also on close through :meth:`SelectionService.leave`);
* it releases the holds of a node it has not heard from for ``node_timeout`` (``node_down``),
  and holds expired for longer than ``node_timeout`` whoever owns them;
* it appends a checkpoint of each log stream right after its state is rebuilt, then every
  ``checkpoint_interval`` unless another node just did, so a node that starts later rebuilds
  the state from a bounded read.

Releases are idempotent (a release that matches no hold changes nothing), so several nodes
may race to release the same dead hold.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mesaya_realtime.application.ports.selection import (
    SelectionLog,
    SelectionLogUnavailable,
)
from mesaya_realtime.application.usecases.features import ActionHandler, Feature
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.sessions import Session
from mesaya_realtime.domain.catalogue import EntitySpec
from mesaya_realtime.domain.messages import Message
from mesaya_realtime.domain.selection import (
    Adopt,
    Change,
    Checkpoint,
    Detach,
    Heartbeat,
    Hold,
    Holder,
    LogEntry,
    Rejected,
    Release,
    Released,
    ReleaseReason,
    Select,
    Selected,
    SelectionRecord,
    SelectionRefused,
    SelectionState,
    StreamReplay,
    Unmatched,
    table_id_from,
)

__all__ = [
    "RELEASE_ACTIONS",
    "SELECT_ACTIONS",
    "SelectionPolicy",
    "SelectionService",
    "released_message",
    "selecting_message",
]

log = logging.getLogger(__name__)

SELECT_ACTIONS = ("select_table", "selecting")
RELEASE_ACTIONS = ("release_table", "released")

TAKEN = "table already selected"
NOT_HELD = "table not selected by this socket"
TOO_MANY_HOLDS = "too many selections"
TOO_FAST = "too many requests"
NEEDS_SECTION = "table selection needs a section"
UNAVAILABLE = "table selection unavailable"
TIMED_OUT = "table selection timed out"


@dataclass(frozen=True, slots=True)
class SelectionPolicy:
    """Limits and timings of table selection (seconds, except the counts)."""

    ttl: float = 300.0
    max_per_socket: int = 3
    rate_per_second: float = 10.0
    request_timeout: float = 5.0
    heartbeat_interval: float = 2.0
    node_timeout: float = 10.0
    checkpoint_interval: float = 30.0
    sweep_interval: float = 0.25
    #: Seconds a protocol v2 socket's holds outlive its drop (``TABLE_SELECTION_RECONNECT_GRACE``).
    reconnect_grace: float = 10.0


def selecting_message(entity: str, hold: Hold, origin: str) -> Message:
    """``<entity>.selecting``; ``origin`` is ``live`` for a change, ``current`` for state."""
    return Message(
        topic=f"{entity}.selecting",
        entity=entity,
        action="selecting",
        resource_id=hold.table,
        data={
            "tableId": hold.table,
            "sectionId": hold.section,
            "selectedBy": hold.holder.user,
            "selectedAt": hold.since_text,
            "expiresAt": hold.expires_at_text,
        },
        metadata={"sectionId": hold.section, "origin": origin},
    )


def released_message(entity: str, hold: Hold, reason: ReleaseReason) -> Message:
    return Message(
        topic=f"{entity}.released",
        entity=entity,
        action="released",
        resource_id=hold.table,
        data={
            "tableId": hold.table,
            "sectionId": hold.section,
            "selectedBy": hold.holder.user,
            "reason": reason.value,
        },
        metadata={"sectionId": hold.section, "reason": reason.value},
    )


class _Bucket:
    """A token bucket: ``rate`` requests per second, bursts of up to ``rate``."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class SelectionService(Feature):
    """Selection commands of tables sockets and the node's share of the log upkeep."""

    readiness_key = "selections"

    def __init__(
        self,
        log: SelectionLog,
        hub: Hub,
        spec: EntitySpec,
        policy: SelectionPolicy,
        node_id: str,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        incarnation: str | None = None,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.log = log
        self.hub = hub
        self.spec = spec
        self.policy = policy
        self.node_id = node_id
        #: This process's identity in the log: a restarted node is a new incarnation.
        self.node = incarnation or f"{node_id}#{secrets.token_hex(4)}"
        self.state = SelectionState()
        self._clock = clock
        self._monotonic = monotonic
        self._jitter = jitter
        self._ready = asyncio.Event()
        self._requests = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Change]] = {}
        #: Selects appended but not yet applied: request -> (socket, key), and per socket.
        self._unapplied: dict[str, tuple[str, tuple[str, str]]] = {}
        self._inflight: dict[str, set[tuple[str, str]]] = {}
        self._sessions: dict[str, Session] = {}
        #: Sockets that dropped with holds in their grace: socket -> until (ms).
        self._grace: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._seen: dict[str, float] = {}
        self._through: dict[str, int] = {}
        self._checkpoint_seen: dict[str, float] = {}
        self._asked: dict[tuple[object, ...], float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._append_failing = False
        self._next_heartbeat = 0.0
        self._next_checkpoint = 0.0
        self._ready_at = 0.0

    # -- wiring ------------------------------------------------------------------------------
    def actions(self) -> dict[str, dict[str, ActionHandler]]:
        """The actions this feature adds to the tables sockets' command table."""
        handlers: dict[str, ActionHandler] = {}
        for action in SELECT_ACTIONS:
            handlers[action] = self.select
        for action in RELEASE_ACTIONS:
            handlers[action] = self.release
        return {self.spec.name: handlers}

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def status(self) -> dict[str, object]:
        return {
            "ready": self.ready and bool(self.log.status().get("ready", True)),
            "node": self.node,
            "holds": len(self.state),
            "log": self.log.status(),
        }

    def start(self) -> None:
        """Start reading the log and the periodic upkeep; call on the running loop."""
        self.log.start(self)
        self._task = asyncio.create_task(self._run(), name="table-selection")

    async def stop(self) -> None:
        """Release this node's remaining holds, then stop the log (which flushes)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.ready:
            now = self._now()
            for hold in list(self.state):
                if hold.holder.node == self.node and not self._in_grace(hold, now):
                    self._append_quietly(self._release_record(hold, ReleaseReason.DISCONNECTED, now))
            # Holds in their grace stay: their clients may resume on another node before it
            # ends; if not, the others release them (node_down) once this node is silent.
        if self._background:
            await asyncio.wait(self._background, timeout=self.policy.request_timeout)
        await self.log.stop()

    # -- socket hooks ------------------------------------------------------------------------
    def join(self, session: Session) -> list[Message]:
        """The ``on_join`` hook: the current selections the new socket should see."""
        if session.entity.name != self.spec.name:
            return []
        self._sessions[str(session.id)] = session
        if not self.ready:
            return []
        holds = list(self.state) if session.is_wildcard else self.state.in_section(session.section)
        now = self._now()
        live = sorted((hold for hold in holds if hold.expires_at > now), key=lambda h: h.key)
        if session.v2 and session.resumed and not session.is_wildcard:
            self._adopt(session, live, now)
        return [selecting_message(self.spec.name, hold, "current") for hold in live]

    def _adopt(self, session: Session, holds: list[Hold], now: int) -> None:
        """A resumed v2 socket takes over its user's holds in the section that are in their
        grace (on any node): the log orders the adoption after the drop that allowed it."""
        user = session.principal.user_id
        holder = Holder(self.node, str(session.id), user)
        mine = [hold for hold in holds if hold.holder.user == user and self._in_grace(hold, now)]
        for hold in mine[: self.policy.max_per_socket]:
            self._append_quietly(Adopt(hold.section, hold.table, holder, now, self._request_id()))

    def _in_grace(self, hold: Hold, now: int) -> bool:
        """Detached and still adoptable (as the log says, or as this node knows already)."""
        if hold.detached_until > now:
            return True
        return hold.holder.node == self.node and self._grace.get(hold.holder.session, 0) > now

    async def leave(self, session: Session) -> None:
        """The ``on_leave`` hook: release every table the closed socket held or was taking."""
        socket = str(session.id)
        if self._sessions.pop(socket, None) is None:
            return
        self._buckets.pop(socket, None)
        keys = {hold.key for hold in self.state.of_socket(self.node, socket)}
        keys |= self._inflight.pop(socket, set())
        for request in [r for r, (owner, _) in self._unapplied.items() if owner == socket]:
            del self._unapplied[request]
        if not keys:
            return
        holder = Holder(self.node, socket, session.principal.user_id)
        now = self._now()
        grace = round(self.policy.reconnect_grace * 1000)
        if session.v2 and not session.ended_cleanly and grace > 0:
            # Dropped without the client's close frame: keep the holds for a resume.
            until = self._grace[socket] = now + grace
            for hold in self.state.of_socket(self.node, socket):
                self._append_quietly(Detach(hold.section, hold.table, holder, until, now))
            return
        stored = [
            self._append_quietly(Release(section, table, holder, ReleaseReason.DISCONNECTED, now, self.node))
            for section, table in sorted(keys)
        ]
        await asyncio.wait(stored, timeout=self.policy.request_timeout)

    # -- commands ----------------------------------------------------------------------------
    async def select(self, session: Session, payload: Any) -> Message | None:
        """Select (or extend) a table; the broadcast ``tables.selecting`` is the confirmation."""
        table = self._admit(session, payload)
        await self._wait_ready()
        socket = str(session.id)
        if socket not in self._sessions:
            return None
        holder = Holder(self.node, socket, session.principal.user_id)
        key = (session.section, table)
        current = self.state.hold(*key)
        now = self._now()
        mine = current is not None and current.holder.same_socket(holder)
        if current is not None and not mine and now < current.expires_at:
            raise SelectionRefused(TAKEN, code="taken")
        if not mine:
            taken = {hold.key for hold in self.state.of_socket(self.node, socket)}
            taken |= self._inflight.get(socket, set())
            taken.discard(key)
            if len(taken) >= self.policy.max_per_socket:
                raise SelectionRefused(TOO_MANY_HOLDS, code="too_many_holds")
        record = Select(
            session.section,
            table,
            holder,
            at=now,
            ttl=max(1, round(self.policy.ttl * 1000)),
            request=self._request_id(),
        )
        self._unapplied[record.request] = (socket, key)
        self._inflight.setdefault(socket, set()).add(key)
        outcome = await self._submit(record)
        if isinstance(outcome, Rejected):
            raise SelectionRefused(TAKEN, code="taken")
        return None

    async def release(self, session: Session, payload: Any) -> Message | None:
        """Release a table this socket holds; the broadcast ``tables.released`` confirms it."""
        table = self._admit(session, payload)
        await self._wait_ready()
        socket = str(session.id)
        if socket not in self._sessions:
            return None
        holder = Holder(self.node, socket, session.principal.user_id)
        key = (session.section, table)
        current = self.state.hold(*key)
        mine = current is not None and current.holder.same_socket(holder)
        if not mine and key not in self._inflight.get(socket, ()):
            raise SelectionRefused(NOT_HELD, code="not_held")
        record = Release(
            session.section,
            table,
            holder,
            ReleaseReason.RELEASED,
            at=self._now(),
            writer=self.node,
            request=self._request_id(),
        )
        outcome = await self._submit(record)
        if isinstance(outcome, Unmatched):
            raise SelectionRefused(NOT_HELD, code="not_held")
        return None

    def _admit(self, session: Session, payload: Any) -> str:
        if session.is_wildcard:
            raise SelectionRefused(NEEDS_SECTION, code="needs_section")
        if not self._take_token(str(session.id)):
            raise SelectionRefused(TOO_FAST, code="rate_limited")
        return table_id_from(payload)

    def _take_token(self, socket: str) -> bool:
        rate = self.policy.rate_per_second
        now = self._monotonic()
        bucket = self._buckets.get(socket)
        if bucket is None:
            bucket = self._buckets[socket] = _Bucket(max(1.0, rate), now)
        bucket.tokens = min(max(1.0, rate), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    async def _wait_ready(self) -> None:
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), self.policy.request_timeout)
        except TimeoutError:
            raise SelectionRefused(UNAVAILABLE, code="unavailable") from None

    async def _submit(self, record: Select | Release) -> Change:
        """Append ``record`` and wait until the log gives it back applied: its outcome."""
        outcome: asyncio.Future[Change] = asyncio.get_running_loop().create_future()
        self._pending[record.request] = outcome
        try:
            stored = self.log.append(record)
            async with asyncio.timeout(self.policy.request_timeout):
                try:
                    await stored
                except SelectionLogUnavailable:
                    self._forget_select(record.request)
                    raise SelectionRefused(UNAVAILABLE, code="unavailable") from None
                return await outcome
        except TimeoutError:
            # If the record lands later, the hold is in the state (and released by upkeep
            # once its socket is gone); until then it must not count against the socket.
            self._forget_select(record.request)
            raise SelectionRefused(TIMED_OUT, code="timeout") from None
        finally:
            self._pending.pop(record.request, None)

    def _forget_select(self, request: str) -> None:
        unapplied = self._unapplied.pop(request, None)
        if unapplied is None:
            return
        socket, key = unapplied
        keys = self._inflight.get(socket)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._inflight[socket]

    # -- reading the log (SelectionSink) -----------------------------------------------------
    def bootstrap(self, replays: Sequence[StreamReplay]) -> None:
        """Rebuild the state silently, then show the result to the sockets already here."""
        for replay in replays:
            self.state.restore(replay.stream, replay.base)
            for entry in replay.entries:
                self._apply(entry, announce=False)
            self._through[replay.stream] = replay.through
        self._ready_at = self._monotonic()
        self._ready.set()
        log.info(
            "table selections ready",
            extra={"node": self.node, "holds": len(self.state), "streams": len(replays)},
        )
        now = self._now()
        for hold in sorted(self.state, key=lambda h: h.key):
            if hold.expires_at > now:
                self._publish(hold.section, selecting_message(self.spec.name, hold, "current"))

    def entries(self, entries: Sequence[LogEntry]) -> None:
        for entry in entries:
            try:
                self._apply(entry, announce=True)
            except Exception:
                log.exception("selection record failed", extra={"stream": entry.stream})

    def _apply(self, entry: LogEntry, announce: bool) -> None:
        record = entry.record
        now = self._monotonic()
        self._seen[record.writer] = now
        self._through[entry.stream] = entry.offset
        if isinstance(record, Checkpoint):
            self._checkpoint_seen[entry.stream] = now
            return
        changes = self.state.apply(record, entry.stream)
        if announce:
            for change in changes:
                self._announce(change)
        if isinstance(record, Select | Release) and record.writer == self.node and record.request:
            self._forget_select(record.request)
            outcome = self._pending.pop(record.request, None)
            if outcome is not None and not outcome.done() and changes:
                outcome.set_result(changes[-1])

    def _announce(self, change: Change) -> None:
        if isinstance(change, Selected):
            hold = change.hold
            self._publish(hold.section, selecting_message(self.spec.name, hold, "live"))
        elif isinstance(change, Released):
            hold = change.hold
            self._publish(hold.section, released_message(self.spec.name, hold, change.reason))

    def _publish(self, section: str, message: Message) -> None:
        self.hub.publish(message, self.hub.recipients(self.spec, (section,), ()))

    # -- upkeep ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                self.upkeep()
            except Exception:
                log.exception("table selection upkeep failed")
            await asyncio.sleep(self.policy.sweep_interval)

    def upkeep(self) -> None:
        """One round of upkeep; the background task runs it every ``sweep_interval``.

        Nothing happens before the state is rebuilt: a node that is still reading the log has
        no holds to keep alive and no state to checkpoint. The first round after that writes a
        checkpoint at once, so every node that ever served leaves one behind.
        """
        if not self.ready:
            return
        policy = self.policy
        moment = self._monotonic()
        if moment >= self._next_heartbeat:
            self._next_heartbeat = moment + policy.heartbeat_interval
            self._append_quietly(Heartbeat(self.node, self._now()))
        self._release_ended(moment)
        if moment >= self._next_checkpoint:
            # Spread the nodes' checkpoints out; one per stream and interval is enough.
            self._next_checkpoint = moment + policy.checkpoint_interval * self._jitter(0.75, 1.25)
            self._write_checkpoints(moment)
            self._forget_gone_nodes(moment)

    def _release_ended(self, moment: float) -> None:
        """Release what has ended: expired holds, holds of gone sockets and of silent nodes."""
        now = self._now()
        timeout = self.policy.node_timeout
        timeout_ms = round(timeout * 1000)
        retry = max(1.0, self.policy.request_timeout)
        self._asked = {key: at for key, at in self._asked.items() if moment - at < retry}
        # Judge others only while this node reads the log in time: its own records come back.
        # A node whose reading lags (or that is cut off) must not declare everyone else dead.
        current = moment - self._seen.get(self.node, self._ready_at) <= timeout
        self._grace = {socket: until for socket, until in self._grace.items() if until > now}
        for hold in list(self.state):
            node = hold.holder.node
            if node == self.node:
                if hold.holder.session not in self._sessions:
                    if not self._in_grace(hold, now):
                        self._ask(hold, ReleaseReason.DISCONNECTED, now, moment)
                elif hold.expires_at <= now:
                    self._ask(hold, ReleaseReason.EXPIRED, now, moment)
                continue
            if not current:
                continue
            if hold.expires_at + timeout_ms <= now:
                self._ask(hold, ReleaseReason.EXPIRED, now, moment)
            elif self._earlier_incarnation(node) or moment - self._seen.setdefault(node, moment) > timeout:
                self._ask(hold, ReleaseReason.NODE_DOWN, now, moment)

    def _forget_gone_nodes(self, moment: float) -> None:
        """Drop liveness entries of nodes long silent that hold nothing (restarts add nodes)."""
        holding = {hold.holder.node for hold in self.state}
        horizon = 10 * self.policy.node_timeout
        for node, seen in list(self._seen.items()):
            if moment - seen > horizon and node not in holding:
                del self._seen[node]

    def _earlier_incarnation(self, node: str) -> bool:
        return node.rpartition("#")[0] == self.node_id and node != self.node

    def _ask(self, hold: Hold, reason: ReleaseReason, now: int, moment: float) -> None:
        key = (hold.key, hold.holder.node, hold.holder.session, hold.expires_at, reason)
        if key in self._asked:
            return
        self._asked[key] = moment
        if reason is ReleaseReason.NODE_DOWN:
            log.info(
                "releasing a silent node's hold",
                extra={"node": hold.holder.node, "section": hold.section, "table": hold.table},
            )
        self._append_quietly(self._release_record(hold, reason, now))

    def _release_record(self, hold: Hold, reason: ReleaseReason, now: int) -> Release:
        return Release(hold.section, hold.table, hold.holder, reason, at=now, writer=self.node)

    def _write_checkpoints(self, moment: float) -> None:
        interval = self.policy.checkpoint_interval
        for stream in self.log.streams():
            if stream not in self._through:
                continue
            seen = self._checkpoint_seen.get(stream)
            if seen is not None and moment - seen < interval:
                continue
            self._checkpoint_seen[stream] = moment
            holds = tuple(sorted(self.state.in_stream(stream), key=lambda h: h.key))
            self._append_quietly(Checkpoint(stream, self._through[stream], holds, self.node, self._now()))

    # -- helpers -----------------------------------------------------------------------------
    def _now(self) -> int:
        return round(self._clock() * 1000)

    def _request_id(self) -> str:
        return str(next(self._requests))

    def _append_quietly(self, record: SelectionRecord) -> asyncio.Task[None]:
        """Append in the background; a failure is logged once per streak of failures."""
        stored = self.log.append(record)

        async def wait() -> None:
            try:
                await stored
            except SelectionLogUnavailable as error:
                if not self._append_failing:
                    log.warning("selection log append failed", extra={"error": str(error)})
                self._append_failing = True
            else:
                self._append_failing = False

        task = asyncio.ensure_future(wait())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
