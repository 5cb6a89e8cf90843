"""The request log: one JSON line per request, written by a background thread to a rotating file.

Bodies (prompts and completions) are logged only when enabled, and pass the redaction patterns
first.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import threading
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
    """JSON lines buffered in memory and written by a background thread every `flush_s`:
    the event loop only serialises and appends, and the writer wakes a few times a second
    (each wake-up may hold the GIL the event loop is waiting for)."""

    def __init__(self, path: Path, max_bytes: int, backups: int, flush_s: float = 0.25) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flush_s = flush_s
        self._thread = threading.Thread(target=self._flush_forever, name="request-log", daemon=True)
        self._thread.start()

    def write(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry).decode()
        with self._lock:
            self._pending.append(line)

    def flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
        # One record per line keeps rotation exact (a file never ends mid-batch over its size).
        for line in lines:
            self._handler.emit(logging.makeLogRecord({"msg": line}))
        self._handler.flush()

    def _flush_forever(self) -> None:
        while not self._stop.wait(self._flush_s):
            try:
                self.flush()
            except Exception:  # a full disk must not kill the writer for good
                logging.getLogger("ray.serve").exception("request log write failed")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.flush()
        self._handler.close()
