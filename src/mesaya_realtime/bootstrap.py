"""The composition root: the one place that picks concrete adapters and wires them.

>>> gateway = build_gateway(load_settings())        # doctest: +SKIP
>>> await gateway.start()                           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from mesaya_realtime.application.handlers.events import (
    EventContext,
    EventDispatcher,
    EventIngest,
    Record,
)
from mesaya_realtime.application.ports.push import PushChannel
from mesaya_realtime.application.usecases.analytics import AnalyticsService
from mesaya_realtime.application.usecases.broadcast import BroadcastService
from mesaya_realtime.application.usecases.commands import CommandService
from mesaya_realtime.application.usecases.connect import ConnectUseCase
from mesaya_realtime.application.usecases.features import Feature
from mesaya_realtime.application.usecases.hub import Hub
from mesaya_realtime.application.usecases.lifecycle import SocketLifecycle
from mesaya_realtime.application.usecases.notifications import NotificationFeed
from mesaya_realtime.application.usecases.ownership import OwnershipGuard
from mesaya_realtime.application.usecases.periodic import Periodic
from mesaya_realtime.application.usecases.refresh import SnapshotRefresher
from mesaya_realtime.application.usecases.resume import Journal, Positions, ResumeService
from mesaya_realtime.application.usecases.selection import SelectionPolicy, SelectionService
from mesaya_realtime.application.usecases.snapshot_cache import SnapshotCache
from mesaya_realtime.application.usecases.snapshots import SnapshotService
from mesaya_realtime.config import ConfigError, Settings
from mesaya_realtime.domain.catalogue import CATALOGUE, Catalogue
from mesaya_realtime.infrastructure.event_loop import loop_name
from mesaya_realtime.infrastructure.gc_policy import GcFreezer
from mesaya_realtime.infrastructure.jwt_verifier import JwtVerifier, load_rsa_public_key
from mesaya_realtime.infrastructure.kafka_consumer import KafkaEventSource, KafkaSourceConfig
from mesaya_realtime.infrastructure.kafka_range_reader import KafkaRangeReader
from mesaya_realtime.infrastructure.metrics import PrometheusMetrics
from mesaya_realtime.infrastructure.ownership_client import RestOwnershipSource
from mesaya_realtime.infrastructure.push_channel import InProcessPushChannel, KafkaPushChannel
from mesaya_realtime.infrastructure.rest_client import RestSnapshotClient
from mesaya_realtime.infrastructure.selection_log import (
    InProcessSelectionLog,
    KafkaSelectionConfig,
    KafkaSelectionLog,
)
from mesaya_realtime.infrastructure.workers import WorkerStatus, worker_identity
from mesaya_realtime.interface.asyncapi import document as asyncapi_document
from mesaya_realtime.interface.frames import text_frame
from mesaya_realtime.interface.front_door import FrontDoorSite
from mesaya_realtime.interface.http import GatewayServices, create_app
from mesaya_realtime.interface.server_log import install_parser_error_filter

__all__ = ["EventSource", "Gateway", "build_gateway", "build_verifier"]

log = logging.getLogger(__name__)

#: aiohttp's ``timeout_ceil_threshold``: no timer of the gateway is rounded up (see start()).
_NO_TIMER_ROUNDING = 1e12


class EventSource(Protocol):
    def start(self) -> None: ...
    async def stop(self) -> None: ...
    def status(self) -> dict[str, object]: ...


EventSourceFactory = Callable[[Callable[[list[Record]], None]], EventSource]


def build_verifier(settings: Settings) -> JwtVerifier:
    """The token verifier; an unparsable ``JWT_PUBLIC_KEY`` is a start-up error."""
    public_key = None
    if settings.jwt_public_key:
        try:
            public_key = load_rsa_public_key(settings.jwt_public_key)
        except ValueError as error:
            raise ConfigError(
                f"invalid configuration: JWT_PUBLIC_KEY: not a PEM RSA public key ({error})"
            ) from None
    return JwtVerifier(
        secret=settings.jwt_secret or None,
        public_key=public_key,
        issuer=settings.jwt_issuer or None,
        audience=settings.jwt_audience or None,
        require_exp=settings.jwt_require_exp,
    )


def configuration_problems(settings: Settings, catalogue: Catalogue = CATALOGUE) -> list[str]:
    """Every problem of settings that parsed (what needs the catalogue or a key parser), all
    at once: ``serve``, ``check`` and :func:`build_gateway` report them together."""
    problems: list[str] = []

    def default_entity() -> None:
        if catalogue.resolve(settings.ws_default_entity) is None:
            raise ConfigError(
                f"WS_DEFAULT_ENTITY: {settings.ws_default_entity!r} is not an entity of the catalogue"
            )

    checks: list[Callable[[], object]] = [
        lambda: build_verifier(settings),
        lambda: check_own_topics(settings, topic_entities(settings, catalogue)),
        default_entity,
    ]
    for check in checks:
        try:
            check()
        except ConfigError as error:
            problems += error.problems
    return problems


def check_own_topics(settings: Settings, mapping: dict[str, str]) -> None:
    """The gateway's own topics are neither the platform's nor each other."""
    own = {
        "TABLE_SELECTION_TOPIC": settings.table_selection_topic,
        "BROADCAST_TOPIC": settings.broadcast_topic,
    }
    for name, topic in own.items():
        if topic in mapping:
            raise ConfigError(f"invalid configuration: {name}: {topic!r} is one of the platform's topics")
    if settings.table_selection_topic == settings.broadcast_topic:
        raise ConfigError("invalid configuration: TABLE_SELECTION_TOPIC and BROADCAST_TOPIC must differ")


def topic_entities(settings: Settings, catalogue: Catalogue) -> dict[str, str]:
    """Kafka topic -> entity from ``WS_ENTITY_TOPICS``; unknown entity names are an error."""
    mapping: dict[str, str] = {}
    for raw, topics in settings.entity_topics.items():
        spec = catalogue.resolve(raw)
        if spec is None:
            raise ConfigError(f"invalid configuration: WS_ENTITY_TOPICS: unknown entity {raw!r}")
        for topic in topics:
            mapping.setdefault(topic, spec.name)
    return mapping


def entity_topics(settings: Settings, catalogue: Catalogue) -> dict[str, tuple[str, ...]]:
    """Entity -> its Kafka topics from ``WS_ENTITY_TOPICS`` (a shared topic is each one's)."""
    found: dict[str, tuple[str, ...]] = {}
    configured: set[str] = set()
    for raw, topics in settings.entity_topics.items():
        spec = catalogue.resolve(raw)
        if spec is not None:
            found[spec.name] = tuple(dict.fromkeys((*found.get(spec.name, ()), *topics)))
            configured.update(topics)
    # Entities whose events travel on another's topic (dishes on the menus topic).
    for spec in catalogue.by_name.values():
        shared = [topic for topic in spec.kafka_topics if topic in configured]
        if shared:
            found[spec.name] = tuple(dict.fromkeys((*found.get(spec.name, ()), *shared)))
    return found


@dataclass
class Gateway:
    """Everything one gateway process runs; :meth:`start` and :meth:`stop` it."""

    settings: Settings
    metrics: PrometheusMetrics
    hub: Hub
    cache: SnapshotCache
    rest: RestSnapshotClient
    snapshots: SnapshotService
    commands: CommandService
    dispatcher: EventDispatcher
    refresher: SnapshotRefresher
    ingest: EventIngest
    app: web.Application
    source_factory: EventSourceFactory | None
    source: EventSource | None = None
    #: Every feature plugged into the sockets, in hook order (usecases/features.py).
    features: list[Feature] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _skip_flush: Periodic | None = field(default=None, repr=False)
    _gc: GcFreezer | None = field(default=None, repr=False)
    #: This process's place among ``--workers`` (None: the only process).
    worker: WorkerStatus | None = None
    _worker_state: Periodic | None = field(default=None, repr=False)
    port: int = 0

    def health(self) -> dict[str, object]:
        """``GET /health``: this process's sockets, or every worker's under ``--workers``."""
        if self.worker is None:
            return {"status": "ok", "sockets": len(self.hub)}
        workers = self.worker.workers()
        own = self.worker.identity.index
        sockets = sum(len(self.hub) if w["index"] == own else w["sockets"] for w in workers)
        up = sum(1 for w in workers if w["up"] or w["index"] == own)
        return {"status": "ok", "sockets": sockets, "workers": {"up": up, "expected": len(workers)}}

    def readiness(self) -> dict[str, object]:
        """``GET /ready``: this node's report; under ``--workers``, ready only when every
        worker is up and ready (``workers`` lists them)."""
        report = self._own_readiness()
        if self.worker is not None:
            own = self.worker.identity.index
            workers = self.worker.workers()
            for state in workers:
                if state["index"] == own:
                    state.update(up=True, ready=bool(report["ready"]), sockets=len(self.hub))
            report["workers"] = workers
            report["ready"] = all(state["ready"] for state in workers)
        return report

    def _publish_worker_state(self) -> None:
        if self.worker is not None:
            self.worker.publish(bool(self._own_readiness()["ready"]), len(self.hub))

    def _own_readiness(self) -> dict[str, object]:
        if self.source is None:
            report: dict[str, object] = {"ready": True, "events": "disabled"}
        else:
            state = self.source.status()
            report = {"ready": bool(state.get("ready")), "events": state}
        for feature in self.features:
            if feature.readiness_key:
                state = feature.status()
                report["ready"] = bool(report["ready"]) and bool(state.get("ready"))
                report[feature.readiness_key] = state
        return report

    async def start(self) -> None:
        """Listen on ``HOST:PORT``, then start the features and the event source (ready or
        not). A port that cannot be bound is a :class:`ConfigError` naming ``HOST``/``PORT``."""
        install_parser_error_filter(self.metrics.http_parser_error)
        # keepalive_timeout bounds, from the connection's start, how long a request's headers may
        # take (a slow upgrade is closed); an upgraded socket switches keep-alive off.
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self.settings.ws_handshake_timeout,
            # aiohttp rounds every timer longer than this up to a whole second (5 s by default),
            # heartbeats included: the pings of thousands of sockets then fire in one loop
            # turn, once a second (the soak's stalls of 100-230 ms). Exact deadlines spread them.
            timeout_ceil_threshold=_NO_TIMER_ROUNDING,
        )
        await self._runner.setup()
        listening: dict[str, Any] = {
            "backlog": 4096,
            "reuse_address": True,
            "reuse_port": self.worker is not None,  # the workers share the port (SO_REUSEPORT)
        }
        site = (
            FrontDoorSite(
                self._runner,
                self.settings.host,
                self.settings.port,
                handshake_timeout=self.settings.ws_handshake_timeout,
                **listening,
            )
            if self.settings.ws_front_door
            else web.TCPSite(self._runner, self.settings.host, self.settings.port, **listening)
        )
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(
                f"HOST/PORT: cannot listen on {self.settings.host}:{self.settings.port} "
                f"({os.strerror(error.errno).lower() if error.errno else error}); "
                "set PORT (or HOST) to a free address"
            ) from None
        for feature in self.features:
            feature.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        if self.source_factory is not None:
            self.source = self.source_factory(self.ingest.process)
            self.source.start()
            # Skipped-record summaries are written even when no record follows the burst.
            skips = self.ingest.skip_log
            self._skip_flush = Periodic("skipped-records summary", skips.interval, skips.flush)
            self._skip_flush.start()
        self._gc = GcFreezer(self.settings.gc_freeze_interval)
        self._gc.start()
        if self.worker is not None:
            self._publish_worker_state()
            self._worker_state = Periodic("worker state", 1.0, self._publish_worker_state)
            self._worker_state.start()
        log.info(
            "gateway listening",
            extra={"host": self.settings.host, "port": self.port, "event_loop": loop_name()},
        )

    async def stop(self) -> None:
        if self._worker_state is not None:
            await self._worker_state.stop()
        if self._gc is not None:
            await self._gc.stop()
        if self._skip_flush is not None:
            await self._skip_flush.stop()
        if self.source is not None:
            await self.source.stop()
        self.ingest.skip_log.flush(force=True)
        await self.refresher.close()
        if self._runner is not None:
            await self._runner.cleanup()  # closes the sockets: the features' leave hooks run
        for feature in reversed(self.features):
            await feature.stop()
        await self.rest.close()


