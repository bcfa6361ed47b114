"""Kafka-side test helpers: a real producer, the backend's payload shapes, event clients.

Payload builders follow reference §8.3: the backend's ``KafkaService.emit`` puts
``timestamp`` (a JavaScript ``toISOString()``) first, then ``event_type``, ``entity_id``,
``entity_subtype`` (menus and subscriptions topics), ``data`` (the response DTO) and
``metadata`` (snake_case keys). Each builder returns ``(payload, expected)``: the record value
and the message a socket must receive for it, written out by hand (not computed by the code
under test).

Every id made here starts with a per-run prefix (:func:`unique`), so a test can ignore events
that other tests publish on the shared broker (:class:`EventClient` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from mesaya_realtime.domain.catalogue import CATALOGUE
from tests.support import ROOT

#: The platform's topics (reference §8.2) and their partition count in scripts/kafka-local.
PLATFORM_TOPICS = CATALOGUE.platform_topics

Payload = dict[str, Any]
Expected = dict[str, Any]


def unique(label: str = "t") -> str:
    """A fresh id prefix such as ``t3f9a1c2e``."""
    return f"{label}{uuid.uuid4().hex[:10]}"


def js_now(offset_ms: int = 0) -> str:
    """Now as JavaScript's ``Date.prototype.toISOString()`` prints it (always millis + Z)."""
    moment = time.time() + offset_ms / 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment * 1000) % 1000:03d}Z"


def go_timestamp(js: str) -> str:
    """What the gateway prints for a ``toISOString()`` value: trailing fractional zeros trimmed."""
    head, _, frac = js.rstrip("Z").partition(".")
    frac = frac.rstrip("0")
    return f"{head}.{frac}Z" if frac else f"{head}Z"


# -- the backend's payloads (reference §8.3) ------------------------------------------------


def _event(
    event_type: str,
    entity_id: str,
    data: Any,
    metadata: dict[str, Any] | None = None,
    subtype: str | None = None,
    timestamp: str | None = None,
) -> Payload:
    payload: Payload = {"timestamp": timestamp or js_now(), "event_type": event_type, "entity_id": entity_id}
    if subtype is not None:
        payload["entity_subtype"] = subtype
    payload["data"] = data
    if metadata is not None:
        payload["metadata"] = metadata
    return payload


def _expect(
    entity: str,
    payload: Payload,
    metadata: dict[str, str] | None,
    timestamp: str | None = None,
) -> Expected:
    body: Expected = {
        "topic": f"{entity}.{payload['event_type']}",
        "entity": entity,
        "action": payload["event_type"],
    }
    if payload["entity_id"]:
        body["resourceId"] = payload["entity_id"]
    if payload.get("data") is not None:
        body["data"] = payload["data"]
    if metadata:
        body["metadata"] = metadata
    body["timestamp"] = timestamp or go_timestamp(payload["timestamp"])
    return body


def restaurant_dto(restaurant_id: str, owner_id: str, status: str = "ACTIVE") -> dict[str, Any]:
    return {
        "id": restaurant_id,
        "name": "La Mesa",
        "description": "Cocina de mercado",
        "location": {
            "label": "Centro",
            "address": "Av. Amazonas 123",
            "city": "Quito",
            "province": "Pichincha",
            "country": "EC",
            "latitude": -0.1807,
            "longitude": -78.4678,
            "placeId": "ChIJ-quito",
        },
        "openTime": "09:00",
        "closeTime": "22:00",
        "daysOpen": ["MONDAY", "TUESDAY", "SATURDAY"],
        "totalCapacity": 80,
        "subscriptionId": 3,
        "imageId": 17,
        "status": status,
        "adminNote": None,
        "active": status == "ACTIVE",
        "ownerId": owner_id,
        "createdAt": "2025-01-10T12:00:00.000Z",
        "updatedAt": js_now(),
        "sections": [{"id": f"{restaurant_id}-s1", "name": "Terraza", "tables": []}],
    }


