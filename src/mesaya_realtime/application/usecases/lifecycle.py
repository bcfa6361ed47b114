"""A socket's life in the application: open (session, hub, greeting, features), close.

The interface adapts its framework to this (interface/http.py builds the connection, runs the
read loop and calls :meth:`SocketLifecycle.close` however the socket ends); everything a
socket kind does on open and close is here, with the features' hooks in their list order
(usecases/features.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from mesaya_realtime.application.ports.connections import Connection
from mesaya_realtime.application.usecases.features import Feature
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.resume import ResumeService
from mesaya_realtime.application.usecases.sessions import V1, Hello, Session, base_topics, connected_message
from mesaya_realtime.domain.catalogue import EntitySpec
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.messages import Message

__all__ = ["SocketLifecycle"]

log = logging.getLogger(__name__)


class SocketLifecycle:
    """Opens and closes the sockets of entity sessions."""

    def __init__(
        self,
        hub: Hub,
        features: Sequence[Feature],
        allowed_actions: Iterable[str],
        resumes: ResumeService | None = None,
    ) -> None:
        self.hub = hub
        self.features = tuple(features)
        self.allowed_actions = tuple(allowed_actions)
        #: Cursors and resume of protocol v2 sockets (usecases/resume.py).
        self.resumes = resumes
        #: An entity's starting topics, computed once and shared by all its sockets.
        self._topics: dict[str, tuple[list[str], frozenset[str]]] = {}
        #: Sockets out of the hub whose leave hooks are still running.
        self._closing = 0

    async def settled(self, within: float, also: Callable[[], int] = lambda: 0) -> bool:
        """Wait (at most ``within`` s) until every socket has closed and its hooks have run,
        and ``also`` (sockets not yet in the hub) says none: a stopping node's last step
        before its features stop. True when all have."""
        deadline = time.monotonic() + within
        while len(self.hub) or self._closing or also():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def _starting_topics(self, spec: EntitySpec) -> tuple[list[str], frozenset[str]]:
        found = self._topics.get(spec.name)
        if found is None:
            topics = base_topics(spec.name, (*self.allowed_actions, *spec.socket_actions))
            found = self._topics[spec.name] = (topics, frozenset(topics))
        return found

    def open(
        self,
        connection: Connection,
        principal: Principal,
        spec: EntitySpec,
        section: str,
        *,
        starting: tuple[list[str], frozenset[str]] | None = None,
        greeting: Sequence[Message] | None = None,
        owned: frozenset[str] = frozenset(),
        state: object = None,
        hello: Hello = V1,
    ) -> Session:
        """The session of a socket just upgraded: in the hub, greeted (``system.connected``,
        or the socket kind's own ``greeting``), the features told. ``starting``: the socket
        kind's own starting topics (an entity socket's are derived from its entity);
        ``hello``: its protocol (docs/WEBSOCKET_ENDPOINTS.md "Protocol v2")."""
        topics, topic_set = starting or self._starting_topics(spec)
        session = Session(
            connection=connection,
            principal=principal,
            entity=spec,
            section=section,
            topics=topic_set,
            owned=owned,
            state=state,
            v2=hello.v2,
            resumed=bool(hello.since)
            and self.resumes is not None
            and self.resumes.valid(spec.name, hello.since),
        )
        self.hub.add(session)
        try:
            if greeting is None or hello.v2:
                # Protocol v2 greets every socket kind the same way first.
                connected = connected_message(session, topics, hello)
                if hello.v2 and self.resumes is not None and not hello.since:
                    # With a resume, the replay's cursors and system.resumed's say where the
                    # client is; a newer one here would skip the replay if the socket dropped.
                    connected.cursor = self.resumes.positions.cursor(spec.name)
                session.send(connected)
            if hello.since and self.resumes is not None:
                # In the same turn as joining the hub: no live event comes between.
                self.resumes.resume(session, hello.since)
            for message in greeting or ():
                session.send(message)
            for feature in self.features:
                for message in feature.join(session):
                    session.send(message)
        except BaseException:
            self.hub.remove(session)
            raise
        return session

    async def close(self, session: Session) -> None:
        """The socket ended: out of the hub first (it receives nothing more), then the hooks."""
        self.hub.remove(session)
        self._closing += 1
        try:
            for feature in self.features:
                try:
                    await feature.leave(session)
                except Exception:
                    log.exception("leave hook failed", extra={"feature": type(feature).__name__})
        finally:
            self._closing -= 1
