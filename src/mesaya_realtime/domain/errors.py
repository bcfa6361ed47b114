"""The gateway's exceptions: one small hierarchy whose messages are wire strings."""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AuthError",
    "CommandError",
    "GatewayError",
    "InvalidPayload",
    "OwnershipUnavailable",
    "Refused",
    "SnapshotDecodeError",
    "SnapshotError",
    "SnapshotForbidden",
    "SnapshotNotFound",
    "SnapshotRequestFailed",
    "SnapshotUnexpectedStatus",
    "SnapshotUnsupported",
    "UnsupportedAction",
]


class Refused(Exception):
    """A refused HTTP request (an upgrade, a push): its status and the ``{"message": ...}``
    text (docs/WEBSOCKET_ENDPOINTS.md)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GatewayError(Exception):
    """Base of every error the gateway reports; ``reason`` is the text a client sees."""

    reason: str = "internal error"

    def __init__(self, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(self.reason)


class AuthError(GatewayError):
    """A token that is missing, malformed, expired or wrongly signed."""

    reason = "invalid token"


class CommandError(GatewayError):
    """A client command that cannot be carried out."""


class InvalidPayload(CommandError):
    reason = "invalid payload"


class UnsupportedAction(CommandError):
    reason = "unsupported action"


class SnapshotError(CommandError):
    """The REST upstream could not give a snapshot."""


class SnapshotForbidden(SnapshotError):
    reason = "section snapshot forbidden"


class SnapshotNotFound(SnapshotError):
    reason = "section snapshot not found"


class SnapshotUnsupported(SnapshotError):
    reason = "section snapshot entity unsupported"


class SnapshotUnexpectedStatus(SnapshotError):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"unexpected snapshot response {status}")


class SnapshotRequestFailed(SnapshotError):
    """No answer from the REST API. The reason keeps Go's prefix (a client may match it) but
    says only ``upstream timeout`` or ``upstream unavailable``: never a host or an exception's
    text (those are logged, docs/COMPATIBILITY.md "Errors sent to clients")."""

    TIMEOUT = "upstream timeout"
    UNAVAILABLE = "upstream unavailable"

    def __init__(self, cause: str) -> None:
        super().__init__(f"snapshot request failed: {cause}")
        self.timed_out = cause == self.TIMEOUT


class SnapshotDecodeError(SnapshotError):
    def __init__(self, cause: str) -> None:
        super().__init__(f"decode snapshot: {cause}")


class AccessDenied(CommandError):
    """The principal may not see this section (an OWNER who does not own the restaurant)."""

    reason = "forbidden"


class OwnershipUnavailable(CommandError):
    """The REST API could not say which restaurants an owner owns; access fails closed."""

    reason = "ownership check unavailable"
