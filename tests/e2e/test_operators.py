"""What an operator sees: the CLI (check, token, help), configuration problems all at once, a
port in use, logs with no broker, refused handshakes in the log, errors clients read.

Each runs the real ``mesaya-realtime`` process (``python -m mesaya_realtime``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jwt
import orjson

from tests.kafka_support import http_get
from tests.support import SECRET, free_port, gateway_env, make_token, running_gateway

CLEAN = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("JWT_", "KAFKA_", "REST_", "WS_", "PORT", "HOST"))
}


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesaya_realtime", *args],
        env={**CLEAN, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_reports_every_problem_at_once_and_warns_of_a_misspelt_variable(tmp_path: Path) -> None:
    done = cli(
        "check",
        cwd=tmp_path,
        PORT="eighty",
        JWT_SECRET="short",
        REST_BASE_URL="nowhere",
        JWT_SECRETS="meant-the-other-one",
    )
    assert done.returncode == 2
    assert (
        "warning: JWT_SECRETS: not a setting of the gateway, ignored (did you mean JWT_SECRET?)"
        in done.stdout
    )
    assert "3 problems" in done.stdout
    for name in ("PORT:", "JWT_SECRET: must be at least 32 bytes", "REST_BASE_URL:"):
        assert name in done.stdout, done.stdout
    # the same at serve start-up, in one message, exit 2
    served = cli("serve", cwd=tmp_path, PORT="eighty", JWT_SECRET="short", REST_BASE_URL="nowhere")
    assert served.returncode == 2
    assert "invalid configuration (3 problems)" in served.stderr
    ok = cli("check", cwd=tmp_path, JWT_SECRET=SECRET, KAFKA_ENABLED="false")
    assert (ok.returncode, ok.stdout.strip()) == (0, "configuration ok")


def test_token_signs_with_the_configured_secret(tmp_path: Path) -> None:
    done = cli(
        "token",
        "--sub",
        "user-9",
        "--role",
        "owner",
        "--role",
        "USER",
        "--ttl",
        "30m",
        cwd=tmp_path,
        JWT_SECRET=SECRET,
    )
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "user-9"
    assert claims["roles"] == ["OWNER", "USER"]
    assert 1700 < claims["exp"] - time.time() <= 1800
    refused = cli("token", "--sub", "x", cwd=tmp_path)
    assert refused.returncode == 2
    assert "JWT_SECRET" in refused.stderr


def test_help_reads_well(tmp_path: Path) -> None:
    top = cli("--help", cwd=tmp_path)
    assert top.returncode == 0
    for command in ("serve", "demo", "check", "token"):
        assert command in top.stdout
    assert ":class:" not in top.stdout
    assert "``" not in top.stdout
    serve = cli("serve", "--help", cwd=tmp_path).stdout
    assert "JWT_SECRET" in serve
    assert "WS_HEARTBEAT" in serve
    assert "README.md" in serve
    version = cli("--version", cwd=tmp_path)
    assert version.stdout.startswith("mesaya-realtime ")


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = gateway_env("http://127.0.0.1:9")
    with running_gateway(env, tmp_path / "first"):
        second = cli("serve", cwd=tmp_path, **{**env, "LOG_LEVEL": "info"})
    assert second.returncode == 2
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, second.stderr
    assert "HOST/PORT" in lines[0]
    assert env["PORT"] in lines[0]
    assert "address already in use" in lines[0]


def test_without_a_broker_the_log_stays_short_and_ready_says_why(tmp_path: Path) -> None:
    env = gateway_env("http://127.0.0.1:9", KAFKA_ENABLED="true", KAFKA_BROKERS=f"127.0.0.1:{free_port()}")
    with running_gateway(env, tmp_path) as gateway:
        time.sleep(30)
        status, body = http_get(gateway.url + "/ready")
        log = gateway.log()
    assert status == 503
    state = orjson.loads(body)
    assert state["events"]["reason"] == "broker unreachable"
    assert state["selections"]["log"]["reason"] == "broker unreachable"
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) < 30, log
    for line in lines:
        orjson.loads(line)  # every line is JSON, librdkafka's too
    assert not any(line.startswith("%") for line in lines)


async def test_a_refused_handshake_is_logged_once_without_the_token(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    env = gateway_env("http://127.0.0.1:9")
    bad = make_token("u-1", secret="another-secret-0123456789-abcdefghijkl")
    with running_gateway(env, tmp_path) as gateway:
        for _ in range(20):  # a reconnect storm of one client
            async with http.get(f"{gateway.url}/ws/tables/s-1/{bad}") as response:
                assert response.status == 401
        time.sleep(0.5)
        log = gateway.log()
    refused = [orjson.loads(line) for line in log.splitlines() if '"handshake refused"' in line]
    assert len(refused) == 1  # rate-limited per kind
    assert refused[0]["status"] == 401
    assert refused[0]["reason"] == "invalid token"
    assert refused[0]["path"] == "/ws/tables/s-1/<token>"
    assert bad not in log


async def test_an_upstream_failure_reaches_the_client_without_a_host(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    env = gateway_env(f"http://127.0.0.1:{port}", REST_TIMEOUT="1s")
    with running_gateway(env, tmp_path) as gateway:
        ws = await http.ws_connect(f"{gateway.ws_url}/ws/tables/s-1/{make_token('u-1')}")
        await ws.receive(timeout=10)
        await ws.send_str('{"action":"list_tables"}')
        reply = orjson.loads((await ws.receive(timeout=10)).data)
        await ws.close()
        log = gateway.log()
    assert reply["data"]["error"] == "snapshot request failed: upstream unavailable"
    assert "127.0.0.1" not in orjson.dumps(reply).decode()
    assert f"127.0.0.1:{port}" not in reply["data"]["error"]
    assert '"upstream unavailable"' in log  # the detail is in the log, with the REST path
