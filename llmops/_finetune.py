"""LoRA fine-tuning of a chat model on prompt/answer pairs (`python -m gateway finetune`).

The examples are the gateway's dataset format (one JSON object per line: `messages`, the
conversation up to the answer, and `expected`, the answer: text, or an object written as
JSON). The loss is on the answer's tokens only. Seeded and resumable: a checkpoint (adapter,
optimizer, step) is written every `checkpoint_every` steps, and a run with the same settings
continues from it. The result is a PEFT adapter folder that vLLM loads as a LoRA module.
torch, transformers and peft are imported when training starts, never at import.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHECKPOINT = ".checkpoint"
FACTS = "training.json"


@dataclass(frozen=True)
class FinetuneConfig:
    base: Path
    data: Path
    out: Path
    steps: int = 60
    batch_size: int = 8
    learning_rate: float = 2e-3
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_tokens: int = 256
    seed: int = 0
    checkpoint_every: int = 20
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)

    def fingerprint(self) -> str:
        """What a checkpoint must agree with to be resumed: settings and data."""
        settings = {k: str(v) for k, v in asdict(self).items() if k not in ("out", "threads")}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        digest.update(self.data.read_bytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class FinetuneResult:
    out: Path
    steps: int
    resumed_from: int
    seconds: float
    first_loss: float | None
    last_loss: float | None
    adapter_bytes: int


def answer_text(expected: Any) -> str:
    """The answer an example teaches: text as is, anything else as compact JSON."""
    return expected if isinstance(expected, str) else json.dumps(expected)


def load_examples(path: Path) -> list[dict[str, Any]]:
    examples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        example = json.loads(line)
        if not isinstance(example.get("messages"), list) or "expected" not in example:
            raise ValueError(f"{path}:{number}: each line needs `messages` and `expected`")
        examples.append(example)
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def _encode(tokenizer: Any, example: dict[str, Any], max_tokens: int) -> tuple[list[int], int]:
    """Token ids of prompt + answer, and where the answer starts."""
    prompt = tokenizer.apply_chat_template(
        example["messages"], add_generation_prompt=True, tokenize=True
    )
    if hasattr(prompt, "keys"):  # transformers 5 returns a BatchEncoding
        prompt = prompt["input_ids"]
    answer = tokenizer(answer_text(example["expected"]), add_special_tokens=False)["input_ids"]
    ids = [*prompt, *answer, tokenizer.eos_token_id]
    return ids[:max_tokens], len(prompt)


def finetune(
    config: FinetuneConfig, progress: Callable[[int, int, float], None] | None = None
) -> FinetuneResult:
    """Train, checkpointing as it goes; `progress(step, steps, loss)` after each step."""
    import torch
    from transformers import AutoTokenizer

    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.base)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [_encode(tokenizer, e, config.max_tokens) for e in load_examples(config.data)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    checkpoint = config.out / CHECKPOINT
    fingerprint = config.fingerprint()
    state = _read_checkpoint(checkpoint, fingerprint)
    model = _lora_model(config, checkpoint if state is not None else None, device, torch)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate
    )
    start_step = 0
    if state is not None:
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device))
        start_step = int(state["step"])
    order = _order(len(encoded), config.batch_size, config.steps, config.seed)
    losses: list[float] = list(state["losses"]) if state else []
    model.train()
    for step in range(start_step, config.steps):
        batch = [encoded[i] for i in order[step]]
        loss = _step(model, optimizer, batch, pad, torch, device)
        losses.append(loss)
        if progress is not None:
            progress(step + 1, config.steps, loss)
        done = step + 1
        if done % config.checkpoint_every == 0 and done < config.steps:
            _write_checkpoint(model, optimizer, checkpoint, fingerprint, done, losses, torch)
    model.save_pretrained(config.out)
    shutil.rmtree(checkpoint, ignore_errors=True)
    seconds = time.perf_counter() - started
    adapter_bytes = sum(p.stat().st_size for p in config.out.glob("adapter_model.*"))
    result = FinetuneResult(
        config.out,
        config.steps,
        start_step,
        round(seconds, 1),
        losses[0] if losses else None,
        losses[-1] if losses else None,
        adapter_bytes,
    )
    facts = {**asdict(config), **asdict(result), "fingerprint": fingerprint}
    (config.out / FACTS).write_text(json.dumps(facts, indent=2, default=str))
    return result


def _lora_model(config: FinetuneConfig, resume: Path | None, device: str, torch: Any) -> Any:
    """The base model with a new LoRA adapter, or the one checkpointed at `resume`."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(config.base, dtype=torch.float32)
    model.to(device)
    if resume is not None:
        return PeftModel.from_pretrained(model, resume, is_trainable=True)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _order(count: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Each step's example indices: shuffled epochs, the same for a seed (so a resumed run
    sees what an uninterrupted one would)."""
    rng = random.Random(seed)
    pool: list[int] = []
    batches = []
    for _ in range(steps):
        while len(pool) < batch_size:
            epoch = list(range(count))
            rng.shuffle(epoch)
            pool.extend(epoch)
        batches.append(pool[:batch_size])
        pool = pool[batch_size:]
    return batches


def _step(
    model: Any,
    optimizer: Any,
    batch: Sequence[tuple[list[int], int]],
    pad: int,
    torch: Any,
    device: str,
) -> float:
    width = max(len(ids) for ids, _ in batch)
    inputs = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, answer_at) in enumerate(batch):
        inputs[row, : len(ids)] = torch.tensor(ids)
        labels[row, answer_at : len(ids)] = torch.tensor(ids[answer_at:])
        mask[row, : len(ids)] = 1
    inputs, labels, mask = inputs.to(device), labels.to(device), mask.to(device)
    loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.item())


def _read_checkpoint(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    marker = folder / "state.json"
    if not marker.exists():
        return None
    state: dict[str, Any] = json.loads(marker.read_text())
    return state if state.get("fingerprint") == fingerprint else None


def _write_checkpoint(
    model: Any,
    optimizer: Any,
    folder: Path,
    fingerprint: str,
    step: int,
    losses: list[float],
    torch: Any,
) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    state = {"fingerprint": fingerprint, "step": step, "losses": losses}
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
