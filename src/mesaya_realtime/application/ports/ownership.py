"""Port: which restaurants a principal owns (the tenant boundary, docs/ARCHITECTURE.md)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["OwnershipSource"]


class OwnershipSource(Protocol):
    """Asks the platform which restaurants the bearer of ``token`` owns.

    Returns the restaurant ids (an empty set when the platform says the token owns nothing
    or may not ask). Raises :class:`~mesaya_realtime.domain.errors.OwnershipUnavailable`
    when no answer could be had (upstream down, timeout, 5xx, an unreadable body).
    """

    async def owned_restaurants(self, token: str) -> frozenset[str]: ...
