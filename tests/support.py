"""Test helpers shared by the suites: tokens, a recording REST upstream, gateway processes.

Everything here is a real part: the upstream is an aiohttp server on loopback (in its own
thread), the gateway runs as a separate ``python -m mesaya_realtime serve`` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
from aiohttp import web

from mesaya_realtime.infrastructure.demo import OWNERS, create_demo_upstream, fixtures

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789-abcdefghijklmnop"


def make_token(
    sub: str = "user-1",
    roles: list[str] | None = None,
    *,
    secret: str = SECRET,
    exp_in: float | None = 3600,
    algorithm: str = "HS256",
    key: Any = None,
    **claims: Any,
) -> str:
    """A signed JWT; ``roles=None`` gives ``["USER"]``, pass ``claims`` to add or override."""
    body: dict[str, Any] = {"sub": sub, "roles": roles if roles is not None else ["USER"]}
    if exp_in is not None:
        body["exp"] = int(time.time() + exp_in)
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key if key is not None else secret, algorithm=algorithm)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """Runs an aiohttp application on 127.0.0.1 in a thread with its own event loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Scripted:
    status: int = 200
    body: Any = None
    delay: float = 0.0


@dataclass
class RecordingUpstream:
    """The demo fixture API plus a log of every request and scripted answers per path."""

    server: ThreadedServer
    requests: list[dict[str, Any]] = field(default_factory=list)
    scripts: dict[str, Scripted] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def script(self, path: str, status: int = 200, body: Any = None, delay: float = 0.0) -> None:
        """Answer ``path`` (exact, without query) with this status/body after ``delay`` s."""
        self.scripts[path] = Scripted(status, body, delay)

    def own(self, sub: str, *restaurants: str) -> None:
        """Make ``sub`` the owner of these restaurants in ``GET /api/v1/restaurants/me``."""
        owners: dict[str, list[str]] = self.server.app[OWNERS]
        owned = owners.setdefault(sub, [])
        owned += [r for r in restaurants if r not in owned]

    def disown(self, sub: str, *restaurants: str) -> None:
        owners: dict[str, list[str]] = self.server.app[OWNERS]
        owners[sub] = [r for r in owners.get(sub, []) if r not in restaurants]

    def calls(self, path: str | None = None) -> list[dict[str, Any]]:
        return [r for r in list(self.requests) if path is None or r["path"] == path]

    def reset(self) -> None:
        self.requests.clear()
        self.scripts.clear()

    def stop(self) -> None:
        self.server.stop()


def start_upstream() -> RecordingUpstream:
    rows = fixtures()
    app = create_demo_upstream(rows)
    holder: dict[str, RecordingUpstream] = {}

    @web.middleware
    async def record(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        upstream = holder["u"]
        upstream.requests.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "query_string": request.query_string,
                "authorization": request.headers.get("Authorization"),
                "accept": request.headers.get("Accept"),
                "at": time.monotonic(),
            }
        )
        scripted = upstream.scripts.get(request.path)
        if scripted is not None:
            if scripted.delay:
                await asyncio.sleep(scripted.delay)
            body = scripted.body if scripted.body is not None else {"message": "scripted"}
            raw = body if isinstance(body, bytes) else orjson.dumps(body)
            return web.Response(body=raw, status=scripted.status, content_type="application/json")
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.append(record)
    upstream = RecordingUpstream(ThreadedServer(app), rows=rows)
    holder["u"] = upstream
    return upstream


class GatewayProcess:
    """``python -m mesaya_realtime serve`` in a subprocess, with its log captured to a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = int(env["PORT"])
        self.log_path = log_path
        full_env = {**os.environ, **env}
        full_env.setdefault("LOG_FORMAT", "json")
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mesaya_realtime", "serve"],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 20.0, ready: bool = False) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        path = "/ready" if ready else "/health"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + path, timeout=1) as response:
                    if response.status == 200:
                        return
            time.sleep(0.1)
        raise RuntimeError(f"gateway not {'ready' if ready else 'healthy'}: {self.log()[-3000:]}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def gateway_env(upstream_url: str, **extra: str) -> dict[str, str]:
    """Environment for a gateway process; Kafka off unless ``KAFKA_ENABLED`` is passed."""
    env = {
        "PORT": str(free_port()),
        "HOST": "127.0.0.1",
        "JWT_SECRET": SECRET,
        "REST_BASE_URL": upstream_url,
        "KAFKA_ENABLED": "false",
        "LOG_LEVEL": "info",
        "WORKERS": "1",  # one process unless a test asks for more
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def running_gateway(
    env: Mapping[str, str], log_dir: Path, *, ready: bool = False
) -> Iterator[GatewayProcess]:
    """A gateway process for the block; with ``ready``, once ``/ready`` answers 200 (Kafka)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    gateway = GatewayProcess(env, log_dir / f"gateway-{env['PORT']}.log")
    try:
        gateway.wait_healthy(ready=ready, timeout=60 if ready else 20)
        yield gateway
    finally:
        gateway.stop()


def kafka_address() -> str:
    """The broker tests use: ``KAFKA_BROKERS`` if set, else ``scripts/kafka-local start``.

    Raises (fails the test run) when no broker can be had: a missing broker is never a skip.
    """
    configured = os.environ.get("KAFKA_BROKERS")
    if configured:
        return configured
    result = subprocess.run(
        [str(ROOT / "scripts" / "kafka-local"), "start"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cannot start Kafka: {result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


async def refusal(http: Any, gateway: GatewayProcess, path: str, **headers: str) -> tuple[int, Any]:
    """The HTTP answer to an upgrade request that is refused before the upgrade."""
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        **headers,
    }
    async with http.get(f"{gateway.url}{path}", headers=upgrade) as response:
        return int(response.status), orjson.loads(await response.read())


class FakeConnection:
    """An in-memory socket for unit tests of the logic around the ``Connection`` port."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.frames.append(payload)

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self, code: int, reason: str) -> None:
        pass

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(frame) for frame in self.frames]

    def take(self) -> list[dict[str, Any]]:
        """The messages so far, forgotten."""
        messages = self.messages()
        self.frames.clear()
        return messages
