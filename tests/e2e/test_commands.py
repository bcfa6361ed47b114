"""Commands on an entity socket, end to end: a real gateway process, real clients over TCP, and
the recording REST upstream.

Covers every list/detail alias of every catalogue entity with the upstream request it makes,
owner-variant paths, list payload rules and reply metadata, every error reason of reference
§5.8, malformed frames, the 64 KiB frame limit, reply order, and subscribe/unsubscribe.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from mesaya_realtime.domain.catalogue import CATALOGUE, EntitySpec
from tests.support import GatewayProcess, RecordingUpstream, gateway_env, make_token

TIMEOUT = 15.0
MAX_FRAME = 65_536
_ids = itertools.count(1)

#: The REST resource (path segment after /api/v1/) of each entity; detail id key (§5.7).
RESOURCES = {
    "restaurants": ("restaurants", "restaurantId"),
    "tables": ("tables", "tableId"),
    "reservations": ("reservations", "reservationId"),
    "reviews": ("reviews", "reviewId"),
    "sections": ("sections", "resourceSectionId"),
    "objects": ("objects", "objectId"),
    "menus": ("menus", "menuId"),
    "dishes": ("dishes", "dishId"),
    "images": ("images", "imageId"),
    "section-objects": ("section-objects", "sectionObjectId"),
    "payments": ("payments", "paymentId"),
    "subscriptions": ("subscriptions", "subscriptionId"),
    "subscription-plans": ("subscription-plans", "subscriptionPlanId"),
    "users": ("users", "userId"),
    "owner-upgrades": ("owner-upgrades", "requestId"),
}
#: Every list and detail action name per entity, written out (reference §6.3 plus legacy).
ACTIONS = {
    "restaurants": (["list_restaurants", "list", "fetch_all"], ["get_restaurant", "detail", "fetch_one"]),
    "tables": (["list_tables", "list", "fetch_all"], ["get_table", "detail", "fetch_one"]),
    "reservations": (["list_reservations", "list", "fetch_all"], ["get_reservation", "detail", "fetch_one"]),
    "reviews": (["list_reviews", "list", "fetch_all"], ["get_review", "detail", "fetch_one"]),
    "sections": (["list_sections", "list", "fetch_all"], ["get_section", "detail", "fetch_one"]),
    "objects": (["list_objects", "list", "fetch_all"], ["get_object", "detail", "fetch_one"]),
    "menus": (["list_menus", "list", "fetch_all"], ["get_menu", "detail", "fetch_one"]),
    "dishes": (["list_dishes", "list", "fetch_all"], ["get_dish", "detail", "fetch_one"]),
    "images": (["list_images", "list", "fetch_all"], ["get_image", "detail", "fetch_one"]),
    "section-objects": (
        ["list_section_objects", "list", "fetch_all"],
        ["get_section_object", "detail", "fetch_one"],
    ),
    "payments": (["list_payments", "list", "fetch_all"], ["get_payment", "detail", "fetch_one"]),
    "subscriptions": (
        ["list_subscriptions", "list", "fetch_all"],
        ["get_subscription", "detail", "fetch_one"],
    ),
    "subscription-plans": (
        ["list_subscription_plans", "list", "fetch_all"],
        ["get_subscription_plan", "detail", "fetch_one"],
    ),
    "users": (
        ["list_users", "list", "fetch_all", "list_auth_users", "list_owners"],
        ["get_user", "detail", "fetch_one", "get_auth_user", "get_owner"],
    ),
    "owner-upgrades": (
        ["list_owner_upgrades", "list", "fetch_all", "list_owner_upgrade_requests"],
        ["get_owner_upgrade", "detail", "fetch_one", "get_owner_upgrade_request"],
    ),
}


def marker() -> str:
    """A unique value: makes a query its own cache entry so it reaches the upstream."""
    return f"m{next(_ids)}-{uuid.uuid4().hex[:8]}"


class Client:
    """One real WebSocket client on an entity socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, token: str, connected: dict[str, Any]) -> None:
        self.ws = ws
        self.token = token
        self.connected = connected

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def recv(self) -> dict[str, Any]:
        message = await self.ws.receive(timeout=TIMEOUT)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        body: dict[str, Any] = orjson.loads(message.data)
        return body

    async def ask(self, frame: Any) -> dict[str, Any]:
        await self.send(frame)
        return await self.recv()

    async def assert_alive(self) -> None:
        assert (await self.ask({"action": "ping"}))["topic"] == "system.pong"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
