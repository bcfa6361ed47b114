"""Snapshots: list and detail payloads from the REST upstream, through the cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from mesaya_realtime.application.ports.snapshots import SnapshotFetcher
from mesaya_realtime.application.usecases.sessions import WILDCARD_SECTION
from mesaya_realtime.application.usecases.snapshot_cache import CacheKey, SnapshotCache
from mesaya_realtime.domain.catalogue import EntitySpec
from mesaya_realtime.domain.errors import SnapshotNotFound
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.queries import ListQuery
from mesaya_realtime.domain.snapshots import SnapshotRequest, plan_detail, plan_list

__all__ = ["Marked", "SnapshotService"]


class Marked(NamedTuple):
    """A snapshot and its watermark: the entity's cursor taken before its REST call began
    (protocol v2; every change after it is in the events after that cursor)."""

    data: Any
    cursor: str = ""


class SnapshotService:
    """Plans the REST call of a list/detail command and answers it through the cache.

    The cache key is the planned request itself (path and query) plus the audience, and the
    user when the variant's answer depends on the caller, so two sockets share an entry
    exactly when the upstream would give them the same answer.
    """

    def __init__(
        self, fetcher: SnapshotFetcher, cache: SnapshotCache, mark: Callable[[str], str] | None = None
    ) -> None:
        self.fetcher = fetcher
        self.cache = cache
        #: The entity's cursor now (application/usecases/resume.py), for watermarks.
        self.mark = mark

    async def _marked(self, entity: str, request: SnapshotRequest, token: str) -> Marked:
        cursor = self.mark(entity) if self.mark is not None else ""
        return Marked(await self.fetcher.fetch(request, token), cursor)

    async def fetch(self, spec: EntitySpec, key: CacheKey, request: SnapshotRequest, token: str) -> Marked:
        """The snapshot of ``key`` through the cache (one upstream call for concurrent askers)."""
        value: Marked = await self.cache.get_or_fetch(key, lambda: self._marked(spec.name, request, token))
        return value

    @staticmethod
    def _key(
        spec: EntitySpec,
        principal: Principal,
        kind: str,
        request: SnapshotRequest,
        resource_id: str = "",
    ) -> CacheKey:
        return CacheKey(
            entity=spec.name,
            kind=kind,
            audience=principal.audience,
            partition="" if request.shared else principal.user_id,
            path=request.path,
            params=request.params,
            resource_id=resource_id,
            section=request.section,
        )

    def list_key(
        self, spec: EntitySpec, principal: Principal, section: str, query: ListQuery
    ) -> tuple[CacheKey, SnapshotRequest]:
        # The ADMIN wildcard section ("*") is every section: no section is sent upstream.
        scope = "" if section == WILDCARD_SECTION else section
        request = plan_list(spec, principal.audience, scope, query)
        return self._key(spec, principal, "list", request), request

    def detail_key(
        self, spec: EntitySpec, principal: Principal, resource_id: str
    ) -> tuple[CacheKey, SnapshotRequest]:
        request = plan_detail(spec, principal.audience, resource_id)
        return self._key(spec, principal, "item", request, resource_id), request

    async def get_list_marked(
        self, spec: EntitySpec, principal: Principal, section: str, query: ListQuery
    ) -> Marked:
        key, request = self.list_key(spec, principal, section, query)
        return await self.fetch(spec, key, request, principal.token)

    async def get_list(self, spec: EntitySpec, principal: Principal, section: str, query: ListQuery) -> Any:
        return (await self.get_list_marked(spec, principal, section, query)).data

    async def get_detail(self, spec: EntitySpec, principal: Principal, resource_id: str) -> Any:
        return (await self.get_detail_marked(spec, principal, resource_id)).data

    def cached_list_marked(
        self, spec: EntitySpec, principal: Principal, section: str, query: ListQuery
    ) -> Marked | None:
        """The list from the cache without waiting, or None when it must be fetched."""
        key, _ = self.list_key(spec, principal, section, query)
        found: Marked | None = self.cache.lookup(key)
        return found

    def cached_detail_marked(self, spec: EntitySpec, principal: Principal, resource_id: str) -> Marked | None:
        if not resource_id.strip():
            return None
        key, _ = self.detail_key(spec, principal, resource_id)
        found: Marked | None = self.cache.lookup(key)
        return found

    async def get_detail_marked(self, spec: EntitySpec, principal: Principal, resource_id: str) -> Marked:
        if not resource_id.strip():
            raise SnapshotNotFound()
        key, request = self.detail_key(spec, principal, resource_id)
        return await self.fetch(spec, key, request, principal.token)
