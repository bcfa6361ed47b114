"""``POST /broadcast``: the payment workflow's push (reference §2.5), authenticated, durable,
delivered to the notifications sockets entitled to it on every node.

The body is validated as the Go service does (its 400 messages), the message built as it does
(timestamp in UTC), then written to the push channel: a Kafka topic every node reads through
its one event consumer (usecases/notifications.py delivers it), or the process itself without
Kafka. The reply is sent once the channel has stored it (docs/WEBSOCKET_ENDPOINTS.md
"The payment push").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.ports.push import PushChannel
from mesaya_realtime.application.usecases.features import Feature
from mesaya_realtime.application.usecases.notifications import PUSH_ENTITY, NotificationFeed, PushTarget
from mesaya_realtime.domain.errors import Refused
from mesaya_realtime.domain.messages import Message, now_timestamp

__all__ = ["BroadcastRejected", "BroadcastService", "Push", "decode_push", "encode_push", "parse_push"]

#: The action of every push message (reference §2.5).
PUSH_ACTION = "status-changed"
_TEXT_FIELDS = (
    "event",
    "topic",
    "reservation_id",
    "payment_id",
    "status",
    "timestamp",
    "user_id",
    "restaurant_id",
)
_MAX_FIELD = 512


class BroadcastRejected(Refused):
    """A refused push (reference §2.5's 400s)."""


@dataclass(frozen=True, slots=True)
class Push:
    message: Message
    target: PushTarget
    event: str


def parse_push(body: bytes) -> Push:
    """The push a request body asks for, or :class:`BroadcastRejected` (400) as the reference."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BroadcastRejected(400, "invalid request body") from None
    if not isinstance(document, dict):
        raise BroadcastRejected(400, "invalid request body")
    fields: dict[str, str] = {}
    for key in _TEXT_FIELDS:
        value = document.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > _MAX_FIELD:
            raise BroadcastRejected(400, "invalid request body")
        fields[key] = value  # as sent: Go trims nothing
    amount = document.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float)):
        raise BroadcastRejected(400, "invalid request body")
    extra = document.get("data")
    if extra is not None and not isinstance(extra, dict):
        raise BroadcastRejected(400, "invalid request body")
    event = fields.get("event", "")
    if not event:
        raise BroadcastRejected(400, "event field is required")
    data: dict[str, Any] = {"event": event}
    for key in ("reservation_id", "payment_id", "status"):
        if fields.get(key):
            data[key] = fields[key]
    if amount is not None and amount > 0:
        data["amount"] = amount
    if fields.get("timestamp"):
        data["timestamp"] = fields["timestamp"]
    if extra:
        data.update(extra)
    reservation = fields.get("reservation_id", "")
    message = Message(
        topic=fields.get("topic") or event,
        entity=PUSH_ENTITY,
        action=PUSH_ACTION,
        resource_id=reservation or fields.get("payment_id", ""),
        data=data,
        timestamp=now_timestamp(),
    )
    target = PushTarget(fields.get("user_id", ""), fields.get("restaurant_id", ""), reservation)
    return Push(message, target, event)


def encode_push(push: Push) -> bytes:
    """The record of a push on the channel (read back by :func:`decode_push` on every node)."""
    message = push.message
    return orjson.dumps(
        {
            "v": 1,
            "topic": message.topic,
            "resourceId": message.resource_id,
            "data": message.data,
            "timestamp": message.timestamp,
            "userId": push.target.user_id,
            "restaurantId": push.target.restaurant_id,
            "reservationId": push.target.reservation_id,
        }
    )


def decode_push(record: bytes | None) -> tuple[Message, PushTarget] | None:
    """A push record, or None when it is not one (skipped, counted)."""
    try:
        document = orjson.loads(record or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or document.get("v") != 1:
        return None
    texts = [
        document.get(k)
        for k in ("topic", "resourceId", "timestamp", "userId", "restaurantId", "reservationId")
    ]
    if not all(isinstance(t, str) for t in texts) or not texts[0]:
        return None
    topic, resource, timestamp, user, restaurant, reservation = (str(t) for t in texts)
    message = Message(
        topic=topic,
        entity=PUSH_ENTITY,
        action=PUSH_ACTION,
        resource_id=resource,
        data=document.get("data"),
        timestamp=timestamp,
    )
    return message, PushTarget(user, restaurant, reservation)


class BroadcastService(Feature):
    """Publishes pushes through the channel and delivers the ones the channel hands back."""

    def __init__(self, channel: PushChannel, feed: NotificationFeed, metrics: Metrics | None = None) -> None:
        self.channel = channel
        self.feed = feed
        self.metrics = metrics or NullMetrics()

    def start(self) -> None:
        self.channel.start()

    async def stop(self) -> None:
        await self.channel.stop()

    async def publish(self, push: Push) -> None:
        """Store the push on the channel (every node delivers it); PushUnavailable if not."""
        await self.channel.send(encode_push(push))
        self.metrics.broadcast("accepted")

    def deliver(self, record: bytes | None) -> str | None:
        """A record read back from the channel: delivered; a skip reason when not a push."""
        decoded = decode_push(record)
        if decoded is None:
            return "not a push"
        self.feed.push(*decoded)
        return None
