"""Domain events from the platform's Kafka topics, decoded (reference §8.3-8.4, as intended).

The backend publishes one topic per aggregate with ``event_type`` in the payload::

    {"event_type": "updated", "entity_id": "t-1", "timestamp": "...", "data": {...},
     "metadata": {"user_id": "u-1"}}

:func:`decode_event` turns such a record into a :class:`DomainEvent` of a catalogue entity,
or raises :class:`EventDecodeError` with a short reason (the record is then counted and
skipped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mesaya_realtime.domain.catalogue import Catalogue, EntitySpec
from mesaya_realtime.domain.messages import Message, now_timestamp, parse_timestamp, stringify

__all__ = ["MAX_EVENT_BYTES", "DomainEvent", "EventDecodeError", "decode_event", "event_values"]

_MAX_ID = 256
_MAX_ACTION = 64
#: Records larger than this are skipped ("too large"): a frame this big would also be more
#: than a quarter of a socket's default send buffer (``WS_SEND_BUFFER_BYTES``, 1 MiB), and
#: real backend DTOs are a few KB.
MAX_EVENT_BYTES = 512 * 1024
#: The bytes a JSON text can start with. Anything else is "not json" without asking the
#: parser, whose error objects cost more than the check (a garbage burst is mostly such).
_JSON_STARTS = frozenset(b'{["-0123456789tfn \t\r\n')


class EventDecodeError(Exception):
    """A record that is not a usable event; ``reason`` labels the skip counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class DomainEvent:
    """A decoded event (not frozen: built once per record on the hot path, never changed)."""

    entity: EntitySpec
    action: str
    resource_id: str
    data: Any
    metadata: Mapping[str, str]
    timestamp: str
    #: The values of the entity's delivery-rule paths, read once at decoding.
    scope: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    #: Where the event is in the log, set by the ingest when protocol v2 sockets may need it
    #: (application/usecases/resume.py ``JournalEntry``); None otherwise.
    position: Any = None

    @property
    def topic(self) -> str:
        return f"{self.entity.name}.{self.action}"

    def message(self) -> Message:
        """The message every socket entitled to this event receives (reference §8.4)."""
        return Message(
            topic=self.topic,
            entity=self.entity.name,
            action=self.action,
            resource_id=self.resource_id,
            data=self.data,
            metadata=self.metadata or None,
            timestamp=self.timestamp,
        )


def _text(payload: Mapping[str, Any], key: str, limit: int, *, numbers: bool = False) -> str:
    """The trimmed string at ``key`` ("" when absent or null); ``numbers`` also accepts integers
    (an id sent as a number). Any other type is not an event."""
    value = payload.get(key)
    if value is None:
        return ""
    if type(value) is str:
        text = value.strip()
        if len(text) > limit:
            raise EventDecodeError(f"{key} too long")
        return text
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int)
        or (isinstance(value, int) and not numbers)
    ):
        raise EventDecodeError(f"{key} is not a string")
    text = str(value).strip()
    if len(text) > limit:
        raise EventDecodeError(f"{key} too long")
    return text


def decode_event(
    topic: str,
    value: bytes | str | None,
    catalogue: Catalogue,
    topic_entities: Mapping[str, str] | None = None,
    *,
    max_bytes: int = MAX_EVENT_BYTES,
) -> DomainEvent:
    """Decode one Kafka record value of ``topic``.

    Raises :class:`EventDecodeError` (and nothing else) for any record that is not a usable
    event, so one bad record can never stop the records after it.

    >>> from mesaya_realtime.domain.catalogue import CATALOGUE
    >>> event = decode_event("mesa-ya.menus.events",
    ...     b'{"event_type":"created","entity_id":"d1","entity_subtype":"dish","data":{}}',
    ...     CATALOGUE)
    >>> event.topic, event.resource_id
    ('dishes.created', 'd1')
    """
    if value is None:
        raise EventDecodeError("empty record")
    if len(value) > max_bytes:
        raise EventDecodeError("too large")
    first = value[0] if isinstance(value, bytes) and value else None
    if first is not None and first not in _JSON_STARTS:
        raise EventDecodeError("not json")
    try:
        return _decode(topic, value, catalogue, topic_entities)
    except EventDecodeError:
        raise
    except Exception:  # a record must never break the batch it came in
        raise EventDecodeError("invalid event") from None


