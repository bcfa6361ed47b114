"""Server-to-client WebSocket frames, built once and written as raw bytes to many sockets.

Server frames are never masked (RFC 6455 §5.1), so one encoded frame is valid for every
recipient; this is what lets the fan-out write the same bytes to thousands of transports.

>>> text_frame(b"hi")
b'\\x81\\x02hi'
"""

from __future__ import annotations

import struct

__all__ = ["text_frame"]

_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame carrying ``payload`` (UTF-8 JSON)."""
    length = len(payload)
    if length < 126:
        header = bytes((_FIN_TEXT, length))
    elif length < 65_536:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    return header + payload
