"""Learning the task classifier from labelled traffic, off the request path."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading

from router import TaskClassifier

logger = logging.getLogger("ray.serve")
_STOP = ("", "")  # the sample that ends the thread


class TaskLearner:
    """Teaches the classifier from labelled requests in a thread of its own, off the request
    path; when it falls behind, new samples are dropped rather than queued without bound.
    `close` stops the thread once what is queued was learned."""

    def __init__(self, classifier: TaskClassifier, backlog: int = 32) -> None:
        self.classifier = classifier
        self.learned = 0
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=backlog)
        self._thread = threading.Thread(target=self._run, name="task-learner", daemon=True)
        self._thread.start()

    def offer(self, text: str, task: str) -> None:
        if not task:
            return  # no label, nothing to learn (and the stop marker's shape)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait((text, task))

    def _run(self) -> None:
        while True:
            text, task = self._queue.get()
            try:
                if (text, task) == _STOP:
                    return
                self.learned += self.classifier.learn(text, task)
            except Exception:  # a bad sample must not stop learning
                logger.exception("learning task %r failed", task)
            finally:
                self._queue.task_done()

    def join(self) -> None:
        """Wait until every offered sample was learned (tests)."""
        self._queue.join()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (blocking: it may be learning a sample)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