def _decode(
    topic: str,
    value: bytes | str,
    catalogue: Catalogue,
    topic_entities: Mapping[str, str] | None,
) -> DomainEvent:
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise EventDecodeError("not json") from None
    if not isinstance(payload, dict):
        raise EventDecodeError("not an object")
    action = _text(payload, "event_type", _MAX_ACTION) or _text(payload, "action", _MAX_ACTION)
    if not action:
        raise EventDecodeError("no event_type")
    action = action.lower()
    subtype = _text(payload, "entity_subtype", _MAX_ACTION)
    spec = catalogue.entity_for_event(topic, subtype, topic_entities)
    if spec is None:
        raise EventDecodeError("unknown subtype" if subtype else "unknown entity")
    if not subtype:
        spec = _legacy_entity(topic, payload, spec, catalogue, topic_entities)
    resource_id = _text(payload, "entity_id", _MAX_ID, numbers=True) or _text(
        payload, "resourceId", _MAX_ID, numbers=True
    )
    raw_metadata = payload.get("metadata")
    if raw_metadata is not None and not isinstance(raw_metadata, dict):
        raise EventDecodeError("metadata is not an object")
    metadata = {str(key): stringify(item) for key, item in (raw_metadata or {}).items() if item is not None}
    data = payload.get("data")
    rule = spec.delivery
    return DomainEvent(
        entity=spec,
        action=action,
        resource_id=resource_id,
        data=data,
        metadata=metadata,
        timestamp=parse_timestamp(payload.get("timestamp")) or now_timestamp(),
        scope=_values(data, metadata, rule.scope_paths) if rule.scope_paths else (),
        users=_values(data, metadata, rule.user_paths) if rule.user_paths else (),
    )


def _legacy_entity(
    topic: str,
    payload: Mapping[str, Any],
    spec: EntitySpec,
    catalogue: Catalogue,
    topic_entities: Mapping[str, str] | None,
) -> EntitySpec:
    """The entity a legacy ``entity`` field names, when no ``entity_subtype`` is given.

    The topic decides the aggregate: the field may pick an entity that shares the topic
    (``"entity":"dish"`` on the menus topic), never another aggregate's. A record naming a
    foreign catalogue entity (``"entity":"restaurants"`` on the payments topic) is skipped as
    ``foreign entity``; a name the catalogue does not know leaves the topic's entity.
    """
    legacy = payload.get("entity")
    if not isinstance(legacy, str) or not legacy.strip():
        return spec
    named = catalogue.named(legacy)
    if named is None or named is spec:
        return spec
    within = catalogue.entity_for_event(topic, named.name, topic_entities)
    if within is None:
        raise EventDecodeError("foreign entity")
    return within


_SPLIT_PATHS: dict[str, tuple[str, str]] = {}


def _values(data: Any, metadata: Mapping[str, str], paths: tuple[str, ...]) -> tuple[str, ...]:
    values: list[str] = []
    for path in paths:
        split = _SPLIT_PATHS.get(path)
        if split is None:
            root, _, key = path.partition(".")
            split = _SPLIT_PATHS[path] = (root, key)
        root, key = split
        source: Any = data if root == "data" else metadata if root == "metadata" else None
        if not key or not isinstance(source, Mapping):
            continue
        value = source.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value and value not in values:
            values.append(value)
    return tuple(values)


def event_values(event: DomainEvent, paths: tuple[str, ...]) -> list[str]:
    """The non-empty string values at dotted ``paths`` (``data.sectionId``,
    ``metadata.restaurant_id``) of an event, without duplicates."""
    return list(_values(event.data, event.metadata, paths))
