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
    text (docs/WEBSOCKET_ENDPOINTS.md).

    A protocol v2 socket is refused after its upgrade instead, with a close frame whose code
    is ``close_code`` (4000 + the status unless given) and whose reason is the same text.
    """

    def __init__(self, status: int, message: str, close_code: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close_code = close_code or 4000 + status


class GatewayError(Exception):
    """Base of every error the gateway reports; ``reason`` is the text a client sees and
    ``code`` the stable name protocol v2 sends with it (``data.code``); ``field`` is the part
    of the command at fault, when one is (``data.field``)."""

    reason: str = "internal error"
    code: str = "internal"
    field: str = ""

    def __init__(self, reason: str | None = None, *, code: str = "", field: str = "") -> None:
        if reason is not None:
            self.reason = reason
        if code:
            self.code = code
        if field:
            self.field = field
        super().__init__(self.reason)


class AuthError(GatewayError):
    """A token that is missing, malformed, expired or wrongly signed."""

    reason = "invalid token"
    code = "invalid_token"


class CommandError(GatewayError):
    """A client command that cannot be carried out."""

    code = "refused"


class InvalidPayload(CommandError):
    reason = "invalid payload"
    code = "invalid_payload"


class UnsupportedAction(CommandError):
    reason = "unsupported action"
    code = "unknown_action"


class SnapshotError(CommandError):
    """The REST upstream could not give a snapshot."""

    code = "upstream_error"


class SnapshotForbidden(SnapshotError):
    reason = "section snapshot forbidden"
    code = "forbidden"


class SnapshotNotFound(SnapshotError):
    reason = "section snapshot not found"
    code = "not_found"


class SnapshotUnsupported(SnapshotError):
    reason = "section snapshot entity unsupported"
    code = "unsupported"


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
        self.timed_out = cause == self.TIMEOUT
        super().__init__(
            f"snapshot request failed: {cause}",
            code="upstream_timeout" if self.timed_out else "upstream_unavailable",
        )


class SnapshotDecodeError(SnapshotError):
    def __init__(self, cause: str) -> None:
        super().__init__(f"decode snapshot: {cause}")


class AccessDenied(CommandError):
    """The principal may not see this section (an OWNER who does not own the restaurant)."""

    reason = "forbidden"
    code = "forbidden"


class OwnershipUnavailable(CommandError):
    """The REST API could not say which restaurants an owner owns; access fails closed."""

    reason = "ownership check unavailable"
    code = "upstream_unavailable"
