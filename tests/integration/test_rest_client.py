"""RestSnapshotClient against real HTTP servers on loopback (reference §7.1-7.4).

Two servers: the recording demo upstream of tests.support (a thread of its own, scripted
answers), and :class:`LoopServer`, a small aiohttp server on the test's own loop that records
raw paths and client ports and can hold answers or stream bodies in chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest
from aiohttp import web

from mesaya_realtime.domain.catalogue import CATALOGUE
from mesaya_realtime.domain.errors import (
    SnapshotDecodeError,
    SnapshotError,
    SnapshotForbidden,
    SnapshotNotFound,
    SnapshotRequestFailed,
    SnapshotUnexpectedStatus,
)
from mesaya_realtime.domain.queries import ListQuery
from mesaya_realtime.domain.snapshots import SnapshotRequest, plan_detail, plan_list
from mesaya_realtime.infrastructure import rest_client as rest_module
from mesaya_realtime.infrastructure.rest_client import RestSnapshotClient
from tests.support import RecordingUpstream, free_port

API = "/api/v1"


# --- a server on the test's loop ---------------------------------------------------------------


@dataclass
class Seen:
    path: str
    raw_path: str
    query_string: str
    query: list[tuple[str, str]]
    authorization: str | None
    accept: str | None
    port: int


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class LoopServer:
    """Records every request; answers with ``handler`` (default: ``{"data": {"ok": true}}``)."""

    seen: list[Seen] = field(default_factory=list)
    handler: Handler | None = None
    active: int = 0
    max_active: int = 0
    url: str = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append(
            Seen(
                path=request.path,
                raw_path=request.raw_path.split("?", 1)[0],
                query_string=request.query_string,
                query=parse_qsl(request.query_string, keep_blank_values=True),
                authorization=request.headers.get("Authorization"),
                accept=request.headers.get("Accept"),
                port=int(peer[1]) if peer else -1,
            )
        )
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.handler is not None:
                return await self.handler(request)
            return web.json_response({"data": {"ok": True}})
        finally:
            self.active -= 1


@pytest.fixture
async def loop_server() -> AsyncIterator[LoopServer]:
    server = LoopServer()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[..., RestSnapshotClient]]:
    clients: list[RestSnapshotClient] = []

    def make(base_url: str, timeout: float = 10.0, **kwargs: Any) -> RestSnapshotClient:
        client = RestSnapshotClient(base_url, timeout=timeout, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(
    fresh_upstream: RecordingUpstream, client_factory: Callable[..., RestSnapshotClient]
) -> RestSnapshotClient:
    return client_factory(fresh_upstream.url)


async def fetch_quietly(client: RestSnapshotClient, request: SnapshotRequest, token: str = "tok") -> Any:
    """Fetch; a SnapshotError is returned (some catalogue paths 404 on the demo upstream)."""
    try:
        return await client.fetch(request, token)
    except SnapshotError as error:
        return error


# --- paths and query strings per the catalogue ------------------------------------------------

# Reference §7.3: (entity, audience) -> (list path, section query key or None).
LIST_CALLS: dict[tuple[str, str], tuple[str, str | None]] = {}
for _name in (spec.name for spec in CATALOGUE.entities):
    for _audience in ("user", "admin", "owner"):
        LIST_CALLS[(_name, _audience)] = (f"{API}/{_name}", None)
LIST_CALLS.update(
    {
        ("tables", "user"): (f"{API}/tables", "sectionId"),  # our fix: see the catalogue
        ("tables", "admin"): (f"{API}/tables", "sectionId"),
        ("tables", "owner"): (f"{API}/tables/section/sec%201", None),
        ("restaurants", "owner"): (f"{API}/restaurants/me", None),
        ("reservations", "owner"): (f"{API}/reservations", "restaurantId"),
        ("sections", "owner"): (f"{API}/sections", "restaurantId"),
        ("payments", "owner"): (f"{API}/payments", "restaurantId"),
        ("subscriptions", "owner"): (f"{API}/subscriptions", "restaurantId"),
    }
)


@pytest.mark.parametrize(("entity", "audience"), sorted(LIST_CALLS))
async def test_list_call_path_and_query_per_catalogue(
    loop_server: LoopServer,
    client_factory: Callable[..., RestSnapshotClient],
    entity: str,
    audience: str,
) -> None:
    client = client_factory(loop_server.url)
    query = ListQuery.from_payload(
        {"page": 2, "limit": 5, "search": "la mesa", "sortBy": "name", "sortOrder": "asc"}
    )
    request = plan_list(CATALOGUE.by_name[entity], audience, "sec 1", query)
    assert await client.fetch(request, "tok") == {"ok": True}
    (seen,) = loop_server.seen
    path, section_key = LIST_CALLS[(entity, audience)]
    assert seen.raw_path == path
    expected = [("page", "2"), ("limit", "5"), ("q", "la mesa"), ("sortBy", "name"), ("sortOrder", "ASC")]
    if section_key:
        expected.append((section_key, "sec 1"))
    assert seen.query == expected


@pytest.mark.parametrize("audience", ["user", "admin", "owner"])
@pytest.mark.parametrize("entity", sorted(spec.name for spec in CATALOGUE.entities))
async def test_detail_call_path_per_catalogue(
    loop_server: LoopServer,
    client_factory: Callable[..., RestSnapshotClient],
    entity: str,
    audience: str,
) -> None:
    client = client_factory(loop_server.url)
    await client.fetch(plan_detail(CATALOGUE.by_name[entity], audience, "id-7"), "tok")
    (seen,) = loop_server.seen
    assert seen.raw_path == f"{API}/{entity}/id-7"
    assert seen.query_string == ""


async def test_default_list_against_the_demo_upstream(
    client: RestSnapshotClient, fresh_upstream: RecordingUpstream
) -> None:
    section = fresh_upstream.rows["tables"][0]["sectionId"]
    request = plan_list(CATALOGUE.by_name["tables"], "user", section, ListQuery())
    payload = await client.fetch(request, "tok")
    assert payload["data"]
    assert {row["sectionId"] for row in payload["data"]} == {section}
    assert "pagination" in payload
    (call,) = fresh_upstream.calls()
    assert call["path"] == f"{API}/tables"
    assert call["query_string"] == f"page=1&limit=20&sectionId={section}"


async def test_owner_list_and_detail_against_the_demo_upstream(
    client: RestSnapshotClient, fresh_upstream: RecordingUpstream
) -> None:
    table = fresh_upstream.rows["tables"][0]
    spec = CATALOGUE.by_name["tables"]
    listed = await client.fetch(plan_list(spec, "owner", table["sectionId"], ListQuery()), "tok")
    detail = await client.fetch(plan_detail(spec, "owner", table["id"]), "tok")
    assert table in listed["data"]
    assert detail == table
    assert [c["path"] for c in fresh_upstream.calls()] == [
        f"{API}/tables/section/{table['sectionId']}",
        f"{API}/tables/{table['id']}",
    ]
    assert fresh_upstream.calls()[0]["query"] == {"page": "1", "limit": "20"}


FILTER_CASES: list[tuple[str, str, dict[str, str], list[tuple[str, str]]]] = [
    (
        "tables",
        "user",
        {"restaurantId": "r1", "SectionId": "x"},
        [("restaurantId", "r1"), ("sectionId", "S")],
    ),
    (
        "tables",
        "owner",
        {"restaurantid": "r1", "sectionid": "s9"},
        [("restaurantId", "r1"), ("sectionId", "s9")],
    ),
    (
        "reservations",
        "user",
        {"status": "PENDING", "restaurantID": "r1", "date": "2025-01-01", "ownerId": "u"},
        [("date", "2025-01-01"), ("restaurantId", "r1"), ("status", "PENDING")],
    ),
    (
        "reservations",
        "owner",
        {"OWNERID": "u", "restaurantId": "other", "status": "X"},
        [("status", "X"), ("restaurantId", "S")],
    ),
    ("sections", "user", {"restaurantid": "r1"}, [("restaurantId", "r1")]),
    ("sections", "owner", {"restaurantid": "r1"}, [("restaurantId", "S")]),
    ("menus", "user", {"restaurantid": "r1"}, [("restaurantId", "r1")]),
    ("dishes", "user", {"restaurantid": "r1"}, [("restaurantId", "r1")]),
    ("images", "user", {"entityId": "e1"}, [("entityId", "e1")]),
    ("reviews", "user", {"restaurantId": "r1", "Rating": "5"}, [("rating", "5"), ("restaurantId", "r1")]),
    (
        "payments",
        "admin",
        {
            "status": "PAID",
            "type": "CARD",
            "reservationid": "rv",
            "restaurantid": "r",
            "startdate": "a",
            "enddate": "b",
            "minamount": "1",
            "maxamount": "9",
        },
        [
            ("endDate", "b"),
            ("maxAmount", "9"),
            ("minAmount", "1"),
            ("reservationId", "rv"),
            ("restaurantId", "r"),
            ("startDate", "a"),
            ("status", "PAID"),
            ("type", "CARD"),
        ],
    ),
    (
        "users",
        "admin",
        {"role": "OWNER", "active": "true", "status": "x"},
        [("active", "true"), ("role", "OWNER"), ("status", "x")],
    ),
    ("owner-upgrades", "admin", {"userid": "u1"}, [("userId", "u1")]),
    ("objects", "user", {"Some-Key": "v"}, [("some-key", "v")]),
]


@pytest.mark.parametrize(("entity", "audience", "filters", "expected"), FILTER_CASES)
async def test_filters_go_through_the_alias_table(
    loop_server: LoopServer,
    client_factory: Callable[..., RestSnapshotClient],
    entity: str,
    audience: str,
    filters: dict[str, str],
    expected: list[tuple[str, str]],
) -> None:
    client = client_factory(loop_server.url)
    query = ListQuery.from_payload({"filters": filters})
    await client.fetch(plan_list(CATALOGUE.by_name[entity], audience, "S", query), "tok")
    (seen,) = loop_server.seen
    assert seen.query[:2] == [("page", "1"), ("limit", "20")]
    # one value per key (the section key overrides a same-named filter); order is not part
    # of the contract
    assert sorted(seen.query[2:]) == sorted(expected)
    assert all(key.lower() != "ownerid" for key, _ in seen.query)


async def test_special_characters_survive_the_round_trip(
    loop_server: LoopServer, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    client = client_factory(loop_server.url)
    query = ListQuery.from_payload(
        {"search": "a+b c&d=e%f#g?", "filters": {"date": "2025-01-01T00:00:00+05:00", "name": "ñandú/😀"}}
    )
    await client.fetch(plan_list(CATALOGUE.by_name["reservations"], "user", "S", query), "tok")
    (seen,) = loop_server.seen
    assert dict(seen.query) == {
        "page": "1",
        "limit": "20",
        "q": "a+b c&d=e%f#g?",
        "date": "2025-01-01T00:00:00+05:00",
        "name": "ñandú/😀",
    }


@pytest.mark.parametrize(
    ("resource_id", "raw", "decoded"),
    [
        ("a/b", "a%2Fb", "a/b"),
        ("with space", "with%20space", "with space"),
        ("q?x=1#frag", "q%3Fx=1%23frag", "q?x=1#frag"),
        ("100%", "100%25", "100%"),
        ("ñ", "%C3%B1", "ñ"),
        ("..", "%2E%2E", ".."),
        (".", "%2E", "."),
        ("a+b", "a+b", "a+b"),
    ],
)
async def test_ids_are_one_escaped_path_segment(
    loop_server: LoopServer,
    client_factory: Callable[..., RestSnapshotClient],
    resource_id: str,
    raw: str,
    decoded: str,
) -> None:
    client = client_factory(loop_server.url)
    await client.fetch(plan_detail(CATALOGUE.by_name["tables"], "user", resource_id), "tok")
    (seen,) = loop_server.seen
    # "+" and "=" may stay literal in a path (both are sub-delims); what counts is that the
    # id stays one segment under /api/v1/tables/ and decodes back to itself.
    prefix = f"{API}/tables/"
    assert seen.raw_path.startswith(prefix)
    segment = seen.raw_path[len(prefix) :]
    assert "/" not in segment
    assert segment.replace("%2B", "+").replace("%3D", "=") == raw
    from urllib.parse import unquote

    assert unquote(segment) == decoded


async def test_owner_tables_section_is_escaped_in_the_path(
    loop_server: LoopServer, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    client = client_factory(loop_server.url)
    await client.fetch(plan_list(CATALOGUE.by_name["tables"], "owner", "a/b c", ListQuery()), "tok")
    assert loop_server.seen[0].raw_path == f"{API}/tables/section/a%2Fb%20c"


@pytest.mark.parametrize("base", ["{url}", "{url}/", "{url}/prefix", "{url}/prefix/"])
async def test_base_url_with_and_without_slash_and_prefix(
    loop_server: LoopServer, client_factory: Callable[..., RestSnapshotClient], base: str
) -> None:
    client = client_factory(base.format(url=loop_server.url))
    await client.fetch(SnapshotRequest(f"{API}/reviews", (("page", "1"),)), "tok")
    prefix = "/prefix" if "prefix" in base else ""
    assert loop_server.seen[0].raw_path == f"{prefix}{API}/reviews"
    assert loop_server.seen[0].query_string == "page=1"


# --- headers ----------------------------------------------------------------------------------


async def test_the_token_is_forwarded_with_accept_json(
    client: RestSnapshotClient, fresh_upstream: RecordingUpstream
) -> None:
    await client.fetch(plan_list(CATALOGUE.by_name["reviews"], "user", "S", ListQuery()), "eyJ.abc.def")
    (call,) = fresh_upstream.calls()
    assert call["authorization"] == "Bearer eyJ.abc.def"
    assert call["accept"] == "application/json"


async def test_an_empty_token_sends_no_authorization(
    client: RestSnapshotClient, fresh_upstream: RecordingUpstream
) -> None:
    await client.fetch(plan_list(CATALOGUE.by_name["reviews"], "user", "S", ListQuery()), "")
    (call,) = fresh_upstream.calls()
    assert call["authorization"] is None
    assert call["accept"] == "application/json"


async def test_each_call_forwards_its_own_token(
    client: RestSnapshotClient, fresh_upstream: RecordingUpstream
) -> None:
    request = plan_list(CATALOGUE.by_name["reviews"], "user", "S", ListQuery())
    await asyncio.gather(*(client.fetch(request, f"token-{n}") for n in range(10)))
    assert sorted(c["authorization"] for c in fresh_upstream.calls()) == sorted(
        f"Bearer token-{n}" for n in range(10)
    )


# --- timeouts and transport errors --------------------------------------------------------------


async def test_a_slow_upstream_hits_rest_timeout(
    fresh_upstream: RecordingUpstream, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    client = client_factory(fresh_upstream.url, timeout=1.0)
    fresh_upstream.script(f"{API}/reviews", 200, {"data": []}, delay=6.0)
    with pytest.raises(SnapshotRequestFailed) as caught:
        await client.fetch(SnapshotRequest(f"{API}/reviews"), "tok")
    assert caught.value.reason == "snapshot request failed: upstream timeout"
    # the client is still usable afterwards
    fresh_upstream.reset()
    assert await client.fetch(SnapshotRequest(f"{API}/reviews/review-1"), "tok")


async def test_a_body_that_stalls_hits_rest_timeout(
    loop_server: LoopServer, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"data": [')
        await asyncio.sleep(5)
        return response

    loop_server.handler = stall
    client = client_factory(loop_server.url, timeout=0.3)
    with pytest.raises(SnapshotRequestFailed) as caught:
        await client.fetch(SnapshotRequest(f"{API}/reviews"), "tok")
    assert str(caught.value) == "snapshot request failed: upstream timeout"


async def test_a_refused_connection_is_a_failed_request(
    client_factory: Callable[..., RestSnapshotClient],
) -> None:
    client = client_factory(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SnapshotRequestFailed) as caught:
        await client.fetch(SnapshotRequest(f"{API}/reviews"), "tok")
    reason = caught.value.reason
    assert reason.startswith("snapshot request failed: ")
    assert len(reason) > len("snapshot request failed: ")
    assert "deadline" not in reason


async def test_a_connection_dropped_mid_body_is_a_failed_request(
    loop_server: LoopServer, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    async def drop(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b'{"data": [')
        assert request.transport is not None
        request.transport.close()
        return response

    loop_server.handler = drop
    client = client_factory(loop_server.url)
    with pytest.raises(SnapshotRequestFailed) as caught:
        await client.fetch(SnapshotRequest(f"{API}/reviews"), "tok")
    assert caught.value.reason.startswith("snapshot request failed: ")


# --- status mapping and decoding ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (401, SnapshotForbidden, "section snapshot forbidden"),
        (403, SnapshotForbidden, "section snapshot forbidden"),
        (404, SnapshotNotFound, "section snapshot not found"),
        (400, SnapshotUnexpectedStatus, "unexpected snapshot response 400"),
        (409, SnapshotUnexpectedStatus, "unexpected snapshot response 409"),
        (500, SnapshotUnexpectedStatus, "unexpected snapshot response 500"),
        (502, SnapshotUnexpectedStatus, "unexpected snapshot response 502"),
        (503, SnapshotUnexpectedStatus, "unexpected snapshot response 503"),
        (201, SnapshotUnexpectedStatus, "unexpected snapshot response 201"),
        (202, SnapshotUnexpectedStatus, "unexpected snapshot response 202"),
    ],
)
async def test_status_mapping(
    client: RestSnapshotClient,
    fresh_upstream: RecordingUpstream,
    status: int,
    error: type[SnapshotError],
    reason: str,
) -> None:
    fresh_upstream.script(f"{API}/tables/t1", status, {"message": "nope"})
    with pytest.raises(error) as caught:
        await client.fetch(plan_detail(CATALOGUE.by_name["tables"], "user", "t1"), "tok")
    assert caught.value.reason == reason
    assert len(fresh_upstream.calls()) == 1


async def test_a_204_is_unexpected(
    loop_server: LoopServer, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    async def empty(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    loop_server.handler = empty
    with pytest.raises(SnapshotUnexpectedStatus) as caught:
        await client_factory(loop_server.url).fetch(SnapshotRequest(f"{API}/tables"), "tok")
    assert caught.value.reason == "unexpected snapshot response 204"


async def test_the_real_404_of_an_unknown_id(client: RestSnapshotClient) -> None:
    with pytest.raises(SnapshotNotFound):
        await client.fetch(plan_detail(CATALOGUE.by_name["tables"], "user", "no-such-table"), "tok")


@pytest.mark.parametrize("body", [b"not json", b"{", b"", b'{"data": }', b"\xff\xfe"])
async def test_invalid_json_is_a_decode_error(
    client: RestSnapshotClient, fresh_upstream: RecordingUpstream, body: bytes
) -> None:
    fresh_upstream.script(f"{API}/tables", 200, body)
    with pytest.raises(SnapshotDecodeError) as caught:
        await client.fetch(SnapshotRequest(f"{API}/tables"), "tok")
    assert caught.value.reason.startswith("decode snapshot: ")
    assert len(caught.value.reason) > len("decode snapshot: ")


@pytest.mark.parametrize(
    ("body", "payload"),
    [
        ({"data": {"id": "t1", "status": "AVAILABLE"}}, {"id": "t1", "status": "AVAILABLE"}),
        (
            {"data": [{"id": "t1"}], "pagination": {"page": 1, "totalItems": 1}},
            {"data": [{"id": "t1"}], "pagination": {"page": 1, "totalItems": 1}},
        ),
        ({"data": None, "x": 1}, {"data": None, "x": 1}),
        ({"id": "plain"}, {"id": "plain"}),
        ([{"id": "a"}, {"id": "b"}], {"items": [{"id": "a"}, {"id": "b"}]}),
        ([], {"items": []}),
        (7, {"value": 7}),
        ("text", {"value": "text"}),
        (True, {"value": True}),
    ],
)
async def test_unwrap_rules_on_real_bodies(
    client: RestSnapshotClient, fresh_upstream: RecordingUpstream, body: Any, payload: Any
) -> None:
    fresh_upstream.script(f"{API}/tables", 200, orjson.dumps(body))
    assert await client.fetch(SnapshotRequest(f"{API}/tables"), "tok") == payload


async def test_json_null_is_a_value(client: RestSnapshotClient, fresh_upstream: RecordingUpstream) -> None:
    fresh_upstream.script(f"{API}/tables", 200, b"null")
    assert await client.fetch(SnapshotRequest(f"{API}/tables"), "tok") == {"value": None}


async def test_a_large_body_arriving_in_many_chunks_is_read_whole(
    loop_server: LoopServer, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    rows = [{"id": f"t{n}", "name": "x" * 100} for n in range(20_000)]  # ~2.5 MB
    raw = orjson.dumps({"data": rows, "pagination": {"totalItems": len(rows)}})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(raw), 50_000):
            await response.write(raw[start : start + 50_000])
            await asyncio.sleep(0.001)
        await response.write_eof()
        return response

    loop_server.handler = chunked
    payload = await client_factory(loop_server.url).fetch(SnapshotRequest(f"{API}/tables"), "tok")
    assert len(payload["data"]) == len(rows)
    assert payload["data"][-1] == rows[-1]


async def test_a_large_body_from_the_recording_upstream(
    client: RestSnapshotClient, fresh_upstream: RecordingUpstream
) -> None:
    rows = [{"id": f"t{n}", "name": "y" * 200} for n in range(10_000)]
    fresh_upstream.script(f"{API}/tables", 200, {"data": rows})
    payload = await client.fetch(SnapshotRequest(f"{API}/tables"), "tok")
    assert payload == {"data": rows}


async def test_a_body_over_the_limit_is_refused(
    loop_server: LoopServer,
    client_factory: Callable[..., RestSnapshotClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rest_module, "_MAX_BODY", 1000)

    async def big(request: web.Request) -> web.StreamResponse:
        return web.json_response({"data": ["x" * 2000]})

    loop_server.handler = big
    with pytest.raises(SnapshotDecodeError) as caught:
        await client_factory(loop_server.url).fetch(SnapshotRequest(f"{API}/tables"), "tok")
    assert caught.value.reason == "decode snapshot: response too large"


# --- one pooled session -------------------------------------------------------------------------


async def test_sequential_calls_reuse_one_connection(
    loop_server: LoopServer, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    statuses = iter([200, 404, 200, 401, 200, 500, 200, 403] * 5)

    async def mixed(request: web.Request) -> web.StreamResponse:
        return web.json_response({"message": "x"}, status=next(statuses))

    loop_server.handler = mixed
    client = client_factory(loop_server.url)
    for _ in range(40):
        with contextlib.suppress(SnapshotError):
            await client.fetch(SnapshotRequest(f"{API}/tables"), "tok")
    assert len(loop_server.seen) == 40
    # error answers are read (they are small), so even they keep the connection reusable
    assert len({seen.port for seen in loop_server.seen}) == 1


async def test_concurrent_calls_share_a_bounded_pool(
    loop_server: LoopServer, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.json_response({"data": {"ok": True}})

    loop_server.handler = held
    client = client_factory(loop_server.url, max_connections=4)
    tasks = [
        asyncio.create_task(client.fetch(SnapshotRequest(f"{API}/tables/{n}"), "tok")) for n in range(20)
    ]
    for _ in range(1000):
        if loop_server.active == 4:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert loop_server.active == 4
    gate.set()
    assert await asyncio.gather(*tasks) == [{"ok": True}] * 20
    assert loop_server.max_active == 4
    assert len({seen.port for seen in loop_server.seen}) == 4
    # and later sequential calls reuse those connections
    before = {seen.port for seen in loop_server.seen}
    for n in range(10):
        await client.fetch(SnapshotRequest(f"{API}/tables/{n}"), "tok")
    assert {seen.port for seen in loop_server.seen} == before


async def test_close_then_fetch_opens_a_new_session(
    loop_server: LoopServer, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    client = client_factory(loop_server.url)
    await client.fetch(SnapshotRequest(f"{API}/tables"), "tok")
    await client.close()
    await client.close()  # idempotent
    assert await client.fetch(SnapshotRequest(f"{API}/tables"), "tok") == {"ok": True}
    assert len(loop_server.seen) == 2


# --- metrics ----------------------------------------------------------------------------------


class UpstreamMetrics:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: None

    def upstream_call(self, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.outcomes.append(outcome)


async def test_each_call_is_counted_with_its_outcome(
    fresh_upstream: RecordingUpstream, client_factory: Callable[..., RestSnapshotClient]
) -> None:
    metrics = UpstreamMetrics()
    client = client_factory(fresh_upstream.url, timeout=1.0, metrics=metrics)
    fresh_upstream.script(f"{API}/a", 200, {"data": {}})
    fresh_upstream.script(f"{API}/b", 404)
    fresh_upstream.script(f"{API}/c", 200, b"oops")
    fresh_upstream.script(f"{API}/d", 200, {}, delay=6.0)
    fresh_upstream.script(f"{API}/e", 503)
    for path in ("a", "b", "c", "d", "e"):
        await fetch_quietly(client, SnapshotRequest(f"{API}/{path}"))
    refused = client_factory(f"http://127.0.0.1:{free_port()}", metrics=metrics)
    await fetch_quietly(refused, SnapshotRequest(f"{API}/a"))
    assert metrics.outcomes == ["ok", "404", "decode", "timeout", "503", "network"]
