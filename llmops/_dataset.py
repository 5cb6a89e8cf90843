"""Training data from the gateway's own traffic (`python -m gateway dataset`).

Prompt/answer pairs come from the request log (bodies must be logged, `request_log.bodies`;
they were redacted before they were written), scores from the ledger's feedback. Pairs are
deduplicated by prompt (the best-scored answer wins) and split by a hash of the prompt, so a
prompt stays on its side of the split however often the export runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ExportResult:
    train: Path
    heldout: Path
    train_examples: int
    heldout_examples: int
    read: int  # request log lines read
    without_body: int  # answered chat requests logged without their bodies


def log_files(path: Path) -> list[Path]:
    """The request log and its rotated files (`requests.jsonl.1`, ...), oldest first."""
    rotated = sorted(
        path.parent.glob(path.name + ".*"),
        key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0,
        reverse=True,
    )
    return [*(p for p in rotated if p.suffix[1:].isdigit()), *([path] if path.exists() else [])]


def _lines(paths: list[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        with path.open(encoding="utf-8") as file:
            for line in file:
                if line.strip():
                    yield json.loads(line)


def _split_key(messages: Any) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def export_dataset(
    request_log: Path,
    scores: Mapping[str, float],
    out: Path,
    *,
    since: float | None = None,
    min_score: float | None = None,
    task: str | None = None,
    heldout_percent: int = 10,
) -> ExportResult:
    """Write `out` (training) and `<out stem>.heldout.jsonl` beside it. With `min_score`,
    only requests whose mean feedback score reaches it (so only scored ones)."""
    best: dict[str, dict[str, Any]] = {}
    read = without_body = 0
    for entry in _lines(log_files(request_log)):
        read += 1
        if entry.get("status") != 200 or entry.get("endpoint") != "chat/completions":
            continue
        request, answer = entry.get("request"), entry.get("response")
        if not isinstance(request, dict) or not answer:
            without_body += 1
            continue
        if (since is not None and entry.get("ts", 0) < since) or (
            task is not None and entry.get("task") != task
        ):
            continue
        score = scores.get(entry.get("request_id", ""))
        if min_score is not None and (score is None or score < min_score):
            continue
        messages = request.get("messages")
        if not isinstance(messages, list):
            continue
        key = _split_key(messages)
        example = {
            "messages": messages,
            "expected": answer,
            "score": score,
            "task": entry.get("task"),
            "request_id": entry.get("request_id"),
        }
        kept = best.get(key)
        if kept is None or (score or 0) > (kept["score"] or 0):
            best[key] = example
    heldout_path = out.with_name(out.stem + ".heldout.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {out: 0, heldout_path: 0}
    with out.open("w") as train, heldout_path.open("w") as heldout:
        for key, example in sorted(best.items()):
            target = heldout if int(key[:8], 16) % 100 < heldout_percent else train
            target.write(json.dumps(example) + "\n")
            counts[heldout_path if target is heldout else out] += 1
    return ExportResult(out, heldout_path, counts[out], counts[heldout_path], read, without_body)
