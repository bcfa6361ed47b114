"""Table selection on one real gateway process (Kafka disabled: the in-process log).

Every test has a section of its own; the clients are real WebSocket clients over TCP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from tests.selection_support import Client, connect, new_section, raw_client, released, selecting
from tests.support import GatewayProcess, RecordingUpstream, gateway_env, running_gateway


@pytest.fixture(scope="module")
def selection_gateway(
    upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = gateway_env(upstream.url, TABLE_SELECTION_RATE_LIMIT="1000")
    with running_gateway(env, tmp_path_factory.mktemp("selection")) as process:
        process.wait_healthy(ready=True)
        yield process


@pytest.fixture
def section() -> str:
    return new_section()


async def drain(client: Client) -> list[dict[str, Any]]:
    """Every message queued for ``client`` before a ping's pong."""
    await client.send("ping")
    messages = []
    while (message := await client.receive())["topic"] != "system.pong":
        messages.append(message)
    return messages


def moment(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_tables_sockets_receive_the_selection_topics(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str
) -> None:
    tables = await connect(http, selection_gateway, "ada", section)
    topics = tables.connected["data"]["allowedTopics"]
    assert topics[-2:] == ["tables.selecting", "tables.released"]
    menus = await connect(http, selection_gateway, "ada", section, entity="menus")
    assert not any(
        topic.endswith((".selecting", ".released")) for topic in menus.connected["data"]["allowedTopics"]
    )
    await menus.select("t1")  # not a command of other entities
    error = await menus.expect("menus.error")
    assert error["data"] == {"error": "unsupported action"}


async def test_select_confirms_to_the_selector_and_tells_its_section_only(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str
) -> None:
    ada = await connect(http, selection_gateway, "ada", section)
    bob = await connect(http, selection_gateway, "bob", section)
    admin = await connect(http, selection_gateway, "root", "*", roles=["ADMIN"])
    elsewhere = await connect(http, selection_gateway, "cy", new_section())
    await ada.select("table-1")
    confirmation = await ada.expect("tables.selecting")
    assert confirmation["entity"] == "tables"
    assert confirmation["action"] == "selecting"
    assert confirmation["resourceId"] == "table-1"
    data = confirmation["data"]
    assert set(data) == {"tableId", "sectionId", "selectedBy", "selectedAt", "expiresAt"}
    assert (data["tableId"], data["sectionId"], data["selectedBy"]) == ("table-1", section, "ada")
    assert (moment(data["expiresAt"]) - moment(data["selectedAt"])).total_seconds() == 300
    assert confirmation["metadata"] == {"origin": "live", "sectionId": section}
    assert confirmation["timestamp"].endswith("Z")
    for other in (bob, admin):
        seen = await other.expect("tables.selecting")
        assert (seen["data"], seen["metadata"]) == (data, confirmation["metadata"])
    await elsewhere.nothing_pending()
    await ada.nothing_pending()  # the broadcast is the only answer


async def test_selecting_is_an_alias_and_a_held_table_is_refused_to_every_other_socket(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str
) -> None:
    ada = await connect(http, selection_gateway, "ada", section)
    ada_tab = await connect(http, selection_gateway, "ada", section)
    bob = await connect(http, selection_gateway, "bob", section)
    await ada.select("table-1", action="selecting")
    assert selecting(await ada.expect("tables.selecting")) == ("table-1", "ada", "live")
    for client in (bob, ada_tab):
        await client.expect("tables.selecting")
    for client, action in ((bob, "select_table"), (ada_tab, "SELECTING")):
        await client.select("table-1", action=action)
        error = await client.expect("tables.error")
        assert error["data"] == {"error": "table already selected"}
        assert error["metadata"] == {
            "action": action.lower(),
            "reason": "table already selected",
            "sectionId": section,
        }
        assert error["resourceId"] == section
    await ada.nothing_pending()


async def test_selecting_again_extends_the_hold(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str
) -> None:
    ada = await connect(http, selection_gateway, "ada", section)
    bob = await connect(http, selection_gateway, "bob", section)
    await ada.select("table-1")
    first = (await ada.expect("tables.selecting"))["data"]
    await bob.expect("tables.selecting")
    await asyncio.sleep(0.05)
    await ada.select("table-1")
    second = (await ada.expect("tables.selecting"))["data"]
    assert (await bob.expect("tables.selecting"))["data"] == second
    assert second["selectedAt"] == first["selectedAt"]
    assert moment(second["expiresAt"]) > moment(first["expiresAt"])


async def test_release_frees_the_table_for_everyone(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str
) -> None:
    ada = await connect(http, selection_gateway, "ada", section)
    bob = await connect(http, selection_gateway, "bob", section)
    await ada.select("table-1")
    await ada.select("table-2")
    for client in (ada, bob):
        await client.expect("tables.selecting")
        await client.expect("tables.selecting")
    await ada.release("table-1")
    await ada.release("table-2", action="released")
    for client in (ada, bob):
        first = await client.expect("tables.released")
        assert released(first) == ("table-1", "ada", "released")
        assert first["resourceId"] == "table-1"
        assert first["data"] == {
            "tableId": "table-1",
            "sectionId": section,
            "selectedBy": "ada",
            "reason": "released",
        }
        assert first["metadata"] == {"reason": "released", "sectionId": section}
        assert released(await client.expect("tables.released")) == ("table-2", "ada", "released")
    await bob.select("table-1")
    assert selecting(await ada.expect("tables.selecting")) == ("table-1", "bob", "live")


async def test_releasing_a_table_the_socket_does_not_hold_is_refused(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str
) -> None:
    ada = await connect(http, selection_gateway, "ada", section)
    bob = await connect(http, selection_gateway, "bob", section)
    await bob.release("table-1")
    error = await bob.expect("tables.error")
    assert error["data"] == {"error": "table not selected by this socket"}
    assert error["metadata"]["action"] == "release_table"
    await ada.select("table-1")
    await ada.expect("tables.selecting")
    await bob.expect("tables.selecting")
    await bob.release("table-1", action="released")
    error = await bob.expect("tables.error")
    assert error["data"] == {"error": "table not selected by this socket"}
    assert error["metadata"]["action"] == "released"
    await ada.nothing_pending()


async def test_a_socket_that_joins_gets_the_current_selections_after_connected(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str
) -> None:
    ada = await connect(http, selection_gateway, "ada", section)
    await ada.select("table-2")
    await ada.select("table-1")
    await ada.expect("tables.selecting")
    await ada.expect("tables.selecting")
    bob = await connect(http, selection_gateway, "bob", section)
    first, second = await bob.receive(), await bob.receive()
    assert [selecting(first), selecting(second)] == [
        ("table-1", "ada", "current"),
        ("table-2", "ada", "current"),
    ]
    assert set(first["data"]) == {"tableId", "sectionId", "selectedBy", "selectedAt", "expiresAt"}
    await bob.nothing_pending()
    # another section has none; the admin's wildcard socket sees every section
    stranger = await connect(http, selection_gateway, "cy", new_section())
    await stranger.nothing_pending()
    admin = await connect(http, selection_gateway, "root", "*", roles=["ADMIN"])
    current = await drain(admin)
    mine = [selecting(message) for message in current if message["data"]["sectionId"] == section]
    assert mine == [("table-1", "ada", "current"), ("table-2", "ada", "current")]


async def test_closing_the_socket_releases_its_tables(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str
) -> None:
    ada = await connect(http, selection_gateway, "ada", section)
    bob = await connect(http, selection_gateway, "bob", section)
    await ada.select("table-1")
    await ada.select("table-2")
    await bob.expect("tables.selecting")
    await bob.expect("tables.selecting")
    await ada.close()
    assert released(await bob.expect("tables.released")) == ("table-1", "ada", "disconnected")
    assert released(await bob.expect("tables.released")) == ("table-2", "ada", "disconnected")


@pytest.mark.parametrize("ending", ["reset", "drop"])
async def test_losing_the_tcp_connection_releases_its_tables(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str, ending: str
) -> None:
    """``reset``: a TCP RST with no close frame; ``drop``: FIN with no close frame."""
    ada = await raw_client(selection_gateway, "ada", section)
    bob = await connect(http, selection_gateway, "bob", section)
    await asyncio.to_thread(ada.send, {"action": "select_table", "payload": {"tableId": "table-7"}})
    await asyncio.to_thread(ada.expect, "tables.selecting")
    assert selecting(await bob.expect("tables.selecting")) == ("table-7", "ada", "live")
    await asyncio.to_thread(getattr(ada, ending))
    assert released(await bob.expect("tables.released")) == ("table-7", "ada", "disconnected")


async def test_a_client_that_goes_silent_loses_its_tables_after_the_heartbeat(
    http: aiohttp.ClientSession,
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    """No FIN, no RST: the client just stops answering (a laptop lid closed, a dead network).
    The gateway's WebSocket heartbeat (WS_HEARTBEAT=1s here) finds it and the hold ends."""
    gateway = start_gateway(gateway_env(upstream.url, WS_HEARTBEAT="1s"), ready=True)
    section = new_section()
    ada = await raw_client(gateway, "ada", section)
    bob = await connect(http, gateway, "bob", section)
    await asyncio.to_thread(ada.send, {"action": "select_table", "payload": {"tableId": "table-8"}})
    await asyncio.to_thread(ada.expect, "tables.selecting")
    await bob.expect("tables.selecting")
    # ada never reads again, so never answers a ping
    assert released(await bob.expect("tables.released", timeout=30)) == ("table-8", "ada", "disconnected")
    await asyncio.to_thread(ada.drop)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "tableId is required"),
        ("table-1", "tableId is required"),
        ({}, "tableId is required"),
        ({"table": "table-1"}, "tableId is required"),
        ({"tableId": ""}, "tableId is required"),
        ({"tableId": None}, "tableId is required"),
        ({"tableId": 12}, "tableId must be a string"),
        ({"tableId": {"id": "table-1"}}, "tableId must be a string"),
        ({"tableId": True}, "tableId must be a string"),
        ({"tableId": "t" * 129}, "tableId is too long"),
        ({"tableId": "table 1"}, "tableId is malformed"),
        ({"tableId": "../table-1"}, "tableId is malformed"),
        ({"tableId": "a:b"}, "tableId is malformed"),
        ({"tableId": "table-1\n"}, "tableId is malformed"),
    ],
)
@pytest.mark.parametrize("action", ["select_table", "release_table"])
async def test_malformed_table_ids_are_refused(
    http: aiohttp.ClientSession,
    selection_gateway: GatewayProcess,
    section: str,
    payload: Any,
    reason: str,
    action: str,
) -> None:
    ada = await connect(http, selection_gateway, "ada", section)
    await ada.send(action, payload)
    error = await ada.expect("tables.error")
    assert error["data"] == {"error": reason}
    assert error["metadata"] == {"action": action, "reason": reason, "sectionId": section}


