"""The request log: one JSON line per request, written by a background thread to a rotating file.

Bodies (prompts and completions) are logged only when enabled, and pass the redaction patterns
first.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

# What is never written in clear: e-mail addresses, API-key-like strings, card numbers.
DEFAULT_REDACTIONS = (
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\b(?:gh[pousr]|xox[abpr])_?[A-Za-z0-9-]{20,}",
    r"\b(?:\d[ -]?){12,18}\d\b",
)
REDACTED = "[REDACTED]"


class Redactor:
    def __init__(self, patterns: Iterable[str]) -> None:
        self._pattern = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern is not None else text


class RequestLog:
    """Queue-backed JSON-lines logger; `write` costs the event loop a queue put."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._logger = logging.Logger(f"gateway.requests.{path}", logging.INFO)
        self._logger.addHandler(logging.handlers.QueueHandler(self._queue))
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._listener.start()

    def write(self, entry: dict[str, Any]) -> None:
        self._logger.info(orjson.dumps(entry).decode())

    def flush(self) -> None:
        """Write out everything queued so far (tests, shutdown)."""
        self._listener.stop()
        self._listener.start()

    def close(self) -> None:
        self._listener.stop()
