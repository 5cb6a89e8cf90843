"""Which task a prompt is: explicit hint, then keyword rules, then the embedding classifier."""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from router._config import RoutingConfig

# Embeds texts to unit-length vectors (a list of floats each).
Embedder = Callable[[Sequence[str]], Sequence[Sequence[float]]]
Vector = list[float]
NEAREST = 2  # prototypes averaged per task
CENTROID_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class TaskDecision:
    task: str
    source: str  # "hint", "keyword", "classifier" or "default"
    similarity: float | None = None


def _unit(vector: Sequence[float]) -> Vector:
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


def _mean(vectors: Sequence[Sequence[float]]) -> Vector:
    return [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@dataclass
class _Task:
    own: list[Vector]  # its examples and its name (centred)
    phrases: list[Vector]  # its description's phrases (centred)
    learned: deque[Vector] = field(default_factory=deque)  # labelled traffic (centred)
    centroid: Vector = field(default_factory=list)
    prototypes: list[Vector] = field(default_factory=list)

    def refresh(self) -> None:
        """Centroid of examples, name and learned prompts; prototypes: all but the name."""
        self.centroid = _unit(_mean([*self.own, *self.learned]))
        self.prototypes = [*self.own[:-1], *self.phrases, *self.learned]


class TaskClassifier:
    """Keyword rules first (cheap, exact); then, from embeddings, the task scoring highest, if
    at least `task_threshold`; else `default_task`.

    Each task's score is half its centroid's similarity (examples and name) and half the mean
    of its two most similar prototypes (examples and the phrases of its description). Every
    vector is first centred on the mean of all of them: what all prompts share ("a request to
    an assistant") no longer dominates the similarity. Measured in docs/routing.md.
    """

    def __init__(self, config: RoutingConfig, embed: Embedder | None = None) -> None:
        self._default = config.default_task
        self._threshold = config.task_threshold
        self._rules = [
            (name, re.compile("|".join(f"(?:{k})" for k in task.keywords), re.IGNORECASE))
            for name, task in config.tasks.items()
            if task.keywords
        ]
        self._embed = embed
        self._tasks: dict[str, _Task] = {}
        self._origin: Vector = []
        self._learning = False
        self._lock = threading.Lock()
        if embed is None:
            return
        texts: dict[str, tuple[list[str], list[str]]] = {}
        for name, task in config.tasks.items():
            if task.examples:
                phrases = [p.strip() for p in re.split(r"[,;\n]", task.description) if p.strip()]
                texts[name] = ([*task.examples, name.replace("_", " ")], phrases)
        if not texts:
            return
        flat = [text for own, phrases in texts.values() for text in (*own, *phrases)]
        vectors = [list(map(float, v)) for v in embed(flat)]
        self._origin = _mean(vectors)
        centred = iter([self._centre(v) for v in vectors])
        for name, (own, phrases) in texts.items():
            known = _Task([next(centred) for _ in own], [next(centred) for _ in phrases])
            known.learned = deque(maxlen=max(1, config.task_learning))
            known.refresh()
            self._tasks[name] = known
        self._learning = config.task_learning > 0

    def _centre(self, vector: Sequence[float]) -> Vector:
        return _unit([x - o for x, o in zip(vector, self._origin, strict=True)])

    @property
    def uses_embeddings(self) -> bool:
        return bool(self._tasks)

    @property
    def learns(self) -> bool:
        return self._learning and bool(self._tasks)

    def learn(self, text: str, task: str) -> Vector | None:
        """Take a prompt whose task the client stated as a prototype of that task (blocking:
        one embedding); its embedding (to share with other replicas), or None when the task
        has no examples to learn beside, or no text."""
        if not self.learns or task not in self._tasks or self._embed is None or not text.strip():
            return None
        vector = list(map(float, self._embed([text])[0]))
        self.adopt(task, vector)
        return vector

    def adopt(self, task: str, vector: Sequence[float]) -> bool:
        """Take an embedding learned before (a restart) or elsewhere (another replica)."""
        found = self._tasks.get(task)
        if not self.learns or found is None or len(vector) != len(self._origin):
            return False
        centred = self._centre(vector)
        with self._lock:
            found.learned.append(centred)
            found.refresh()
        return True

    def scores(self, text: str) -> dict[str, float]:
        """Each task's score for a text (for explain, tests and tuning)."""
        assert self._embed is not None
        query = self._centre(self._embed([text])[0])
        found = {}
        with self._lock:
            tasks = [(name, task.centroid, task.prototypes) for name, task in self._tasks.items()]
        for name, centroid, prototypes in tasks:
            nearest = sorted((_dot(query, p) for p in prototypes), reverse=True)[:NEAREST]
            found[name] = CENTROID_WEIGHT * _dot(query, centroid) + (1 - CENTROID_WEIGHT) * (
                sum(nearest) / len(nearest)
            )
        return found

    def classify(self, text: str, hint: str | None = None) -> TaskDecision:
        if hint:
            return TaskDecision(hint, "hint")
        for name, pattern in self._rules:
            if pattern.search(text):
                return TaskDecision(name, "keyword")
        if self._tasks and self._embed is not None and text.strip():
            scores = self.scores(text)
            best = max(scores, key=scores.__getitem__)
            if scores[best] >= self._threshold:
                return TaskDecision(best, "classifier", scores[best])
            return TaskDecision(self._default, "default", scores[best])
        return TaskDecision(self._default, "default")
