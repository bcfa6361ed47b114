"""Features: what plugs into the gateway's sockets through one list, never by name.

A feature (table selection, the tenant boundary, notifications, analytics) may add actions
to the command tables of the socket kinds it serves, send messages to a socket when it opens,
act when it closes, run in the background between ``start`` and ``stop``, and take part in
``GET /ready``. The composition root lists the features once; the socket lifecycle
(usecases/lifecycle.py), the command tables (usecases/commands.py) and the gateway's start,
stop and readiness all read that one list (docs/ARCHITECTURE.md "Features").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesaya_realtime.application.usecases.sessions import Session
from mesaya_realtime.domain.events import DomainEvent
from mesaya_realtime.domain.messages import Message

__all__ = ["ActionHandler", "Feature", "SocketKindRules"]

#: An action a feature adds: given the session and the raw payload, the reply (or None).
ActionHandler = Callable[[Session, Any], Awaitable[Message | None]]


@dataclass(frozen=True, slots=True)
class SocketKindRules:
    """The command table of a socket kind other than the entity sockets: the built-ins
    (``ping``, ``subscribe``, ``unsubscribe``, ``authenticate``), the topics it may subscribe
    to, and whether an unknown action is ignored (no reply) or refused."""

    allows_topic: Callable[[Session, str], bool]
    ignore_unknown: bool = True


class Feature:
    """The hooks a feature may implement; every one does nothing unless overridden."""

    #: The key of this feature's report in ``GET /ready`` ("" takes no part in readiness).
    readiness_key = ""

    def actions(self) -> Mapping[str, Mapping[str, ActionHandler]]:
        """Actions by entity (socket kind) name: ``{"tables": {"select_table": handler}}``."""
        return {}

    def socket_kinds(self) -> Mapping[str, SocketKindRules]:
        """The socket kinds this feature serves, by name (their sessions' ``entity.name``)."""
        return {}

    def event_handler(self) -> Callable[[DomainEvent], None] | None:
        """Called with every domain event the node delivers (after the entity sockets')."""
        return None

    def join(self, session: Session) -> Iterable[Message]:
        """Messages for a socket that has just opened (after ``system.connected``)."""
        return ()

    async def leave(self, session: Session) -> None:
        """A socket has closed (it is no longer in the hub)."""

    def start(self) -> None:
        """Start background work; called on the running loop, before the port is opened."""

    async def stop(self) -> None:
        """Stop background work; called after the sockets are closed."""

    def status(self) -> dict[str, object]:
        """This feature's readiness report; ``ready`` false keeps the node unready."""
        return {"ready": True}
