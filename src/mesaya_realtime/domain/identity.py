"""Who is on the other end of a socket, as their JWT says."""

from __future__ import annotations

from dataclasses import dataclass

from mesaya_realtime.domain.catalogue import ADMIN, OWNER

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified claims of a token.

    ``session_id`` is ``sid``, else ``jti``, else ``"<sub>:<exp>"``, else ``sub`` (reference §3.1).
    ``roles`` is None when the claim is absent (``system.connected`` then shows ``null``).
    """

    user_id: str
    roles: tuple[str, ...] | None
    session_id: str
    token: str
    expires_at: float | None = None

    @property
    def upper_roles(self) -> tuple[str, ...]:
        return tuple(role.upper() for role in self.roles or ())

    @property
    def audience(self) -> str:
        """``admin`` if any role is ADMIN, else ``owner`` if any is OWNER, else ``user``."""
        roles = self.upper_roles
        if ADMIN in roles:
            return "admin"
        if OWNER in roles:
            return "owner"
        return "user"

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.upper_roles

    def valid_at(self, now: float, margin: float = 0.0) -> bool:
        """True when the token has not expired at ``now`` (plus ``margin`` seconds)."""
        return self.expires_at is None or self.expires_at > now + margin
