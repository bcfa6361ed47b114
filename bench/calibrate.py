"""Calibration: what one loopback ``send()`` of a 440-byte frame costs on this machine.

That is the floor under one write per delivery, for any server in any language. The issue's
targets were set on a machine where it was ~3 µs (docs/PRODUCT.md); where it costs more, every
per-delivery number scales with it. A forked sender pinned to the server core writes to 2,000
TCP connections whose other ends a uvloop reader drains on the load core; prints one JSON object.

    python -m bench.calibrate --server-core 0 --client-core 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time

from bench.common import raise_nofile

FRAME = b"\x81\x7e\x01\xb8" + b"x" * 440


def reader(port: int, sockets: int, total: int, core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    received = 0

    class Drain(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            nonlocal received
            received += len(data)
            if received >= total and not done.done():
                done.set_result(None)

    async def main() -> None:
        nonlocal done
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        for _ in range(sockets):
            await loop.create_connection(Drain, "127.0.0.1", port)
        await asyncio.wait_for(done, 120)

    done: asyncio.Future[None]
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-core", type=int)
    parser.add_argument("--client-core", type=int)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    raise_nofile()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    total = 2 * args.rounds * args.sockets * len(FRAME)
    child = os.fork()
    if child == 0:
        try:
            reader(port, args.sockets, total, args.client_core)
        finally:
            os._exit(0)
    if args.server_core is not None:
        os.sched_setaffinity(0, {args.server_core})
    conns = [listener.accept()[0] for _ in range(args.sockets)]
    for conn in conns:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
    time.sleep(0.3)
    result = {"sockets": args.sockets, "frame_bytes": len(FRAME)}
    for mode in ("spaced", "back_to_back"):
        cpu = time.process_time()
        for _ in range(args.rounds):
            for conn in conns:
                conn.send(FRAME)
            if mode == "spaced":
                time.sleep(0.03)
        result[f"us_per_send_{mode}"] = (time.process_time() - cpu) / (args.rounds * args.sockets) * 1e6
    os.waitpid(child, 0)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
