"""The task classifier on prompts it never saw: accuracy, confusion matrix and time per prompt.

Tasks: bench/task_examples.py (three examples and a description each, no keyword rules, as
the issue's check). Prompts: bench/task_heldout.py, HELDOUT (120, which tuned the design)
and FINAL (60, scored once the design was settled). `.venv/bin/python bench/classifier.py`
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.task_examples import TASKS, UNSEEN
from bench.task_heldout import FINAL, HELDOUT
from router import RoutingConfig, TaskClassifier, TaskConfig
from router._embedding import MiniLMEmbedder

THRESHOLD = float(sys.argv[1]) if len(sys.argv) > 1 else RoutingConfig().task_threshold


def classifier(descriptions: bool = True) -> TaskClassifier:
    tasks = {
        name: TaskConfig(
            examples=tuple(task["examples"]),
            description=str(task.get("description", "")) if descriptions else "",
        )
        for name, task in TASKS.items()
    }
    return TaskClassifier(RoutingConfig(tasks=tasks, task_threshold=THRESHOLD), MiniLMEmbedder())


def score(found: TaskClassifier, prompts: list[tuple[str, str]]) -> tuple[float, str, float]:
    names = list(TASKS)
    matrix = {want: dict.fromkeys(names, 0) for want in names}
    started = time.perf_counter()
    for want, text in prompts:
        matrix[want][found.classify(text).task] += 1
    per_prompt_ms = (time.perf_counter() - started) * 1000 / len(prompts)
    correct = sum(matrix[name][name] for name in names)
    lines = ["| actual \\ predicted | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]  # fmt: skip
    for want in names:
        row = " | ".join(str(matrix[want][got]) for got in names)
        lines.append(f"| {want} | {row} |")
    return correct / len(prompts), "\n".join(lines), per_prompt_ms


def main() -> None:
    for label, with_descriptions in (("examples only", False), ("examples + description", True)):
        found = classifier(with_descriptions)
        found.classify("warm up")
        for name, prompts in (("UNSEEN", UNSEEN), ("HELDOUT", HELDOUT), ("FINAL", FINAL)):
            accuracy, matrix, ms = score(found, prompts)
            print(f"{label}: {name} ({len(prompts)}): {accuracy:.1%}, {ms:.1f} ms per prompt")
            if name == "FINAL":
                print(matrix)


if __name__ == "__main__":
    main()
