"""The outgoing message (reference §5.1) and its one-time encoding.

Every message a socket receives is one JSON text frame with the keys ``topic``, ``entity``,
``action``, ``resourceId`` (omitted when empty), ``data`` (omitted when None), ``metadata``
(string values only, omitted when empty) and ``timestamp`` (RFC 3339, UTC, ``Z``)::

    >>> encode(Message("system.pong", "system", "pong", timestamp="2026-01-10T15:04:05Z"))
    b'{"topic":"system.pong","entity":"system","action":"pong","timestamp":"2026-01-10T15:04:05Z"}'
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = [
    "Message",
    "encode",
    "format_epoch",
    "format_timestamp",
    "now_timestamp",
    "parse_timestamp",
    "stringify",
    "topic_of",
]


_UTC_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z")


def _trim_fraction(naive_iso: str) -> str:
    head, _, fraction = naive_iso.partition(".")
    fraction = fraction.rstrip("0")
    return f"{head}.{fraction}Z" if fraction else f"{head}Z"


#: The range a timestamp can be printed in (years 1 to 9999); a JWT ``exp`` may lie beyond it.
_EPOCH_MIN = datetime.min.replace(tzinfo=UTC).timestamp()
_EPOCH_MAX = datetime.max.replace(tzinfo=UTC).timestamp()


def format_epoch(seconds: float) -> str:
    """:func:`format_timestamp` of a Unix time, total: clamped to years 1..9999.

    >>> format_epoch(0), format_epoch(1e18)
    ('1970-01-01T00:00:00Z', '9999-12-31T23:59:59.999999Z')
    """
    if not seconds < _EPOCH_MAX:  # also NaN
        return "9999-12-31T23:59:59.999999Z"
    seconds = max(seconds, _EPOCH_MIN)
    return format_timestamp(datetime.fromtimestamp(seconds, UTC))


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with ``Z`` and trailing fractional zeros trimmed, as Go prints it."""
    return _trim_fraction(moment.astimezone(UTC).replace(tzinfo=None).isoformat())


#: The whole second :func:`now_timestamp` printed last, and its text up to the seconds.
_SECOND: list[Any] = [-1, ""]


def now_timestamp() -> str:
    """Now, as :func:`format_timestamp` prints it; the date and time of day are formatted
    once per second (every greeting and pong carries a timestamp)."""
    now = time.time()
    second = int(now)
    cached = _SECOND
    if cached[0] != second:
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        cached[0] = second
    fraction = f"{int((now - second) * 1_000_000):06d}".rstrip("0")
    return f"{cached[1]}.{fraction}Z" if fraction else f"{cached[1]}Z"


def parse_timestamp(value: object) -> str | None:
    """Normalise an ISO 8601 timestamp from an event to :func:`format_timestamp`, or None.

    >>> parse_timestamp("2026-01-10T12:00:00.120Z"), parse_timestamp("2026-01-10T13:00:00+01:00")
    ('2026-01-10T12:00:00.12Z', '2026-01-10T12:00:00Z')
    """
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    if value[-1] == "Z" and (
        (len(value) == 24 and value[10] == "T" and value[19] == ".") or _UTC_Z.fullmatch(value)
    ):
        # The backend's own form (JavaScript's toISOString): already UTC, only validate.
        try:
            datetime.fromisoformat(value[:-1])
        except ValueError:
            return None
        return _trim_fraction(value[:-1])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00", 1))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return format_timestamp(moment)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 has no UTC value
        return None


def topic_of(entity: str, action: str) -> str:
    """``<entity>.<action>`` from trimmed parts; empty if either part is empty."""
    entity, action = entity.strip(), action.strip()
    return f"{entity}.{action}" if entity and action else ""


def stringify(value: object) -> str:
    """A metadata value as a string: strings stay, null is empty, the rest is JSON text."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode()


@dataclass(slots=True)
class Message:
    """One message to clients. Build it once, :func:`encode` it once, send the bytes."""

    topic: str
    entity: str
    action: str
    data: Any = None
    resource_id: str = ""
    metadata: Mapping[str, str] | None = None
    timestamp: str = field(default_factory=now_timestamp)
    #: Protocol v2 only: the log position of the message (domain/cursors.py); "" omits it.
    cursor: str = ""

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"topic": self.topic, "entity": self.entity, "action": self.action}
        if self.resource_id:
            body["resourceId"] = self.resource_id
        if self.data is not None:
            body["data"] = self.data
        if self.metadata:
            body["metadata"] = {key: self.metadata[key] for key in sorted(self.metadata)}
        body["timestamp"] = self.timestamp
        if self.cursor:
            body["cursor"] = self.cursor
        return body


def encode(message: Message) -> bytes:
    """The message's JSON bytes; metadata keys sorted as Go's encoder sorts map keys."""
    return orjson.dumps(message.as_dict())
