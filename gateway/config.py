"""The gateway config: composes the router's routes and the deployments' backends.

`GatewayConfig.load` takes a dict (Serve's `args:`) or a YAML path, so `serve run` and the tests
go through the same validation. Every mistake is reported with its field path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from access import AuthConfig
from cache import LOCAL, CacheConfig, Store
from deployments import (
    ADAPTER_SEPARATOR,
    BackendConfig,
    DeploymentOptions,
    VLLMBackendConfig,
    adapter_backend,
)
from gateway.core.templates import PromptTemplate, resolve
from guardrails import GuardrailsConfig
from llmops import (
    ExperimentConfig,
    LedgerConfig,
    MonitorsConfig,
    RequestLogConfig,
    ResponsesConfig,
)
from retrieval import RetrievalConfig
from router import RouteConfig, RoutingConfig
from storage import DatabaseConfig
from tracing import TracingConfig

BACKEND_KINDS = {"vllm", "openai", "anthropic", "fake"}  # the `kind:` discriminator's values

# Relative paths in a config (ledger, request log, model folders) resolve against this.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """An invalid gateway config; the message names every offending field path."""


class IngressOptions(BaseModel):
    """Settings of the HTTP ingress deployment itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(
        default=10 * 2**20, ge=1024, description="Larger request bodies get 413."
    )
    health_check_interval_s: float = Field(
        default=10.0, gt=0, description="How often backend health is refreshed in the background."
    )
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(num_replicas=1),
        description="Serve options of the ingress replicas (they are I/O bound: scale by load).",
    )
    allowed_hosts: tuple[str, ...] | None = Field(
        default=None,
        description="Host names the gateway answers to (a DNS rebinding guard): exact names, "
        "`.example.com` for a domain and its subdomains, or `*`. Unset: loopback names only "
        "with auth off, any Host with keys on.",
    )
    serve_access_log: bool = Field(
        default=False,
        description="Serve's own access-log line per request in the replica log. Off: the "
        "gateway's request log and ledger already record every request, and Serve writes its "
        "lines in bursts that held requests up (p99 at c=1 here: ~14 ms with it, ~4 ms without).",
    )