def restaurant_updated(restaurant_id: str, owner_id: str) -> tuple[Payload, Expected]:
    """``updated`` after an owner reassignment (metadata.action = owner_reassigned)."""
    metadata = {"user_id": owner_id, "action": "owner_reassigned"}
    payload = _event("updated", restaurant_id, restaurant_dto(restaurant_id, owner_id), metadata)
    return payload, _expect("restaurants", payload, {"action": "owner_reassigned", "user_id": owner_id})


def restaurant_status_changed(restaurant_id: str, owner_id: str) -> tuple[Payload, Expected]:
    """``status_changed``; its timestamp carries an offset, which the gateway prints in UTC."""
    metadata = {"user_id": owner_id, "status": "SUSPENDED", "previous_status": "ACTIVE"}
    data = restaurant_dto(restaurant_id, owner_id, status="SUSPENDED")
    payload = _event(
        "status_changed", restaurant_id, data, metadata, timestamp="2026-03-01T12:30:45.500+02:00"
    )
    expected_meta = {"previous_status": "ACTIVE", "status": "SUSPENDED", "user_id": owner_id}
    return payload, _expect("restaurants", payload, expected_meta, timestamp="2026-03-01T10:30:45.5Z")


def table_dto(table_id: str, section_id: str, number: int, status: str = "AVAILABLE") -> dict[str, Any]:
    return {
        "id": table_id,
        "sectionId": section_id,
        "number": number,
        "capacity": 4,
        "posX": 120,
        "posY": 80,
        "width": 60,
        "height": 60,
        "tableImageId": 5,
        "chairImageId": 6,
        "status": status,
        "isAvailable": status == "AVAILABLE",
        "createdAt": "2025-01-10T12:00:00.000Z",
        "updatedAt": js_now(),
    }


def table_event(
    event_type: str, table_id: str, section_id: str, number: int = 1, status: str = "OCCUPIED"
) -> tuple[Payload, Expected]:
    """Tables send no metadata."""
    payload = _event(event_type, table_id, table_dto(table_id, section_id, number, status))
    return payload, _expect("tables", payload, None)


def reservation_dto(reservation_id: str, restaurant_id: str, user_id: str, status: str) -> dict[str, Any]:
    return {
        "id": reservation_id,
        "restaurantId": restaurant_id,
        "userId": user_id,
        "tableId": f"{restaurant_id}-table-1",
        "reservationDate": "2026-02-14",
        "reservationTime": "20:30",
        "numberOfGuests": 2,
        "status": status,
        "createdAt": "2026-01-10T15:04:05.000Z",
        "updatedAt": js_now(),
        "userName": "Ana",
        "userEmail": "ana@example.com",
    }


def reservation_event(
    event_type: str, reservation_id: str, restaurant_id: str, user_id: str
) -> tuple[Payload, Expected]:
    """created / deleted (the delete carries the snapshot before deletion); metadata.user_id."""
    status = "CANCELLED" if event_type == "deleted" else "PENDING"
    data = reservation_dto(reservation_id, restaurant_id, user_id, status)
    payload = _event(event_type, reservation_id, data, {"user_id": user_id})
    return payload, _expect("reservations", payload, {"user_id": user_id})


def dish_event(
    event_type: str, dish_id: str, restaurant_id: str, menu_id: str, *, metadata_restaurant: bool
) -> tuple[Payload, Expected]:
    """A dish on the menus topic (subtype ``dish``); on create metadata.restaurant_id, else null."""
    data = {
        "dishId": dish_id,
        "restaurantId": restaurant_id,
        "name": "Locro de papa",
        "description": "Sopa andina",
        "price": 6.5,
        "imageId": 41,
        "menuId": menu_id,
        "categoryId": "cat-1",
        "categoryName": "Sopas",
        "categoryDescription": "Calientes",
        "categoryOrder": 1,
        "createdAt": "2026-01-10T15:04:05.000Z",
        "updatedAt": js_now(),
    }
    metadata = {"restaurant_id": restaurant_id if metadata_restaurant else None}
    payload = _event(event_type, dish_id, data, metadata, subtype="dish")
    expected_meta = {"restaurant_id": restaurant_id} if metadata_restaurant else None
    return payload, _expect("dishes", payload, expected_meta)


