"""Log lines that anyone can cause (a refused handshake, an upstream failure, librdkafka's
reconnect attempts) are rate-limited per kind, so a reconnect storm or an outage writes a few
lines, not one per event.

:class:`KindLimiter` is the rule: the first line of a kind passes at once, then at most one of
that kind per ``interval`` seconds, which carries how many were held back since the last one
(``"suppressed": 41``). :class:`RateLimitedLog` writes through it; the librdkafka log filter
(infrastructure/kafka_logs.py) applies it to records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["KindLimiter", "RateLimitedLog"]

#: Kinds are a few dozen; past this many the table starts afresh (it never grows with traffic).
_MAX_KINDS = 1000


class KindLimiter:
    """Decides which line of each kind passes (thread-safe: librdkafka logs from its threads)."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        #: kind -> (next time a line may pass, lines held back since the last one)
        self._kinds: dict[str, tuple[float, int]] = {}

    def admit(self, kind: str) -> int | None:
        """None when the line is held back, else how many of its kind were held back before it."""
        now = self._clock()
        with self._lock:
            next_at, held = self._kinds.get(kind, (0.0, 0))
            if now < next_at:
                self._kinds[kind] = (next_at, held + 1)
                return None
            if len(self._kinds) >= _MAX_KINDS:
                self._kinds.clear()
            self._kinds[kind] = (now + self.interval, 0)
        return held


class RateLimitedLog:
    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self._limiter = KindLimiter(interval, clock)

    def log(self, level: int, message: str, kind: str = "", **fields: object) -> bool:
        """Write the line unless its kind (``kind``, else the message) was written too
        recently; True if written."""
        if not self.logger.isEnabledFor(level):
            return False
        held = self._limiter.admit(kind or message)
        if held is None:
            return False
        if held:
            fields["suppressed"] = held
        self.logger.log(level, message, extra=fields)
        return True

    def warning(self, message: str, kind: str = "", **fields: object) -> bool:
        return self.log(logging.WARNING, message, kind, **fields)

    def info(self, message: str, kind: str = "", **fields: object) -> bool:
        return self.log(logging.INFO, message, kind, **fields)

    def debug(self, message: str, kind: str = "", **fields: object) -> bool:
        return self.log(logging.DEBUG, message, kind, **fields)
