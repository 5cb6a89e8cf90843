"""One ledger and request log for a whole cluster (`ledger.scope: cluster`).

Ingress replicas, on any node, ship their finished records in batches to one owner
(`RecordsOwner`, run by a single Serve replica), which writes them to its SQLite ledger and
request log. A batch the owner cannot take (it is restarting, or stopped before this replica
finished draining) goes to a spool file on this host; the spool is shipped, oldest first,
before the next batch that gets through and when a replica starts. Delivery is at least once:
the ledger's key (request id, time) makes a batch shipped twice one row.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from llmops._batch import BatchWriter
from llmops._ledger import COLUMNS, Ledger
from llmops._record import RequestRecord
from llmops._request_log import RequestLog

logger = logging.getLogger("ray.serve")
BATCH_S = 0.25
SPOOL_CHUNK = 500
SPOOL_CHECK_S = 5.0
# One finished request as shipped: its ledger row (None without a ledger) and its request log
# line (None without a request log).
Shipped = tuple[list[Any] | None, str | None]


class RecordsUnavailable(Exception):
    """The records owner could not be reached (reads only: writes are spooled instead)."""


class RecordsOp(StrEnum):
    """The operations the records owner answers."""

    APPEND = "append"
    TOTALS = "totals"
    SERIES = "series"
    RECENT_ERRORS = "recent_errors"
    EXPERIMENT = "experiment"
    ROWS = "rows"
    ADD_FEEDBACK = "add_feedback"
    FEEDBACK = "feedback"
    FEEDBACK_SCORES = "feedback_scores"


# Each read: the ledger method it is, called with the payload's arguments.
_READS: dict[RecordsOp, Callable[[Ledger, dict[str, Any]], Any]] = {
    RecordsOp.TOTALS: lambda ledger, p: ledger.totals(p["group_by"], p.get("since")),
    RecordsOp.SERIES: lambda ledger, p: ledger.series(p["group_by"], p["since"], p["bucket_s"]),
    RecordsOp.RECENT_ERRORS: lambda ledger, p: ledger.recent_errors(p["since"], p["limit"]),
    RecordsOp.EXPERIMENT: lambda ledger, p: ledger.experiment(p["name"], p.get("since")),
    RecordsOp.ROWS: lambda ledger, p: ledger.rows(p.get("since"), p.get("limit")),
    RecordsOp.ADD_FEEDBACK: lambda ledger, p: ledger.add_feedback(
        p["request_id"], p["score"], p.get("label"), p.get("comment"), p.get("key_id")
    ),
    RecordsOp.FEEDBACK: lambda ledger, p: ledger.feedback(p["request_id"]),
    RecordsOp.FEEDBACK_SCORES: lambda ledger, p: ledger.feedback_scores(p.get("since")),
}


class RecordsTransport(ABC):
    """Carries one operation to the records owner and returns its answer; blocking (callers
    run it in a thread). Raises on any failure to reach the owner."""

    @abstractmethod
    def call(self, op: RecordsOp, payload: dict[str, Any]) -> Any: ...

    def close(self) -> None:  # noqa: B027 (optional: most transports hold nothing)
        """Release what the transport holds (the records sink closes it last)."""


class RecordsOwner:
    """Writes every ingress replica's records and answers reads of the ledger."""

    def __init__(self, ledger: Ledger | None, request_log: RequestLog | None) -> None:
        self.ledger = ledger
        self.request_log = request_log

    def call(self, op: RecordsOp, payload: dict[str, Any]) -> Any:
        if op == RecordsOp.APPEND:
            return self._append(payload["records"])
        ledger = self.ledger
        if ledger is None:
            raise RecordsUnavailable("the cost ledger is disabled")
        read = _READS.get(op)
        if read is None:
            raise ValueError(f"unknown records operation {op!r}")
        return read(ledger, payload)

    def _append(self, records: list[Shipped]) -> int:
        rows = [row for row, _ in records if row is not None]
        lines = [line for _, line in records if line is not None]
        if rows and self.ledger is not None:
            self.ledger.insert(rows)
        if lines and self.request_log is not None:
            self.request_log.write_lines(lines)
        return len(records)

    def close(self) -> None:
        for sink in (self.ledger, self.request_log):
            if sink is not None:
                sink.close()


class LocalRecordsTransport(RecordsTransport):
    """The owner in this process: each replica's own when the ledger is in a database
    (`database:`), tests, and a gateway without Serve. `owned`: closed with the sink."""

    def __init__(self, owner: RecordsOwner, *, owned: bool = False) -> None:
        self.owner = owner
        self.owned = owned

    def call(self, op: RecordsOp, payload: dict[str, Any]) -> Any:
        return self.owner.call(op, payload)

    def close(self) -> None:
        if self.owned:
            self.owner.close()


