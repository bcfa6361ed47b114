"""Connect: the checks before a WebSocket upgrade, in the reference's order (§2.2)."""

from __future__ import annotations

from dataclasses import dataclass

from mesaya_realtime.application.ports.auth import TokenVerifier
from mesaya_realtime.application.usecases.ownership import OwnershipGuard
from mesaya_realtime.application.usecases.sessions import WILDCARD_SECTION
from mesaya_realtime.domain.catalogue import Catalogue, EntitySpec
from mesaya_realtime.domain.errors import AccessDenied, AuthError, OwnershipUnavailable, Refused
from mesaya_realtime.domain.identity import Principal

__all__ = ["ConnectUseCase", "HandshakeRejected"]


class HandshakeRejected(Refused):
    """A refused upgrade: an HTTP status and the ``{"message": ...}`` text."""


@dataclass(frozen=True, slots=True)
class ConnectUseCase:
    catalogue: Catalogue
    verifier: TokenVerifier
    default_entity: str
    #: The tenant boundary (docs/ARCHITECTURE.md "Who may see what"); None checks no ownership.
    guard: OwnershipGuard | None = None

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
            raise HandshakeRejected(400, "missing token", close_code=4401)
        try:
            principal = self.verifier.verify(token)
        except AuthError as error:
            raise HandshakeRejected(401, "invalid token") from error
        if not spec.allows(principal.upper_roles):
            raise HandshakeRejected(403, "forbidden")
        if section == WILDCARD_SECTION and not principal.is_admin:
            raise HandshakeRejected(403, "forbidden")
        return spec, principal

    def needs_admission(self, spec: EntitySpec, principal: Principal, section: str) -> bool:
        """True when :meth:`admit` has to ask the REST API (an OWNER on a private entity)."""
        return self.guard is not None and self.guard.applies(spec, principal, section.strip())

    async def admit(self, spec: EntitySpec, principal: Principal, section: str) -> None:
        """The ownership check after :meth:`authorize`: 403 ``forbidden`` when the owner
        does not own the section's restaurant, 503 when that cannot be known (fail closed)."""
        if self.guard is None:
            return
        try:
            await self.guard.admit(spec, principal, section.strip())
        except AccessDenied:
            raise HandshakeRejected(403, "forbidden") from None
        except OwnershipUnavailable as error:
            raise HandshakeRejected(503, error.reason) from None
