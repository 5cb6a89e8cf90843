"""The request log: one JSON line per request, written by the shared batch writer to a rotating
file. Bodies (prompts and completions) are logged only when enabled, after redaction."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import time
from pathlib import Path
from typing import Any

import orjson

from llmops._batch import BatchWriter
from llmops._config import RequestLogConfig
from llmops._record import RequestRecord
from llmops._redact import Redactor

BATCH_S = 0.25
_DROPPED = (
    "started",
    "request_body",
    "estimated_prompt_tokens",
    "response_text",
    "billed_elsewhere",
    "trace",
)


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


class _SizeAndAgeHandler(logging.handlers.RotatingFileHandler):
    """Rotates past a size or once the file's first line is `rotate_after_s` old (as
    logrotate's daily), and deletes rotated files last written over `max_age_s` ago (its
    maxage), so old lines never stay for ever however quiet the gateway is."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        rotate_after_s: float | None,
        max_age_s: float | None,
    ) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.rotate_after_s, self.max_age_s = rotate_after_s, max_age_s
        self.started = _first_line_ts(path)
        self._expire()

    def shouldRollover(self, record: logging.LogRecord) -> int:
        now = time.time()
        if self.started is None:
            self.started = now
        if self.rotate_after_s is not None and now - self.started >= self.rotate_after_s:
            return 1
        return super().shouldRollover(record)

    def doRollover(self) -> None:
        super().doRollover()
        self.started = time.time()
        self._expire()

    def _expire(self) -> None:
        if self.max_age_s is None:
            return
        oldest = time.time() - self.max_age_s
        for index in range(1, self.backupCount + 1):
            rotated = Path(f"{self.baseFilename}.{index}")
            with contextlib.suppress(FileNotFoundError):
                if rotated.stat().st_mtime < oldest:
                    rotated.unlink()


def _first_line_ts(path: Path) -> float | None:
    """When a file's first line was written (its `ts`), or None for an empty or odd file."""
    try:
        with path.open("rb") as file:
            first = file.readline()
        return float(orjson.loads(first)["ts"]) if first.strip() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RequestLog:
    """A sink: `write(record)` queues one line; `close()` writes the rest."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        bodies: bool = False,
        redact: Redactor | None = None,
        *,
        rotate_after_days: float | None = None,
        max_age_days: float | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.bodies = bodies
        self._redact = redact or Redactor(())
        self._handler = _SizeAndAgeHandler(
            path,
            max_bytes,
            backups,
            None if rotate_after_days is None else rotate_after_days * 86400,
            None if max_age_days is None else max_age_days * 86400,
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


def open_request_log(config: RequestLogConfig, path: Path) -> RequestLog:
    """The request log a `request_log:` section describes, at `path` (resolved by the caller)."""
    return RequestLog(
        path,
        config.max_bytes,
        config.backups,
        config.bodies,
        Redactor(config.redact),
        rotate_after_days=config.rotate_after_days,
        max_age_days=config.max_age_days,
    )
