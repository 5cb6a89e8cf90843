"""Options a backend config is made of: prices, Serve deployment options, latency priors,
timeouts, retries and the circuit breaker."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pricing(_Strict):
    """What one million tokens cost, in USD. Self-hosted models are 0 unless you say otherwise."""

    input_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M prompt tokens.")
    output_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M output tokens.")
    cached_input_per_mtok: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M prompt tokens read from the provider's prompt cache "
        "(`prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`); "
        "unset: `input_per_mtok`.",
    )
    cache_write_per_mtok: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M prompt tokens written to the provider's prompt cache "
        "(Anthropic's `cache_creation_input_tokens`); unset: `input_per_mtok`.",
    )
    gpu_hour_usd: float = Field(
        default=0.0,
        ge=0,
        description="Self-hosted: what one replica costs per hour; turned into a marginal "
        "per-request cost from measured latency and how busy the replica is.",
    )


# Imported by Serve's controller by name (it runs the policy), not by this package.
TOKENS_POLICY = "deployments._autoscaling:TokensInFlightPolicy"


class AutoscalingOptions(_Strict):
    """Ray Serve autoscaling for one backend (a subset of `ray.serve.config.AutoscalingConfig`)."""

    min_replicas: int = Field(default=1, ge=0, description="Replicas kept when idle.")
    max_replicas: int = Field(default=1, ge=1, description="Upper bound on replicas.")
    initial_replicas: int | None = Field(default=None, ge=0, description="Replicas at deploy.")
    target_ongoing_requests: float = Field(
        default=2.0, gt=0, description="Average in-flight requests per replica to aim for."
    )
    upscale_delay_s: float = Field(default=30.0, ge=0, description="Wait before scaling up.")
    downscale_delay_s: float = Field(default=600.0, ge=0, description="Wait before scaling down.")
    metrics_interval_s: float | None = Field(
        default=None, gt=0, description="How often replicas report load (Ray's default if unset)."
    )
    look_back_period_s: float | None = Field(
        default=None, gt=0, description="Window the load is averaged over (Ray's default if unset)."
    )
    signal: Literal["ongoing_requests", "tokens_in_flight"] = Field(
        default="ongoing_requests",
        description="What to scale on. `ongoing_requests`: Serve's default policy "
        "(`target_ongoing_requests`). `tokens_in_flight` (vLLM only): the output tokens "
        "requests may still produce, per replica (`target_tokens_per_replica`), plus one "
        "replica while the time to first token is over `target_ttft_ms`.",
    )
    target_tokens_per_replica: int | None = Field(
        default=None, gt=0, description="With `signal: tokens_in_flight`: tokens per replica."
    )
    target_ttft_ms: float | None = Field(
        default=None, gt=0, description="With `signal: tokens_in_flight`: add a replica above it."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        if self.signal == "tokens_in_flight" and self.target_tokens_per_replica is None:
            raise ValueError("signal tokens_in_flight needs target_tokens_per_replica")
        return self

    def serve_config(self) -> dict[str, Any]:
        """Serve's `autoscaling_config`: the custom policy when the signal asks for it."""
        config = self.model_dump(
            exclude_none=True, exclude={"signal", "target_tokens_per_replica", "target_ttft_ms"}
        )
        if self.signal == "tokens_in_flight":
            kwargs: dict[str, Any] = {"target_tokens_per_replica": self.target_tokens_per_replica}
            if self.target_ttft_ms is not None:
                kwargs["target_ttft_ms"] = self.target_ttft_ms
            config["policy"] = {"policy_function": TOKENS_POLICY, "policy_kwargs": kwargs}
        return config


class DeploymentOptions(_Strict):
    """Ray Serve deployment options for the backend's replicas."""

    num_replicas: int | None = Field(
        default=None, ge=1, description="Fixed replica count; mutually exclusive with autoscaling."
    )
    autoscaling_config: AutoscalingOptions | None = Field(
        default=None, description="Scale replicas with load instead of a fixed count."
    )
    max_ongoing_requests: int | None = Field(
        default=None, ge=1, description="Requests one replica runs at once before queueing."
    )
    max_queued_requests: int | None = Field(
        default=None, ge=-1, description="Requests queued per caller before 429; -1 is unbounded."
    )
    ray_actor_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to Ray as is: num_cpus, num_gpus, memory, resources, runtime_env.",
    )
    health_check_period_s: float | None = Field(
        default=None, gt=0, description="How often Serve checks replica health."
    )
    max_replicas_per_node: int | None = Field(
        default=None,
        ge=1,
        description="Spread replicas: at most this many on one node (e.g. 1 puts an ingress "
        "replica on each of several nodes).",
    )

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> DeploymentOptions:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set either num_replicas or autoscaling_config, not both")
        return self

    def serve_options(self) -> dict[str, Any]:
        """The keyword arguments for `Deployment.options` / LLMConfig.deployment_config."""
        options = self.model_dump(exclude_none=True, exclude={"ray_actor_options"})
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = self.autoscaling_config.serve_config()
        if self.ray_actor_options:
            options["ray_actor_options"] = dict(self.ray_actor_options)
        return options


class LatencyPriorConfig(_Strict):
    """Latency assumed until the gateway has measured enough requests to this backend."""

    ttft_ms: float = Field(default=500.0, ge=0, description="Time to first token.")
    tpot_ms: float = Field(default=20.0, ge=0, description="Time per output token after it.")
    cold_start_s: float = Field(
        default=60.0,
        ge=0,
        description="With `min_replicas: 0`: how long a replica takes to start from zero, until "
        "the gateway has seen one start (then it uses what it saw).",
    )


class TimeoutConfig(_Strict):
    """How long the gateway waits on this backend; a timeout counts as a retryable failure."""

    connect_s: float = Field(default=5.0, gt=0, description="TCP/TLS connect (HTTP backends).")
    first_token_s: float = Field(
        default=60.0,
        gt=0,
        description="Streams: until the first chunk arrives (queueing and prefill included).",
    )
    total_s: float = Field(
        default=600.0,
        gt=0,
        description="Whole request: a non-streamed answer, or a stream to its last chunk.",
    )


class RetryConfig(_Strict):
    """Retries on this same backend after retryable failures (overload, 5xx, timeouts), once
    the route's fallbacks were tried: full-jitter exponential backoff, never sooner than the
    upstream's `Retry-After`."""

    max_retries: int = Field(default=2, ge=0, description="Extra attempts on this backend.")
    initial_backoff_ms: float = Field(
        default=100.0, ge=0, description="Backoff ceiling of the first retry; doubles per retry."
    )
    max_backoff_ms: float = Field(default=5000.0, ge=0, description="Largest backoff ceiling.")
    max_retry_after_s: float = Field(
        default=10.0,
        ge=0,
        description="A longer upstream Retry-After is not waited for: the client gets it.",
    )


class CircuitBreakerConfig(_Strict):
    """When the gateway stops sending requests to this backend for a while."""

    enabled: bool = Field(default=True, description="False never opens the circuit.")
    consecutive_failures: int = Field(
        default=5, ge=1, description="Failures in a row that open the circuit."
    )
    error_rate: float = Field(
        default=0.5, gt=0, le=1, description="Failed share of the last `window` that opens it."
    )
    window: int = Field(default=20, ge=1, description="Outcomes the error rate is taken over.")
    min_requests: int = Field(
        default=10, ge=1, description="Outcomes needed before the error rate counts."
    )
    cooldown_s: float = Field(
        default=30.0, gt=0, description="Open time before one half-open probe is let through."
    )
