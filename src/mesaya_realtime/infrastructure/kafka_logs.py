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
from typing import Any

from mesaya_realtime.application.usecases.log_limits import KindLimiter

__all__ = ["LIBRDKAFKA_LOGGER", "OnceAPeriod", "client_settings"]

_NUMBERS = re.compile(r"\d+")


class OnceAPeriod(logging.Filter):
    """Lets through the first record of a kind, then one per ``period`` seconds."""

    def __init__(self, period: float = 60.0) -> None:
        super().__init__()
        self._limiter = KindLimiter(period)

    def filter(self, record: logging.LogRecord) -> bool:
        held = self._limiter.admit(_NUMBERS.sub("#", record.getMessage()))
        if held is None:
            return False
        if held:
            record.suppressed = held
        return True


LIBRDKAFKA_LOGGER = logging.getLogger("mesaya_realtime.librdkafka")
LIBRDKAFKA_LOGGER.addFilter(OnceAPeriod())


def client_settings() -> dict[str, Any]:
    """The settings every librdkafka client of the gateway starts from."""
    return {"logger": LIBRDKAFKA_LOGGER, "log.connection.close": False}