def build_gateway(
    settings: Settings,
    *,
    source_factory: EventSourceFactory | None = None,
    catalogue: Catalogue = CATALOGUE,
    extra_routes: Callable[[web.Application], None] | None = None,
) -> Gateway:
    """Wire a gateway. Without ``source_factory``, Kafka is used when ``KAFKA_ENABLED``."""
    problems = configuration_problems(settings, catalogue)
    if problems:
        raise ConfigError(problems)
    metrics = PrometheusMetrics()
    verifier = build_verifier(settings)
    mapping = topic_entities(settings, catalogue)
    hub = Hub(text_frame, metrics)
    cache = SnapshotCache(
        max_entries=settings.snapshot_cache_max_entries,
        ttl_seconds=settings.snapshot_cache_ttl,
        metrics=metrics,
    )
    rest = RestSnapshotClient(
        settings.rest_base_url,
        timeout=settings.rest_timeout,
        max_connections=settings.rest_max_connections,
        metrics=metrics,
    )
    positions = Positions(entity_topics(settings, catalogue))
    journal = Journal(
        positions, text_frame, max_age=settings.resume_max_age, max_bytes=settings.resume_buffer_bytes
    )
    resumes = ResumeService(journal, hub, max_events=settings.resume_max_events, metrics=metrics)
    snapshots = SnapshotService(rest, cache, mark=positions.cursor)
    guard = OwnershipGuard(
        RestOwnershipSource(rest),
        ttl=settings.ownership_cache_ttl,
        max_entries=settings.ownership_cache_max_entries,
        metrics=metrics,
    )
    selections = build_selections(settings, hub, catalogue)
    notifications = NotificationFeed(hub, guard, metrics, refresh=settings.ownership_cache_ttl, sections=rest)
    channel: PushChannel
    if settings.kafka_enabled:
        channel = KafkaPushChannel(settings.broker_list, settings.broadcast_topic)
    else:
        channel = in_process = InProcessPushChannel()
    broadcasts = BroadcastService(channel, notifications, metrics)
    if not settings.kafka_enabled:
        in_process.deliver = broadcasts.deliver
    analytics = AnalyticsService(
        rest,
        guard,
        quiet=settings.snapshot_refresh_quiet,
        max_delay=settings.snapshot_refresh_max_delay,
        metrics=metrics,
    )
    #: The one list of features: hooks run in this order (the tenant check first).
    features: list[Feature] = [guard, selections, notifications, broadcasts, analytics]
    commands = CommandService(
        snapshots,
        metrics,
        features=features,
        verifier=verifier,
        guard=guard,
        max_topics=settings.ws_max_topics_per_socket,
    )
    refresher = SnapshotRefresher(
        hub,
        snapshots,
        quiet=settings.snapshot_refresh_quiet,
        max_delay=settings.snapshot_refresh_max_delay,
        metrics=metrics,
    )
    dispatcher = EventDispatcher(
        EventContext(
            hub=hub,
            cache=cache,
            allowed_actions=frozenset(settings.allowed_actions),
            metrics=metrics,
            refresher=refresher,
        ),
        also=[handler for feature in features if (handler := feature.event_handler()) is not None],
    )
    # The gateway's own topic of pushes is read by the same consumer as the platform's.
    routes = {settings.broadcast_topic: lambda record: broadcasts.deliver(record.value)}
    ingest = EventIngest(dispatcher, catalogue, mapping, metrics, routes=routes, journal=journal)
    resumes.decode = journal.decode = ingest.decode
    if settings.kafka_enabled:
        resumes.reader = KafkaRangeReader(settings.broker_list, max_age=settings.resume_max_age)

    if source_factory is None and settings.kafka_enabled:
        topics = (*dict.fromkeys(mapping), settings.broadcast_topic)

        def kafka_factory(on_batch: Callable[[list[Record]], None]) -> EventSource:
            return KafkaEventSource(
                KafkaSourceConfig(
                    brokers=settings.broker_list,
                    topics=topics,
                    group_id=f"{settings.kafka_group_id}-{settings.node_id}",
                    announce_starts=True,
                ),
                asyncio.get_running_loop(),
                on_batch,
                on_lag=metrics.lag,
                on_state=lambda up: metrics.consumer_up.set(1 if up else 0),
            )

        source_factory = kafka_factory

    services = GatewayServices(
        connect=ConnectUseCase(catalogue, verifier, settings.ws_default_entity, guard),
        commands=commands,
        hub=hub,
        sockets=SocketLifecycle(hub, features, settings.allowed_actions, resumes),
        metrics=metrics,
        max_message_bytes=settings.ws_max_message_bytes,
        send_buffer_bytes=settings.ws_send_buffer_bytes,
        heartbeat=settings.ws_heartbeat,
        max_inflight_commands=settings.ws_max_inflight_commands,
        allowed_origins=settings.allowed_origins,
        max_connections=settings.ws_max_connections,
        auth_timeout=settings.ws_auth_timeout,
        description=asyncapi_document(tuple(settings.allowed_actions), catalogue),
        render_metrics=metrics.render,
        readiness=lambda: gateway.readiness(),
        health=lambda: gateway.health(),
        notifications=notifications,
        broadcasts=broadcasts,
        analytics=analytics,
        broadcast_secret=settings.broadcast_secret,
        broadcast_admin_tokens=settings.broadcast_admin_tokens,
    )
    app = create_app(services, extra_routes)
    gateway = Gateway(
        settings=settings,
        metrics=metrics,
        hub=hub,
        cache=cache,
        rest=rest,
        snapshots=snapshots,
        commands=commands,
        dispatcher=dispatcher,
        refresher=refresher,
        ingest=ingest,
        app=app,
        source_factory=source_factory,
        features=features,
        worker=WorkerStatus(identity) if (identity := worker_identity()) is not None else None,
    )
    return gateway


