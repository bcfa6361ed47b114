"""Client commands on an entity socket: the envelope, the command table, the replies.

A frame is ``{"action": str, "topic"?: str, "payload"?: any}``. The reply to a command goes
to the asking socket only: a list/detail message, ``system.pong``, or ``<entity>.error``.

Every action of a socket kind is named once, in its :class:`Command` table (built once per
entity, from the catalogue and the features' actions). A command has an async ``run`` and,
where it can often answer without waiting (ping, subscriptions, cache hits), a ``now`` that
returns the reply or :data:`LATER`; the socket's read loop tries ``now`` first and saves a
task per answered command (interface/websocket.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mesaya_realtime.application.ports.auth import TokenVerifier
from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.usecases.features import ActionHandler, Feature, SocketKindRules
from mesaya_realtime.application.usecases.ownership import OwnershipGuard
from mesaya_realtime.application.usecases.sessions import (
    Session,
    ack_message,
    authenticated_message,
    detail_message,
    list_message,
    pong_message,
    refusal_message,
)
from mesaya_realtime.application.usecases.snapshots import Marked, SnapshotService
from mesaya_realtime.domain.catalogue import EntitySpec
from mesaya_realtime.domain.errors import (
    AuthError,
    CommandError,
    GatewayError,
    InvalidPayload,
    UnsupportedAction,
)
from mesaya_realtime.domain.messages import Message
from mesaya_realtime.domain.queries import DetailQuery, ListQuery

__all__ = ["AUTHENTICATE_ACTIONS", "LATER", "ActionHandler", "Command", "CommandService", "Envelope"]

log = logging.getLogger(__name__)

#: What :meth:`CommandService.answer_now` returns when the command must be awaited.
LATER = object()

#: Actions that renew a socket's token before it expires (payload ``{"token": "<jwt>"}``).
AUTHENTICATE_ACTIONS = ("authenticate", "refresh_token")

_MAX_ACTION = 128


#: The longest ``requestId`` a command may carry (docs/WEBSOCKET_ENDPOINTS.md "Request ids").
MAX_REQUEST_ID = 64


class Envelope:
    """A validated command frame."""

    __slots__ = ("action", "payload", "request_id", "topic")

    def __init__(self, action: str, topic: str, payload: Any, request_id: str = "") -> None:
        self.action = action
        self.topic = topic
        self.payload = payload
        #: The client's id for this command, echoed in every reply's ``metadata.requestId``.
        self.request_id = request_id

    @classmethod
    def parse(cls, frame: object) -> Envelope:
        """Validate a decoded JSON frame; wrong shapes raise :class:`InvalidPayload`."""
        if not isinstance(frame, dict):
            raise InvalidPayload()
        action = frame.get("action")
        topic = frame.get("topic")
        if not isinstance(action, str) or len(action) > _MAX_ACTION:
            raise InvalidPayload(field="action")
        if topic is not None and not isinstance(topic, str):
            raise InvalidPayload(field="topic")
        request_id = frame.get("requestId")
        if request_id is not None and (
            not isinstance(request_id, str) or not request_id or len(request_id) > MAX_REQUEST_ID
        ):
            raise InvalidPayload(field="requestId")
        return cls(action.strip().lower(), (topic or "").strip(), frame.get("payload"), request_id or "")


Reply = Message | None
#: The sync fast path: the reply, or :data:`LATER` when the command must be awaited.
NowFn = Callable[[Session, Envelope], "Reply | object"]
RunFn = Callable[[Session, Envelope], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Command:
    """One action of a socket kind's table."""

    #: The metrics label (``list``, ``detail``, ``ping``, ``subscribe``, ``extra`` ...).
    kind: str
    run: RunFn
    now: NowFn | None = None
    #: ``metadata.action`` of an error reply; empty: the action as sent.
    error_label: str = ""