def open_socket(http: aiohttp.ClientSession, gateway: GatewayProcess) -> Callable[..., Any]:
    """``await open_socket(entity, section, roles, sub=..., gateway=...)`` -> Client."""

    async def open_(
        entity: str,
        section: str = "main-hall",
        roles: list[str] | None = None,
        sub: str = "user-1",
        on: GatewayProcess | None = None,
    ) -> Client:
        token = make_token(sub, roles or ["ADMIN"])
        target = on or gateway
        ws = await http.ws_connect(f"{target.ws_url}/ws/{entity}/{section}/{token}")
        message = await ws.receive(timeout=TIMEOUT)
        body = orjson.loads(message.data)
        assert body["topic"] == "system.connected"
        return Client(ws, token, body)

    return open_


def calls_with(upstream: RecordingUpstream, key: str, value: str) -> list[dict[str, Any]]:
    return [r for r in upstream.calls() if r["query"].get(key) == value]


def one_call(upstream: RecordingUpstream, path: str) -> dict[str, Any]:
    calls = upstream.calls(path)
    assert len(calls) == 1, calls
    return calls[0]


def assert_forwarded(call: dict[str, Any], client: Client) -> None:
    assert call["authorization"] == f"Bearer {client.token}"
    assert call["accept"] == "application/json"


# Every alias of every entity ---------------------------------------------------------------------


def test_the_action_table_matches_the_catalogue() -> None:
    assert set(ACTIONS) == set(CATALOGUE.by_name)
    for name, (lists, details) in ACTIONS.items():
        spec: EntitySpec = CATALOGUE.by_name[name]
        assert list(spec.list_actions) == lists
        assert list(spec.detail_actions) == details