async def test_the_wildcard_section_cannot_select(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess
) -> None:
    admin = await connect(http, selection_gateway, "root", "*", roles=["ADMIN"])
    await drain(admin)  # the current selections of the other tests
    for action in ("select_table", "release_table"):
        await admin.select("table-1", action=action)
        error = await admin.expect("tables.error")
        assert error["data"] == {"error": "table selection needs a section"}
        assert error["metadata"]["action"] == action


async def test_a_socket_holds_at_most_three_tables(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str
) -> None:
    ada = await connect(http, selection_gateway, "ada", section)
    for table in ("table-1", "table-2", "table-3"):
        await ada.select(table)
        await ada.expect("tables.selecting")
    await ada.select("table-4")
    error = await ada.expect("tables.error")
    assert error["data"] == {"error": "too many selections"}
    await ada.select("table-3")  # extending a held one is not a new hold
    await ada.expect("tables.selecting")
    await ada.release("table-1")
    await ada.expect("tables.released")
    await ada.select("table-4")
    assert selecting(await ada.expect("tables.selecting")) == ("table-4", "ada", "live")
    other_tab = await connect(http, selection_gateway, "ada", section)  # the limit is per socket
    for _ in range(3):
        await other_tab.receive()  # current selections
    await other_tab.select("table-5")
    assert selecting(await other_tab.expect("tables.selecting")) == ("table-5", "ada", "live")