def build_selections(settings: Settings, hub: Hub, catalogue: Catalogue) -> SelectionService:
    """Table selection on the shared Kafka topic, or in-process when Kafka is disabled."""
    policy = SelectionPolicy(
        ttl=settings.table_selection_ttl,
        max_per_socket=settings.table_selection_max_per_socket,
        rate_per_second=settings.table_selection_rate_limit,
        request_timeout=settings.table_selection_request_timeout,
        heartbeat_interval=settings.table_selection_heartbeat,
        node_timeout=settings.table_selection_node_timeout,
        checkpoint_interval=settings.table_selection_checkpoint_interval,
        reconnect_grace=settings.table_selection_reconnect_grace,
    )
    selection_log: KafkaSelectionLog | InProcessSelectionLog
    if settings.kafka_enabled:
        # A starting node reads back far enough to see a checkpoint of every busy partition,
        # and so far that a partition without records holds only long-expired holds.
        window = max(3 * policy.checkpoint_interval, policy.ttl + policy.node_timeout) + 30.0
        selection_log = KafkaSelectionLog(
            KafkaSelectionConfig(
                brokers=settings.broker_list,
                topic=settings.table_selection_topic,
                group_id=f"{settings.kafka_group_id}-{settings.node_id}-selections",
                replay_window=window,
            )
        )
    else:
        selection_log = InProcessSelectionLog()
    return SelectionService(selection_log, hub, catalogue.by_name["tables"], policy, settings.node_id)
