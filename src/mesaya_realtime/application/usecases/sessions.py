"""A connected client session and the messages the gateway builds for it."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from mesaya_realtime.application.ports.connections import Connection
from mesaya_realtime.domain.catalogue import EntitySpec
from mesaya_realtime.domain.errors import GatewayError
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.messages import Message, encode, format_epoch, topic_of
from mesaya_realtime.domain.queries import ListQuery

__all__ = [
    "PROTOCOL_V2",
    "V1",
    "WILDCARD_SECTION",
    "Hello",
    "Session",
    "ack_message",
    "authenticated_message",
    "base_topics",
    "connected_message",
    "detail_message",
    "error_message",
    "list_message",
    "pong_message",
    "refusal_message",
]

#: The WebSocket subprotocol of protocol v2 (docs/WEBSOCKET_ENDPOINTS.md "Protocol v2").
PROTOCOL_V2 = "mesaya.v2"

#: The section an ADMIN connects to in order to watch an entity across all sections.
WILDCARD_SECTION = "*"

_ids = itertools.count(1)
#: How many detail ids one socket keeps refreshed.
MAX_TRACKED_DETAILS = 64


def base_topics(entity: str, allowed_actions: Iterable[str]) -> list[str]:
    """The topics a socket starts with (reference §5.3), de-duplicated, in order."""
    topics: list[str] = []
    for action in ("snapshot", "list", "detail", "error", *allowed_actions):
        topic = topic_of(entity, action.strip().lower())
        if topic and topic not in topics:
            topics.append(topic)
    return topics


@dataclass(frozen=True, slots=True)
class Hello:
    """How a socket opened: its protocol, and in v2 the cursor to resume from (``since``) and
    the ``requestId`` of its ``authenticate`` frame, echoed by ``system.connected``."""

    v2: bool = False
    since: str = ""
    request_id: str = ""


#: A protocol v1 socket (the Go protocol).
V1 = Hello()


@dataclass(eq=False, slots=True)
class Session:
    """One socket: who it is, what it looks at and which topics it receives."""

    connection: Connection
    principal: Principal
    entity: EntitySpec
    section: str
    #: Shared by every socket of the entity until one subscribes or unsubscribes (then
    #: replaced, never mutated), so an idle socket costs no set of its own.
    topics: AbstractSet[str]
    id: int = field(default_factory=lambda: next(_ids))
    #: The last list query and the detail ids this socket asked for, for refreshes.
    list_query: ListQuery | None = None
    detail_ids: frozenset[str] = frozenset()
    #: True once ``topics`` is this socket's own set (then changed in place, O(1)).
    own_topics: bool = False
    #: This socket's entry in the transport's expiry heap (one per socket; emptied on close).
    expiry: list[Any] | None = None
    #: The restaurants an OWNER's cross-section socket (notifications) was admitted with.
    owned: frozenset[str] = frozenset()
    #: What a socket kind keeps per socket (an analytics socket's key and request).
    state: object = None
    #: True for a protocol v2 socket (subprotocol ``mesaya.v2``); False speaks the Go protocol.
    v2: bool = False
    #: A v2 socket that came back with ``since`` (it may take over its dropped holds).
    resumed: bool = False
    #: False once the socket has ended without the client's close frame (a drop, a reset, a
    #: close by the gateway): a v2 socket's table holds then wait for it to resume.
    ended_cleanly: bool = True

    @property
    def is_wildcard(self) -> bool:
        return self.section == WILDCARD_SECTION

    def remember_detail(self, resource_id: str) -> None:
        """Track a detail for refreshes; the most recent :data:`MAX_TRACKED_DETAILS` only."""
        ids = self.detail_ids
        if resource_id in ids:
            return
        if len(ids) >= MAX_TRACKED_DETAILS:
            ids = frozenset(list(ids)[1:])
        self.detail_ids = ids | {resource_id}

    def forget_detail(self, resource_id: str) -> None:
        self.detail_ids = self.detail_ids - {resource_id}

    def send(self, message: Message) -> None:
        self.connection.send(encode(message))


def connected_message(session: Session, topics: list[str], hello: Hello = V1) -> Message:
    principal = session.principal
    data: dict[str, object] = {
        "allowedTopics": topics,
        "entity": session.entity.name,
        "roles": list(principal.roles) if principal.roles is not None else None,
        "sectionId": session.section,
    }
    metadata = {
        "sectionId": session.section,
        "sessionId": principal.session_id,
        "userId": principal.user_id,
    }
    if hello.v2:
        # When to renew in-band (``authenticate``) before the socket is closed with 1008.
        data["expiresAt"] = format_epoch(principal.expires_at) if principal.expires_at is not None else None
        if hello.request_id:
            metadata["requestId"] = hello.request_id
    return Message(
        topic="system.connected", entity="system", action="connected", data=data, metadata=metadata
    )


def authenticated_message(session: Session, principal: Principal | None = None) -> Message:
    """The reply to ``authenticate``: the socket now runs on ``principal`` (the new token)."""
    principal = principal or session.principal
    data: dict[str, object] = {"userId": principal.user_id, "sessionId": principal.session_id}
    if principal.expires_at is not None:
        data["expiresAt"] = format_epoch(principal.expires_at)
    return Message(
        topic="system.authenticated",
        entity="system",
        action="authenticated",
        data=data,
        metadata={"sectionId": session.section, "userId": principal.user_id},
    )


def pong_message() -> Message:
    return Message(topic="system.pong", entity="system", action="pong")


def list_message(entity: str, section: str, query: ListQuery, data: Any, origin: str = "request") -> Message:
    metadata = query.metadata()
    metadata["sectionId"] = section
    metadata["origin"] = origin
    return Message(
        topic=f"{entity}.list",
        entity=entity,
        action="list",
        resource_id=section,
        data=data,
        metadata=metadata,
    )


def detail_message(
    spec: EntitySpec, section: str, resource_id: str, data: Any, origin: str = "request"
) -> Message:
    return Message(
        topic=f"{spec.name}.detail",
        entity=spec.name,
        action="detail",
        resource_id=resource_id,
        data=data,
        metadata={"sectionId": section, spec.detail_id_key: resource_id, "origin": origin},
    )


def error_message(
    entity: str, section: str, action: str, reason: str, code: str = "", field: str = ""
) -> Message:
    """``<entity>.error``; ``code`` and ``field`` (protocol v2 only) go in ``data``."""
    metadata = {"action": action, "sectionId": section}
    if reason:
        metadata["reason"] = reason
    data = {"error": reason}
    if code:
        data["code"] = code
        if field:
            data["field"] = field
    return Message(
        topic=f"{entity}.error",
        entity=entity,
        action="error",
        resource_id=section,
        data=data,
        metadata=metadata,
    )


def refusal_message(session: Session, action: str, error: GatewayError) -> Message:
    """The error reply to a command of ``session``: v1's text only, v2's with its code."""
    if session.v2:
        return error_message(
            session.entity.name, session.section, action, error.reason, error.code, error.field
        )
    return error_message(session.entity.name, session.section, action, error.reason)


def ack_message(session: Session, action: str, topic: str = "") -> Message:
    """Protocol v2's reply to a command that has no other (``subscribe``, ``select_table``)."""
    data = {"action": action}
    if topic:
        data["topic"] = topic
    return Message(
        topic="system.ack", entity="system", action="ack", data=data, metadata={"sectionId": session.section}
    )
