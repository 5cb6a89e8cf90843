"""The request log: one JSON line per request, written by the shared batch writer to a rotating
file. Bodies (prompts and completions) are logged only when enabled, after redaction."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path
from typing import Any

import orjson

from llmops._batch import BatchWriter
from llmops._record import RequestRecord
from llmops._redact import Redactor

BATCH_S = 0.25
_DROPPED = ("started", "request_body", "estimated_prompt_tokens", "response_text")


def log_entry(record: RequestRecord, bodies: bool, redact: Redactor) -> dict[str, Any]:
    """A record as its request log line says it (bodies redacted, and only when asked)."""
    row = record.as_row()
    entry = {k: v for k, v in row.items() if k not in _DROPPED}
    entry["fallback_chain"] = entry.pop("attempts")
    entry["api_key_id"] = entry.pop("key_id")
    if bodies:
        body = orjson.dumps(record.request_body).decode()
        entry["request"] = orjson.loads(redact(body))
        entry["response"] = redact(record.response_text or "")
    return entry


class RequestLog:
    """A sink: `write(record)` queues one line; `close()` writes the rest."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        bodies: bool = False,
        redact: Redactor | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.bodies = bodies
        self._redact = redact or Redactor(())
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._writer: BatchWriter[str] = BatchWriter("request-log", self.write_lines, BATCH_S)

    def write(self, record: RequestRecord) -> None:
        self._writer.add(orjson.dumps(self.entry(record)).decode())

    def entry(self, record: RequestRecord) -> dict[str, Any]:
        return log_entry(record, self.bodies, self._redact)

    def write_lines(self, lines: list[str]) -> None:
        """Append lines now (blocking): the batch writer's job, or a cluster's records owner.
        One record per line keeps rotation exact (a file never ends mid-batch over its size);
        `handle` takes the handler's lock."""
        for line in lines:
            self._handler.handle(logging.makeLogRecord({"msg": line}))
        self._handler.flush()

    def flush(self, timeout_s: float = 5.0) -> bool:
        return self._writer.flush(timeout_s)

    def close(self) -> None:
        self._writer.close()
        self._handler.close()
