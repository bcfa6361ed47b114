"""Log lines that anyone can cause (a refused handshake, an upstream failure) are rate-limited
per kind, so a reconnect storm or an outage writes a few lines, not one per event.

:class:`RateLimitedLog` writes the first line of a kind at once, then at most one line of that
kind per ``interval`` seconds, which says how many were left out since the last one
(``"suppressed": 41``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        #: kind -> (next time a line may be written, lines left out since the last one)
        self._kinds: dict[str, tuple[float, int]] = {}

    def log(self, level: int, message: str, kind: str = "", **fields: object) -> bool:
        """Write the line unless its kind (``kind``, else the message) was written too
        recently; True if written."""
        if not self.logger.isEnabledFor(level):
            return False
        key = kind or message
        now = self._clock()
        next_at, left_out = self._kinds.get(key, (0.0, 0))
        if now < next_at:
            self._kinds[key] = (next_at, left_out + 1)
            return False
        if left_out:
            fields["suppressed"] = left_out
        self._kinds[key] = (now + self.interval, 0)
        if len(self._kinds) > 1000:  # kinds are a few dozen: never grows with traffic
            self._kinds = {key: self._kinds[key]}
        self.logger.log(level, message, extra=fields)
        return True

    def warning(self, message: str, kind: str = "", **fields: object) -> bool:
        return self.log(logging.WARNING, message, kind, **fields)

    def info(self, message: str, kind: str = "", **fields: object) -> bool:
        return self.log(logging.INFO, message, kind, **fields)

    def debug(self, message: str, kind: str = "", **fields: object) -> bool:
        return self.log(logging.DEBUG, message, kind, **fields)
