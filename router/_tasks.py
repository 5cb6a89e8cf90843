"""Which task a prompt is: explicit hint, then keyword rules, then nearest examples."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from router._config import RoutingConfig

# Embeds texts to unit-length vectors (a list of floats each).
Embedder = Callable[[Sequence[str]], Sequence[Sequence[float]]]


@dataclass(frozen=True, slots=True)
class TaskDecision:
    task: str
    source: str  # "hint", "keyword", "classifier" or "default"
    similarity: float | None = None


def _centroid(vectors: Sequence[Sequence[float]]) -> list[float]:
    mean = [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]
    norm = sum(x * x for x in mean) ** 0.5 or 1.0
    return [x / norm for x in mean]


class TaskClassifier:
    """Keyword rules first (cheap, exact), then the task whose centroid (its examples and its
    name, embedded) is most similar to the prompt, if at least `task_threshold`; else
    `default_task`. Centroids generalise better than nearest examples from 3 examples."""

    def __init__(self, config: RoutingConfig, embed: Embedder | None = None) -> None:
        self._default = config.default_task
        self._threshold = config.task_threshold
        self._rules = [
            (name, re.compile("|".join(f"(?:{k})" for k in task.keywords), re.IGNORECASE))
            for name, task in config.tasks.items()
            if task.keywords
        ]
        self._embed = embed
        self._centroids: dict[str, list[float]] = {}
        if embed is not None:
            for name, task in config.tasks.items():
                if task.examples:
                    vectors = embed([*task.examples, name.replace("_", " ")])
                    self._centroids[name] = _centroid(vectors)

    @property
    def uses_embeddings(self) -> bool:
        return bool(self._centroids)

    def classify(self, text: str, hint: str | None = None) -> TaskDecision:
        if hint:
            return TaskDecision(hint, "hint")
        for name, pattern in self._rules:
            if pattern.search(text):
                return TaskDecision(name, "keyword")
        if self._centroids and self._embed is not None and text.strip():
            query = self._embed([text])[0]
            best, best_label = -2.0, self._default
            for label, centroid in self._centroids.items():
                similarity = sum(a * b for a, b in zip(query, centroid, strict=True))
                if similarity > best:
                    best, best_label = similarity, label
            if best >= self._threshold:
                return TaskDecision(best_label, "classifier", best)
            return TaskDecision(self._default, "default", best)
        return TaskDecision(self._default, "default")