def menu_event(event_type: str, menu_id: str, restaurant_id: str) -> tuple[Payload, Expected]:
    """A menu on the menus topic (subtype ``menu``), entity_id = menuId."""
    data = {
        "menuId": menu_id,
        "restaurantId": restaurant_id,
        "name": "Almuerzo ejecutivo",
        "description": "Lunes a viernes",
        "price": 9.9,
        "date": "2026-02-14",
        "dishes": [{"dishId": f"{menu_id}-d1", "name": "Seco de pollo"}],
    }
    payload = _event(event_type, menu_id, data, {"restaurant_id": restaurant_id}, subtype="menu")
    return payload, _expect("menus", payload, {"restaurant_id": restaurant_id})


def payment_event(
    event_type: str, payment_id: str, restaurant_id: str, user_id: str, status: str = "COMPLETED"
) -> tuple[Payload, Expected]:
    """created / status_changed (metadata.status); entity_id = paymentId."""
    data = {
        "paymentId": payment_id,
        "reservationId": f"{payment_id}-res",
        "subscriptionId": None,
        "restaurantId": restaurant_id,
        "userId": user_id,
        "amount": 25.5,
        "currency": "USD",
        "paymentType": "RESERVATION",
        "status": status,
        "createdAt": "2026-01-10T15:04:05.000Z",
        "updatedAt": js_now(),
    }
    payload = _event(event_type, payment_id, data, {"status": status})
    return payload, _expect("payments", payload, {"status": status})


def subscription_status_changed(subscription_id: str, restaurant_id: str) -> tuple[Payload, Expected]:
    """Subtype ``subscription``; metadata.state plus non-string values, which become strings."""
    data = {
        "subscriptionId": subscription_id,
        "restaurantId": restaurant_id,
        "subscriptionPlanId": "plan-pro",
        "stateSubscription": "ACTIVE",
        "subscriptionStartDate": "2026-01-01",
    }
    metadata = {
        "state": "ACTIVE",
        "restaurant_id": restaurant_id,
        "renewals": 2,
        "auto_renew": True,
        "ratio": 0.5,
        "limits": {"tables": 10},
        "tags": ["pro", "annual"],
        "cancelled_at": None,
    }
    payload = _event("status_changed", subscription_id, data, metadata, subtype="subscription")
    expected_meta = {
        "auto_renew": "true",
        "limits": '{"tables":10}',
        "ratio": "0.5",
        "renewals": "2",
        "restaurant_id": restaurant_id,
        "state": "ACTIVE",
        "tags": '["pro","annual"]',
    }
    return payload, _expect("subscriptions", payload, expected_meta)


def plan_event(event_type: str, plan_id: str) -> tuple[Payload, Expected]:
    """A subscription plan on the subscriptions topic (subtype ``plan``)."""
    data = {
        "id": plan_id,
        "name": "Pro",
        "price": 49.0,
        "subscriptionPeriod": "MONTHLY",
        "stateSubscriptionPlan": "ACTIVE",
    }
    payload = _event(event_type, plan_id, data, subtype="plan")
    return payload, _expect("subscription-plans", payload, None)


def owner_upgrade_status_changed(
    request_id: str, user_id: str, restaurant_id: str
) -> tuple[Payload, Expected]:
    """entity_id = requestId; data {userId, status, assignedRestaurantId, decision}."""
    data = {
        "userId": user_id,
        "status": "APPROVED",
        "assignedRestaurantId": restaurant_id,
        "decision": "APPROVED",
    }
    payload = _event("status_changed", request_id, data, {"user_id": user_id})
    return payload, _expect("owner-upgrades", payload, {"user_id": user_id})


def user_signed_up(user_id: str) -> tuple[Payload, Expected]:
    """The auth topic (entity ``users``)."""
    data = {"id": user_id, "email": f"{user_id}@example.com", "firstName": "Ana", "roles": ["USER"]}
    payload = _event("user_signed_up", user_id, data, {"user_id": user_id, "provider": "email"})
    return payload, _expect("users", payload, {"provider": "email", "user_id": user_id})


