"""Table selection across gateway processes that share only the real Kafka broker.

Documented bound (docs/WEBSOCKET_ENDPOINTS.md, "When a hold ends", and docs/ARCHITECTURE.md,
"Selection bounds"): the holds of a node that dies end on the other nodes at most
``TABLE_SELECTION_NODE_TIMEOUT + 2 s`` after its death.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import aiohttp
import pytest

from tests.selection_support import Client, connect, new_section, released, selecting
from tests.support import GatewayProcess, RecordingUpstream, gateway_env, running_gateway

NODE_TIMEOUT = 3.0
#: The bound the docs state for a dead node's holds: TABLE_SELECTION_NODE_TIMEOUT + 2 s.
DEAD_NODE_BOUND = NODE_TIMEOUT + 2.0


@pytest.fixture(scope="module")
def selection_topic() -> str:
    return f"test-table-selections-{uuid.uuid4().hex[:8]}"


def kafka_env(upstream: RecordingUpstream, brokers: str, topic: str, node: str) -> dict[str, str]:
    return gateway_env(
        upstream.url,
        KAFKA_ENABLED="true",
        KAFKA_BROKERS=brokers,
        NODE_ID=node,
        TABLE_SELECTION_TOPIC=topic,
        TABLE_SELECTION_RATE_LIMIT="1000",
        TABLE_SELECTION_HEARTBEAT="500ms",
        TABLE_SELECTION_NODE_TIMEOUT=f"{NODE_TIMEOUT:g}s",
        TABLE_SELECTION_CHECKPOINT_INTERVAL="2s",
    )


@pytest.fixture(scope="module")
def pair(
    upstream: RecordingUpstream,
    kafka_brokers: str,
    selection_topic: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateway processes on one selection topic."""
    with ExitStack() as stack:
        nodes = []
        for name in ("node-a", "node-b"):
            env = kafka_env(upstream, kafka_brokers, selection_topic, name)
            process = stack.enter_context(running_gateway(env, tmp_path_factory.mktemp(name)))
            nodes.append(process)
        for process in nodes:
            process.wait_healthy(ready=True, timeout=90)
        yield nodes[0], nodes[1]


async def test_a_selection_on_one_node_is_seen_and_respected_on_the_other(
    http: aiohttp.ClientSession, pair: tuple[GatewayProcess, GatewayProcess]
) -> None:
    node_a, node_b = pair
    section = new_section()
    ada = await connect(http, node_a, "ada", section)
    bob = await connect(http, node_b, "bob", section)
    await ada.select("table-1")
    confirmation = await ada.expect("tables.selecting")
    seen = await bob.expect("tables.selecting")
    assert seen["data"] == confirmation["data"]
    assert selecting(seen) == ("table-1", "ada", "live")
    await bob.select("table-1")
    assert (await bob.expect("tables.error"))["data"] == {"error": "table already selected"}
    cy = await connect(http, node_b, "cy", section)  # joins on the other node
    assert selecting(await cy.receive()) == ("table-1", "ada", "current")
    await bob.select("table-2")
    for client in (ada, bob, cy):
        assert selecting(await client.expect("tables.selecting")) == ("table-2", "bob", "live")
    await ada.release("table-1")
    for client in (ada, bob, cy):
        assert released(await client.expect("tables.released")) == ("table-1", "ada", "released")
    await bob.close()
    for client in (ada, cy):
        assert released(await client.expect("tables.released")) == ("table-2", "bob", "disconnected")
    await ada.nothing_pending()
    await cy.nothing_pending()


async def _round_outcome(client: Client) -> tuple[str, dict[str, Any] | None]:
    """Who the round's ``tables.selecting`` names, and this contender's refusal if it lost."""
    broadcast: dict[str, Any] | None = None
    refusal: dict[str, Any] | None = None
    while broadcast is None or (broadcast["data"]["selectedBy"] != client.user and refusal is None):
        message = await client.receive()
        if message["topic"] == "tables.selecting" and broadcast is None:
            broadcast = message
        elif message["topic"] == "tables.error" and refusal is None:
            refusal = message
        else:
            pytest.fail(f"unexpected message for {client.user}: {message}")
    return broadcast["data"]["selectedBy"], refusal


