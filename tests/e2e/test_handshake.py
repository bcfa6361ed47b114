"""The entity socket handshake, end to end: a real gateway process, real clients over TCP.

Covers the pre-upgrade checks of reference §2.2 (status and exact JSON body), every token
source and its precedence, the role policy of every catalogue entry, the JWT rules (HS and
RS keys, expiry, sub, roles, issuer, audience), start-up errors, ``system.connected`` field
by field, ping, and sibling sockets of one token.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mesaya_realtime.domain.catalogue import ADMIN, CATALOGUE, OWNER, USER
from tests.support import (
    ROOT,
    SECRET,
    GatewayProcess,
    RecordingUpstream,
    gateway_env,
    make_token,
    running_gateway,
)

TIMEOUT = 15.0
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
DEFAULT_ACTIONS = (
    "created",
    "updated",
    "deleted",
    "status_changed",
    "user_signed_up",
    "user_logged_in",
    "roles_updated",
    "permissions_updated",
)
UPGRADE_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


def signed(**claims: Any) -> str:
    """An HS256 token of ``u1`` (ADMIN, one hour) with claims replaced; None drops a claim."""
    body = {"sub": "u1", "roles": ["ADMIN"], "exp": int(time.time()) + 3600, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")


async def refused(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """A WebSocket upgrade request that the gateway refuses: its status and JSON body."""
    async with http.get(url, headers={**UPGRADE_HEADERS, **(headers or {})}) as response:
        assert response.status != 101, f"{url} was upgraded"
        assert response.content_type == "application/json"
        return response.status, orjson.loads(await response.read())


async def connected(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """Open a socket and read its ``system.connected``; the caller closes it."""
    ws = await http.ws_connect(url, headers=headers or {}, timeout=aiohttp.ClientWSTimeout(ws_close=5))
    message = await ws.receive(timeout=TIMEOUT)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    body = orjson.loads(message.data)
    assert body["topic"] == "system.connected", body
    return ws, body


async def ping(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    await ws.send_str('{"action":"ping"}')
    message = await ws.receive(timeout=TIMEOUT)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    body: dict[str, Any] = orjson.loads(message.data)
    return body


async def connects(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> bool:
    """True when the socket opens and answers a ping; False on a refused handshake."""
    try:
        ws, _ = await connected(http, url, headers)
    except aiohttp.WSServerHandshakeError:
        return False
    async with ws:
        assert (await ping(ws))["topic"] == "system.pong"
    return True


# Pre-upgrade checks, in the reference's order ----------------------------------------------------


async def test_health(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/health") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["status"] == "ok"


@pytest.mark.parametrize("path", ["/nothing-here", "/ws", "/ws/tables", "/ws/tables/a/b/c", "/api/v1/tables"])
async def test_unknown_path_is_404_not_found(
    gateway: GatewayProcess, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(gateway.url + path) as response:
        assert response.status == 404
        assert await response.json() == {"message": "Not Found"}


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/ws/spaceships/main-hall", "spaceships"),
        ("/ws/spaceships/main-hall/garbage-token", "spaceships"),
        ("/ws/Custom-Entity/%20/garbage", "custom-entity"),
        ("/ws/schedules/main-hall?token=x", "schedules"),
    ],
)
async def test_unknown_entity_is_404_before_any_other_check(
    gateway: GatewayProcess, http: aiohttp.ClientSession, path: str, name: str
) -> None:
    status, body = await refused(http, gateway.url + path)
    assert (status, body) == (404, {"message": f"entity {name} is not integrated"})


@pytest.mark.parametrize("section", ["%20", "%20%20%20", "%09", "%20%0A"])
async def test_blank_section_is_400_missing_section_before_token_checks(
    gateway: GatewayProcess, http: aiohttp.ClientSession, section: str
) -> None:
    token = make_token("u1", ["ADMIN"])
    for url in (
        f"{gateway.url}/ws/tables/{section}/{token}",
        f"{gateway.url}/ws/tables/{section}",
        f"{gateway.url}/ws/tables/{section}/garbage",
    ):
        assert await refused(http, url) == (400, {"message": "missing section"})


async def test_an_empty_section_segment_is_400_missing_section(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    token = make_token("u1", ["ADMIN"])
    for path in (f"/ws/tables//{token}", "/ws/tables/", f"/ws/tables/?token={token}"):
        assert await refused(http, gateway.url + path) == (400, {"message": "missing section"})


async def test_an_empty_entity_segment_is_the_default_entity(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    ws, body = await connected(http, f"{gateway.ws_url}/ws//main-hall/{make_token('u1', ['USER'])}")
    await ws.close()
    assert body["data"]["entity"] == "restaurants"


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", {}),
        ("?token=", {}),
        ("?token=%20%20", {}),
        ("", {"Authorization": "Bearer "}),
        ("", {"Authorization": "Bearer    "}),
        ("", {"Authorization": "Basic dXNlcjpwYXNz"}),
        ("", {"Authorization": make_token("u1")}),
    ],
)
async def test_no_token_is_400_missing_token(
    gateway: GatewayProcess, http: aiohttp.ClientSession, query: str, headers: dict[str, str]
) -> None:
    status, body = await refused(http, f"{gateway.url}/ws/tables/main-hall{query}", headers)
    assert (status, body) == (400, {"message": "missing token"})


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        make_token("u1", ["ADMIN"], exp_in=-5),
        make_token("u1", ["ADMIN"], exp_in=-3600),
        make_token("u1", ["ADMIN"], secret="a-different-secret-0123456789-abcdefgh"),
        signed(sub=None),
        make_token("", ["ADMIN"]),
        signed(roles="ADMIN"),
        signed(roles={"ADMIN": True}),
        jwt.encode({"sub": "u1", "roles": ["ADMIN"]}, None, algorithm="none"),
    ],
    ids=[
        "garbage",
        "three-parts",
        "expired-just-now",
        "expired-an-hour-ago",
        "wrongly-signed",
        "missing-sub",
        "empty-sub",
        "roles-a-string",
        "roles-an-object",
        "alg-none",
    ],
)
async def test_bad_tokens_are_401_invalid_token(
    gateway: GatewayProcess, http: aiohttp.ClientSession, token: str
) -> None:
    for url, headers in (
        (f"{gateway.url}/ws/tables/main-hall/{token}", {}),
        (f"{gateway.url}/ws/tables/main-hall?token={token}", {}),
        (f"{gateway.url}/ws/tables/main-hall", {"Authorization": f"Bearer {token}"}),
    ):
        assert await refused(http, url, headers) == (401, {"message": "invalid token"})


async def test_an_expired_token_is_refused_by_a_real_client_too(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    token = make_token("u1", ["ADMIN"], exp_in=-1)
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await http.ws_connect(f"{gateway.ws_url}/ws/tables/main-hall/{token}")
    assert raised.value.status == 401


async def test_role_policy_failure_is_403_forbidden(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    token = make_token("u1", ["USER"])
    assert await refused(http, f"{gateway.url}/ws/payments/rest-1/{token}") == (403, {"message": "forbidden"})


async def test_a_plain_get_with_a_valid_token_is_400(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    token = make_token("u1", ["USER"])
    async with http.get(f"{gateway.url}/ws/tables/main-hall/{token}") as response:
        assert response.status == 400


# Token sources and precedence ----------------------------------------------------------------


async def test_each_token_source_connects(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    token = make_token("u-src", ["USER"])
    base = f"{gateway.ws_url}/ws/tables/main-hall"
    assert await connects(http, f"{base}/{token}")
    assert await connects(http, f"{base}?token={token}")
    assert await connects(http, f"{base}?token=%20{token}%20")
    for prefix in ("Bearer ", "bearer ", "BEARER ", "BeArEr "):
        assert await connects(http, base, {"Authorization": f"{prefix}{token}"}), prefix
    assert await connects(http, base, {"Authorization": f"Bearer   {token}  "})


async def test_path_token_beats_query_beats_header(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    good = make_token("u-prec", ["USER"])
    bad = "not-a-jwt"
    base = f"{gateway.ws_url}/ws/tables/main-hall"
    header_good = {"Authorization": f"Bearer {good}"}
    header_bad = {"Authorization": f"Bearer {bad}"}
    assert await connects(http, f"{base}/{good}?token={bad}", header_bad)
    assert await connects(http, f"{base}?token={good}", header_bad)
    for url, headers in (
        (f"{gateway.url}/ws/tables/main-hall/{bad}?token={good}", header_good),
        (f"{gateway.url}/ws/tables/main-hall?token={bad}", header_good),
    ):
        assert await refused(http, url, headers) == (401, {"message": "invalid token"})


async def test_the_path_token_decides_the_identity(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    path_token = make_token("from-path", ["USER"])
    query_token = make_token("from-query", ["USER"])
    header_token = make_token("from-header", ["USER"])
    base = f"{gateway.ws_url}/ws/tables/main-hall"
    headers = {"Authorization": f"Bearer {header_token}"}
    for url, user in (
        (f"{base}/{path_token}?token={query_token}", "from-path"),
        (f"{base}?token={query_token}", "from-query"),
        (base, "from-header"),
    ):
        ws, body = await connected(http, url, headers)
        await ws.close()
        assert body["metadata"]["userId"] == user


# Entity resolution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "entity"),
    [
        ("default", "restaurants"),
        ("-", "restaurants"),
        ("section", "restaurants"),
        ("Restaurant", "restaurants"),
        ("sections", "sections"),
        ("Table", "tables"),
        ("section_object", "section-objects"),
        ("subscriptionplans", "subscription-plans"),
        ("auth_user", "users"),
        ("owners", "users"),
        ("owner-upgrade", "owner-upgrades"),
    ],
)
async def test_url_aliases_reach_their_entity(
    gateway: GatewayProcess, http: aiohttp.ClientSession, segment: str, entity: str
) -> None:
    token = make_token("u-alias", ["ADMIN"])
    ws, body = await connected(http, f"{gateway.ws_url}/ws/{segment}/main-hall/{token}")
    await ws.close()
    assert body["data"]["entity"] == entity
    assert body["data"]["allowedTopics"][0] == f"{entity}.snapshot"


# Role policy per catalogue entry ---------------------------------------------------------------


@pytest.mark.parametrize("name", [spec.name for spec in CATALOGUE.entities])
async def test_role_policy_of_every_entity(
    gateway: GatewayProcess, http: aiohttp.ClientSession, upstream: RecordingUpstream, name: str
) -> None:
    upstream.own(f"u-{OWNER}", "rest-1")  # the tenant check (tests/e2e/test_tenant_isolation.py)
    spec = CATALOGUE.by_name[name]
    assert spec.roles is not None
    for role in (ADMIN, OWNER, USER):
        for spelled in (role, role.lower()):
            token = make_token(f"u-{role}", [spelled])
            url = f"{gateway.ws_url}/ws/{name}/rest-1/{token}"
            if role in spec.roles:
                assert await connects(http, url), (name, spelled)
            else:
                assert await refused(http, url.replace("ws://", "http://")) == (403, {"message": "forbidden"})
    for roles in ([], ["GUEST"], None):
        token = signed(roles=None) if roles is None else make_token("u-none", roles)
        status, body = await refused(http, f"{gateway.url}/ws/{name}/rest-1/{token}")
        assert (status, body) == (403, {"message": "forbidden"}), roles


async def test_policy_outcomes_named_in_the_issue(
    gateway: GatewayProcess, http: aiohttp.ClientSession, upstream: RecordingUpstream
) -> None:
    upstream.own("u", "rest-1")
    base = gateway.ws_url
    assert not await connects(http, f"{base}/ws/payments/rest-1/{make_token('u', ['USER'])}")
    assert await connects(http, f"{base}/ws/payments/rest-1/{make_token('u', ['OWNER'])}")
    assert await connects(http, f"{base}/ws/payments/rest-1/{make_token('u', ['USER', 'owner'])}")
    for entity in ("users", "owner-upgrades"):
        assert await connects(http, f"{base}/ws/{entity}/all/{make_token('u', ['ADMIN'])}")
        assert await connects(http, f"{base}/ws/{entity}/all/{make_token('u', ['admin'])}")
        assert not await connects(http, f"{base}/ws/{entity}/all/{make_token('u', ['OWNER', 'USER'])}")


async def test_wildcard_section_is_for_admins_only(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    ws, body = await connected(http, f"{gateway.ws_url}/ws/tables/*/{make_token('a', ['ADMIN'])}")
    await ws.close()
    assert body["data"]["sectionId"] == "*"
    assert await connects(http, f"{gateway.ws_url}/ws/tables/%2A/{make_token('a', ['Admin'])}")
    for roles in (["OWNER"], ["USER"], ["OWNER", "USER"]):
        token = make_token("o", roles)
        assert await refused(http, f"{gateway.url}/ws/tables/*/{token}") == (403, {"message": "forbidden"})


# After the upgrade ------------------------------------------------------------------------------


def reference_topics(entity: str) -> list[str]:
    """Reference §5.3 with the default WS_ALLOWED_ACTIONS: 4 base topics, then 8 actions."""
    base = [f"{entity}.{action}" for action in ("snapshot", "list", "detail", "error")]
    return base + [f"{entity}.{action}" for action in DEFAULT_ACTIONS]


async def test_system_connected_field_by_field(
    gateway: GatewayProcess, http: aiohttp.ClientSession, upstream: RecordingUpstream
) -> None:
    upstream.own("user-42", "3f1c-section")
    token = make_token("user-42", ["OWNER", "User"], sid="session-9", jti="jti-1")
    before = datetime.now(UTC)
    ws, body = await connected(http, f"{gateway.ws_url}/ws/reservations/3f1c-section/{token}")
    await ws.close()
    assert list(body) == ["topic", "entity", "action", "data", "metadata", "timestamp"]
    assert (body["topic"], body["entity"], body["action"]) == ("system.connected", "system", "connected")
    assert "resourceId" not in body
    assert list(body["data"]) == ["allowedTopics", "entity", "roles", "sectionId"]
    assert body["data"]["allowedTopics"] == reference_topics("reservations")
    assert len(body["data"]["allowedTopics"]) == 12
    assert body["data"]["entity"] == "reservations"
    assert body["data"]["roles"] == ["OWNER", "User"]
    assert body["data"]["sectionId"] == "3f1c-section"
    assert body["metadata"] == {"sectionId": "3f1c-section", "sessionId": "session-9", "userId": "user-42"}
    assert list(body["metadata"]) == ["sectionId", "sessionId", "userId"]
    assert RFC3339_UTC.match(body["timestamp"]), body["timestamp"]
    moment = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert before - timedelta(minutes=1) <= moment <= datetime.now(UTC) + timedelta(minutes=1)


@pytest.mark.parametrize("name", [spec.name for spec in CATALOGUE.entities])
async def test_allowed_topics_of_every_entity_start_with_the_reference_list(
    gateway: GatewayProcess, http: aiohttp.ClientSession, name: str
) -> None:
    ws, body = await connected(http, f"{gateway.ws_url}/ws/{name}/rest-1/{make_token('a', ['ADMIN'])}")
    await ws.close()
    topics = body["data"]["allowedTopics"]
    assert topics[:12] == reference_topics(name)
    # Entities with socket-only actions (table selection) may add their own topics after.
    assert all(topic.startswith(f"{name}.") for topic in topics)
    assert len(set(topics)) == len(topics)


async def test_system_connected_section_is_trimmed_and_decoded(
    gateway: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    ws, body = await connected(http, f"{gateway.ws_url}/ws/tables/%20main%20hall%20/{make_token()}")
    await ws.close()
    assert body["data"]["sectionId"] == "main hall"
    assert body["metadata"]["sectionId"] == "main hall"


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"sid": "s-1", "jti": "j-1"}, "s-1"),
        ({"jti": "j-1"}, "j-1"),
        ({"exp_in": None, "exp": 4_102_444_800}, "user-sid:4102444800"),
        ({"exp_in": None}, "user-sid"),
    ],
)
async def test_session_id_falls_back_sid_jti_sub_exp_sub(
    gateway: GatewayProcess, http: aiohttp.ClientSession, claims: dict[str, Any], expected: str
) -> None:
    token = make_token("user-sid", ["USER"], **claims)
    ws, body = await connected(http, f"{gateway.ws_url}/ws/tables/main-hall/{token}")
    await ws.close()
    assert body["metadata"]["sessionId"] == expected


async def test_roles_are_shown_as_given(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    ws, body = await connected(
        http, f"{gateway.ws_url}/ws/restaurants/r/{make_token('u', ['user', 'ADMIN'])}"
    )
    await ws.close()
    assert body["data"]["roles"] == ["user", "ADMIN"]


async def test_ping_answers_system_pong_exactly(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    ws, _ = await connected(http, f"{gateway.ws_url}/ws/tables/main-hall/{make_token()}")
    async with ws:
        for frame in ('{"action":"ping"}', '{"action":" PING "}', '{"action":"Ping","payload":{"x":1}}'):
            await ws.send_str(frame)
            body = orjson.loads((await ws.receive(timeout=TIMEOUT)).data)
            assert list(body) == ["topic", "entity", "action", "timestamp"]
            assert (body["topic"], body["entity"], body["action"]) == ("system.pong", "system", "pong")
            assert RFC3339_UTC.match(body["timestamp"])


async def test_sockets_of_one_token_do_not_kick_each_other_out(
    gateway: GatewayProcess, http: aiohttp.ClientSession, upstream: RecordingUpstream
) -> None:
    upstream.own("sibling", "main-hall")
    token = make_token("sibling", ["OWNER"], sid="same-session")
    urls = [
        f"{gateway.ws_url}/ws/tables/main-hall/{token}",
        f"{gateway.ws_url}/ws/tables/main-hall/{token}",
        f"{gateway.ws_url}/ws/reservations/main-hall/{token}",
        f"{gateway.ws_url}/ws/restaurants/rest-1/{token}",
    ]
    sockets = []
    for url in urls:
        ws, body = await connected(http, url)
        sockets.append(ws)
        assert body["metadata"]["sessionId"] == "same-session"
    try:
        for ws in sockets:
            assert (await ping(ws))["topic"] == "system.pong"
            assert not ws.closed
    finally:
        for ws in sockets:
            await ws.close()


# JWT configuration variants ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_gateway(
    upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory, rsa_key: rsa.RSAPrivateKey
) -> Iterator[GatewayProcess]:
    """A gateway with JWT_PUBLIC_KEY and no JWT_SECRET at all."""
    env = gateway_env(upstream.url, JWT_PUBLIC_KEY=public_pem(rsa_key))
    del env["JWT_SECRET"]
    assert "JWT_SECRET" not in os.environ
    with running_gateway(env, tmp_path_factory.mktemp("rsa-gateway")) as process:
        yield process


def rsa_token(key: Any, algorithm: str = "RS256", **claims: Any) -> str:
    body = {"sub": "rsa-user", "roles": ["OWNER"], "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(body, key, algorithm=algorithm)


async def test_public_key_gateway_accepts_rsa_and_refuses_hmac(
    rsa_gateway: GatewayProcess, http: aiohttp.ClientSession, rsa_key: rsa.RSAPrivateKey
) -> None:
    base = f"{rsa_gateway.ws_url}/ws/tables/main-hall"
    for algorithm in ("RS256", "RS384", "RS512"):
        ws, body = await connected(http, f"{base}/{rsa_token(rsa_key, algorithm)}")
        await ws.close()
        assert body["metadata"]["userId"] == "rsa-user"
    http_base = f"{rsa_gateway.url}/ws/tables/main-hall"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (
        make_token("u", ["OWNER"]),
        rsa_token(other),
        rsa_token(rsa_key, exp=int(time.time()) - 2),
        rsa_token(rsa_key, sub=None),
    ):
        assert await refused(http, f"{http_base}/{token}") == (401, {"message": "invalid token"})


async def test_public_key_gateway_refuses_a_token_without_sub(
    rsa_gateway: GatewayProcess, http: aiohttp.ClientSession, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode({"roles": ["OWNER"], "exp": int(time.time()) + 60}, rsa_key, algorithm="RS256")
    url = f"{rsa_gateway.url}/ws/tables/main-hall/{token}"
    assert await refused(http, url) == (401, {"message": "invalid token"})


async def test_issuer_and_audience_are_checked_when_configured(
    upstream: RecordingUpstream, start_gateway: Callable[..., GatewayProcess], http: aiohttp.ClientSession
) -> None:
    process = start_gateway(
        gateway_env(upstream.url, JWT_ISSUER="mesaYA-auth", JWT_AUDIENCE="mesa-ya-realtime")
    )
    base = f"{process.url}/ws/tables/main-hall"
    good = make_token("u-iss", ["USER"], iss="mesaYA-auth", aud="mesa-ya-realtime")
    assert await connects(http, f"{process.ws_url}/ws/tables/main-hall/{good}")
    for bad in (
        make_token("u-iss", ["USER"], iss="someone-else", aud="mesa-ya-realtime"),
        make_token("u-iss", ["USER"], iss="mesaYA-auth", aud="another-service"),
        make_token("u-iss", ["USER"], aud="mesa-ya-realtime"),
        make_token("u-iss", ["USER"], iss="mesaYA-auth"),
        make_token("u-iss", ["USER"]),
    ):
        assert await refused(http, f"{base}/{bad}") == (401, {"message": "invalid token"})


def run_serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m mesaya_realtime serve`` with only this configuration, in an empty cwd."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JWT_", "REST_", "WS_", "KAFKA_", "SNAPSHOT_", "LOG_", "PORT", "HOST"))
    }
    base.update(PYTHONPATH=str(ROOT / "src"), KAFKA_ENABLED="false", PORT="0", HOST="127.0.0.1")
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "mesaya_realtime", "serve"],
        env=base,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        (
            {"JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----"},
            "JWT_PUBLIC_KEY",
        ),
        ({"JWT_PUBLIC_KEY": "garbage", "JWT_SECRET": SECRET}, "JWT_PUBLIC_KEY"),
        ({"JWT_SECRET": SECRET, "REST_TIMEOUT": "soonish"}, "REST_TIMEOUT"),
        ({"JWT_SECRET": SECRET, "REST_TIMEOUT": "-1s"}, "REST_TIMEOUT"),
        ({"JWT_SECRET": SECRET, "REST_BASE_URL": "no-scheme"}, "REST_BASE_URL"),
        ({"JWT_SECRET": SECRET, "PORT": "port"}, "PORT"),
        ({"JWT_SECRET": SECRET, "WS_ENTITY_TOPICS": "spaceships:topic"}, "WS_ENTITY_TOPICS"),
        ({}, "JWT_SECRET"),
    ],
)
def test_a_wrong_setting_stops_start_up_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    result = run_serve(tmp_path, **env)
    assert result.returncode != 0
    assert variable in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
