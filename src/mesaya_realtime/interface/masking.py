"""RFC 6455 §5.1: a server must close the connection on a client frame that is not masked.

aiohttp's frame reader accepts unmasked frames from clients. :class:`MaskedFramesOnly` sits in
front of it on an upgraded connection: it follows frame boundaries (headers only; payload
bytes are skipped, never copied) and, on the first unmasked frame, stops feeding the reader and
reports the violation (the socket is then closed with 1002, docs/WEBSOCKET_ENDPOINTS.md
"Limits and close codes").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["MaskedFramesOnly"]


def _header_length(second_byte: int) -> int:
    """The full header length, from its second byte (mask key included)."""
    length = second_byte & 0x7F
    return 2 + (2 if length == 126 else 8 if length == 127 else 0) + 4


def _payload_length(header: bytes) -> int:
    length = header[1] & 0x7F
    if length == 126:
        return int.from_bytes(header[2:4], "big")
    if length == 127:
        return int.from_bytes(header[2:10], "big")
    return length


class MaskedFramesOnly:
    """A payload parser wrapper: frames go on to ``inner`` only while every one is masked."""

    __slots__ = ("_header", "_held", "_inner", "_on_violation", "_skip", "violated")

    def __init__(self, inner: Any, on_violation: Callable[[], None]) -> None:
        self._inner = inner
        self._on_violation = on_violation
        #: A header split across reads (bytes, not a bytearray: nothing per idle socket).
        self._header = b""
        self._skip = 0
        #: A header's first byte, kept back until the byte with the mask bit is seen.
        self._held = b""
        self.violated = False

    def feed_data(self, data: bytes) -> Any:
        if self.violated:
            return False, b""
        if self._held:
            data, self._held = self._held + data, b""
        if not self._all_masked(data):
            self.violated = True
            self._on_violation()
            return False, b""
        if len(self._header) == 1:
            # Not one byte of a frame goes on before its mask bit is known (found by
            # hypothesis: tests/unit/test_hostile_input_fuzz.py).
            self._held, data = data[-1:], data[:-1]
            self._header = b""
            if not data:
                return False, b""
        return self._inner.feed_data(data)

    def feed_eof(self) -> Any:
        return self._inner.feed_eof()

    @property
    def inner(self) -> Any:
        """The wrapped reader."""
        return self._inner

    def _all_masked(self, data: bytes) -> bool:
        position, size = 0, len(data)
        while position < size:
            if self._skip:
                taken = min(self._skip, size - position)
                self._skip -= taken
                position += taken
                continue
            if not self._header and size - position >= 2:
                # The usual case: the whole header is in this read; no copy.
                second = data[position + 1]
                if not second & 0x80:
                    return False
                end = position + _header_length(second)
                if end <= size:
                    self._skip = _payload_length(data[position:end])
                    position = end
                    continue
            header = self._header = self._header + data[position : position + 1]
            position += 1
            if len(header) < 2:
                continue
            if not header[1] & 0x80:
                return False
            if len(header) == _header_length(header[1]):
                self._skip = _payload_length(header)
                self._header = b""
        return True