async def test_too_many_requests_per_second_are_refused(
    http: aiohttp.ClientSession,
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(gateway_env(upstream.url, TABLE_SELECTION_RATE_LIMIT="2"), ready=True)
    section = new_section()
    ada = await connect(http, gateway, "ada", section)
    for _ in range(12):
        await ada.select("table-1")
    topics = [(await ada.receive())["topic"] for _ in range(12)]
    refusals = topics.count("tables.error")
    assert refusals >= 6, topics
    assert set(topics) == {"tables.selecting", "tables.error"}
    bob = await connect(http, gateway, "bob", section)  # another socket has its own budget
    await bob.receive()  # ada's hold
    await bob.select("table-2")
    assert selecting(await bob.expect("tables.selecting")) == ("table-2", "bob", "live")
    assert selecting(await ada.expect("tables.selecting")) == ("table-2", "bob", "live")
    await asyncio.sleep(1.0)  # the budget refills
    await ada.release("table-1")
    assert released(await ada.expect("tables.released")) == ("table-1", "ada", "released")


async def test_a_hold_expires_after_the_configured_ttl(
    http: aiohttp.ClientSession,
    upstream: RecordingUpstream,
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = start_gateway(gateway_env(upstream.url, TABLE_SELECTION_TTL="1500ms"), ready=True)
    section = new_section()
    ada = await connect(http, gateway, "ada", section)
    bob = await connect(http, gateway, "bob", section)
    await ada.select("table-1")
    data = (await ada.expect("tables.selecting"))["data"]
    assert (moment(data["expiresAt"]) - moment(data["selectedAt"])).total_seconds() == 1.5
    await bob.expect("tables.selecting")
    for client in (ada, bob):
        assert released(await client.expect("tables.released")) == ("table-1", "ada", "expired")
    latecomer = await connect(http, gateway, "cy", section)
    await latecomer.nothing_pending()  # nothing is selected any more
    await bob.select("table-1")
    assert selecting(await bob.expect("tables.selecting")) == ("table-1", "bob", "live")


async def test_unsubscribing_from_the_selection_topics(
    http: aiohttp.ClientSession, selection_gateway: GatewayProcess, section: str
) -> None:
    ada = await connect(http, selection_gateway, "ada", section)
    bob = await connect(http, selection_gateway, "bob", section)
    await bob.ws.send_json({"action": "unsubscribe", "topic": "tables.selecting"})
    await bob.nothing_pending()
    await ada.select("table-1")
    await ada.expect("tables.selecting")
    await ada.release("table-1")
    await ada.expect("tables.released")
    assert released(await bob.expect("tables.released")) == ("table-1", "ada", "released")
