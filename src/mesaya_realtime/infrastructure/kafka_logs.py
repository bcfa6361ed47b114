"""librdkafka's own log lines, through the gateway's logger (JSON like every other line),
de-duplicated and rate-limited.

Without this, librdkafka writes raw ``%3|...|FAIL|...`` lines to stderr, one per client per
reconnect attempt: with the broker down, ~50 lines a second. Every Kafka client of the gateway
gets ``{"logger": LIBRDKAFKA_LOGGER}`` (:func:`client_settings`); :class:`OnceAPeriod` lets one
line of each kind through per minute (the kind: the text with its numbers taken out, so
``after 12ms`` and ``after 40ms`` are one kind) and says how many it held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

__all__ = ["LIBRDKAFKA_LOGGER", "OnceAPeriod", "client_settings"]

_NUMBERS = re.compile(r"\d+")


class OnceAPeriod(logging.Filter):
    """Lets through the first record of a kind, then one per ``period`` seconds."""

    def __init__(self, period: float = 60.0) -> None:
        super().__init__()
        self.period = period
        self._lock = threading.Lock()  # librdkafka logs from its clients' threads
        self._kinds: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = _NUMBERS.sub("#", record.getMessage())
        now = time.monotonic()
        with self._lock:
            next_at, held = self._kinds.get(kind, (0.0, 0))
            if now < next_at:
                self._kinds[kind] = (next_at, held + 1)
                return False
            if len(self._kinds) > 500:
                self._kinds.clear()
            self._kinds[kind] = (now + self.period, 0)
        if held:
            record.suppressed = held
        return True


LIBRDKAFKA_LOGGER = logging.getLogger("mesaya_realtime.librdkafka")
LIBRDKAFKA_LOGGER.addFilter(OnceAPeriod())


def client_settings() -> dict[str, Any]:
    """The settings every librdkafka client of the gateway starts from."""
    return {"logger": LIBRDKAFKA_LOGGER, "log.connection.close": False}
