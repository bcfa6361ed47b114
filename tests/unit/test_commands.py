"""CommandService and Envelope with an in-memory fetcher: actions, replies and error reasons."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from mesaya_realtime.application.usecases.commands import CommandService, Envelope
from mesaya_realtime.application.usecases.features import ActionHandler, Feature
from mesaya_realtime.application.usecases.sessions import Session, base_topics
from mesaya_realtime.application.usecases.snapshot_cache import SnapshotCache
from mesaya_realtime.application.usecases.snapshots import SnapshotService
from mesaya_realtime.domain.catalogue import ALL_ROLES, CATALOGUE, EntitySpec
from mesaya_realtime.domain.errors import (
    InvalidPayload,
    SnapshotDecodeError,
    SnapshotError,
    SnapshotForbidden,
    SnapshotNotFound,
    SnapshotRequestFailed,
    SnapshotUnexpectedStatus,
)
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.messages import Message
from mesaya_realtime.domain.snapshots import SnapshotRequest


@dataclass
class FakeFetcher:
    requests: list[tuple[SnapshotRequest, str]] = field(default_factory=list)
    error: SnapshotError | None = None

    async def fetch(self, request: SnapshotRequest, token: str) -> Any:
        self.requests.append((request, token))
        if self.error is not None:
            raise self.error
        return {"path": request.path, "params": dict(request.params)}


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def send(self, payload: bytes) -> None:
        self.sent.append(payload)

    def send_frame(self, frame: bytes) -> None:
        self.sent.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def make_service(fetcher: FakeFetcher, **kwargs: Any) -> CommandService:
    cache = SnapshotCache(max_entries=100, ttl_seconds=60)
    return CommandService(SnapshotService(fetcher, cache), **kwargs)


def make_session(
    entity: str | EntitySpec = "tables", roles: tuple[str, ...] = ("USER",), section: str = "main-hall"
) -> Session:
    spec = entity if isinstance(entity, EntitySpec) else CATALOGUE.by_name[entity]
    principal = Principal("user-1", roles, "sid", "tok-1")
    return Session(FakeConnection(), principal, spec, section, set(base_topics(spec.name, ("created",))))


def env(action: str, payload: Any = None, topic: str = "") -> Envelope:
    return Envelope(action, topic, payload)


async def reply(service: CommandService, session: Session, envelope: Envelope) -> Message:
    message = await service.handle(session, envelope)
    assert message is not None
    return message


# Envelope ---------------------------------------------------------------------------------


def test_envelope_lowers_and_trims_action_and_trims_topic() -> None:
    envelope = Envelope.parse({"action": "  List_Tables ", "topic": " tables.x ", "payload": {"page": 2}})
    assert (envelope.action, envelope.topic, envelope.payload) == ("list_tables", "tables.x", {"page": 2})
    bare = Envelope.parse({"action": "ping"})
    assert (bare.topic, bare.payload) == ("", None)


@pytest.mark.parametrize(
    "frame",
    [
        [],
        "ping",
        5,
        None,
        {},
        {"action": 5},
        {"action": None},
        {"action": "x", "topic": 3},
        {"action": "a" * 129},
    ],
)
def test_envelope_refuses_wrong_shapes(frame: object) -> None:
    with pytest.raises(InvalidPayload):
        Envelope.parse(frame)


# list and detail ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", CATALOGUE.entities, ids=lambda s: s.name)
async def test_every_list_and_detail_alias_of_every_entity(spec: EntitySpec) -> None:
    fetcher = FakeFetcher()
    service = make_service(fetcher)
    session = make_session(spec, ("ADMIN",))
    for action in spec.list_actions:
        message = await reply(service, session, env(action, {"search": action}))
        assert (message.topic, message.action) == (f"{spec.name}.list", "list")
        assert message.data["params"]["q"] == action
    for index, action in enumerate(spec.detail_actions):
        message = await reply(service, session, env(action, {"id": f"id-{index}"}))
        assert (message.topic, message.resource_id) == (f"{spec.name}.detail", f"id-{index}")
        assert message.metadata is not None
        assert message.metadata[spec.detail_id_key] == f"id-{index}"
    assert len(fetcher.requests) == len(spec.list_actions) + len(spec.detail_actions)
    assert {token for _, token in fetcher.requests} == {"tok-1"}


async def test_list_reply_goes_through_the_plan_and_remembers_the_query() -> None:
    fetcher = FakeFetcher()
    session = make_session("reservations", ("OWNER",), section="rest-9")
    message = await reply(
        make_service(fetcher),
        session,
        env(
            "list_reservations", {"page": 2, "sortOrder": "desc", "filters": {"OwnerId": "o", "Status": "OK"}}
        ),
    )
    request, token = fetcher.requests[0]
    assert request.path == "/api/v1/reservations"
    assert dict(request.params) == {
        "page": "2",
        "limit": "20",
        "sortOrder": "DESC",
        "status": "OK",
        "restaurantId": "rest-9",
    }
    assert token == "tok-1"
    assert message.resource_id == "rest-9"
    assert message.metadata == {
        "limit": "20",
        "origin": "request",
        "ownerid": "o",
        "page": "2",
        "sectionId": "rest-9",
        "sortOrder": "DESC",
        "status": "OK",
    }
    assert session.list_query is not None
    assert session.list_query.page == 2


async def test_detail_reply_remembers_the_id() -> None:
    fetcher = FakeFetcher()
    session = make_session("tables")
    message = await reply(make_service(fetcher), session, env("get_table", {"id": "table 1/2"}))
    assert fetcher.requests[0][0].path == "/api/v1/tables/table%201%2F2"
    assert message.metadata == {"origin": "request", "sectionId": "main-hall", "tableId": "table 1/2"}
    assert session.detail_ids == {"table 1/2"}


async def test_a_warm_cache_answers_without_a_fetch() -> None:
    fetcher = FakeFetcher()
    service = make_service(fetcher)
    session = make_session("tables")
    await reply(service, session, env("list", {"page": 1}))
    await reply(service, session, env("fetch_all", {}))
    await reply(service, session, env("detail", {"id": "t-1"}))
    await reply(service, session, env("fetch_one", {"id": "t-1"}))
    assert len(fetcher.requests) == 2


async def test_actions_of_another_entity_are_unsupported() -> None:
    fetcher = FakeFetcher()
    message = await reply(make_service(fetcher), make_session("tables"), env("get_restaurant", {"id": "r"}))
    assert message.topic == "tables.error"
    assert message.metadata == {"action": "unknown", "reason": "unsupported action", "sectionId": "main-hall"}
    assert message.data == {"error": "unsupported action"}
    assert fetcher.requests == []


@pytest.mark.parametrize(
    ("action", "payload", "label"),
    [
        ("list_tables", {"page": "2"}, "list"),
        ("list_tables", {"filters": {"status": 1}}, "list"),
        ("list_tables", "not an object", "list"),
        ("get_table", None, "detail"),
        ("get_table", {}, "detail"),
        ("get_table", {"id": ""}, "detail"),
        ("get_table", {"id": "  "}, "detail"),
        ("get_table", {"id": 17}, "detail"),
    ],
)
async def test_invalid_payloads(action: str, payload: Any, label: str) -> None:
    fetcher = FakeFetcher()
    message = await reply(make_service(fetcher), make_session("tables"), env(action, payload))
    assert message.topic == "tables.error"
    assert message.resource_id == "main-hall"
    assert message.metadata == {"action": label, "reason": "invalid payload", "sectionId": "main-hall"}
    assert fetcher.requests == []


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (SnapshotForbidden(), "section snapshot forbidden"),
        (SnapshotNotFound(), "section snapshot not found"),
        (SnapshotUnexpectedStatus(500), "unexpected snapshot response 500"),
        (
            SnapshotRequestFailed("upstream timeout"),
            "snapshot request failed: upstream timeout",
        ),
        (SnapshotDecodeError("invalid JSON"), "decode snapshot: invalid JSON"),
    ],
)
async def test_snapshot_errors_become_error_replies(error: SnapshotError, reason: str) -> None:
    fetcher = FakeFetcher(error=error)
    service = make_service(fetcher)
    session = make_session("tables")
    for action, payload, label in (("list_tables", None, "list"), ("get_table", {"id": "t"}, "detail")):
        message = await reply(service, session, env(action, payload))
        assert message.topic == "tables.error"
        assert message.data == {"error": reason}
        assert message.metadata == {"action": label, "reason": reason, "sectionId": "main-hall"}


async def test_an_entity_without_rest_mapping_is_unsupported() -> None:
    spec = EntitySpec(
        name="schedules",
        aliases=("schedule",),
        plural="schedules",
        singular="schedule",
        roles=ALL_ROLES,
        detail_id_key="scheduleId",
        rest=None,
    )
    fetcher = FakeFetcher()
    service = make_service(fetcher)
    session = make_session(spec)
    for action, payload, label in (("list_schedules", None, "list"), ("get_schedule", {"id": "s"}, "detail")):
        message = await reply(service, session, env(action, payload))
        assert message.topic == "schedules.error"
        assert message.metadata == {
            "action": label,
            "reason": "section snapshot entity unsupported",
            "sectionId": "main-hall",
        }
    assert fetcher.requests == []


# ping, subscribe, extras ---------------------------------------------------------------------


async def test_ping_answers_pong() -> None:
    message = await reply(make_service(FakeFetcher()), make_session(), env("ping"))
    assert (message.topic, message.entity, message.action) == ("system.pong", "system", "pong")
    assert message.data is None
    assert message.metadata is None
    assert message.resource_id == ""


async def test_subscribe_and_unsubscribe_own_entity_topics_without_reply() -> None:
    service = make_service(FakeFetcher())
    session = make_session("tables")
    assert await service.handle(session, env("subscribe", topic="tables.status_changed")) is None
    assert "tables.status_changed" in session.topics
    assert await service.handle(session, env("unsubscribe", topic="tables.list")) is None
    assert "tables.list" not in session.topics
    assert await service.handle(session, env("unsubscribe", topic="tables.never")) is None


@pytest.mark.parametrize(
    ("action", "topic"),
    [
        ("subscribe", "payments.created"),
        ("subscribe", "tablesX.created"),
        ("subscribe", "tables"),
        ("subscribe", ""),
        ("subscribe", "analytics-admin-users.snapshot"),
        ("subscribe", "tables." + "x" * 200),
        ("unsubscribe", "restaurants.list"),
    ],
)
async def test_topics_of_other_entities_are_not_allowed(action: str, topic: str) -> None:
    session = make_session("tables")
    before = set(session.topics)
    message = await reply(make_service(FakeFetcher()), session, env(action, topic=topic))
    assert message.topic == "tables.error"
    assert message.metadata == {"action": action, "reason": "topic not allowed", "sectionId": "main-hall"}
    assert session.topics == before


async def test_a_features_actions_join_its_entitys_command_table() -> None:
    seen: list[Any] = []

    async def selecting(session: Session, payload: Any) -> Message | None:
        seen.append(payload)
        if payload == "fail":
            raise InvalidPayload()
        return Message("tables.selecting", "tables", "selecting")

    class Selecting(Feature):
        def actions(self) -> dict[str, dict[str, ActionHandler]]:
            return {"tables": {"selecting": selecting, "ping": selecting}}

    service = make_service(FakeFetcher(), features=[Selecting()])
    assert service.kind_of(make_session("tables"), "selecting") == "extra"
    assert service.kind_of(make_session("tables"), "ping") == "ping"  # built-ins win
    assert service.kind_of(make_session("menus"), "selecting") == "unknown"
    message = await reply(service, make_session("tables"), env("selecting", {"id": "t"}))
    assert message.topic == "tables.selecting"
    failed = await reply(service, make_session("tables"), env("selecting", "fail"))
    assert failed.metadata == {"action": "selecting", "reason": "invalid payload", "sectionId": "main-hall"}
    other = await reply(service, make_session("menus"), env("selecting", {}))
    assert other.metadata is not None
    assert other.metadata["reason"] == "unsupported action"
    assert seen == [{"id": "t"}, "fail"]


async def test_concurrent_identical_lists_make_one_fetch() -> None:
    calls = 0
    release = asyncio.Event()

    class SlowFetcher:
        async def fetch(self, request: SnapshotRequest, token: str) -> Any:
            nonlocal calls
            calls += 1
            await release.wait()
            return {"ok": True}

    service = CommandService(SnapshotService(SlowFetcher(), SnapshotCache(max_entries=10, ttl_seconds=60)))
    session = make_session("tables")
    tasks = [asyncio.ensure_future(service.handle(session, env("list", {}))) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    replies = await asyncio.gather(*tasks)
    assert calls == 1
    assert all(r is not None and r.data == {"ok": True} for r in replies)
