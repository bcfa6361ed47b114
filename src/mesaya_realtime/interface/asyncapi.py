"""The machine-readable description of the gateway's sockets, from the entity catalogue.

:func:`document` is an AsyncAPI 3.0 document of every route, message and command (served at
``GET /asyncapi.json``, written to ``docs/asyncapi.yaml``); :func:`typescript` is the TypeScript
client's types of entities, topics, actions and error codes
(``clients/typescript/src/generated.ts``). ``mesaya-realtime asyncapi`` writes both; the tests
fail when either is stale (docs/WEBSOCKET_ENDPOINTS.md is the prose of the same protocol).
"""

from __future__ import annotations

from typing import Any

from mesaya_realtime import __version__
from mesaya_realtime.domain.catalogue import CATALOGUE, Catalogue, EntitySpec

__all__ = ["CLOSE_CODES", "ERROR_CODES", "document", "typescript"]

#: Every ``data.code`` a protocol v2 error may carry (domain/errors.py and the selection's).
ERROR_CODES = (
    "invalid_payload",
    "unknown_action",
    "topic_not_allowed",
    "too_many_topics",
    "invalid_token",
    "forbidden",
    "not_found",
    "unsupported",
    "upstream_error",
    "upstream_timeout",
    "upstream_unavailable",
    "selection_refused",
    "taken",
    "not_held",
    "too_many_holds",
    "needs_section",
    "rate_limited",
    "unavailable",
    "timeout",
    "refused",
    "internal",
)

#: Protocol v2's refusals as close frames (docs/WEBSOCKET_ENDPOINTS.md "Refusals are close frames").
CLOSE_CODES = {
    "badRequest": 4400,
    "unauthorized": 4401,
    "forbidden": 4403,
    "notFound": 4404,
    "authenticationTimeout": 4408,
    "tooManyConnections": 4429,
    "unavailable": 4503,
}

_SYSTEM_TOPICS = ("system.connected", "system.pong", "system.authenticated", "system.ack", "system.resumed")


def _event_actions(allowed: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(action.strip().lower() for action in allowed if action.strip()))


def _topics(spec: EntitySpec, allowed: tuple[str, ...]) -> list[str]:
    actions = ("list", "detail", "error", "snapshot", *_event_actions(allowed), *spec.socket_actions)
    return [f"{spec.name}.{action}" for action in dict.fromkeys(actions)]


def _commands(spec: EntitySpec) -> list[str]:
    actions = [*spec.list_actions, *spec.detail_actions, "ping", "subscribe", "unsubscribe", "authenticate"]
    if spec.name == "tables":
        actions += ["select_table", "release_table"]
    return list(dict.fromkeys(actions))


def _message_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["topic", "entity", "action", "timestamp"],
        "properties": {
            "topic": {"type": "string", "description": "`<entity>.<action>`"},
            "entity": {"type": "string"},
            "action": {"type": "string"},
            "resourceId": {"type": "string"},
            "data": {"description": "the event's or the reply's payload"},
            "metadata": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "string values; `requestId` echoes the command's",
            },
            "timestamp": {"type": "string", "format": "date-time"},
            "cursor": {
                "type": "string",
                "description": "protocol v2: a live event's log position, or a reply's watermark (opaque)",
            },
        },
    }


def _command_schema(actions: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["action"],
        "properties": {
            "action": {"type": "string", "enum": actions},
            "topic": {"type": "string", "description": "for subscribe / unsubscribe"},
            "payload": {
                "description": (
                    "list: the list payload; detail: {id}; tables: {tableId}; authenticate: {token, since?}"
                )
            },
            "requestId": {"type": "string", "minLength": 1, "maxLength": 64},
        },
    }


