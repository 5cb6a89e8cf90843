"""LoRA adapters in the config: each is a routing candidate `<backend>:<adapter>` served by its
backend's replicas; the engine gets them as static LoRA modules. On a real engine:
tests/integration/test_adaptation.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deployments import VLLMBackendConfig, deployment_name, hosted_by
from gateway.config import ConfigError, GatewayConfig
from gateway.serve.ingress import check_adapters
from llmops._dataset import export_dataset


def _adapter(folder: Path, rank: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return folder


def _config(adapter_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "backends": {
            "smollm2": {
                "kind": "vllm",
                "model": "SmolLM2",
                "source": "models/smollm2-135m-instruct",
                "pricing": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
                "quality": {"default": 0.3},
                "adapters": {
                    "extract": {
                        "path": str(adapter_path),
                        "tasks": ["extraction"],
                        "quality": {"extraction": 0.9},
                    }
                },
            }
        },
        "routes": {"by-task": {"policy": "balanced", "candidates": ["smollm2:extract", "smollm2"]}},
        **extra,
    }


def test_each_adapter_is_a_candidate_of_its_own_on_its_backends_replicas(tmp_path: Path) -> None:
    config = GatewayConfig.load(_config(_adapter(tmp_path / "a")))
    assert list(config.backends) == ["smollm2", "smollm2:extract"]
    adapter = config.backends["smollm2:extract"]
    assert isinstance(adapter, VLLMBackendConfig)
    assert adapter.model == "extract" and adapter.adapter_of == "smollm2"  # sent to vLLM
    assert adapter.tasks == ("extraction",) and adapter.quality == {"extraction": 0.9}
    assert adapter.pricing.input_per_mtok == 0.1  # the base's prices: the same replicas
    assert deployment_name("smollm2:extract") == deployment_name("smollm2") == "backend-smollm2"
    assert hosted_by("smollm2:extract") == "smollm2"
    # What replicas receive (a dump) loads back to the same backends.
    again = GatewayConfig.load(config.model_dump(mode="json"))
    assert again.backends == config.backends


def test_the_engine_loads_the_adapters_as_lora_modules(tmp_path: Path) -> None:
    folder = _adapter(tmp_path / "a", rank=12)
    config = GatewayConfig.load(_config(folder)).backends["smollm2"]
    assert isinstance(config, VLLMBackendConfig)
    kwargs = config.lora_engine_kwargs(tmp_path)
    assert kwargs["enable_lora"] is True and kwargs["max_lora_rank"] == 16  # 12 rounded up
    assert kwargs["lora_modules"] == [{"name": "extract", "path": str(folder)}]
    assert kwargs["max_cpu_loras"] == 1


def test_adapter_mistakes_fail_the_deploy_with_the_field_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"smollm2\.adapters\.extract\.path: no adapter"):
        check_adapters(GatewayConfig.load(_config(tmp_path / "missing")))
    bad = _config(tmp_path)
    bad["backends"]["smollm2"]["adapters"] = {"bad name": {"path": "x"}}
    with pytest.raises(ConfigError, match="adapters: names must match"):
        GatewayConfig.load(bad)
    colon = _config(tmp_path)
    colon["backends"]["a:b"] = {"kind": "fake", "model": "x"}
    with pytest.raises(ConfigError, match="`:` is kept for adapters"):
        GatewayConfig.load(colon)
    unknown = _config(tmp_path)
    unknown["routes"]["by-task"]["candidates"] = ["smollm2:nope"]
    with pytest.raises(ConfigError, match="unknown backend 'smollm2:nope'"):
        GatewayConfig.load(unknown)


def _log_line(request_id: str, prompt: str, answer: str, **fields: Any) -> str:
    entry = {
        "request_id": request_id,
        "ts": 1000.0,
        "endpoint": "chat/completions",
        "status": 200,
        "task": "extraction",
        "request": {"messages": [{"role": "user", "content": prompt}]},
        "response": answer,
        **fields,
    }
    return json.dumps(entry)


def test_dataset_export_joins_feedback_dedupes_and_splits_stably(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    (tmp_path / "requests.jsonl.1").write_text(_log_line("old", "p0", "a0-old") + "\n")
    lines = [
        _log_line("r0", "p0", "a0-better"),  # the same prompt again, scored higher
        _log_line("r1", "p1", "a1"),
        _log_line("r2", "p2", "a2", status=502),
        _log_line("r3", "p3", "a3", task="chat"),
        json.dumps({"request_id": "r4", "endpoint": "chat/completions", "status": 200}),
    ] + [_log_line(f"s{i}", f"prompt {i}", f"answer {i}") for i in range(40)]
    log.write_text("\n".join(lines) + "\n")
    scores = {"old": 0.8, "r0": 1.0, "r1": 0.5, "r3": 1.0} | {f"s{i}": 0.9 for i in range(40)}
    out = tmp_path / "out" / "data.jsonl"
    result = export_dataset(log, scores, out, min_score=0.8, task="extraction")
    assert result.without_body == 1 and result.read == 46
    rows = [json.loads(line) for path in (out, result.heldout) for line in path.open()]
    by_prompt = {row["messages"][0]["content"]: row for row in rows}
    assert by_prompt["p0"]["expected"] == "a0-better"  # deduplicated: best score wins
    assert "p1" not in by_prompt and "p2" not in by_prompt and "p3" not in by_prompt
    assert result.train_examples + result.heldout_examples == 41
    assert 0 < result.heldout_examples < 12
    again = export_dataset(log, scores, tmp_path / "again.jsonl", min_score=0.8, task="extraction")
    assert again.heldout.read_text() == result.heldout.read_text()  # stable split


def test_an_experiment_pits_the_adapter_against_its_base(tmp_path: Path) -> None:
    """A/B base vs adapter: arms pin the two candidates; promoting the adapter is then a
    config change (make it the route's first or only candidate)."""
    config = _config(_adapter(tmp_path / "a"))
    config["experiments"] = {
        "lora-vs-base": {
            "route": "by-task",
            "arms": {
                "base": {"backend": "smollm2", "weight": 0.5},
                "lora": {"backend": "smollm2:extract", "weight": 0.5},
            },
        }
    }
    loaded = GatewayConfig.load(config)
    arms = loaded.experiments["lora-vs-base"].arms
    assert {arm.backend for arm in arms.values()} == {"smollm2", "smollm2:extract"}