class GatewayConfig(RoutingConfig):
    """Everything under `args:` of the gateway application in a Serve config file."""

    auth: AuthConfig = Field(
        default_factory=AuthConfig,
        description="Virtual keys, teams and their limits (`mode: keys`), or none.",
    )
    backends: dict[str, BackendConfig] = Field(
        min_length=1, description="Backend name -> backend. A request may name one directly."
    )
    ingress: IngressOptions = Field(
        default_factory=IngressOptions, description="HTTP ingress settings."
    )
    database: DatabaseConfig = Field(
        default_factory=DatabaseConfig,
        description="PostgreSQL for the ledger, feedback, keys and spend, stored responses and "
        "learned task prototypes, shared by every replica (`url_env`); unset: SQLite files.",
    )
    ledger: LedgerConfig = Field(
        default_factory=LedgerConfig,
        description="Actual cost per request, in SQLite or the `database`.",
    )
    request_log: RequestLogConfig = Field(
        default_factory=RequestLogConfig, description="One JSON line per request."
    )
    responses: ResponsesConfig = Field(
        default_factory=ResponsesConfig,
        description="Stored responses of `POST /v1/responses` (`previous_response_id`).",
    )
    prompt_templates: dict[str, PromptTemplate] = Field(
        default_factory=dict, description="Name -> versioned prompt template."
    )
    experiments: dict[str, ExperimentConfig] = Field(
        default_factory=dict, description="Name -> A/B experiment on a route."
    )
    cache: CacheConfig = Field(
        default_factory=CacheConfig,
        description="Response caching per route: exact, or semantic with a verifier "
        "(docs/caching.md); unset: no cache.",
    )
    guardrails: GuardrailsConfig = Field(
        default_factory=GuardrailsConfig,
        description="Personal data and secrets masked and restored, content rules, a judge: "
        "policies attached per route, backend (kind), key or team (docs/guardrails.md).",
    )
    retrieval: RetrievalConfig = Field(
        default_factory=RetrievalConfig,
        description="Files and vector stores (`/v1/files`, `/v1/vector_stores`), searched by "
        "the Responses API's `file_search` tool and routes' `retrieval:` (docs/retrieval.md).",
    )
    tracing: TracingConfig = Field(
        default_factory=TracingConfig,
        description="OpenTelemetry traces over OTLP/HTTP: a span per pipeline step and backend "
        "attempt, W3C `traceparent` from the client to every upstream (docs/monitoring.md); "
        "off by default.",
    )
    monitors: MonitorsConfig = Field(
        default_factory=MonitorsConfig,
        description="Drift monitors: labelled sets run on a schedule against backends or "
        "routes, with an alert when a score leaves its baseline's interval; live-answer "
        "signals as metrics (docs/monitoring.md).",
    )
    quality_file: str | None = Field(
        default=None,
        description="Measured quality per backend and task (JSON, written by `python -m "
        "gateway eval --write-quality`); a measurement wins over the backend's configured "
        "`quality` for its task, and explain says which one it used. Read at deploy.",
    )

    @model_validator(mode="after")
    def _adapter_candidates(self) -> GatewayConfig:
        """Each LoRA adapter of a vLLM backend becomes a backend of its own, `<backend>:<name>`
        (regenerated here, so a dumped and reloaded config comes out the same)."""
        declared = {
            name: backend
            for name, backend in self.backends.items()
            if getattr(backend, "adapter_of", None) is None
        }
        colons = [name for name in declared if ADAPTER_SEPARATOR in name]
        if colons:
            raise ValueError(
                f"backends: {', '.join(colons)}: `{ADAPTER_SEPARATOR}` is kept for adapters "
                f"(`{adapter_backend('<backend>', '<adapter>')}`)"
            )
        backends: dict[str, BackendConfig] = {}
        for name, backend in declared.items():
            backends[name] = backend
            if isinstance(backend, VLLMBackendConfig):
                backends.update(backend.adapter_candidates(name))
        object.__setattr__(self, "backends", backends)  # frozen: set once, while validating
        return self

    @model_validator(mode="after")
    def _cross_references(self) -> GatewayConfig:
        problems = [
            f"{path}: unknown backend {name!r} (known: {', '.join(sorted(self.backends))})"
            for path, name in self.unknown_backend_references(set(self.backends))
        ]
        problems += [
            f"routes.{name}: name is also a backend; route and backend names must differ"
            for name in self.routes
            if name in self.backends
        ]
        problems += [
            f"routes.{name}.template: unknown prompt template {route.template!r}"
            for name, route in self.routes.items()
            if route.template and resolve(self.prompt_templates, route.template) is None
        ]
        problems += self._experiment_problems()
        problems += self._cache_problems()
        problems += self._retrieval_problems()
        problems += self._monitor_problems()
        kinds = {name: backend.kind for name, backend in self.backends.items()}
        problems += self.guardrails.reference_problems(set(self.routes), kinds, BACKEND_KINDS)
        if self.database.url_env and self.ledger.scope == "cluster":
            problems.append(
                "ledger.scope: `cluster` keeps one SQLite ledger on the owner's node; with "
                "`database.url_env` every replica writes to the database already: use `host` "
                "(the request log is then kept on each host)"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _retrieval_problems(self) -> list[str]:
        """Routes that retrieve need the embedding model, and it must embed."""
        users = [f"routes.{n}.retrieval" for n, r in self.routes.items() if r.retrieval]
        model = self.retrieval.embedding_model
        refusal = mixed_vectors(model, self.routes)
        if refusal and (users or "retrieval" in self.model_fields_set):
            return [refusal]
        if not users or self.embeds(model):
            return []
        return [
            f"{users[0]}: retrieval.embedding_model {model!r} is no route or backend serving "
            "the embeddings endpoint"
        ]

    def _monitor_problems(self) -> list[str]:
        """A check's targets must be routes or backends, and its dataset must be there."""
        problems = []
        for name, check in self.monitors.checks.items():
            path = f"monitors.checks.{name}"
            problems += [
                f"{path}.targets: unknown route or backend {target!r}"
                for target in check.targets
                if target not in self.routes and target not in self.backends
            ]
            if not (PROJECT_ROOT / check.dataset).is_file():
                problems.append(f"{path}.dataset: no file at {PROJECT_ROOT / check.dataset}")
        return problems

    def embeds(self, model: str) -> bool:
        """Whether `model` (a route or a backend) serves `/v1/embeddings`."""
        if model in self.routes:
            return all(self.embeds(name) for name in self.routes[model].candidates)
        backend = self.backends.get(model)
        return backend is not None and "embeddings" in backend.endpoints

    def _cache_problems(self) -> list[str]:
        problems = [
            f"cache.routes.{name}: unknown route (known: {', '.join(sorted(self.routes))})"
            for name in self.cache.routes
            if name not in self.routes
        ]
        if self.cache.store == Store.DATABASE and not self.database.url_env:
            problems.append(
                "cache.store: `database` needs the `database:` section (database.url_env)"
            )
        semantic = self.cache.semantic
        if semantic is not None and semantic.embedding != LOCAL:
            backend = self.backends.get(semantic.embedding)
            if backend is None or "embeddings" not in backend.endpoints:
                serving = sorted(n for n, b in self.backends.items() if "embeddings" in b.endpoints)
                problems.append(
                    f"cache.semantic.embedding: {semantic.embedding!r} is neither `local` nor a "
                    f"backend serving embeddings (those that do: {', '.join(serving) or 'none'})"
                )
        return problems

    def _experiment_problems(self) -> list[str]:
        problems: list[str] = []
        routes_taken: dict[str, str] = {}
        for name, experiment in self.experiments.items():
            path = f"experiments.{name}"
            if experiment.route not in self.routes:
                problems.append(f"{path}.route: unknown route {experiment.route!r}")
            elif experiment.route in routes_taken:
                problems.append(
                    f"{path}.route: route {experiment.route!r} already has experiment "
                    f"{routes_taken[experiment.route]!r}"
                )
            routes_taken[experiment.route] = name
            if experiment.shadow and experiment.shadow not in self.backends:
                problems.append(f"{path}.shadow: unknown backend {experiment.shadow!r}")
            for arm_name, arm in experiment.arms.items():
                if arm.backend and arm.backend not in self.backends:
                    problems.append(
                        f"{path}.arms.{arm_name}.backend: unknown backend {arm.backend!r}"
                    )
                if arm.template and resolve(self.prompt_templates, arm.template) is None:
                    problems.append(
                        f"{path}.arms.{arm_name}.template: unknown prompt template {arm.template!r}"
                    )
        return problems

    @classmethod
    def load(cls, source: GatewayConfig | dict[str, Any] | str | Path) -> GatewayConfig:
        """Validate a config from a dict, a YAML file path, or pass a config through."""
        if isinstance(source, GatewayConfig):
            return source
        if isinstance(source, str | Path):
            data = load_yaml(Path(source))
            if isinstance(data, dict) and "applications" in data:
                data = _gateway_args(data, Path(source))
            source = data
        if not isinstance(source, dict):
            raise ConfigError(f"gateway config must be a mapping, got {type(source).__name__}")
        if set(source) == {"config_path"}:
            return cls.load(source["config_path"])
        try:
            return cls.model_validate(source)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc)) from None


