"""Snapshots: list and detail payloads from the REST upstream, through the cache."""

from __future__ import annotations

from typing import Any

from mesaya_realtime.application.ports.snapshots import SnapshotFetcher
from mesaya_realtime.application.usecases.sessions import WILDCARD_SECTION
from mesaya_realtime.application.usecases.snapshot_cache import CacheKey, SnapshotCache
from mesaya_realtime.domain.catalogue import EntitySpec
from mesaya_realtime.domain.errors import SnapshotNotFound
from mesaya_realtime.domain.identity import Principal
from mesaya_realtime.domain.queries import ListQuery
from mesaya_realtime.domain.snapshots import SnapshotRequest, plan_detail, plan_list

__all__ = ["SnapshotService"]


class SnapshotService:
    """Plans the REST call of a list/detail command and answers it through the cache.

    The cache key is the planned request itself (path and query) plus the audience, and the
    user when the variant's answer depends on the caller, so two sockets share an entry
    exactly when the upstream would give them the same answer.
    """

    def __init__(self, fetcher: SnapshotFetcher, cache: SnapshotCache) -> None:
        self.fetcher = fetcher
        self.cache = cache

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

    async def get_list(self, spec: EntitySpec, principal: Principal, section: str, query: ListQuery) -> Any:
        key, request = self.list_key(spec, principal, section, query)
        return await self.cache.get_or_fetch(key, lambda: self.fetcher.fetch(request, principal.token))

    def cached_list(
        self, spec: EntitySpec, principal: Principal, section: str, query: ListQuery
    ) -> Any | None:
        """The list from the cache without waiting, or None when it must be fetched."""
        key, _ = self.list_key(spec, principal, section, query)
        return self.cache.lookup(key)

    def cached_detail(self, spec: EntitySpec, principal: Principal, resource_id: str) -> Any | None:
        if not resource_id.strip():
            return None
        key, _ = self.detail_key(spec, principal, resource_id)
        return self.cache.lookup(key)

    async def get_detail(self, spec: EntitySpec, principal: Principal, resource_id: str) -> Any:
        if not resource_id.strip():
            raise SnapshotNotFound()
        key, request = self.detail_key(spec, principal, resource_id)
        return await self.cache.get_or_fetch(key, lambda: self.fetcher.fetch(request, principal.token))
