"""Connect: the checks before a WebSocket upgrade, in the reference's order (§2.2)."""

from __future__ import annotations

from dataclasses import dataclass

from mesaya_realtime.application.ports.auth import TokenVerifier
from mesaya_realtime.application.usecases.sessions import WILDCARD_SECTION
from mesaya_realtime.domain.catalogue import Catalogue, EntitySpec
from mesaya_realtime.domain.errors import AuthError
from mesaya_realtime.domain.identity import Principal

__all__ = ["ConnectUseCase", "HandshakeRejected"]


class HandshakeRejected(Exception):
    """A refused upgrade: an HTTP status and the ``{"message": ...}`` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ConnectUseCase:
    catalogue: Catalogue
    verifier: TokenVerifier
    default_entity: str

    def authorize(self, raw_entity: str, section: str, token: str) -> tuple[EntitySpec, Principal]:
        """Resolve the entity, check section and token, verify, apply the role policy.

        Raises :class:`HandshakeRejected` with the reference's status and message.
        """
        name = self.catalogue.normalize(raw_entity) or self.catalogue.normalize(self.default_entity)
        if not name:
            raise HandshakeRejected(400, "missing entity")
        spec = self.catalogue.by_name.get(name)
        if spec is None:
            raise HandshakeRejected(404, f"entity {name} is not integrated")
        section = section.strip()
        if not section:
            raise HandshakeRejected(400, "missing section")
        token = token.strip()
        if not token:
            raise HandshakeRejected(400, "missing token")
        try:
            principal = self.verifier.verify(token)
        except AuthError as error:
            raise HandshakeRejected(401, "invalid token") from error
        if not spec.allows(principal.upper_roles):
            raise HandshakeRejected(403, "forbidden")
        if section == WILDCARD_SECTION and not principal.is_admin:
            raise HandshakeRejected(403, "forbidden")
        return spec, principal
