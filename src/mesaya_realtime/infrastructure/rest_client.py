"""The REST snapshot client: one pooled aiohttp session, the status map of reference §7.1."""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import orjson
from yarl import URL

from mesaya_realtime.application.ports.metrics import Metrics, NullMetrics
from mesaya_realtime.application.usecases.log_limits import RateLimitedLog
from mesaya_realtime.domain.errors import (
    SnapshotDecodeError,
    SnapshotForbidden,
    SnapshotNotFound,
    SnapshotRequestFailed,
    SnapshotUnexpectedStatus,
)
from mesaya_realtime.domain.snapshots import SnapshotRequest, unwrap

__all__ = ["RestSnapshotClient"]

log = logging.getLogger(__name__)

_MAX_BODY = 16 * 1024 * 1024
#: How much of an error response is read (and logged); reading it lets the connection be reused.
_MAX_ERROR_BODY = 2048


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether there was more.

    ``StreamReader.read(n)`` returns as soon as *some* data is there, so a body that arrives
    in several chunks has to be read in a loop.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            chunks.append(chunk[: len(chunk) - (size - limit)])
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


class RestSnapshotClient:
    """Implements :class:`~mesaya_realtime.application.ports.snapshots.SnapshotFetcher`.

    >>> client = RestSnapshotClient("http://localhost:3000", timeout=10.0)  # doctest: +SKIP
    >>> await client.fetch(SnapshotRequest("/api/v1/tables"), token)  # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        max_connections: int = 100,
        metrics: Metrics | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Normalised and percent-encoded once; request paths (already escaped by the planner)
        # are appended as they are, so an escaped id (``a%2Fb``, ``%2E%2E``) stays one segment.
        self._base = str(URL(self.base_url))
        self.timeout = timeout
        self._max_connections = max_connections
        self._metrics = metrics or NullMetrics()
        self._session: aiohttp.ClientSession | None = None
        self._failure_log = RateLimitedLog(log)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, request: SnapshotRequest, token: str) -> Any:
        url = URL(f"{self._base}/{request.path.lstrip('/')}", encoded=True)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        outcome = "error"
        try:
            async with self._client().get(url, params=list(request.params), headers=headers) as response:
                status = response.status
                if status != 200:
                    outcome = str(status)
                    try:
                        body, _ = await _read_limited(response, _MAX_ERROR_BODY)
                    except (TimeoutError, aiohttp.ClientError):
                        body = b""  # the status is the answer; the body is only logged
                    if status in (401, 403):
                        raise SnapshotForbidden()
                    if status == 404:
                        raise SnapshotNotFound()
                    self._failure_log.warning(
                        "unexpected snapshot response",
                        status=status,
                        path=request.path,
                        body=body.decode(errors="replace"),
                    )
                    raise SnapshotUnexpectedStatus(status)
                raw, too_large = await _read_limited(response, _MAX_BODY)
                if too_large:
                    outcome = "too_large"
                    raise SnapshotDecodeError("response too large")
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                outcome = "decode"
                self._failure_log.warning("upstream answer is not JSON", path=request.path)
                raise SnapshotDecodeError("invalid JSON") from error
            outcome = "ok"
            return unwrap(payload)
        except TimeoutError as error:
            outcome = "timeout"
            self._failure_log.warning("upstream timeout", path=request.path, timeout=self.timeout)
            raise SnapshotRequestFailed(SnapshotRequestFailed.TIMEOUT) from error
        except aiohttp.ClientError as error:
            outcome = "network"
            self._failure_log.warning(
                "upstream unavailable", path=request.path, error=str(error) or type(error).__name__
            )
            raise SnapshotRequestFailed(SnapshotRequestFailed.UNAVAILABLE) from error
        finally:
            self._metrics.upstream_call(outcome, time.perf_counter() - started)
