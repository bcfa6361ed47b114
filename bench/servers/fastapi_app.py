"""What users would otherwise write: a minimal FastAPI gateway on uvicorn.

It verifies the JWT, keeps the sockets of each section in a set, consumes the same topic and
sends each client of the event's section ``json.dumps(message)`` with
``await websocket.send_text(...)``.

    python -m bench.servers.fastapi_app --port 18200 --brokers 127.0.0.1:19092
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections import defaultdict
from collections.abc import AsyncIterator

import jwt
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from bench.common import SECRET, TOPIC, raise_nofile
from bench.servers.kafka_feed import KafkaFeed

BROKERS = os.environ.get("BENCH_BROKERS", "")
clients: dict[str, set[WebSocket]] = defaultdict(set)
state: dict[str, KafkaFeed] = {}


async def pump(queue: asyncio.Queue[list[bytes]]) -> None:
    while True:
        values = await queue.get()
        for value in values:
            event = json.loads(value)
            data = event.get("data") or {}
            action = event.get("event_type", "")
            message = {
                "topic": f"tables.{action}",
                "entity": "tables",
                "action": action,
                "resourceId": event.get("entity_id"),
                "data": data,
                "timestamp": event.get("timestamp"),
            }
            for websocket in list(clients.get(data.get("sectionId"), ())):
                try:
                    await websocket.send_text(json.dumps(message))
                except Exception:
                    clients[data.get("sectionId")].discard(websocket)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    queue: asyncio.Queue[list[bytes]] = asyncio.Queue()
    feed = KafkaFeed(BROKERS, TOPIC, asyncio.get_running_loop(), queue.put_nowait)
    feed.start()
    state["feed"] = feed
    task = asyncio.create_task(pump(queue))
    yield
    task.cancel()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, int]:
    return {"sockets": sum(len(s) for s in clients.values())}


@app.get("/ready")
async def ready() -> JSONResponse:
    return JSONResponse({}, status_code=200 if state["feed"].ready.is_set() else 503)


@app.websocket("/ws/{entity}/{section}/{token}")
async def socket(websocket: WebSocket, entity: str, section: str, token: str) -> None:
    try:
        jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        await websocket.close(code=1008)
        return
    await websocket.accept()
    clients[section].add(websocket)
    await websocket.send_text(json.dumps({"topic": "system.connected", "entity": entity}))
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        clients[section].discard(websocket)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--brokers", required=True)
    args = parser.parse_args()
    global BROKERS
    BROKERS = args.brokers
    raise_nofile()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", backlog=4096)


if __name__ == "__main__":
    main()
