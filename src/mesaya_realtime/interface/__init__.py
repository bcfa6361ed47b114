"""Interface: the aiohttp HTTP/WebSocket transport."""