class Spool:
    """Records not yet delivered, in a SQLite file on this host, shared by the replicas here.
    Shipping holds the file's write lock from reading a chunk until it is deleted, so two
    replicas never ship the same records (the request log would show them twice)."""

    LOCK_TIMEOUT_S = 60.0  # longer than any one shipment: adding must not fail

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(
            path, timeout=self.LOCK_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, record)")
        self._lock = threading.Lock()

    def add(self, records: list[Shipped]) -> None:
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT INTO spool (record) VALUES (?)", [(orjson.dumps(r),) for r in records]
            )

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def ship(self, send: Callable[[list[Shipped]], None]) -> int:
        """Send what is spooled, oldest first, deleting each chunk once `send` returned;
        stops at the first failure (it raises). The number of records sent."""
        sent = 0
        while True:
            with self._lock, self._transaction():
                found = self._db.execute(
                    "SELECT id, record FROM spool ORDER BY id LIMIT ?", (SPOOL_CHUNK,)
                ).fetchall()
                if not found:
                    return sent
                send([(*orjson.loads(record),) for _, record in found])
                self._db.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i, _ in found])
            sent += len(found)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SharedRecords:
    """The ingress side: a sink that ships records to the owner, and the ledger reads the
    gateway's endpoints make (answered by the owner, so equal on every replica)."""

    def __init__(
        self,
        transport: RecordsTransport,
        spool_path: Path,
        *,
        ledger: bool,
        log_entry: Callable[[RequestRecord], dict[str, Any]] | None,
        ingress: str | None = None,
    ) -> None:
        """`ingress` names this replica in the records it ships (node and replica)."""
        self._transport = transport
        self._ingress = ingress
        self._ledger = ledger
        self._log_entry = log_entry
        self._spool = Spool(spool_path)
        self._spooled = False
        self._writer: BatchWriter[Shipped] = BatchWriter("records", self._ship, BATCH_S)
        # Another replica on this host may spool its last records as it stops, after this
        # one started: look at the spool now and then, not only when a request finishes.
        self._stopping = threading.Event()
        self._check_spool()  # what an earlier run left: shipped first
        self._watcher = threading.Thread(target=self._watch_spool, name="records-spool")
        self._watcher.daemon = True
        self._watcher.start()

    def _watch_spool(self) -> None:
        while not self._stopping.wait(SPOOL_CHECK_S):
            self._check_spool()

    def _check_spool(self) -> None:
        try:
            if self._spool.count():
                self._spooled = True
                self._writer.add((None, None))  # wakes the writer, which ships it
        except sqlite3.Error:
            logger.exception("records spool %s unreadable", self._spool.path)

    @property
    def spooled(self) -> int:
        """Records waiting on this host for the owner."""
        return self._spool.count()

    def write(self, record: RequestRecord) -> None:
        """Queue one request's row and log line. Never blocks."""
        record.ingress = self._ingress
        row = [getattr(record, column) for column in COLUMNS] if self._ledger else None
        line = None
        if self._log_entry is not None:
            line = orjson.dumps(self._log_entry(record)).decode()
        self._writer.add((row, line))

    def _send(self, records: list[Shipped]) -> None:
        self._transport.call(RecordsOp.APPEND, {"records": records})

    def _ship(self, batch: list[Shipped]) -> None:
        batch = [item for item in batch if item != (None, None)]
        try:
            if self._spooled:
                sent = self._spool.ship(self._send)
                self._spooled = False
                logger.info("records: shipped %d spooled records to the owner", sent)
            if batch:
                self._send(batch)
        except Exception as exc:
            if batch:
                self._spool.add(batch)
                self._spooled = True
            logger.warning(
                "records owner unreachable (%s): %d records spooled at %s",
                type(exc).__name__,
                len(batch),
                self._spool.path,
            )

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every record queued here was shipped (or spooled)."""
        return self._writer.flush(timeout_s)

    def close(self) -> None:
        self._stopping.set()
        self._watcher.join(5)
        self._writer.close()
        self._spool.close()
        self._transport.close()

    def _read(self, op: RecordsOp, **payload: Any) -> Any:
        try:
            return self._transport.call(op, payload)
        except RecordsUnavailable:
            raise
        except Exception as exc:
            raise RecordsUnavailable(f"records owner unreachable ({type(exc).__name__})") from exc

    def totals(self, group_by: str, since: float | None = None) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._read(RecordsOp.TOTALS, group_by=group_by, since=since)
        return answer

    def series(self, group_by: str, since: float, bucket_s: int) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._read(
            RecordsOp.SERIES, group_by=group_by, since=since, bucket_s=bucket_s
        )
        return answer

    def recent_errors(self, since: float, limit: int = 20) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._read(RecordsOp.RECENT_ERRORS, since=since, limit=limit)
        return answer

    def experiment(self, name: str, since: float | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = self._read(RecordsOp.EXPERIMENT, name=name, since=since)
        return answer

    def rows(self, since: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._read(RecordsOp.ROWS, since=since, limit=limit)
        return answer

    def add_feedback(
        self,
        request_id: str,
        score: float,
        label: str | None,
        comment: str | None,
        key_id: str | None = None,
    ) -> bool:
        self.flush(2.0)  # the request may have finished here a moment ago
        found = self._read(
            RecordsOp.ADD_FEEDBACK,
            request_id=request_id,
            score=score,
            label=label,
            comment=comment,
            key_id=key_id,
        )
        return bool(found)

    def feedback(self, request_id: str) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._read(RecordsOp.FEEDBACK, request_id=request_id)
        return answer

    def feedback_scores(self, since: float | None = None) -> dict[str, float]:
        answer: dict[str, float] = self._read(RecordsOp.FEEDBACK_SCORES, since=since)
        return answer