_BACKEND_KINDS = ("vllm", "openai", "anthropic", "fake")


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        # Drop the discriminator tag pydantic inserts (backends.x.vllm.field -> backends.x.field).
        loc = [
            str(part)
            for part in error["loc"]
            if part not in ("vllm", "openai", "anthropic", "fake")
        ]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        if loc:
            lines.append(f"  {'.'.join(loc)}: {message}")
        else:  # cross-field problems name their own paths, one per line
            lines.extend(f"  {line}" for line in message.splitlines())
    return f"invalid gateway config ({len(lines)} problem(s)):\n" + "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise ConfigError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                f"(first at line {seen[key] + 1}) in {node.start_mark.name}"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path) -> Any:
    try:
        with path.open() as handle:
            return yaml.load(handle, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {path}: {exc}") from None


def _gateway_args(serve_config: dict[str, Any], path: Path) -> Any:
    """The `args:` of the gateway application in a whole Serve config file."""
    for app in serve_config.get("applications") or []:
        if str(app.get("import_path", "")).startswith("gateway.app:"):
            return app.get("args") or {}
    raise ConfigError(f"{path}: no application with import_path gateway.app:build_app")


def mixed_vectors(model: str, routes: Mapping[str, RouteConfig]) -> str:
    """Why `model` cannot embed a store ("" where it can): a route that may send chunks to
    more than one backend would mix vectors of different models. A config that names it for
    retrieval fails at deploy; one that only has such a route under the default name (`embed`)
    deploys, and the gateway's vector stores refuse to embed with it."""
    route = routes.get(model)
    if route is None or (len(route.candidates) <= 1 and not route.fallbacks):
        return ""
    return (
        f"retrieval.embedding_model: route {model!r} may embed with more than one backend; a "
        "store's vectors must all come from one model (name a backend, or a route "
        "with one candidate and no fallbacks)"
    )
