"""Cursors: a position in the Kafka log that every node agrees on, as an opaque string.

A cursor stands for the gateway's position in every partition of a socket's topics: for each
partition, the offset of the next record not yet delivered. Kafka offsets are the same on
every node, so a cursor issued by one node resumes on any other (docs/WEBSOCKET_ENDPOINTS.md
"Cursors and resume"). It also carries when it was issued, so that a resume too old to be
served is known at once.

The text is ``1.<issued, base 36 seconds>.<topic>:<partition>:<offset base 36>;...`` where
``<topic>`` is a short hash of the topic name (nodes need not list their topics in the same
order). Clients must treat it as opaque::

    >>> topic = "mesa-ya.tables.events"
    >>> text = encode_cursor(1_700_000_000, {(topic, 0): 41, (topic, 2): 7})
    >>> decoded = decode_cursor(text, [topic])
    >>> decoded.issued, sorted(decoded.positions.items())
    (1700000000, [(('mesa-ya.tables.events', 0), 41), (('mesa-ya.tables.events', 2), 7)])
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Cursor", "CursorError", "decode_cursor", "encode_cursor", "topic_tag"]

_VERSION = "1"
#: The longest cursor accepted (a socket's topics have a few dozen partitions at most).
MAX_CURSOR = 4096

Key = tuple[str, int]


class CursorError(ValueError):
    """Not a cursor of these topics."""


def _base36(number: int) -> str:
    if number < 0:
        raise ValueError(number)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            return text


_TAGS: dict[str, str] = {}


def topic_tag(topic: str) -> str:
    """The topic's short name in a cursor (a hash of its name, the same on every node)."""
    tag = _TAGS.get(topic)
    if tag is None:
        tag = _TAGS[topic] = _base36(zlib.crc32(topic.encode()))
    return tag


def encode_cursor(issued: int, positions: Mapping[Key, int] | Iterable[tuple[Key, int]]) -> str:
    items = positions.items() if isinstance(positions, Mapping) else positions
    parts = ";".join(
        f"{topic_tag(topic)}:{partition}:{_base36(offset)}" for (topic, partition), offset in items
    )
    return f"{_VERSION}.{_base36(max(0, issued))}.{parts}"


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded cursor: when it was issued (Unix seconds) and the next offset per partition."""

    issued: int
    positions: Mapping[Key, int]


def decode_cursor(text: str, topics: Iterable[str]) -> Cursor:
    """The cursor ``text`` over ``topics``; :class:`CursorError` when it is malformed or names
    a topic that is not one of them."""
    if not text or len(text) > MAX_CURSOR:
        raise CursorError("malformed cursor")
    tags = {topic_tag(topic): topic for topic in topics}
    try:
        version, issued, parts = text.split(".", 2)
        if version != _VERSION:
            raise CursorError("unknown cursor version")
        positions: dict[Key, int] = {}
        for part in parts.split(";") if parts else ():
            tag, partition, offset = part.split(":")
            topic = tags.get(tag)
            if topic is None:
                raise CursorError("cursor of other topics")
            key, value = (topic, int(partition)), int(offset, 36)
            if key in positions or key[1] < 0 or value < 0:
                raise CursorError("malformed cursor")
            positions[key] = value
        return Cursor(int(issued, 36), positions)
    except (ValueError, TypeError) as error:
        if isinstance(error, CursorError):
            raise
        raise CursorError("malformed cursor") from None
