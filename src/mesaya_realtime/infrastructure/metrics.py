"""Prometheus metrics (served on ``GET /metrics``)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["PrometheusMetrics"]


class PrometheusMetrics:
    """Implements the application's ``Metrics`` port with one registry per gateway."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # labels() takes a lock and builds a key on every call; hot paths reuse children.
        self._children: dict[tuple[object, ...], Any] = {}
        r = self.registry
        self.consumed = Counter("mesaya_events_consumed", "Kafka records consumed", ["topic"], registry=r)
        self.events_skipped = Counter(
            "mesaya_events_skipped", "Kafka records skipped", ["topic", "reason"], registry=r
        )
        self.deliveries = Counter(
            "mesaya_deliveries", "Messages written to sockets by fan-out", ["entity"], registry=r
        )
        # multiprocess_mode: how workers' values add up under ``--workers`` (ignored otherwise)
        self.open_sockets = Gauge(
            "mesaya_open_sockets",
            "Open WebSocket connections",
            ["entity"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.commands = Counter(
            "mesaya_commands", "Client commands", ["entity", "kind", "outcome"], registry=r
        )
        self.handshakes_rejected = Counter(
            "mesaya_handshakes_rejected", "Refused upgrades", ["status"], registry=r
        )
        self.bad_frames = Counter("mesaya_bad_frames", "Client frames refused", ["reason"], registry=r)
        self.cache_events = Counter(
            "mesaya_snapshot_cache", "Snapshot cache outcomes", ["outcome"], registry=r
        )
        self.upstream_calls = Histogram(
            "mesaya_upstream_call_seconds", "REST upstream calls", ["outcome"], registry=r
        )
        self.slow_consumers = Counter(
            "mesaya_slow_consumers_closed", "Sockets closed for not reading", registry=r
        )
        self.ownership_checks = Counter(
            "mesaya_ownership_checks",
            "Tenant checks of OWNER sockets (allowed, denied, unavailable, revoked, recheck_unavailable)",
            ["outcome"],
            registry=r,
        )
        self.resumes = Counter(
            "mesaya_resumes", "Protocol v2 resumes (since=<cursor>) by outcome", ["recovered"], registry=r
        )
        self.resume_backfills = Counter(
            "mesaya_resume_log_reads",
            "Resume gaps read again from Kafka (one read shared by the resumes that need it)",
            ["outcome"],
            registry=r,
        )
        self.broadcasts = Counter(
            "mesaya_broadcasts",
            "POST /broadcast pushes (accepted, refused, resolved, unresolved: ADMIN only)",
            ["outcome"],
            registry=r,
        )
        self.http_parser_errors = Counter(
            "mesaya_http_parser_errors",
            "Malformed HTTP requests refused by the parser",
            ["error"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "mesaya_consumer_lag",
            "Kafka records behind the end",
            ["topic", "partition"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.consumer_up = Gauge(
            "mesaya_consumer_up",
            "1 when the Kafka consumer is connected (every worker's, under --workers)",
            registry=r,
            multiprocess_mode="livemin",
        )

    def events_consumed(self, topic: str, count: int) -> None:
        self._child(self.consumed, topic).inc(count)

    def event_skipped(self, topic: str, reason: str, count: int = 1) -> None:
        self._child(self.events_skipped, topic, reason).inc(count)

    def delivered(self, entity: str, count: int) -> None:
        self._child(self.deliveries, entity).inc(count)

    def socket_opened(self, entity: str) -> None:
        self._child(self.open_sockets, entity).inc()

    def socket_closed(self, entity: str) -> None:
        self._child(self.open_sockets, entity).dec()

    def command(self, entity: str, action: str, outcome: str) -> None:
        self._child(self.commands, entity, action, outcome).inc()

    def handshake_rejected(self, status: int) -> None:
        self._child(self.handshakes_rejected, str(status)).inc()

    def bad_frame(self, reason: str) -> None:
        self._child(self.bad_frames, reason).inc()

    def cache(self, outcome: str) -> None:
        self._child(self.cache_events, outcome).inc()

    def upstream_call(self, outcome: str, seconds: float) -> None:
        self._child(self.upstream_calls, outcome).observe(seconds)

    def slow_consumer_closed(self) -> None:
        self.slow_consumers.inc()

    def ownership(self, outcome: str) -> None:
        self._child(self.ownership_checks, outcome).inc()

    def broadcast(self, outcome: str) -> None:
        self._child(self.broadcasts, outcome).inc()

    def resume_backfill(self, outcome: str) -> None:
        self._child(self.resume_backfills, outcome).inc()

    def resume(self, recovered: bool) -> None:
        self._child(self.resumes, "true" if recovered else "false").inc()

    def http_parser_error(self, kind: str) -> None:
        self._child(self.http_parser_errors, kind).inc()

    def lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def _child(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def render(self) -> bytes:
        """This process's metrics, or every worker's added up (``--workers``: the Prometheus
        client's multiprocess mode, docs/ARCHITECTURE.md "Every core")."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
