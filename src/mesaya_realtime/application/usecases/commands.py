"""Client commands on an entity socket: the envelope, the action table, the replies.

A frame is ``{"action": str, "topic"?: str, "payload"?: any}``. The reply to a command goes
to the asking socket only: a list/detail message, ``system.pong``, or ``<entity>.error``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mesaya_realtime.application.ports.auth import TokenVerifier
from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.usecases.ownership import OwnershipGuard
from mesaya_realtime.application.usecases.sessions import (
    Session,
    authenticated_message,
    detail_message,
    error_message,
    list_message,
    pong_message,
)
from mesaya_realtime.application.usecases.snapshots import SnapshotService
from mesaya_realtime.domain.errors import (
    AuthError,
    CommandError,
    InvalidPayload,
    UnsupportedAction,
)
from mesaya_realtime.domain.messages import Message
from mesaya_realtime.domain.queries import DetailQuery, ListQuery

__all__ = ["AUTHENTICATE_ACTIONS", "LATER", "ActionHandler", "CommandService", "Envelope"]

#: An extra action: given the session and the raw payload, the reply (or None for none).
ActionHandler = Callable[[Session, Any], Awaitable[Message | None]]

#: What :meth:`CommandService.answer_now` returns when the command must be awaited.
LATER = object()

#: Actions that renew a socket's token before it expires (payload ``{"token": "<jwt>"}``).
AUTHENTICATE_ACTIONS = ("authenticate", "refresh_token")

_MAX_ACTION = 128


class Envelope:
    """A validated command frame."""

    __slots__ = ("action", "payload", "topic")

    def __init__(self, action: str, topic: str, payload: Any) -> None:
        self.action = action
        self.topic = topic
        self.payload = payload

    @classmethod
    def parse(cls, frame: object) -> Envelope:
        """Validate a decoded JSON frame; wrong shapes raise :class:`InvalidPayload`."""
        if not isinstance(frame, dict):
            raise InvalidPayload()
        action = frame.get("action")
        topic = frame.get("topic")
        if not isinstance(action, str) or len(action) > _MAX_ACTION:
            raise InvalidPayload()
        if topic is not None and not isinstance(topic, str):
            raise InvalidPayload()
        return cls(action.strip().lower(), (topic or "").strip(), frame.get("payload"))


class CommandService:
    """Turns one command into its reply. Knows every action of every catalogue entity."""

    def __init__(
        self,
        snapshots: SnapshotService,
        metrics: Metrics | None = None,
        extra_actions: Mapping[str, Mapping[str, ActionHandler]] | None = None,
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
        self.extra_actions = extra_actions or {}

    def kind_of(self, session: Session, action: str) -> str:
        """``list``, ``detail``, ``ping``, ``subscribe``, ``unsubscribe``, ``extra`` or ``unknown``."""
        spec = session.entity
        if action in ("ping", "subscribe", "unsubscribe"):
            return action
        if action in AUTHENTICATE_ACTIONS and self.verifier is not None:
            return "authenticate"
        if action in spec.list_actions:
            return "list"
        if action in spec.detail_actions:
            return "detail"
        if action in self.extra_actions.get(spec.name, {}):
            return "extra"
        return "unknown"

    def answer_now(self, session: Session, envelope: Envelope) -> Message | object | None:
        """The reply when it needs no waiting (ping, subscriptions, refusals, cache hits),
        else :data:`LATER`: then ``await handle(...)``. Saves a task per cached command."""
        spec = session.entity
        kind = self.kind_of(session, envelope.action)
        if kind not in ("ping", "subscribe", "unsubscribe", "list", "detail", "unknown"):
            return LATER
        try:
            if kind == "ping":
                return pong_message()
            if kind in ("subscribe", "unsubscribe"):
                return self._subscription(session, kind, envelope.topic)
            if kind == "unknown":
                raise UnsupportedAction()
            if kind == "list":
                query = ListQuery.from_payload(envelope.payload)
                data = self.snapshots.cached_list(spec, session.principal, session.section, query)
                if data is None:
                    return LATER
                session.list_query = query
                reply = list_message(spec.name, session.section, query, data)
            else:
                detail = DetailQuery.from_payload(envelope.payload)
                data = self.snapshots.cached_detail(spec, session.principal, detail.resource_id)
                if data is None:
                    return LATER
                session.remember_detail(detail.resource_id)
                reply = detail_message(spec, session.section, detail.resource_id, data)
        except CommandError as error:
            self.metrics.command(spec.name, kind, "error")
            return error_message(spec.name, session.section, kind, error.reason)
        self.metrics.command(spec.name, kind, "ok")
        return reply

    async def handle(self, session: Session, envelope: Envelope) -> Message | None:
        """The reply to one command, or None when the command has none."""
        spec = session.entity
        action = envelope.action
        kind = self.kind_of(session, action)
        try:
            if kind == "ping":
                return pong_message()
            if kind in ("subscribe", "unsubscribe"):
                return self._subscription(session, kind, envelope.topic)
            if kind == "authenticate":
                renewed = await self._authenticate(session, envelope.payload)
                self.metrics.command(spec.name, kind, "ok")
                return renewed
            if kind == "list":
                query = ListQuery.from_payload(envelope.payload)
                session.list_query = query
                data = await self.snapshots.get_list(spec, session.principal, session.section, query)
                reply: Message | None = list_message(spec.name, session.section, query, data)
            elif kind == "detail":
                detail = DetailQuery.from_payload(envelope.payload)
                data = await self.snapshots.get_detail(spec, session.principal, detail.resource_id)
                session.remember_detail(detail.resource_id)
                reply = detail_message(spec, session.section, detail.resource_id, data)
            elif kind == "extra":
                reply = await self.extra_actions[spec.name][action](session, envelope.payload)
            else:
                raise UnsupportedAction()
        except CommandError as error:
            self.metrics.command(spec.name, kind, "error")
            label = kind if kind in ("list", "detail", "unknown") else action
            return error_message(spec.name, session.section, label, error.reason)
        self.metrics.command(spec.name, kind, "ok")
        return reply

    async def _authenticate(self, session: Session, payload: object) -> Message:
        """Swap the socket's token for a fresher one of the same user (same entity and
        tenant rules as the handshake)."""
        assert self.verifier is not None
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token.strip() or len(token) > 16_384:
            raise InvalidPayload()
        try:
            principal = self.verifier.verify(token.strip())
        except AuthError:
            raise CommandError("invalid token") from None
        if principal.user_id != session.principal.user_id:
            raise CommandError("token of another user")
        if not session.entity.allows(principal.upper_roles) or (
            session.is_wildcard and not principal.is_admin
        ):
            raise CommandError("forbidden")
        if self.guard is not None:
            await self.guard.admit(session.entity, principal, session.section)
        # Built before the switch: the reply says what happened, and nothing happens unless
        # the reply can be made.
        reply = authenticated_message(session, principal)
        session.principal = principal
        if self.guard is not None:
            self.guard.join(session)
        return reply

    def _subscription(self, session: Session, kind: str, topic: str) -> Message | None:
        """Subscribe/unsubscribe, limited to the socket's own entity's topics."""
        spec = session.entity
        if not topic.startswith(f"{spec.name}.") or len(topic) > _MAX_ACTION:
            self.metrics.command(spec.name, kind, "error")
            return error_message(spec.name, session.section, kind, "topic not allowed")
        if (kind == "subscribe") == (topic in session.topics):
            self.metrics.command(spec.name, kind, "ok")
            return None  # already so: nothing to change
        if kind == "subscribe" and len(session.topics) >= self.max_topics:
            self.metrics.command(spec.name, kind, "error")
            return error_message(spec.name, session.section, kind, "too many topics")
        # The entity's shared set is copied once, on the socket's first change; after that the
        # socket's own set changes in place (O(1) per command).
        topics = session.topics if session.own_topics else set(session.topics)
        assert isinstance(topics, set)
        if kind == "subscribe":
            topics.add(topic)
        else:
            topics.discard(topic)
        session.topics, session.own_topics = topics, True
        self.metrics.command(spec.name, kind, "ok")
        return None