class CommandService:
    """Turns one command into its reply, from the command table of the socket's entity."""

    def __init__(
        self,
        snapshots: SnapshotService,
        metrics: Metrics | None = None,
        features: Sequence[Feature] = (),
        verifier: TokenVerifier | None = None,
        guard: OwnershipGuard | None = None,
        max_topics: int = 64,
    ) -> None:
        #: Topics one socket may have at most (``WS_MAX_TOPICS_PER_SOCKET``).
        self.max_topics = max_topics
        self.snapshots = snapshots
        self.verifier = verifier
        #: Renewals pass the same tenant check as the handshake (a USER upgraded to OWNER
        #: must own the section before the socket receives the restaurant's private events).
        self.guard = guard
        self.metrics = metrics or NullMetrics()
        merged: dict[str, dict[str, ActionHandler]] = {}
        for feature in features:
            for entity, handlers in feature.actions().items():
                merged.setdefault(entity, {}).update(handlers)
        self.extra_actions = merged
        #: Socket kinds other than entity sockets (notifications): their rules, by name.
        self.kinds: dict[str, SocketKindRules] = {}
        for feature in features:
            self.kinds.update(feature.socket_kinds())
        self._tables: dict[str, dict[str, Command]] = {}
        self._unknown = Command("unknown", self._run_unknown, self._now_unknown, "unknown")
        self._ignored = Command("ignored", _later(_nothing), _nothing)
        #: Other kinds' refusal of an unknown action names the action sent (reference §6.4).
        self._unsupported = Command("unknown", self._run_unknown, self._now_unknown)

    # -- the table ---------------------------------------------------------------------------
    def table(self, spec: EntitySpec) -> dict[str, Command]:
        """The entity's command table, built on first use."""
        found = self._tables.get(spec.name)
        if found is None:
            found = self._tables[spec.name] = self._build_table(spec)
        return found

    def _build_table(self, spec: EntitySpec) -> dict[str, Command]:
        table: dict[str, Command] = {}
        for name, handler in self.extra_actions.get(spec.name, {}).items():
            table[name] = Command("extra", _extra(handler))
        if spec.name not in self.kinds:  # an entity socket: the catalogue's list and detail
            for name in spec.detail_actions:
                table[name] = Command("detail", self._run_detail, self._now_detail, "detail")
            for name in spec.list_actions:
                table[name] = Command("list", self._run_list, self._now_list, "list")
        if self.verifier is not None:
            for name in AUTHENTICATE_ACTIONS:
                table[name] = Command("authenticate", self._run_authenticate)
        table["ping"] = Command("ping", _later(self._pong), self._pong, "ping")
        for name in ("subscribe", "unsubscribe"):
            table[name] = Command(name, _later(self._subscription), self._subscription, name)
        return table

    def command(self, session: Session, action: str) -> Command:
        found = self.table(session.entity).get(action)
        if found is not None:
            return found
        rules = self.kinds.get(session.entity.name)
        if rules is None:
            return self._unknown
        # Protocol v2 answers every command: an unknown action is refused, never ignored.
        return self._ignored if rules.ignore_unknown and not session.v2 else self._unsupported

    def kind_of(self, session: Session, action: str) -> str:
        """``list``, ``detail``, ``ping``, ``subscribe``, ``unsubscribe``, ``authenticate``,
        ``extra`` or ``unknown``."""
        return self.command(session, action).kind

    # -- answering ---------------------------------------------------------------------------
    def answer_now(self, session: Session, envelope: Envelope) -> Message | object | None:
        """The reply when it needs no waiting (ping, subscriptions, refusals, cache hits),
        else :data:`LATER`: then ``await handle(...)``. Saves a task per cached command."""
        command = self.command(session, envelope.action)
        if command.now is None:
            return LATER
        try:
            reply = command.now(session, envelope)
        except CommandError as error:
            return self._refused(session, command, envelope, error)
        if reply is LATER:
            return reply
        self.metrics.command(session.entity.name, command.kind, "ok")
        return _finished(session, envelope, reply if isinstance(reply, Message) else None)

    async def handle(self, session: Session, envelope: Envelope) -> Message | None:
        """The reply to one command, or None when the command has none."""
        command = self.command(session, envelope.action)
        try:
            reply = await command.run(session, envelope)
        except CommandError as error:
            return self._refused(session, command, envelope, error)
        except Exception:
            # A bug, not the client's fault: logged with its trace, answered without it.
            log.exception("command failed", extra={"entity": session.entity.name, "action": command.kind})
            self.metrics.command(session.entity.name, command.kind, "error")
            return _tagged(refusal_message(session, "unknown", GatewayError()), envelope)
        self.metrics.command(session.entity.name, command.kind, "ok")
        return _finished(session, envelope, reply)

    def _refused(
        self, session: Session, command: Command, envelope: Envelope, error: CommandError
    ) -> Message:
        self.metrics.command(session.entity.name, command.kind, "error")
        return _tagged(refusal_message(session, command.error_label or envelope.action, error), envelope)

    # -- the commands ------------------------------------------------------------------------
    def _pong(self, session: Session, envelope: Envelope) -> Reply:
        pong = pong_message()
        if session.v2 and self.snapshots.mark is not None:
            pong.cursor = self.snapshots.mark(session.entity.name)  # the socket's position now
        return pong

    @staticmethod
    def _now_unknown(session: Session, envelope: Envelope) -> Reply:
        raise UnsupportedAction()

    @staticmethod
    async def _run_unknown(session: Session, envelope: Envelope) -> Reply:
        raise UnsupportedAction()

    def _now_list(self, session: Session, envelope: Envelope) -> Reply | object:
        query = ListQuery.from_payload(envelope.payload)
        found = self.snapshots.cached_list_marked(session.entity, session.principal, session.section, query)
        if found is None:
            return LATER
        session.list_query = query
        return _watermarked(
            session, list_message(session.entity.name, session.section, query, found.data), found
        )

    async def _run_list(self, session: Session, envelope: Envelope) -> Reply:
        query = ListQuery.from_payload(envelope.payload)
        session.list_query = query
        found = await self.snapshots.get_list_marked(
            session.entity, session.principal, session.section, query
        )
        return _watermarked(
            session, list_message(session.entity.name, session.section, query, found.data), found
        )

    def _now_detail(self, session: Session, envelope: Envelope) -> Reply | object:
        detail = DetailQuery.from_payload(envelope.payload)
        found = self.snapshots.cached_detail_marked(session.entity, session.principal, detail.resource_id)
        if found is None:
            return LATER
        session.remember_detail(detail.resource_id)
        return _watermarked(
            session, detail_message(session.entity, session.section, detail.resource_id, found.data), found
        )

    async def _run_detail(self, session: Session, envelope: Envelope) -> Reply:
        detail = DetailQuery.from_payload(envelope.payload)
        found = await self.snapshots.get_detail_marked(session.entity, session.principal, detail.resource_id)
        session.remember_detail(detail.resource_id)
        return _watermarked(
            session, detail_message(session.entity, session.section, detail.resource_id, found.data), found
        )

    async def _run_authenticate(self, session: Session, envelope: Envelope) -> Reply:
        """Swap the socket's token for a fresher one of the same user (same entity and
        tenant rules as the handshake)."""
        assert self.verifier is not None
        payload = envelope.payload
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token.strip() or len(token) > 16_384:
            raise InvalidPayload(field="payload.token")
        try:
            principal = self.verifier.verify(token.strip())
        except AuthError:
            raise CommandError("invalid token", code="invalid_token", field="payload.token") from None
        if principal.user_id != session.principal.user_id:
            raise CommandError("token of another user", code="forbidden", field="payload.token")
        if not session.entity.allows(principal.upper_roles) or (
            session.is_wildcard and not principal.is_admin
        ):
            raise CommandError("forbidden", code="forbidden")
        if session.entity.name in self.kinds and set(principal.upper_roles) != set(
            session.principal.upper_roles
        ):
            # A cross-section socket (notifications, analytics) was admitted and indexed for
            # its roles: a renewal may not change them (reconnect instead).
            raise CommandError("forbidden", code="forbidden")
        if self.guard is not None:
            await self.guard.admit(session.entity, principal, session.section)
        # Built before the switch: the reply says what happened, and nothing happens unless
        # the reply can be made.
        reply = authenticated_message(session, principal)
        session.principal = principal
        if self.guard is not None:
            self.guard.join(session)
        return reply

    def _subscription(self, session: Session, envelope: Envelope) -> Reply:
        """Subscribe/unsubscribe, limited to the socket's own entity's topics (or, for
        another socket kind, to the topics its rules allow)."""
        spec = session.entity
        subscribe = envelope.action == "subscribe"
        topic = envelope.topic
        rules = self.kinds.get(spec.name)
        allowed = (
            rules.allows_topic(session, topic) if rules is not None else topic.startswith(f"{spec.name}.")
        )
        if not allowed or len(topic) > _MAX_ACTION:
            raise CommandError("topic not allowed", code="topic_not_allowed", field="topic")
        if subscribe == (topic in session.topics):
            return None  # already so: nothing to change
        if subscribe and len(session.topics) >= self.max_topics:
            raise CommandError("too many topics", code="too_many_topics", field="topic")
        # The entity's shared set is copied once, on the socket's first change; after that the
        # socket's own set changes in place (O(1) per command).
        topics = session.topics if session.own_topics else set(session.topics)
        assert isinstance(topics, set)
        if subscribe:
            topics.add(topic)
        else:
            topics.discard(topic)
        session.topics, session.own_topics = topics, True
        return None


