"""The hub: who is connected, indexed for delivery, and the fan-out of one message.

The hot path is :meth:`Hub.publish`: encode once, then for each entitled session a set
lookup (is the topic subscribed?) and a non-blocking write of the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from mesaya_realtime.application.ports.connections import Framer
from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.usecases.sessions import Session
from mesaya_realtime.domain.catalogue import EntitySpec, Visibility
from mesaya_realtime.domain.messages import Message, encode

__all__ = ["Hub"]

_Index = dict[int, Session]


class Hub:
    def __init__(self, framer: Framer, metrics: Metrics | None = None) -> None:
        self._framer = framer
        self._metrics = metrics or NullMetrics()
        self._by_entity: dict[str, _Index] = {}
        self._by_section: dict[tuple[str, str], _Index] = {}
        self._by_user: dict[tuple[str, str], _Index] = {}
        self._wildcard: dict[str, _Index] = {}

    def __len__(self) -> int:
        return sum(len(index) for index in self._by_entity.values())

    def count(self, entity: str) -> int:
        return len(self._by_entity.get(entity, ()))

    def _indexes(self, session: Session) -> list[tuple[dict[Any, _Index], Any]]:
        entity = session.entity.name
        places: list[tuple[dict[Any, _Index], Any]] = [(self._by_entity, entity)]
        if session.entity.delivery.visibility is Visibility.PRIVATE:
            # Only private entities deliver by user; elsewhere the index would cost memory
            # (a dict per user) for nothing.
            places.append((self._by_user, (entity, session.principal.user_id)))
        if session.is_wildcard:
            places.append((self._wildcard, entity))
        else:
            places.append((self._by_section, (entity, session.section)))
        return places

    def add(self, session: Session) -> None:
        for index, key in self._indexes(session):
            index.setdefault(key, {})[session.id] = session
        self._metrics.socket_opened(session.entity.name)

    def remove(self, session: Session) -> None:
        removed = False
        for index, key in self._indexes(session):
            bucket = index.get(key)
            if bucket is not None and bucket.pop(session.id, None) is not None:
                removed = True
                if not bucket:
                    del index[key]
        if removed:
            self._metrics.socket_closed(session.entity.name)

    def is_connected(self, session: Session) -> bool:
        return session.id in self._by_entity.get(session.entity.name, {})

    def all_sessions(self) -> list[Session]:
        return [session for index in self._by_entity.values() for session in index.values()]

    def sessions(self, entity: str) -> Iterable[Session]:
        return tuple(self._by_entity.get(entity, {}).values())

    def recipients(
        self, spec: EntitySpec, scope_values: Iterable[str], user_ids: Iterable[str]
    ) -> Collection[Session]:
        """The sessions of ``spec`` entitled to an event with these scope and user values."""
        entity = spec.name
        rule = spec.delivery
        if rule.visibility is Visibility.PUBLIC:
            return self._by_entity.get(entity, {}).values()
        private = rule.visibility is Visibility.PRIVATE
        wildcard = self._wildcard.get(entity)
        if not private:
            values = tuple(scope_values)
            if len(values) == 1 and not wildcard:
                # The common case (one section, no ADMIN watching all): the index itself.
                return self._by_section.get((entity, values[0]), {}).values()
            scope_values = values
        chosen: dict[int, Session] = dict(wildcard or {})
        for value in scope_values:
            for session in self._by_section.get((entity, value), {}).values():
                if not private or session.principal.audience != "user":
                    chosen[session.id] = session
        if private:
            for user_id in user_ids:
                chosen.update(self._by_user.get((entity, user_id), {}))
        return chosen.values()

    def entitled(
        self, session: Session, spec: EntitySpec, scope_values: Sequence[str], user_ids: Sequence[str]
    ) -> bool:
        """True when :meth:`recipients` of such an event would include ``session`` (the same
        rule for one socket: a resume replays exactly what live delivery would have sent)."""
        if session.entity is not spec and session.entity.name != spec.name:
            return False
        rule = spec.delivery
        if rule.visibility is Visibility.PUBLIC or session.is_wildcard:
            return True
        private = rule.visibility is Visibility.PRIVATE
        if session.section in scope_values and (not private or session.principal.audience != "user"):
            return True
        return private and session.principal.user_id in user_ids

    def publish(
        self,
        message: Message,
        recipients: Iterable[Session],
        *,
        any_topic: bool = False,
        v2: Callable[[], bytes] | None = None,
    ) -> int:
        """Send ``message`` to every recipient subscribed to its topic (to every recipient
        with ``any_topic``); returns the count. ``v2`` gives the frame protocol v2 sockets
        receive instead (the message with its cursor), built on the first such recipient."""
        topic = message.topic
        frame = frame2 = b""
        sent = 0
        for session in recipients:
            if any_topic or topic in session.topics:
                if v2 is not None and session.v2:
                    if not frame2:
                        frame2 = v2()
                    session.connection.send_frame(frame2)
                    sent += 1
                    continue
                if not frame:
                    # Encoded once, on the first recipient: no recipient, no encoding.
                    frame = self._framer(encode(message))
                session.connection.send_frame(frame)
                sent += 1
        if sent:
            self._metrics.delivered(message.entity, sent)
        return sent
