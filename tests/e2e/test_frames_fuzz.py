"""Random client frames against the real gateway process, over raw TCP (hypothesis).

Each example upgrades a fresh connection and sends a random stream: masked or not, any opcode
(reserved ones included), fragmented or not, any length around the limits, text that is or is
not UTF-8, control frames too long or fragmented, commands with random payloads. Whatever it
does to that connection, the process must stay up and answer another client's ping at once
(its closing codes are RFC 6455's, never a crash).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import GatewayProcess, RecordingUpstream, gateway_env, make_token, running_gateway

TOKEN = make_token("fuzzer", ["USER"], exp_in=86_400)


@pytest.fixture(scope="module")
def frame_gateway(
    upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = gateway_env(upstream.url, WS_MAX_MESSAGE_BYTES="4096")
    with running_gateway(env, tmp_path_factory.mktemp("frames")) as process:
        yield process


def encode(opcode: int, payload: bytes, *, fin: bool, masked: bool, rsv: int) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


commands = st.builds(
    lambda action, payload: orjson.dumps({"action": action, "payload": payload}),
    st.sampled_from(["ping", "list", "detail", "subscribe", "authenticate", "select_table", "x"]),
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=30)
    | st.dictionaries(st.text(max_size=8), st.text(max_size=8)),
)
payloads = (
    commands
    | st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | st.sampled_from([b"\xff\xfe", b"\xc3", b"x" * 4096, b"x" * 4097, b"x" * 126, b"x" * 70_000])
)
frames = st.builds(
    encode,
    st.sampled_from([0, 1, 2, 3, 7, 8, 9, 10, 11, 15]),
    payloads,
    fin=st.booleans(),
    masked=st.sampled_from([True, True, True, False]),
    rsv=st.sampled_from([0, 0, 0, 1, 4]),
)


def upgrade(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        (
            f"GET /ws/tables/fuzz/{TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    data = b""
    while b"system.connected" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed during the upgrade"
        data += chunk
    return sock


def ping_round_trip(port: int) -> float:
    """A fresh, well-behaved client's ping: connected, pong, seconds taken for the pong."""
    with upgrade(port) as sock:
        started = time.perf_counter()
        sock.sendall(encode(1, b'{"action":"ping"}', fin=True, masked=True, rsv=0))
        data = b""
        while b"system.pong" not in data:
            chunk = sock.recv(65536)
            assert chunk, "a well-behaved client was closed"
            data += chunk
        return time.perf_counter() - started


#: A tenth of the profile's examples (each opens two connections to a process): 50 in
#: `make test`, 2,000 in `make fuzz`.
EXAMPLES = max(50, (settings.default.max_examples or 0) // 10)


@settings(
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(frames, min_size=1, max_size=12))
def test_random_frames_never_hurt_the_process(frame_gateway: GatewayProcess, stream: list[bytes]) -> None:
    with upgrade(frame_gateway.port) as sock:
        try:
            for frame in stream:
                sock.sendall(frame)
        except OSError:
            pass  # closed by the server mid-stream: allowed
    assert frame_gateway.process.poll() is None, frame_gateway.log()[-2000:]
    assert ping_round_trip(frame_gateway.port) < 0.1
    assert "Traceback" not in frame_gateway.log()
