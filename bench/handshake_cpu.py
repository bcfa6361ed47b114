"""Server CPU per handshake of one gateway source tree (each handshake with a fresh HS256 token).

Usage (compare trees in one command, alternated, as docs/BENCHMARKS.md does)::

    python -m bench.handshake_cpu SRC_DIR [COUNT] [--v2]

Starts ``mesaya-realtime serve`` from ``SRC_DIR`` (``PYTHONPATH``) pinned to core 0, Kafka off,
and opens ``COUNT`` sockets (50 at a time) from core 1 with raw upgrade requests, each with its
own token, waiting for ``system.connected``; a first round warms up, the second is measured from
``/proc/<pid>/stat``. ``--v2`` measures protocol v2 sockets too.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import urllib.request

from bench.common import SECRET, make_tokens, proc_cpu
from bench.run import free_port

_KEY = base64.b64encode(b"0123456789abcdef").decode()


async def _one(port: int, token: str, protocol: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    offer = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    writer.write(
        f"GET /ws/tables/s1/{token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n".encode()
    )
    data = b""
    while b"system.connected" not in data:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(data[:200])
        data += chunk
    writer.close()


async def _round(port: int, tokens: list[str], protocol: str) -> None:
    gate = asyncio.Semaphore(50)

    async def bounded(token: str) -> None:
        async with gate:
            await _one(port, token, protocol)

    await asyncio.gather(*(bounded(token) for token in tokens))


def main() -> None:
    src = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 2000
    protocols = ("", "mesaya.v2") if "--v2" in sys.argv else ("",)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": src,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "JWT_SECRET": SECRET,
        "KAFKA_ENABLED": "false",
        "WORKERS": "1",
        "LOG_LEVEL": "warn",
        "REST_BASE_URL": "http://127.0.0.1:9",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "mesaya_realtime", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )
    os.sched_setaffinity(0, {1})
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        for index, protocol in enumerate(protocols):
            asyncio.run(_round(port, make_tokens(f"warm{index}", count), protocol))
            time.sleep(0.5)
            before, started = proc_cpu(server.pid), time.perf_counter()
            asyncio.run(_round(port, make_tokens(f"hs{index}", count), protocol))
            cpu = proc_cpu(server.pid) - before
            rate = count / (time.perf_counter() - started)
            print(
                f"{src} {protocol or 'v1'}: {cpu / count * 1e6:.0f} us server CPU per handshake, {rate:.0f}/s"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
