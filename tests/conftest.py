"""Shared fixtures: a recording REST upstream, gateway processes, a real Kafka broker."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, settings

from tests.support import (
    GatewayProcess,
    RecordingUpstream,
    gateway_env,
    kafka_address,
    running_gateway,
    start_upstream,
)

# Property-based tests: a small example count in `make test`, many in `make fuzz`.
settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Tests run against the package in src/, wherever pytest is started from.
os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder: tests/unit -> unit, and so on."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "fuzz" in Path(str(item.fspath)).name:
            item.add_marker(pytest.mark.fuzz)
        for marker in ("unit", "integration", "e2e"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for WebSocket and HTTP requests (modules may override it)."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def kafka_brokers() -> str:
    """A real Kafka broker (started once per run by scripts/kafka-local)."""
    return kafka_address()


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    server = start_upstream()
    yield server
    server.stop()


@pytest.fixture
def fresh_upstream(upstream: RecordingUpstream) -> RecordingUpstream:
    upstream.reset()
    return upstream


@pytest.fixture(scope="module")
def gateway(
    upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One gateway process per test module, Kafka disabled, on the recording upstream."""
    with running_gateway(gateway_env(upstream.url), tmp_path_factory.mktemp("gateway")) as process:
        yield process


@pytest.fixture
def start_gateway(
    tmp_path: Path,
) -> Iterator[Callable[..., GatewayProcess]]:
    """Start extra gateway processes with custom env; all are stopped after the test."""
    started: list[GatewayProcess] = []

    def start(env: dict[str, str], wait: bool = True, ready: bool = False) -> GatewayProcess:
        process = GatewayProcess(env, tmp_path / f"gateway-{env['PORT']}.log")
        started.append(process)
        if wait:
            process.wait_healthy(ready=ready, timeout=60 if ready else 20)
        return process

    yield start
    for process in started:
        process.stop()
