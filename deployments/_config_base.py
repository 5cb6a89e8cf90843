"""What every backend's config has: model, prices, latency prior, resilience, deployment."""

from __future__ import annotations

from pydantic import Field, model_validator

from deployments._base import GENERATION, Endpoint
from deployments._options import (
    CircuitBreakerConfig,
    DeploymentOptions,
    LatencyPriorConfig,
    Pricing,
    RetryConfig,
    TimeoutConfig,
    _Strict,
)


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