# -- a real producer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class EventProducer:
    """confluent-kafka Producer with acks=all, idempotence and retries; keeps delivery reports.

    ``delivered`` lists the records the broker acknowledged, ``failed`` the errors.
    """

    brokers: str
    extra: dict[str, Any] = field(default_factory=dict)
    delivered: list[Delivered] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.producer = Producer(
            {
                "bootstrap.servers": self.brokers,
                "acks": "all",
                "enable.idempotence": True,
                "retries": 1_000_000,
                "delivery.timeout.ms": 180_000,
                "linger.ms": 5,
                "message.max.bytes": 1_000_000,
                "reconnect.backoff.max.ms": 1000,
                **self.extra,
            }
        )

    def _report(self, error: KafkaError | None, message: Message) -> None:
        with self._lock:
            if error is not None:
                self.failed.append(str(error))
            else:
                self.delivered.append(
                    Delivered(
                        message.topic(), message.partition(), message.offset(), message.key(), message.value()
                    )
                )

    def send(
        self,
        topic: str,
        value: Payload | bytes | str | None,
        key: str | bytes | None = None,
        partition: int | None = None,
    ) -> None:
        raw = orjson.dumps(value) if isinstance(value, dict) else value
        kwargs: dict[str, Any] = {"value": raw, "key": key, "on_delivery": self._report}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self.producer.produce(topic, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every delivery report; fail if any record was not acknowledged."""
        remaining = self.producer.flush(timeout)
        assert remaining == 0, f"{remaining} records not acknowledged in {timeout}s"
        assert not self.failed, f"produce failed: {self.failed[:5]}"

    def produce_all(
        self, topic: str, values: Sequence[Payload | bytes | None], key: str | None = None
    ) -> None:
        for value in values:
            self.send(topic, value, key=key)
        self.flush()


def create_topics(brokers: str, names: Sequence[str], partitions: int = 3) -> None:
    """Create topics and wait until each partition has a leader."""
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics([NewTopic(name, partitions, 1) for name in names], operation_timeout=30)
    for future in futures.values():
        future.result(60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=10)
        ready = [
            metadata.topics.get(name) is not None
            and metadata.topics[name].error is None
            and len(metadata.topics[name].partitions) == partitions
            and all(p.leader >= 0 for p in metadata.topics[name].partitions.values())
            for name in names
        ]
        if all(ready):
            return
        time.sleep(0.2)
    raise AssertionError(f"topics not ready: {names}")


def partition_count(brokers: str, names: Sequence[str]) -> int:
    metadata = AdminClient({"bootstrap.servers": brokers}).list_topics(timeout=10)
    return sum(len(metadata.topics[name].partitions) for name in names)


# -- a broker of the test's own (never the shared one) ------------------------------------------


def kafka_local(port: int, *args: str, timeout: float = 300) -> str:
    """Run ``scripts/kafka-local <args>`` for the broker on ``port``; returns stdout."""
    assert port != 19092, "never drive the shared test broker from a test"
    result = subprocess.run(
        [str(ROOT / "scripts" / "kafka-local"), *args],
        env={**os.environ, "KAFKA_LOCAL_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"kafka-local {' '.join(args)} failed: {result.stderr[-3000:]}"
    return result.stdout


@contextlib.contextmanager
def own_broker(port: int, *, start: bool = True) -> Iterator[str]:
    """A private broker on ``port`` (fresh data), stopped and wiped afterwards."""
    kafka_local(port, "stop", "--wipe")
    try:
        if start:
            kafka_local(port, "start")
        yield f"127.0.0.1:{port}"
    finally:
        kafka_local(port, "stop", "--wipe")


# -- HTTP probes ---------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def wait_status(url: str, status: int, timeout: float = 60.0) -> bytes:
    """Poll ``url`` until it answers ``status``; returns the body."""
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            last = await asyncio.to_thread(http_get, url)
            if last[0] == status:
                return last[1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} did not answer {status} in {timeout}s; last {last!r}")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Metrics(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """A parsed Prometheus text page: ``(name, labels) -> value``."""

    def value(self, name: str, **labels: str) -> float:
        return self.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.items() if n == name and want <= ls)

    def samples(self, name: str) -> list[dict[str, str]]:
        return [dict(ls) for (n, ls) in self if n == name]


def scrape(base_url: str) -> Metrics:
    status, body = http_get(base_url + "/metrics")
    assert status == 200
    parsed = Metrics()
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, line
        labels = frozenset(_LABEL.findall(match.group(2) or ""))
        parsed[(match.group(1), labels)] = float(match.group(3))
    return parsed


# -- WebSocket clients ---------------------------------------------------------------------------

_SNAPSHOT_ACTIONS = frozenset({"list", "detail", "snapshot"})


class EventClient:
    """One real WebSocket client of an entity socket, reading the domain events it gets.

    ``prefix`` (the test's id prefix) makes it ignore events of other tests on the shared
    broker: an event counts when its ``resourceId`` starts with the prefix. System messages
    and snapshot pushes (list/detail) are not events and are skipped too.

    Like a browser, it reads all the time (a background task), so it answers the server's
    heartbeat pings even while the test is busy elsewhere (e.g. restarting a broker).
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str, prefix: str) -> None:
        self.ws = ws
        self.name = name
        self.prefix = prefix
        self.connected: dict[str, Any] = {}
        self.ignored = 0
        self._frames: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            frame = await self.ws.receive()
            await self._frames.put(frame)
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return

    @classmethod
    async def connect(
        cls,
        http: aiohttp.ClientSession,
        ws_url: str,
        entity: str,
        section: str,
        token: str,
        *,
        prefix: str,
        name: str = "",
    ) -> EventClient:
        ws = await http.ws_connect(f"{ws_url}/ws/{entity}/{section}/{token}", max_msg_size=8 * 1024 * 1024)
        client = cls(ws, name or f"{entity}/{section}", prefix)
        first = await client.receive(20)
        assert first["topic"] == "system.connected", first
        client.connected = first
        return client

    async def receive(self, timeout: float = 20.0) -> dict[str, Any]:
        frame = await asyncio.wait_for(self._frames.get(), timeout)
        assert frame.type == aiohttp.WSMsgType.TEXT, f"{self.name}: got {frame.type} {frame.data!r}"
        message: dict[str, Any] = orjson.loads(frame.data)
        return message

    def _is_ours(self, message: dict[str, Any]) -> bool:
        if message["topic"].startswith("system.") or message.get("action") in _SNAPSHOT_ACTIONS:
            return False
        return str(message.get("resourceId", "")).startswith(self.prefix)

    async def next_event(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next domain event of this test (others' events are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{self.name}: no event within {timeout}s"
            try:
                message = await self.receive(remaining)
            except TimeoutError:
                raise AssertionError(f"{self.name}: no event within {timeout}s") from None
            if self._is_ours(message):
                return message
            self.ignored += 1

    async def expect(self, expected: Sequence[dict[str, Any]], timeout: float = 20.0) -> None:
        """The next events are exactly ``expected``, in order, field by field."""
        for index, want in enumerate(expected):
            got = await self.next_event(timeout)
            assert got == want, f"{self.name}: event #{index}:\n got  {got}\n want {want}"

    async def expect_nothing_more(self, timeout: float = 20.0) -> None:
        """Barrier: ping and read up to the pong; no event of this test may come before it.

        Call it once the gateway has handled the events in question (another socket received
        a later event of the same partition): frames already written to this socket precede
        the pong on the same TCP stream.
        """
        await self.ws.send_str('{"action":"ping"}')
        while True:
            message = await self.receive(timeout)
            if message["topic"] == "system.pong":
                return
            assert not self._is_ours(message), f"{self.name}: unexpected event {message}"

    async def command(self, body: dict[str, Any], reply_topic: str, timeout: float = 20.0) -> dict[str, Any]:
        """Send a command and return the next message on ``reply_topic`` (events are skipped)."""
        await self.ws.send_str(orjson.dumps(body).decode())
        while True:
            message = await self.receive(timeout)
            if message["topic"] == reply_topic:
                return message

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()