def _finished(session: Session, envelope: Envelope, reply: Message | None) -> Message | None:
    """The reply as sent: protocol v2 acknowledges a command that has none (``system.ack``),
    and a ``requestId`` is echoed in both versions."""
    if reply is None:
        if not session.v2:
            return None
        reply = ack_message(session, envelope.action, envelope.topic)
    return _tagged(reply, envelope)


def _tagged(reply: Message, envelope: Envelope) -> Message:
    """The reply to a command that carried a ``requestId``, with it in ``metadata.requestId``."""
    if not envelope.request_id:
        return reply
    return replace(reply, metadata={**(reply.metadata or {}), "requestId": envelope.request_id})


def _watermarked(session: Session, reply: Message, found: Marked) -> Message:
    """A v2 list/detail reply carries its watermark as its cursor."""
    if session.v2:
        reply.cursor = found.cursor
    return reply


def _nothing(session: Session, envelope: Envelope) -> Reply:
    return None


def _later(now: Callable[[Session, Envelope], Reply]) -> RunFn:
    """The async path of a command that never waits."""

    async def run(session: Session, envelope: Envelope) -> Reply:
        return now(session, envelope)

    return run


def _extra(handler: ActionHandler) -> RunFn:
    async def run(session: Session, envelope: Envelope) -> Reply:
        return await handler(session, envelope.payload)

    return run