async def test_fifty_rounds_of_simultaneous_selection_end_with_one_holder_on_both_nodes(
    http: aiohttp.ClientSession, pair: tuple[GatewayProcess, GatewayProcess]
) -> None:
    node_a, node_b = pair
    section = new_section()
    ada = await connect(http, node_a, "ada", section)
    bob = await connect(http, node_b, "bob", section)
    watchers = [
        await connect(http, node_a, "watch-a", section),
        await connect(http, node_b, "watch-b", section),
    ]
    winners: list[str] = []
    for round_number in range(50):
        first, second = (ada, bob) if round_number % 2 == 0 else (bob, ada)
        await asyncio.gather(first.select("table-1"), second.select("table-1"))
        outcomes = {client.user: await _round_outcome(client) for client in (ada, bob)}
        winner = outcomes["ada"][0]
        assert outcomes["bob"][0] == winner, outcomes
        loser = "bob" if winner == "ada" else "ada"
        assert outcomes[winner][1] is None, outcomes
        refusal = outcomes[loser][1]
        assert refusal is not None
        assert refusal["data"] == {"error": "table already selected"}
        seen = [await watcher.expect("tables.selecting") for watcher in watchers]
        assert seen[0]["data"] == seen[1]["data"]  # the same hold, to the millisecond
        assert selecting(seen[0]) == ("table-1", winner, "live")
        await (ada if winner == "ada" else bob).release("table-1")
        for client in (ada, bob, *watchers):
            assert released(await client.expect("tables.released")) == ("table-1", winner, "released")
        winners.append(winner)
    for client in (ada, bob, *watchers):
        await client.nothing_pending()  # exactly one selecting and one released per round
    print(f"winners over 50 rounds: ada {winners.count('ada')}, bob {winners.count('bob')}")


async def test_a_node_started_later_knows_the_current_selections(
    http: aiohttp.ClientSession,
    pair: tuple[GatewayProcess, GatewayProcess],
    upstream: RecordingUpstream,
    kafka_brokers: str,
    selection_topic: str,
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    node_a, _ = pair
    section = new_section()
    ada = await connect(http, node_a, "ada", section)
    await ada.select("table-1")
    await ada.expect("tables.selecting")
    late = start_gateway(kafka_env(upstream, kafka_brokers, selection_topic, "node-late"), ready=True)
    cy = await connect(http, late, "cy", section)
    assert selecting(await cy.receive()) == ("table-1", "ada", "current")
    await cy.select("table-1")
    assert (await cy.expect("tables.error"))["data"] == {"error": "table already selected"}
    await ada.release("table-1")
    assert released(await cy.expect("tables.released")) == ("table-1", "ada", "released")


async def test_the_holds_of_a_killed_node_end_on_the_others_within_the_bound(
    http: aiohttp.ClientSession,
    pair: tuple[GatewayProcess, GatewayProcess],
    upstream: RecordingUpstream,
    kafka_brokers: str,
    selection_topic: str,
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    node_a, node_b = pair
    doomed = start_gateway(kafka_env(upstream, kafka_brokers, selection_topic, "node-doomed"), ready=True)
    section = new_section()
    ada = await connect(http, doomed, "ada", section)
    watchers = [
        await connect(http, node_a, "watch-a", section),
        await connect(http, node_b, "watch-b", section),
    ]
    for table in ("table-1", "table-2"):
        await ada.select(table)
        await ada.expect("tables.selecting")
        for watcher in watchers:
            assert selecting(await watcher.expect("tables.selecting")) == (table, "ada", "live")
    killed_at = time.monotonic()
    await asyncio.to_thread(doomed.kill)  # SIGKILL: no close frame, no release, no goodbye
    for watcher in watchers:
        ends = {released(await watcher.expect("tables.released", timeout=30)) for _ in range(2)}
        assert ends == {("table-1", "ada", "node_down"), ("table-2", "ada", "node_down")}
    elapsed = time.monotonic() - killed_at
    assert elapsed <= DEAD_NODE_BOUND, f"released after {elapsed:.2f}s"
    print(f"holds of the killed node released after {elapsed:.2f}s (bound {DEAD_NODE_BOUND:g}s)")
    bob = await connect(http, node_b, "bob", section)
    await bob.nothing_pending()  # nothing is selected any more
    await bob.select("table-1")
    assert selecting(await bob.expect("tables.selecting")) == ("table-1", "bob", "live")


async def test_a_node_that_shuts_down_releases_its_holds_at_once(
    http: aiohttp.ClientSession,
    pair: tuple[GatewayProcess, GatewayProcess],
    upstream: RecordingUpstream,
    kafka_brokers: str,
    selection_topic: str,
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    _, node_b = pair
    leaving = start_gateway(kafka_env(upstream, kafka_brokers, selection_topic, "node-leaving"), ready=True)
    section = new_section()
    ada = await connect(http, leaving, "ada", section)
    bob = await connect(http, node_b, "bob", section)
    await ada.select("table-1")
    await ada.expect("tables.selecting")
    await bob.expect("tables.selecting")
    assert await asyncio.to_thread(leaving.stop) == 0  # SIGTERM: a rolling deploy
    assert released(await bob.expect("tables.released")) == ("table-1", "ada", "disconnected")