def document(allowed: tuple[str, ...], catalogue: Catalogue = CATALOGUE) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the gateway's routes, messages and commands, for these
    event actions (``WS_ALLOWED_ACTIONS``)."""
    specs = sorted(catalogue.by_name.values(), key=lambda spec: spec.name)
    names = [spec.name for spec in specs]
    commands = sorted({action for spec in specs for action in _commands(spec)})
    messages: dict[str, Any] = {
        "command": {
            "name": "command",
            "title": "A command",
            "summary": "{action, topic?, payload?, requestId?}; every command gets exactly one reply in v2",
            "payload": {"$ref": "#/components/schemas/Command"},
        },
        "system": {
            "name": "system",
            "title": "A system message",
            "summary": ", ".join(_SYSTEM_TOPICS),
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/Message"},
                    {"properties": {"topic": {"type": "string", "enum": list(_SYSTEM_TOPICS)}}},
                ]
            },
        },
    }
    for spec in specs:
        key = spec.name.replace("-", "_")
        messages[key] = {
            "name": spec.name,
            "title": f"{spec.name} messages",
            "summary": f"events, replies and errors of {spec.name} sockets",
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/Message"},
                    {"properties": {"topic": {"type": "string", "enum": _topics(spec, allowed)}}},
                ]
            },
        }
    every = {key: {"$ref": f"#/components/messages/{key}"} for key in messages}
    entity_keys = [key for key in messages if key not in ("command", "system")]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "mesaya-realtime",
            "version": __version__,
            "description": (
                "The realtime WebSocket gateway of the mesa-ya platform. Protocol v1 is the Go "
                "service's; protocol v2 (subprotocol `mesaya.v2`) adds close-frame refusals, the "
                "token in the first frame, one reply per command, error codes, cursors and resume "
                "(docs/WEBSOCKET_ENDPOINTS.md)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "localhost:8080", "protocol": "ws", "description": "`make demo`"},
        },
        "channels": {
            "entitySocket": {
                "address": "/ws/{entity}/{section}",
                "title": "An entity socket",
                "description": "The token in the path (`/{token}`), `?token=`, the header, or (v2) "
                "the first frame.",
                "parameters": {
                    "entity": {"enum": names, "description": "the catalogue's entity"},
                    "section": {"description": "the section or restaurant id; `*` (ADMIN) for all"},
                },
                "messages": every,
            },
            "notifications": {
                "address": "/ws/notifications",
                "title": "The notifications bell",
                "messages": {key: every[key] for key in ("command", "system", *entity_keys)},
            },
            "analytics": {
                "address": "/ws/analytics/{scope}/{entity}",
                "title": "An analytics dashboard socket",
                "parameters": {
                    "scope": {"enum": ["admin", "restaurant", "public"]},
                    "entity": {
                        "description": 'the analytics key\'s entity (docs/WEBSOCKET_ENDPOINTS.md "Analytics")'
                    },
                },
                "messages": {"command": every["command"], "system": every["system"]},
            },
        },
        "operations": {
            "sendCommand": {
                "action": "send",
                "channel": {"$ref": "#/channels/entitySocket"},
                "messages": [{"$ref": "#/channels/entitySocket/messages/command"}],
            },
            "receiveMessages": {
                "action": "receive",
                "channel": {"$ref": "#/channels/entitySocket"},
                "messages": [
                    {"$ref": f"#/channels/entitySocket/messages/{key}"} for key in ("system", *entity_keys)
                ],
            },
            "receiveNotifications": {
                "action": "receive",
                "channel": {"$ref": "#/channels/notifications"},
                "messages": [
                    {"$ref": f"#/channels/notifications/messages/{key}"} for key in ("system", *entity_keys)
                ],
            },
            "sendAnalyticsCommand": {
                "action": "send",
                "channel": {"$ref": "#/channels/analytics"},
                "messages": [{"$ref": "#/channels/analytics/messages/command"}],
            },
        },
        "components": {
            "schemas": {
                "Message": _message_schema(),
                "Command": _command_schema(commands),
                "ErrorData": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "code": {"type": "string", "enum": list(ERROR_CODES), "description": "protocol v2"},
                        "field": {
                            "type": "string",
                            "description": "protocol v2: the part of the command at fault",
                        },
                    },
                },
            },
            "messages": messages,
        },
    }


def _ts_union(values: list[str] | tuple[str, ...]) -> str:
    return " | ".join(f'"{value}"' for value in values) or "never"


def typescript(allowed: tuple[str, ...], catalogue: Catalogue = CATALOGUE) -> str:
    """The client's generated types (clients/typescript/src/generated.ts)."""
    specs = sorted(catalogue.by_name.values(), key=lambda spec: spec.name)
    lines = [
        "// Generated by `mesaya-realtime asyncapi` from the gateway's entity catalogue: do not edit.",
        "",
        "export const ENTITIES = [" + ", ".join(f'"{spec.name}"' for spec in specs) + "] as const;",
        "export type Entity = (typeof ENTITIES)[number];",
        "",
        f"export type EventAction = {_ts_union(_event_actions(allowed))};",
        f"export type ErrorCode = {_ts_union(ERROR_CODES)};",
        f"export type SystemTopic = {_ts_union(_SYSTEM_TOPICS)};",
        "",
        "/** Each entity's topics and commands. */",
        "export interface EntityProtocol {",
    ]
    for spec in specs:
        lines += [
            f'  "{spec.name}": {{',
            f"    topic: {_ts_union(_topics(spec, allowed))};",
            f"    command: {_ts_union(_commands(spec))};",
            "  };",
        ]
    lines += [
        "}",
        "",
        'export type Topic<E extends Entity = Entity> = EntityProtocol[E]["topic"];',
        'export type Command<E extends Entity = Entity> = EntityProtocol[E]["command"];',
        "",
        "export const CLOSE_CODES = {",
        *(f"  {name}: {code}," for name, code in CLOSE_CODES.items()),
        "} as const;",
        "",
    ]
    return "\n".join(lines)
