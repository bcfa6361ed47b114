"""Malformed HTTP requests: counted, and logged once per interval without a traceback.

aiohttp's server logger writes an ERROR with a full traceback for every request its parser
refuses (a request line over 8 KB, a bad method, a broken header): ~720 bytes of log per
request that anyone can send without a token. :class:`ParserErrorFilter` turns those records
into one warning per ``interval`` (with the error and how many were folded into it) and
counts each one; every other record of that logger, such as a handler's own exception, passes
unchanged, traceback included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["ParserErrorFilter", "install_parser_error_filter"]


class ParserErrorFilter(logging.Filter):
    def __init__(
        self,
        count: Callable[[str], None],
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._count = count
        self.interval = interval
        self._clock = clock
        self._next = 0.0
        self._folded = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            # The logger is opened to DEBUG so that parser errors aiohttp logs at debug are
            # counted too; everything else keeps the process's level.
            return record.levelno >= logging.getLogger().getEffectiveLevel()
        kind = type(error).__name__
        self._count(kind)
        now = self._clock()
        if now < self._next:
            self._folded += 1
            return False
        record.msg, record.args = "malformed HTTP request", ()
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.error = f"{kind}: {error.message}"[:200]
        record.folded = self._folded  # how many were not logged since the last line
        self._folded = 0
        self._next = now + self.interval
        return True


def install_parser_error_filter(count: Callable[[str], None], interval: float = 10.0) -> ParserErrorFilter:
    """Attach the filter to aiohttp's server logger (once per process; a second call replaces it)."""
    logger = logging.getLogger("aiohttp.server")
    for existing in [f for f in logger.filters if isinstance(f, ParserErrorFilter)]:
        logger.removeFilter(existing)
    installed = ParserErrorFilter(count, interval)
    logger.addFilter(installed)
    logger.setLevel(logging.DEBUG)
    return installed
