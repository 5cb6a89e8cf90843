"""Wiring: a `Gateway` from a config and the backends the ingress connected to."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cache import LOCAL, DatabaseEntries, Entries, Store, fingerprint
from deployments import Backend, Pricing
from gateway.config import ConfigError, GatewayConfig
from gateway.core.attempts import Feedback, Observer
from gateway.core.caching import Embed, ResponseCache
from gateway.core.capacity import Capacity
from gateway.core.continuation import style_of
from gateway.core.guarding import GuardStep
from gateway.core.health import HealthMonitor
from gateway.core.keys import KeyGate
from gateway.core.monitoring import Monitors
from gateway.core.pipeline import Gateway
from gateway.core.resilience import Resilience
from gateway.core.retrieving import Library
from gateway.core.routing import Routing
from gateway.core.stores import open_store
from gateway.core.tracing import Tracing, backend_attributes
from gateway.core.warmup import to_warm
from guardrails import Guard
from llmops import (
    Accounting,
    GatewayMetrics,
    LedgerReader,
    LocalRecordsTransport,
    MonitorStore,
    Price,
    RecordsOwner,
    RecordsTransport,
    Redactor,
    RequestRecord,
    SharedRecords,
    Sink,
    log_entry,
    open_ledger,
    open_request_log,
)
from router import Embedder, MiniLMEmbedder
from storage import Database
from tracing import Tracer

logger = logging.getLogger("ray.serve")


class Books(Observer):
    """Accounting as an observer: finished requests are costed and written to the sinks."""

    def __init__(self, accounting: Accounting) -> None:
        self.accounting = accounting

    def request_finished(self, record: RequestRecord) -> None:
        self.accounting.finish(record)

    def close(self) -> None:
        self.accounting.close()


def sinks_for(
    config: GatewayConfig,
    project_root: Path,
    metrics: GatewayMetrics | None,
    records: RecordsTransport | None = None,
    ingress: str | None = None,
    database: Database | None = None,
) -> tuple[LedgerReader | None, list[Sink]]:
    """The ledger (also read by the usage and feedback endpoints) and every sink. With
    `ledger.scope: cluster`, records go to the owner `records` reaches, marked `ingress`;
    with a `database`, this replica writes the ledger there itself (spooling in an outage)."""
    observed: list[Sink] = [] if metrics is None else [metrics]
    if config.ledger.scope == "cluster":
        return _shared_sinks(config, project_root, records, observed, ingress)
    sinks: list[Sink] = []
    if config.request_log.enabled:
        sinks.append(open_request_log(config.request_log, project_root / config.request_log.path))
    if not config.ledger.enabled:
        return None, [*sinks, *observed]
    if database is None:
        ledger = open_ledger(config.ledger, project_root / config.ledger.path)
        return ledger, [ledger, *sinks, *observed]
    owner = RecordsOwner(open_ledger(config.ledger, database.acquire()), None)
    spool = project_root / config.ledger.spool_path
    shared = SharedRecords(
        LocalRecordsTransport(owner, owned=True), spool, ledger=True, log_entry=None,
        ingress=ingress,
    )  # fmt: skip
    return shared, [shared, *sinks, *observed]


def _shared_sinks(
    config: GatewayConfig,
    project_root: Path,
    records: RecordsTransport | None,
    observed: list[Sink],
    ingress: str | None,
) -> tuple[LedgerReader | None, list[Sink]]:
    ledger, log = config.ledger, config.request_log
    if not (ledger.enabled or log.enabled):
        return None, observed
    if records is None:
        raise ConfigError("ledger.scope: `cluster` needs the records owner, and none was deployed")
    entry = None
    if log.enabled:
        redact = Redactor(log.redact)

        def entry(record: RequestRecord) -> dict[str, Any]:
            return log_entry(record, log.bodies, redact)

    spool = project_root / ledger.spool_path
    shared = SharedRecords(records, spool, ledger=ledger.enabled, log_entry=entry, ingress=ingress)
    return (shared if ledger.enabled else None), [shared, *observed]


def _capacity(
    config: GatewayConfig,
    backends: Mapping[str, Backend],
    replica_states: Callable[[list[str]], Mapping[str, Any]] | None,
) -> Capacity | None:
    if replica_states is None:
        return None
    capacity = Capacity(config.backends, backends, replica_states)
    return capacity if capacity.watched else None


def _local_embed(routing: Routing) -> Embed:
    """`semantic.embedding: local`: the task classifier's model where it has one (its weights
    shared), reading up to 128 tokens of a text, else all-MiniLM-L6-v2 loaded for the cache
    alone; run in a thread (blocking work)."""
    embedder = routing.embedder or MiniLMEmbedder()
    if isinstance(embedder, MiniLMEmbedder):
        embedder = embedder.window(128)

    async def embed(text: str) -> list[float]:
        (vector,) = await asyncio.to_thread(embedder, [text])
        return [float(x) for x in vector]

    return embed


def _backend_embed(backend: Backend, model: str) -> Embed:
    """Semantic mode's embeddings from one of the gateway's own embedding backends."""

    async def embed(text: str) -> list[float]:
        result = await backend.complete("embeddings", {"model": model, "input": [text]})
        return [float(x) for x in result["data"][0]["embedding"]]

    return embed


def _response_cache(
    config: GatewayConfig,
    backends: Mapping[str, Backend],
    routing: Routing,
    database: Database | None,
) -> ResponseCache | None:
    """The cache the `cache:` section describes (None: no route caches), its entries in the
    shared database where there is one (`cache.store: auto`)."""
    if not config.cache.enabled:
        return None
    entries: Entries | None = None
    if database is not None and config.cache.store != Store.REPLICA:
        entries = DatabaseEntries(
            database.acquire(), config.cache.max_entries, config.cache.max_bytes
        )
    semantic, embed = config.cache.semantic, None
    if semantic is not None and semantic.embedding == LOCAL:
        embed = _local_embed(routing)
    elif semantic is not None:
        name = semantic.embedding
        embed = _backend_embed(backends[name], config.backends[name].model)
    versions = {
        name: fingerprint(backend.model_dump(mode="json"))
        for name, backend in config.backends.items()
    }
    return ResponseCache(config.cache, versions, embed, entries)


def _guard_step(
    config: GatewayConfig, backends: Mapping[str, Backend], routing: Routing
) -> GuardStep | None:
    """The `guardrails:` section's step (None: no policies). Example-phrase rules embed with
    the local MiniLM, as the semantic cache does; a judge backend is asked directly."""
    section = config.guardrails
    if not section.enabled:
        return None
    semantic = any(rule.examples for p in section.policies.values() for rule in (*p.deny, *p.allow))

    async def ask(name: str, body: dict[str, Any]) -> str:
        result = await backends[name].complete("chat/completions", body)
        return str(result["choices"][0]["message"].get("content") or "")

    kinds = {name: backend.kind for name, backend in config.backends.items()}
    embed = _local_embed(routing) if semantic else None
    return GuardStep(Guard(section, kinds, embed=embed, ask=ask))


def _price(pricing: Pricing) -> Price:
    return Price(
        pricing.input_per_mtok,
        pricing.output_per_mtok,
        pricing.cached_input_per_mtok,
        pricing.cache_write_per_mtok,
    )


def _library(config: GatewayConfig, project_root: Path, database: Database | None) -> Library:
    """Files and vector stores: in the shared database, or a SQLite file (the ledger's)."""

    def where() -> Database | Path:
        if database is not None:
            return database.acquire()
        return project_root / (config.retrieval.path or config.ledger.path)

    return Library(config.retrieval, where, config.routes)


def _circuits(
    resilience: Resilience, metrics: GatewayMetrics | None
) -> Callable[[list[str]], None]:
    """What publishes the circuits' states as metrics (nothing without metrics)."""

    def publish(names: list[str]) -> None:
        if metrics is not None:
            metrics.circuits({name: resilience.describe(name)["state"] for name in names})

    return publish


def _monitors(
    config: GatewayConfig,
    project_root: Path,
    database: Database | None,
    metrics: GatewayMetrics | None,
    keyed: bool,
) -> Monitors | None:
    """The drift monitors (`monitors.checks`), their runs beside the ledger."""
    if not config.monitors.checks:
        return None

    def store() -> MonitorStore:
        where = database.acquire() if database is not None else None
        return MonitorStore(where or project_root / config.ledger.path)

    publish = metrics.monitor if metrics is not None else None
    return Monitors(config.monitors, project_root, store, publish, keyed)


def _tracing(config: GatewayConfig) -> Tracing | None:
    """Traces (`tracing.enabled`), exported over OTLP/HTTP from a thread of the exporter's."""
    if not config.tracing.enabled:
        return None
    tracer = Tracer(config.tracing, backend_attributes(config.backends))
    return Tracing(config.tracing, tracer)


def _shared_database(config: GatewayConfig, project_root: Path) -> Database | None:
    """One pool for this process's stores (ledger, responses, prototypes); None: SQLite."""
    if config.database.url_env is None:
        return None
    return open_store(config.database, project_root / config.ledger.path)


def build_gateway(
    config: GatewayConfig,
    backends: Mapping[str, Backend],
    project_root: Path,
    *,
    unavailable: Mapping[str, str] | None = None,
    metrics: GatewayMetrics | None = None,
    embed: Embedder | None = None,
    extra_observers: Sequence[Observer] = (),
    clock: Callable[[], float] | None = None,
    keys: KeyGate | None = None,
    replica_states: Callable[[list[str]], Mapping[str, Any]] | None = None,
    records: RecordsTransport | None = None,
    ingress: str | None = None,
) -> tuple[Gateway, LedgerReader | None]:
    """A gateway over `backends` with the config's routing, resilience, health probes and
    sinks. `metrics` needs a Serve replica (Ray's metrics agent); None records none. `keys`
    authenticates and limits requests (None: `auth: {mode: none}`). `replica_states` reads
    Serve's replica states (blocking), for backends that scale to zero. `records` reaches
    the cluster's records owner (`ledger.scope: cluster`); `ingress` names this replica."""
    database = _shared_database(config, project_root)
    routing = Routing(config, project_root, embed, database)
    resilience = Resilience(config.backends)

    interval = config.ingress.health_check_interval_s
    health = HealthMonitor(backends, unavailable or {}, interval, _circuits(resilience, metrics))
    prices = {name: _price(b.pricing) for name, b in config.backends.items()}
    ledger, sinks = sinks_for(config, project_root, metrics, records, ingress, database)
    observers: list[Observer] = [routing.live, health, resilience, Books(Accounting(prices, sinks))]
    # After the books: keys settle from the actual cost, and the request span carries it.
    tracing = _tracing(config)
    observers += [observer for observer in (keys, tracing) if observer is not None]
    feedback = Feedback([*observers, *extra_observers], **({"clock": clock} if clock else {}))
    gateway = Gateway(
        backends,
        routing,
        resilience,
        health,
        feedback,
        routes=config.routes,
        log_bodies=config.request_log.enabled and config.request_log.bodies,
        warmups=to_warm(config.backends, backends),
        keys=keys,
        capacity=_capacity(config, backends, replica_states),
        speaks={name: b.native_apis for name, b in config.backends.items() if b.native_apis},
        database=database,
        cache=_response_cache(config, backends, routing, database),
        guard=_guard_step(config, backends, routing),
        library=_library(config, project_root, database),
        styles={name: style_of(b.kind) for name, b in config.backends.items()},
        tracing=tracing,
        monitors=_monitors(config, project_root, database, metrics, keys is not None),
        refusals=config.monitors.refusal_phrases,
    )
    for user in (gateway.library, gateway.monitors):  # they embed and ask through the pipeline
        if user is not None:
            user.connect(gateway.handle)
    return gateway, ledger
