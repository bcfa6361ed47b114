"""Port: verifying a JWT."""

from __future__ import annotations

from typing import Protocol

from mesaya_realtime.domain.identity import Principal

__all__ = ["TokenVerifier"]


class TokenVerifier(Protocol):
    """Turns a token into a :class:`Principal` or raises :class:`AuthError`."""

    def verify(self, token: str) -> Principal: ...
