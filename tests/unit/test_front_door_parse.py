"""The front door reads a head only as aiohttp's own (C) parser reads it (interface/front_door.py).

Generated heads, from plain to hostile (encoded and odd path characters, repeated and
differently cased headers, control bytes, bare CR/LF, missing upgrade headers): whenever the
front door takes a head, aiohttp's parser must accept it too and agree on the path, the query
values the routes read, every header the driver reads and the upgrade; a head aiohttp refuses
must never be taken. What the front door declines goes to aiohttp, so declining is always safe.
"""

from __future__ import annotations

import asyncio
from unittest import mock

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mesaya_realtime.interface.front_door import FrontDoor

#: The headers the driver and the upgrade read.
READ = (
    "host",
    "upgrade",
    "connection",
    "sec-websocket-version",
    "sec-websocket-key",
    "sec-websocket-protocol",
    "origin",
    "authorization",
)
KEY = "dGhlIHNhbXBsZSBub25jZQ=="

#: Mostly pieces a plain head has, sometimes one that is not (weighted by repetition):
#: percent escapes (valid, of a slash, of a space, broken), plus signs, braces, spaces, non-ASCII.
PLAIN_PIECES = ["a", "tables", "main", "Z9", "-", "_", ".", "~", "eyJ0"]
ODD_PIECES = [
    "%41",
    "%2F",
    "%20",
    "%zz",
    "%",
    "+",
    " ",
    "{",
    "}",
    "é",
    "\t",
    "@",
    ":",
    ";",
    "=",
    "&",
    "!",
    "..",
]
segment = st.lists(st.sampled_from(PLAIN_PIECES * 4 + ODD_PIECES), max_size=4).map("".join)
query_part = st.lists(
    st.sampled_from(
        ["token=", "since=", "t", "x1", "&", "="] * 3 + ["%41", "%26", "+", ";", " ", "?", "#", "/"]
    ),
    max_size=8,
).map("".join)
names = st.sampled_from(
    ["Host", "HOST", "Upgrade", "upgrade", "Connection", "Sec-WebSocket-Version", "Sec-WebSocket-Key",
     "Sec-WebSocket-Protocol", "Origin", "Authorization", "Content-Length", "Transfer-Encoding",
     "X-Any", "Bad Name", "Na%me", ""]
)  # fmt: skip
values = st.one_of(
    st.sampled_from(
        ["websocket", "Upgrade", "keep-alive, Upgrade", "13", "8", KEY, "mesaya.v2", "x", "0", ""]
    ),
    st.text(alphabet="abc \t\x00\x7f\r\n:é,", max_size=12),
)
PLAIN = [
    ("Host", "x"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def _aiohttp(head: bytes) -> object | None:
    """aiohttp's reading of ``head`` (its RawRequestMessage), None when it refuses it."""
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(mock.Mock(), loop, 2**16, max_line_size=8190, max_field_size=8190)
        try:
            messages, _, _ = parser.feed_data(head)
        except HttpProcessingError:
            return None
        return messages[0][0] if messages else None
    finally:
        loop.close()


@settings(max_examples=1500, deadline=None)
@given(
    parts=st.lists(segment, min_size=2, max_size=4),
    query=st.one_of(st.none(), query_part),
    extra=st.lists(st.tuples(names, values), max_size=4),
    drop=st.one_of(st.just(set()), st.sets(st.integers(0, len(PLAIN) - 1), max_size=1)),
    mangle=st.booleans(),
)
def test_a_head_the_front_door_takes_reads_as_aiohttp_reads_it(
    parts: list[str], query: str | None, extra: list[tuple[str, str]], drop: set[int], mangle: bool
) -> None:
    path = "/ws/" + "/".join(parts) + (f"?{query}" if query is not None else "")
    fields = [field for index, field in enumerate(PLAIN) if index not in drop] + extra
    if mangle:
        fields.reverse()
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields)
    data = head.encode("utf-8", "surrogateescape") + b"\r\n"
    door = FrontDoor.__new__(FrontDoor)
    if not door._parse(data, len(data) - 4):
        event("handed to aiohttp")
        return  # handed to aiohttp as it is
    event("taken by the front door")
    message = _aiohttp(data)
    assert message is not None, f"the front door took a head aiohttp refuses: {data!r}"
    assert message.method == "GET"  # type: ignore[attr-defined]
    assert message.upgrade  # type: ignore[attr-defined]
    url = message.url  # type: ignore[attr-defined]
    assert url.path == door.path
    for name in ("token", "since"):
        assert url.query.get(name) == door.query.get(name), name
    for name in READ:
        assert message.headers.get(name) == door.headers.get(name), name  # type: ignore[attr-defined]


def test_a_plain_upgrade_is_taken() -> None:
    """The property above is not vacuous: the usual head is the front door's."""
    data = b"GET /ws/tables/main/tok?since=c HTTP/1.1\r\n" + b"".join(
        f"{name}: {value}\r\n".encode() for name, value in PLAIN
    )
    data += b"\r\n"
    door = FrontDoor.__new__(FrontDoor)
    assert door._parse(data, len(data) - 4)
    assert door.match_info == {"entity": "tables", "section": "main", "token": "tok"}
    assert door.query == {"since": "c"}