@pytest.mark.parametrize("name", list(RESOURCES))
async def test_every_list_alias(
    name: str, open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    resource, _ = RESOURCES[name]
    section = "main-hall"
    client = await open_socket(name, section, ["ADMIN"])
    rows = upstream.rows[resource]
    if name == "tables":  # the default tables variant sends the section (sectionId=...)
        rows = [row for row in rows if row["sectionId"] == section]
    async with client.ws:
        for action in ACTIONS[name][0]:
            sort_by = marker()
            reply = await client.ask({"action": action, "payload": {"sortBy": sort_by}})
            assert reply["topic"] == f"{name}.list", (action, reply)
            assert (reply["entity"], reply["action"], reply["resourceId"]) == (name, "list", section)
            assert reply["data"]["data"] == rows
            assert reply["data"]["pagination"]["totalItems"] == len(rows)
            assert reply["metadata"] == {
                "limit": "20",
                "origin": "request",
                "page": "1",
                "sectionId": section,
                "sortBy": sort_by,
            }
            calls = calls_with(upstream, "sortBy", sort_by)
            assert len(calls) == 1, (action, calls)
            call = calls[0]
            assert call["path"] == f"/api/v1/{resource}"
            expected_query = {"page": "1", "limit": "20", "sortBy": sort_by}
            if name == "tables":
                expected_query["sectionId"] = section
            assert call["query"] == expected_query
            assert_forwarded(call, client)


@pytest.mark.parametrize("name", list(RESOURCES))
async def test_every_detail_alias(
    name: str, open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    resource, id_key = RESOURCES[name]
    client = await open_socket(name, "sec-9", ["ADMIN"])
    async with client.ws:
        fixture = upstream.rows[resource][0]
        reply = await client.ask({"action": ACTIONS[name][1][0], "payload": {"id": fixture["id"]}})
        assert reply["topic"] == f"{name}.detail"
        assert reply["data"] == fixture
        for action in ACTIONS[name][1]:
            ident = marker()
            upstream.script(f"/api/v1/{resource}/{ident}", 200, {"data": {"id": ident, "via": action}})
            reply = await client.ask({"action": action, "payload": {"id": ident}})
            assert reply["topic"] == f"{name}.detail", (action, reply)
            assert (reply["entity"], reply["action"], reply["resourceId"]) == (name, "detail", ident)
            assert reply["data"] == {"id": ident, "via": action}
            assert reply["metadata"] == {"origin": "request", "sectionId": "sec-9", id_key: ident}
            call = one_call(upstream, f"/api/v1/{resource}/{ident}")
            assert call["query_string"] == ""
            assert_forwarded(call, client)


async def test_another_entitys_action_is_unsupported(open_socket: Callable[..., Any]) -> None:
    client = await open_socket("tables", "main-hall", ["USER"])
    async with client.ws:
        for action in ("get_restaurant", "list_restaurants", "list_reservations", "explode", "get_tables"):
            reply = await client.ask({"action": action, "payload": {"id": "rest-1"}})
            assert reply["topic"] == "tables.error"
            assert reply["resourceId"] == "main-hall"
            assert reply["data"] == {"error": "unsupported action"}
            assert reply["metadata"] == {
                "action": "unknown",
                "reason": "unsupported action",
                "sectionId": "main-hall",
            }


async def test_every_reply_carries_the_commands_request_id(open_socket: Callable[..., Any]) -> None:
    client = await open_socket("tables", "main-hall", ["USER"])
    async with client.ws:
        pong = await client.ask({"action": "ping", "requestId": "r-1"})
        assert (pong["topic"], pong["metadata"]) == ("system.pong", {"requestId": "r-1"})
        listed = await client.ask({"action": "list_tables", "payload": {"limit": 2}, "requestId": "r-2"})
        assert listed["topic"] == "tables.list"
        assert listed["metadata"]["requestId"] == "r-2"
        assert listed["metadata"]["limit"] == "2"  # the reply's own metadata is kept
        again = await client.ask({"action": "list_tables", "payload": {"limit": 2}, "requestId": "r-3"})
        assert again["metadata"]["requestId"] == "r-3"  # a cache hit (answered at once) too
        refused = await client.ask({"action": "explode", "requestId": "r-4"})
        assert refused["metadata"] == {
            "action": "unknown",
            "reason": "unsupported action",
            "requestId": "r-4",
            "sectionId": "main-hall",
        }
        plain = await client.ask({"action": "ping"})
        assert "metadata" not in plain  # without one, replies are as before
        for bad in (7, "", "x" * 65, ["r"], {"id": 1}):
            reply = await client.ask({"action": "ping", "requestId": bad})
            assert reply["topic"] == "tables.error"
            assert reply["metadata"]["reason"] == "invalid payload", bad
        fine = await client.ask({"action": "ping", "requestId": "x" * 64})
        assert fine["metadata"] == {"requestId": "x" * 64}


# Owner variants and list payload rules --------------------------------------------------------------


async def test_owner_restaurants_use_restaurants_me(
    open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    client = await open_socket("restaurants", "rest-2", ["OWNER"], sub="owner-1")
    async with client.ws:
        sort_by = marker()
        reply = await client.ask({"action": "list_restaurants", "payload": {"sortBy": sort_by}})
    assert reply["topic"] == "restaurants.list"
    assert reply["data"]["data"] == upstream.rows["restaurants"][:1]
    call = calls_with(upstream, "sortBy", sort_by)[0]
    assert call["path"] == "/api/v1/restaurants/me"
    assert call["query"] == {"page": "1", "limit": "20", "sortBy": sort_by}
    assert_forwarded(call, client)


async def test_owner_tables_use_the_section_path(
    open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    client = await open_socket("tables", "terrace", ["OWNER"], sub="owner-1")
    async with client.ws:
        sort_by = marker()
        reply = await client.ask(
            {"action": "list", "payload": {"sortBy": sort_by, "filters": {"RestaurantId": "rest-1"}}}
        )
    assert reply["data"]["data"] == [t for t in upstream.rows["tables"] if t["sectionId"] == "terrace"]
    call = calls_with(upstream, "sortBy", sort_by)[0]
    assert call["path"] == "/api/v1/tables/section/terrace"
    assert call["query"] == {"page": "1", "limit": "20", "sortBy": sort_by, "restaurantId": "rest-1"}
    assert_forwarded(call, client)


async def test_owner_section_path_is_escaped(
    open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    section = f"main hall {marker()}"
    client = await open_socket("tables", section.replace(" ", "%20"), ["OWNER"])
    async with client.ws:
        reply = await client.ask({"action": "list_tables"})
    assert reply["resourceId"] == section
    assert reply["data"]["data"] == []
    assert len(upstream.calls(f"/api/v1/tables/section/{section}")) == 1


async def test_owner_reservations_add_the_section_and_drop_owner_id(
    open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    client = await open_socket("reservations", "rest-1", ["OWNER"], sub="owner-1")
    async with client.ws:
        sort_by = marker()
        reply = await client.ask(
            {
                "action": "list_reservations",
                "payload": {
                    "page": 1,
                    "limit": 10,
                    "sortBy": sort_by,
                    "sortOrder": "desc",
                    "filters": {
                        "status": "CONFIRMED",
                        "OwnerID": "owner-1",
                        "restaurantId": "not-mine",
                        "date": "2026-02-14",
                    },
                },
            }
        )
    call = calls_with(upstream, "sortBy", sort_by)[0]
    assert call["path"] == "/api/v1/reservations"
    assert call["query"] == {
        "page": "1",
        "limit": "10",
        "sortBy": sort_by,
        "sortOrder": "DESC",
        "status": "CONFIRMED",
        "restaurantId": "rest-1",
        "date": "2026-02-14",
    }
    assert_forwarded(call, client)
    assert reply["data"]["data"] == upstream.rows["reservations"]
    assert reply["metadata"] == {
        "date": "2026-02-14",
        "limit": "10",
        "origin": "request",
        "ownerid": "owner-1",
        "page": "1",
        "restaurantid": "not-mine",
        "sectionId": "rest-1",
        "sortBy": sort_by,
        "sortOrder": "DESC",
        "status": "CONFIRMED",
    }


@pytest.mark.parametrize("name", ["sections", "payments", "subscriptions"])
async def test_other_owner_variants_send_the_section_as_restaurant_id(
    name: str, open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    client = await open_socket(name, "rest-1", ["OWNER"], sub="owner-1")  # owner-1 owns rest-1 (fixtures)
    async with client.ws:
        sort_by = marker()
        reply = await client.ask({"action": "list", "payload": {"sortBy": sort_by}})
    assert reply["topic"] == f"{name}.list"
    call = calls_with(upstream, "sortBy", sort_by)[0]
    assert call["path"] == f"/api/v1/{name}"
    assert call["query"] == {"page": "1", "limit": "20", "sortBy": sort_by, "restaurantId": "rest-1"}


@pytest.mark.parametrize("name", ["reviews", "menus", "dishes", "images", "objects", "section-objects"])
async def test_owners_of_entities_without_owner_variant_use_the_default_paths(
    name: str, open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    client = await open_socket(name, "rest-1", ["OWNER"])
    resource, _ = RESOURCES[name]
    async with client.ws:
        sort_by = marker()
        reply = await client.ask({"action": "list", "payload": {"sortBy": sort_by}})
        assert reply["data"]["data"] == upstream.rows[resource]
    call = calls_with(upstream, "sortBy", sort_by)[0]
    assert call["path"] == f"/api/v1/{resource}"
    assert call["query"] == {"page": "1", "limit": "20", "sortBy": sort_by}
    assert_forwarded(call, client)


async def test_user_reservations_use_the_default_variant(
    open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    client = await open_socket("reservations", "rest-1", ["USER"], sub="user-2")
    async with client.ws:
        sort_by = marker()
        await client.ask(
            {"action": "list", "payload": {"sortBy": sort_by, "filters": {"RestaurantId": "r-9"}}}
        )
    call = calls_with(upstream, "sortBy", sort_by)[0]
    assert call["path"] == "/api/v1/reservations"
    assert call["query"] == {"page": "1", "limit": "20", "sortBy": sort_by, "restaurantId": "r-9"}
    assert_forwarded(call, client)


async def test_each_client_forwards_its_own_token(
    open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    first = await open_socket("reservations", "rest-1", ["USER"], sub="user-a")
    second = await open_socket("reservations", "rest-1", ["USER"], sub="user-b")
    sort_by = marker()
    async with first.ws, second.ws:
        await first.ask({"action": "list", "payload": {"sortBy": sort_by}})
        await second.ask({"action": "list", "payload": {"sortBy": sort_by}})
    tokens = {call["authorization"] for call in calls_with(upstream, "sortBy", sort_by)}
    assert tokens == {f"Bearer {first.token}", f"Bearer {second.token}"}


async def test_list_payload_rules_and_metadata(
    open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    client = await open_socket("restaurants", "rest-1", ["ADMIN"])
    sort_by = marker()
    async with client.ws:
        reply = await client.ask(
            {
                "action": "list_restaurants",
                "payload": {
                    "page": 0,
                    "limit": 500,
                    "search": "  Mesa ",
                    "sortBy": f" {sort_by} ",
                    "sortOrder": " desc ",
                    "filters": {" Status ": " ACTIVE ", "RestaurantId": "rest-1", "  ": "x", "empty": " "},
                },
            }
        )
    assert reply["topic"] == "restaurants.list"
    assert reply["resourceId"] == "rest-1"
    assert reply["metadata"] == {
        "limit": "100",
        "origin": "request",
        "page": "1",
        "restaurantid": "rest-1",
        "search": "Mesa",
        "sectionId": "rest-1",
        "sortBy": sort_by,
        "sortOrder": "DESC",
        "status": "ACTIVE",
    }
    assert list(reply["metadata"]) == sorted(reply["metadata"])
    call = calls_with(upstream, "sortBy", sort_by)[0]
    assert call["query"] == {
        "page": "1",
        "limit": "100",
        "q": "Mesa",
        "sortBy": sort_by,
        "sortOrder": "DESC",
        "status": "ACTIVE",
        "restaurantid": "rest-1",
    }
    assert [r["name"] for r in reply["data"]["data"]] == ["La Mesa"]


@pytest.mark.parametrize(
    ("payload", "page", "limit"),
    [
        (None, "1", "20"),
        ({}, "1", "20"),
        ({"page": 3, "limit": 100}, "3", "100"),
        ({"limit": 101}, "1", "100"),
    ],
)
async def test_list_defaults(
    payload: Any, page: str, limit: str, open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    section = marker()
    client = await open_socket("tables", section, ["USER"])
    async with client.ws:
        frame: dict[str, Any] = {"action": "list_tables"}
        if payload is not None:
            frame["payload"] = payload
        reply = await client.ask(frame)
    assert reply["metadata"] == {"limit": limit, "origin": "request", "page": page, "sectionId": section}
    assert calls_with(upstream, "sectionId", section)[0]["query"] == {
        "page": page,
        "limit": limit,
        "sectionId": section,
    }


async def test_replies_go_to_the_asking_client_only(open_socket: Callable[..., Any]) -> None:
    asking = await open_socket("tables", "main-hall", ["USER"], sub="a")
    other = await open_socket("tables", "main-hall", ["USER"], sub="b")
    async with asking.ws, other.ws:
        assert (await asking.ask({"action": "list_tables"}))["topic"] == "tables.list"
        assert (await asking.ask({"action": "get_table", "payload": {"id": "table-1"}}))[
            "topic"
        ] == "tables.detail"
        assert (await asking.ask({"action": "explode"}))["topic"] == "tables.error"
        # The other socket's next message is the answer to its own ping, nothing before it.
        assert (await other.ask({"action": "ping"}))["topic"] == "system.pong"


# Error reasons (reference §5.8) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "label"),
    [
        ({"action": "list_tables", "payload": {"page": "2"}}, "list"),
        ({"action": "list_tables", "payload": {"limit": 2.5}}, "list"),
        ({"action": "list_tables", "payload": {"filters": {"status": 1}}}, "list"),
        ({"action": "list_tables", "payload": {"filters": "status"}}, "list"),
        ({"action": "list_tables", "payload": "page=2"}, "list"),
        ({"action": "list_tables", "payload": [1, 2]}, "list"),
        ({"action": "get_table"}, "detail"),
        ({"action": "get_table", "payload": {}}, "detail"),
        ({"action": "get_table", "payload": {"id": ""}}, "detail"),
        ({"action": "get_table", "payload": {"id": "   "}}, "detail"),
        ({"action": "get_table", "payload": {"id": 17}}, "detail"),
        ({"action": "fetch_one", "payload": "table-1"}, "detail"),
    ],
)
async def test_invalid_payload(
    frame: dict[str, Any], label: str, open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    client = await open_socket("tables", "main-hall", ["USER"])
    before = len(upstream.calls())
    async with client.ws:
        reply = await client.ask(frame)
        assert reply == {
            "topic": "tables.error",
            "entity": "tables",
            "action": "error",
            "resourceId": "main-hall",
            "data": {"error": "invalid payload"},
            "metadata": {"action": label, "reason": "invalid payload", "sectionId": "main-hall"},
            "timestamp": reply["timestamp"],
        }
        await client.assert_alive()
    assert len(upstream.calls()) == before


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, {"message": "Unauthorized"}, "section snapshot forbidden"),
        (403, {"message": "Forbidden"}, "section snapshot forbidden"),
        (404, {"message": "Not Found"}, "section snapshot not found"),
        (500, {"message": "boom"}, "unexpected snapshot response 500"),
        (502, b"<html>bad gateway</html>", "unexpected snapshot response 502"),
        (400, {"message": ["property x should not exist"]}, "unexpected snapshot response 400"),
    ],
)
async def test_upstream_status_errors(
    status: int,
    body: Any,
    reason: str,
    open_socket: Callable[..., Any],
    upstream: RecordingUpstream,
) -> None:
    client = await open_socket("tables", "main-hall", ["OWNER"])
    ident = marker()
    section_path = f"/api/v1/tables/section/{ident}"
    upstream.script(f"/api/v1/tables/{ident}", status, body)
    upstream.script(section_path, status, body)
    async with client.ws:
        detail = await client.ask({"action": "get_table", "payload": {"id": ident}})
        assert detail["topic"] == "tables.error"
        assert detail["data"] == {"error": reason}
        assert detail["metadata"] == {"action": "detail", "reason": reason, "sectionId": "main-hall"}
        await client.assert_alive()
    lister = await open_socket("tables", ident, ["OWNER"])
    async with lister.ws:
        listed = await lister.ask({"action": "list_tables"})
        assert listed["topic"] == "tables.error"
        assert listed["resourceId"] == ident
        assert listed["metadata"] == {"action": "list", "reason": reason, "sectionId": ident}
    assert len(upstream.calls(section_path)) == 1


async def test_a_missing_resource_of_the_real_upstream_is_not_found(open_socket: Callable[..., Any]) -> None:
    client = await open_socket("restaurants", "rest-1", ["USER"])
    async with client.ws:
        reply = await client.ask({"action": "get_restaurant", "payload": {"id": "no-such-restaurant"}})
    assert reply["metadata"] == {
        "action": "detail",
        "reason": "section snapshot not found",
        "sectionId": "rest-1",
    }


@pytest.mark.parametrize("body", [b"not json", b'{"data": ', b""])
async def test_an_undecodable_body_is_decode_snapshot(
    body: bytes, open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    ident = marker()
    upstream.script(f"/api/v1/menus/{ident}", 200, body)
    client = await open_socket("menus", "rest-1", ["USER"])
    async with client.ws:
        reply = await client.ask({"action": "get_menu", "payload": {"id": ident}})
        assert reply["topic"] == "menus.error"
        reason = reply["data"]["error"]
        assert reason.startswith("decode snapshot: "), reason
        assert len(reason) > len("decode snapshot: ")
        assert reply["metadata"] == {"action": "detail", "reason": reason, "sectionId": "rest-1"}
        await client.assert_alive()


async def test_upstream_timeout_is_context_deadline_exceeded(
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
    open_socket: Callable[..., Any],
) -> None:
    process = start_gateway(gateway_env(upstream.url, REST_TIMEOUT="300ms"))
    ident = marker()
    upstream.script(f"/api/v1/tables/{ident}", 200, {"data": {"id": ident}}, delay=3.0)
    upstream.script(f"/api/v1/tables/section/{ident}", 200, {"data": []}, delay=3.0)
    client = await open_socket("tables", ident, ["OWNER"], on=process)
    reason = "snapshot request failed: upstream timeout"
    async with client.ws:
        detail = await client.ask({"action": "get_table", "payload": {"id": ident}})
        assert detail["data"] == {"error": reason}
        assert detail["metadata"] == {"action": "detail", "reason": reason, "sectionId": ident}
        listed = await client.ask({"action": "list_tables"})
        assert listed["metadata"] == {"action": "list", "reason": reason, "sectionId": ident}
        await client.assert_alive()


async def test_an_unreachable_upstream_is_snapshot_request_failed(
    start_gateway: Callable[..., GatewayProcess], open_socket: Callable[..., Any]
) -> None:
    from tests.support import free_port

    process = start_gateway(gateway_env(f"http://127.0.0.1:{free_port()}"))
    client = await open_socket("tables", "main-hall", ["USER"], on=process)
    async with client.ws:
        reply = await client.ask({"action": "get_table", "payload": {"id": "table-1"}})
    assert reply["data"]["error"].startswith("snapshot request failed: ")


# Malformed frames and the frame limit ------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "{",
        "",
        "[1, 2]",
        '"ping"',
        "42",
        "null",
        '{"action": 5}',
        '{"action": null}',
        '{"action": ["ping"]}',
        '{"action": "ping", "topic": 5}',
        '{"payload": {}}',
    ],
)
async def test_malformed_frames_get_invalid_payload_and_the_socket_stays(
    frame: str, open_socket: Callable[..., Any]
) -> None:
    client = await open_socket("tables", "main-hall", ["USER"])
    async with client.ws:
        reply = await client.ask(frame)
        assert reply["topic"] == "tables.error"
        assert reply["resourceId"] == "main-hall"
        assert reply["data"] == {"error": "invalid payload"}
        assert reply["metadata"] == {
            "action": "unknown",
            "reason": "invalid payload",
            "sectionId": "main-hall",
        }
        await client.assert_alive()
        assert not client.ws.closed


async def test_a_binary_garbage_frame_is_invalid_payload(open_socket: Callable[..., Any]) -> None:
    client = await open_socket("tables", "main-hall", ["USER"])
    async with client.ws:
        await client.ws.send_bytes(b"\xff\x00garbage")
        reply = await client.recv()
        assert reply["data"] == {"error": "invalid payload"}
        await client.assert_alive()


def padded_ping(size: int) -> str:
    frame = '{"action":"ping","pad":"' + "x" * size + '"}'
    extra = len(frame) - size
    frame = '{"action":"ping","pad":"' + "x" * (size - extra) + '"}'
    assert len(frame.encode()) == size
    return frame


@pytest.mark.parametrize("size", [MAX_FRAME - 1_000, MAX_FRAME - 1, MAX_FRAME])
async def test_a_frame_up_to_64_kib_is_processed(size: int, open_socket: Callable[..., Any]) -> None:
    client = await open_socket("tables", "main-hall", ["USER"])
    async with client.ws:
        reply = await client.ask(padded_ping(size))
        assert reply["topic"] == "system.pong"
        await client.assert_alive()


@pytest.mark.parametrize("size", [MAX_FRAME + 1, MAX_FRAME * 4])
async def test_a_frame_over_64_kib_closes_with_1009(size: int, open_socket: Callable[..., Any]) -> None:
    client = await open_socket("tables", "main-hall", ["USER"])
    async with client.ws:
        await client.send(padded_ping(size))
        message = await client.ws.receive(timeout=TIMEOUT)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert client.ws.close_code == 1009


# Reply order ------------------------------------------------------------------------------------------


async def test_replies_arrive_in_the_order_the_commands_were_sent(
    open_socket: Callable[..., Any], upstream: RecordingUpstream
) -> None:
    slow, slower = marker(), marker()
    upstream.script(f"/api/v1/tables/{slow}", 200, {"data": {"id": slow}}, delay=1.0)
    upstream.script(f"/api/v1/tables/{slower}", 200, {"data": {"id": slower}}, delay=1.5)
    frames: list[tuple[Any, Callable[[dict[str, Any]], bool]]] = []

    def expect(frame: Any, check: Callable[[dict[str, Any]], bool]) -> None:
        frames.append((frame, check))

    def is_detail(ident: str) -> Callable[[dict[str, Any]], bool]:
        return lambda r: r["topic"] == "tables.detail" and r["resourceId"] == ident

    def is_list(sort_by: str) -> Callable[[dict[str, Any]], bool]:
        return lambda r: r["topic"] == "tables.list" and r["metadata"].get("sortBy") == sort_by

    def is_pong(r: dict[str, Any]) -> bool:
        return bool(r["topic"] == "system.pong")

    def is_error(reason: str) -> Callable[[dict[str, Any]], bool]:
        return lambda r: r["topic"] == "tables.error" and r["data"]["error"] == reason

    expect({"action": "get_table", "payload": {"id": slower}}, is_detail(slower))
    expect({"action": "get_table", "payload": {"id": slow}}, is_detail(slow))
    for index in range(6):
        sort_by = marker()
        expect({"action": "list_tables", "payload": {"sortBy": sort_by}}, is_list(sort_by))
        expect({"action": "ping"}, is_pong)
        if index % 2:
            expect("not json", is_error("invalid payload"))
        else:
            expect(
                {"action": "get_table", "payload": {"id": f"table-{index + 1}"}},
                is_detail(f"table-{index + 1}"),
            )
    expect({"action": "explode"}, is_error("unsupported action"))
    expect({"action": "ping"}, is_pong)
    assert len(frames) >= 20

    client = await open_socket("tables", "main-hall", ["USER"])
    async with client.ws:
        for frame, _ in frames:
            await client.send(frame)
        replies = [await client.recv() for _ in frames]
        await client.assert_alive()
    for index, ((frame, check), reply) in enumerate(zip(frames, replies, strict=True)):
        assert check(reply), (index, frame, reply)


# Subscribe / unsubscribe ------------------------------------------------------------------------------


async def test_subscribe_to_own_entity_topics_has_no_reply(open_socket: Callable[..., Any]) -> None:
    client = await open_socket("tables", "main-hall", ["USER"])
    async with client.ws:
        await client.send({"action": "subscribe", "topic": "tables.selecting"})
        await client.send({"action": "SUBSCRIBE", "topic": " tables.custom_event "})
        await client.send({"action": "unsubscribe", "topic": "tables.created"})
        await client.send({"action": "unsubscribe", "topic": "tables.never_subscribed"})
        assert (await client.ask({"action": "ping"}))["topic"] == "system.pong"


@pytest.mark.parametrize(
    ("action", "topic"),
    [
        ("subscribe", "payments.created"),
        ("subscribe", "restaurants.list"),
        ("subscribe", "analytics-admin-users.snapshot"),
        ("subscribe", "system.connected"),
        ("subscribe", "tables"),
        ("subscribe", ""),
        ("unsubscribe", "reservations.created"),
    ],
)
async def test_topics_of_another_entity_are_not_allowed(
    action: str, topic: str, open_socket: Callable[..., Any]
) -> None:
    client = await open_socket("tables", "main-hall", ["ADMIN"])
    async with client.ws:
        reply = await client.ask({"action": action, "topic": topic})
        assert reply["topic"] == "tables.error"
        assert reply["data"] == {"error": "topic not allowed"}
        assert reply["metadata"] == {
            "action": action,
            "reason": "topic not allowed",
            "sectionId": "main-hall",
        }
        await client.assert_alive()


async def test_sockets_of_one_token_on_different_entities_and_one_section_coexist(
    http: aiohttp.ClientSession, gateway: GatewayProcess
) -> None:
    token = make_token("owner-1", ["OWNER"], sid="one-session")  # owner-1 owns rest-1
    sockets = [
        await http.ws_connect(f"{gateway.ws_url}/ws/{entity}/rest-1/{token}")
        for entity in ("tables", "reservations", "tables", "payments")
    ]
    try:
        for ws in sockets:
            assert orjson.loads((await ws.receive(timeout=TIMEOUT)).data)["topic"] == "system.connected"
        await asyncio.sleep(0.2)
        for ws in sockets:
            await ws.send_str('{"action":"list"}')
        for ws in sockets:
            reply = orjson.loads((await ws.receive(timeout=TIMEOUT)).data)
            assert reply["action"] == "list", reply
            assert not ws.closed
    finally:
        for ws in sockets:
            await ws.close()
