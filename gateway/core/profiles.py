"""Backend config (deployments) -> what the router knows about a backend (router)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deployments import BackendConfig, VLLMBackendConfig
from router import BackendProfile, LatencyPrior, TokenCounter, approximate_tokens


def _local_token_counter(folder: Path) -> TokenCounter | None:
    """The model's own tokenizer, when its files are on this machine."""
    path = folder / "tokenizer.json"
    if not path.exists():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


def quality_for(
    config: BackendConfig, measured: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """A backend's `quality` and `quality_sources`: the configured numbers, with the quality
    file's measurements (task -> measurement) winning for their tasks."""
    measured = measured or {}
    return {
        "quality": {**config.quality, **{t: float(m["score"]) for t, m in measured.items()}},
        "quality_sources": {
            task: f"measured {m.get('measured', '?')}: {m.get('metric', '?')} on "
            f"{m.get('n', '?')} examples of {m.get('dataset', '?')}, 95% interval "
            f"{m.get('interval')}"
            for task, m in measured.items()
        },
    }


def profile_for(
    name: str,
    config: BackendConfig,
    project_root: Path,
    measured: Mapping[str, Mapping[str, Any]] | None = None,
) -> BackendProfile:
    """`measured`: task -> a measurement from the quality file (`gateway eval
    --write-quality`), which wins over the configured number for that task."""
    counter: TokenCounter | None = None
    if isinstance(config, VLLMBackendConfig):
        counter = _local_token_counter(Path(config.resolved_source(project_root)))
    window = config.max_model_len if isinstance(config, VLLMBackendConfig) else None
    return BackendProfile(
        name=name,
        input_per_mtok=config.pricing.input_per_mtok,
        output_per_mtok=config.pricing.output_per_mtok,
        gpu_hour_usd=config.pricing.gpu_hour_usd,
        context_window=window or config.context_window,
        tasks=frozenset(config.tasks) if config.tasks is not None else None,
        endpoints=frozenset(config.endpoints),
        **quality_for(config, measured),
        latency_prior=LatencyPrior(config.latency_prior.ttft_ms, config.latency_prior.tpot_ms),
        capacity=config.capacity,
        count_tokens=counter or approximate_tokens,
        tokenizer="model" if counter else "approximate (4 chars per token)",
    )
