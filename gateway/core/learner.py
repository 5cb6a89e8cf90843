"""Learning the task classifier from labelled traffic, off the request path, and sharing
what is learned: through the prototype store, a restart keeps it and every replica adopts
what any replica learned."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading

from llmops import PrototypeStore
from router import TaskClassifier

logger = logging.getLogger("ray.serve")
_STOP = ("", "")  # the sample that ends the thread
SYNC_S = 10.0  # how often the store is read for what other replicas learned


class TaskLearner:
    """Teaches the classifier from labelled requests in a thread of its own, off the request
    path; when it falls behind, new samples are dropped rather than queued without bound.
    With a `store`, it starts from what was learned before and adopts, every SYNC_S, what
    other replicas learned. `close` stops the thread once what is queued was learned."""

    def __init__(
        self,
        classifier: TaskClassifier,
        store: PrototypeStore | None = None,
        backlog: int = 32,
        sync_s: float = SYNC_S,
    ) -> None:
        self.classifier = classifier
        self.store = store
        self.learned = 0
        self.adopted = 0
        self._seen = 0  # the newest stored id adopted (or written) here
        self._own: set[int] = set()
        self._sync_s = sync_s
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=backlog)
        self._sync()  # what was learned before this replica started
        self._thread = threading.Thread(target=self._run, name="task-learner", daemon=True)
        self._thread.start()

    def offer(self, text: str, task: str) -> None:
        if not task:
            return  # no label, nothing to learn (and the stop marker's shape)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait((text, task))

    def _run(self) -> None:
        while True:
            try:
                text, task = self._queue.get(timeout=self._sync_s)
            except queue.Empty:
                self._sync()
                continue
            try:
                if (text, task) == _STOP:
                    return
                self._learn(text, task)
            except Exception:  # a bad sample must not stop learning
                logger.exception("learning task %r failed", task)
            finally:
                self._queue.task_done()

    def _learn(self, text: str, task: str) -> None:
        vector = self.classifier.learn(text, task)
        if vector is None:
            return
        self.learned += 1
        if self.store is not None:
            self._own.add(self.store.add(task, vector))

    def _sync(self) -> None:
        if self.store is None:
            return
        try:
            found = self.store.since(self._seen) if self._seen else self.store.latest()
        except Exception as exc:  # the database is down: learn locally, catch up later
            logger.warning("task prototypes unreadable (%s): retrying", type(exc).__name__)
            return
        for stored_id, task, vector in found:
            if stored_id not in self._own and self.classifier.adopt(task, vector):
                self.adopted += 1
            self._seen = max(self._seen, stored_id)
        self._own = {i for i in self._own if i > self._seen}

    def join(self) -> None:
        """Wait until every offered sample was learned (tests)."""
        self._queue.join()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (blocking: it may be learning a sample)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
        if self.store is not None:
            self.store.close()
