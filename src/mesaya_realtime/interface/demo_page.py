"""The demo's floor-plan page (``mesaya-realtime demo`` only): the page built on the TypeScript
client (clients/typescript/demo, copied into this package by ``npm run page``), and a token for
its visitor. Never part of ``serve``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources

from aiohttp import web

__all__ = ["demo_page_routes"]

_USER = re.compile(r"[A-Za-z0-9_-]{1,40}")
_TYPES = {".html": "text/html", ".js": "text/javascript"}


def _page_file(path: str) -> bytes | None:
    """A file of the built page; None for anything else (no path leaves the page's folder)."""
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") for part in parts):
        return None
    found = resources.files("mesaya_realtime").joinpath("demo_page", *parts)
    return found.read_bytes() if found.is_file() else None


def demo_page_routes(sign_user: Callable[[str], str]) -> Callable[[web.Application], None]:
    """The routes to add to the gateway's app: ``/`` (the page), its scripts, and
    ``/demo/token?user=<name>`` (a USER token for that name, signed as the demo signs its own)."""

    async def page(request: web.Request) -> web.StreamResponse:
        path = request.match_info.get("path", "index.html")
        body = _page_file(path)
        if body is None:
            raise web.HTTPNotFound()
        suffix = path[path.rfind(".") :]
        return web.Response(body=body, content_type=_TYPES.get(suffix, "application/octet-stream"))

    async def token(request: web.Request) -> web.Response:
        user = request.query.get("user", "guest")
        if not _USER.fullmatch(user):
            return web.json_response({"message": "user: 1-40 letters, digits, - or _"}, status=400)
        return web.json_response({"token": sign_user(user)})

    def add(app: web.Application) -> None:
        app.router.add_get("/", page)
        app.router.add_get("/demo/token", token)
        app.router.add_get("/{path:(demo|src)/[A-Za-z0-9_.-]+\\.js}", page)

    return add
