"""`gateway finetune` on the tiny random Llama (seconds): seeded, and a run that stopped
resumes from its checkpoint to the same adapter an uninterrupted run writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops._finetune import FinetuneConfig, finetune
from tests.helpers import TINY_MODEL


class Stop(Exception):
    pass


def _data(path: Path) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"Say the number {i}."}], "expected": str(i)}
        for i in range(6)
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def _weights(folder: Path) -> dict[str, list[float]]:
    from safetensors.torch import load_file

    return {
        k: v.flatten().tolist() for k, v in load_file(folder / "adapter_model.safetensors").items()
    }


def test_a_stopped_run_resumes_to_the_same_adapter(tmp_path: Path) -> None:
    data = _data(tmp_path / "data.jsonl")
    settings = {"base": TINY_MODEL, "data": data, "steps": 4, "batch_size": 2,
                "checkpoint_every": 1, "threads": 1}  # fmt: skip
    whole = finetune(FinetuneConfig(out=tmp_path / "whole", **settings))  # type: ignore[arg-type]
    assert whole.resumed_from == 0 and whole.steps == 4

    def stop_at_three(step: int, steps: int, loss: float) -> None:
        if step == 3:
            raise Stop

    config = FinetuneConfig(out=tmp_path / "stopped", **settings)  # type: ignore[arg-type]
    with pytest.raises(Stop):
        finetune(config, stop_at_three)
    assert (tmp_path / "stopped" / ".checkpoint" / "state.json").exists()
    resumed = finetune(config)
    assert resumed.resumed_from == 2 and not (tmp_path / "stopped" / ".checkpoint").exists()
    first, second = _weights(tmp_path / "whole"), _weights(tmp_path / "stopped")
    assert first.keys() == second.keys() and first
    for name in first:
        assert second[name] == pytest.approx(first[name], abs=1e-6), name
    facts = json.loads((tmp_path / "stopped" / "training.json").read_text())
    assert facts["resumed_from"] == 2 and facts["adapter_bytes"] > 0


def test_other_data_does_not_resume_a_checkpoint(tmp_path: Path) -> None:
    data = _data(tmp_path / "data.jsonl")
    config = FinetuneConfig(base=TINY_MODEL, data=data, out=tmp_path / "a", steps=3,
                            batch_size=2, checkpoint_every=1, threads=1)  # fmt: skip

    def stop_at_two(step: int, steps: int, loss: float) -> None:
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        finetune(config, stop_at_two)
    data.write_text(data.read_text().replace("Say", "Tell me"))
    assert finetune(config).resumed_from == 0


def test_a_dataset_without_answers_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: each line needs `messages`"):
        finetune(FinetuneConfig(base=TINY_MODEL, data=bad, out=tmp_path / "x", steps=1))
