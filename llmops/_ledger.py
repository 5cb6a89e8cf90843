"""The cost ledger: one row per request, written by the shared batch writer, in SQLite (a
file per host, WAL mode) or PostgreSQL (one database for the cluster, `database:`).

Each batch is written in one transaction with the hourly rollups its rows add to, so reads
(`llmops._usage`) cost what the answer holds, not what the ledger holds. A row shipped twice
(delivery is at least once) is one row and counted once: only rows actually inserted are
rolled up. Rows older than `retention_days` are deleted; the rollups keep their totals.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from llmops import _usage
from llmops._batch import BatchWriter
from llmops._config import LedgerConfig
from llmops._ledger_schema import (
    DIMS,
    HOUR,
    MEASURES,
    MIGRATIONS,
    MINUTE,
    MINUTES_KEPT_S,
    NO_VALUE,
    USAGE_TABLES,
    add_new_columns,
    latency_bin,
)
from llmops._record import LEDGER_COLUMNS, RequestRecord
from storage import Database, Session, SqliteDatabase, migrate

logger = logging.getLogger("ray.serve")
COLUMNS = LEDGER_COLUMNS
GROUPS = _usage.GROUPS
BATCH_S = 0.25
PURGE_EVERY_S = 600.0
PURGE_CHUNK_S = 6 * HOUR  # rows deleted per transaction: short write locks
_INDEX = {column: index for index, column in enumerate(COLUMNS)}
_ID, _TS, _KEY = _INDEX["request_id"], _INDEX["ts"], _INDEX["key_id"]
_LATENCY_AT, _STATUS, _COST = _INDEX["latency_ms"], _INDEX["status"], _INDEX["cost_usd"]
_CACHE, _SAVED = _INDEX["cache"], _INDEX["saved_usd"]
_GUARDRAIL = _INDEX["guardrail"]
# A rollup row's sums before any row is added, in MEASURES' order (money and time are floats).
_NO_SUMS = tuple(0.0 if m.endswith(("_usd", "_sum")) else 0 for m in MEASURES)
_PROMPT, _COMPLETION = _INDEX["prompt_tokens"], _INDEX["completion_tokens"]
_ESTIMATED, _KEY_NAME, _TEAM = _INDEX["estimated_cost_usd"], _INDEX["key_name"], _INDEX["team"]
_DIMS_OF = operator.itemgetter(*(_INDEX[dim] for dim in DIMS))
_INSERT = (
    f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (request_id, ts) DO NOTHING"
)
_KNOWN_CHUNK = 500  # request ids looked up per statement
_ROLLUP = {
    table: (
        f"INSERT INTO {table} (bucket, {', '.join(DIMS)}, {', '.join(MEASURES)}) "
        f"VALUES ({', '.join('?' * (1 + len(DIMS) + len(MEASURES)))}) "
        f"ON CONFLICT (bucket, {', '.join(DIMS)}) DO UPDATE SET "
        + ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in MEASURES)
    )
    for table in USAGE_TABLES
}
_LATENCY = (
    "INSERT INTO latency_hourly (experiment, bucket, arm, bin, n) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (experiment, bucket, arm, bin) "
    "DO UPDATE SET n = latency_hourly.n + excluded.n"
)
_KEY_NAMES = (
    "INSERT INTO key_names (key_id, key_name, team, key_metadata, ts) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (key_id) DO UPDATE SET key_name = excluded.key_name, team = excluded.team, "
    "key_metadata = excluded.key_metadata, ts = excluded.ts WHERE excluded.ts >= key_names.ts"
)


_METADATA = _INDEX["key_metadata"]  # the one column that holds a mapping


def _cells(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row as stored: a key's metadata (a mapping) as JSON text, the rest as it is."""
    metadata = row[_METADATA]
    if isinstance(metadata, dict | list):
        cells = list(row)
        cells[_METADATA] = orjson.dumps(metadata).decode()
        return tuple(cells)
    return tuple(row)


class LedgerReader(Protocol):
    """What the gateway's endpoints read: a `Ledger`, or the cluster's records owner."""

    def flush(self, timeout_s: float = 5.0) -> bool: ...

    def totals(self, group_by: str, since: float | None = None) -> list[dict[str, Any]]: ...

    def series(self, group_by: str, since: float, bucket_s: int) -> list[dict[str, Any]]: ...

    def recent_errors(self, since: float, limit: int = 20) -> list[dict[str, Any]]: ...

    def experiment(self, name: str, since: float | None = None) -> dict[str, Any]: ...

    def rows(
        self, since: float | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]: ...

    def add_feedback(
        self,
        request_id: str,
        score: float,
        label: str | None,
        comment: str | None,
        key_id: str | None = None,
    ) -> bool: ...

    def feedback(self, request_id: str) -> list[dict[str, Any]]: ...

    def feedback_scores(self, since: float | None = None) -> dict[str, float]: ...


class Ledger:
    """The request ledger in `db` (a SQLite path is opened as a file). A sink."""

    def __init__(
        self,
        db: Database | Path,
        *,
        retention_days: float | None = None,
        rollup_retention_days: float | None = None,
        clock: Any = time.time,
    ) -> None:
        self.db: Database = db if isinstance(db, Database) else SqliteDatabase(db)
        self.retention_s = None if retention_days is None else retention_days * 86400
        self.rollup_retention_s = (
            None if rollup_retention_days is None else rollup_retention_days * 86400
        )
        self._clock = clock
        migrate(self.db, "ledger", MIGRATIONS)
        with self.db.transaction() as session:
            add_new_columns(session)
        self._purged_at = 0.0
        self._purge_lock = threading.Lock()
        # What this writer last wrote to `key_names` per key: unchanged ones are not written
        # again (only the writer thread, or `insert` under the database's write lock, use it).
        self._described: dict[str, tuple[Any, ...]] = {}
        self._writer: BatchWriter[tuple[Any, ...]] = BatchWriter("ledger", self._write, BATCH_S)

    @property
    def journal_mode(self) -> str:
        return getattr(self.db, "journal_mode", "")

    def write(self, record: RequestRecord) -> None:
        """Queue one request's row. Never blocks."""
        self._writer.add(tuple(getattr(record, column) for column in COLUMNS))

    def add(self, row: Mapping[str, Any]) -> None:
        """Queue a row given as a mapping (keys from COLUMNS; missing ones are NULL)."""
        self._writer.add(tuple(row.get(column) for column in COLUMNS))

    def insert(self, rows: Sequence[Sequence[Any]]) -> int:
        """Write rows (values in COLUMNS order) now, with their rollups, in one transaction
        (blocking); the number that were new. Raises `DatabaseUnavailable` in an outage."""
        cells = [_cells(row) for row in rows]
        with self.db.transaction() as session:
            new = _insert_new(session, cells)
            _roll_up(session, new, self._described)
        self._maybe_purge()
        return len(new)

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        self.insert(rows)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued row is written (reads, tests, shutdown)."""
        return self._writer.flush(timeout_s)

    def close(self) -> None:
        self._writer.close()
        self.db.close()

    # -- retention ------------------------------------------------------------------------

    def _maybe_purge(self) -> None:
        now = self._clock()
        if now - self._purged_at < PURGE_EVERY_S:
            return
        if self._purge_lock.acquire(blocking=False):
            try:
                self._purged_at = now
                self.purge(now)
            finally:
                self._purge_lock.release()

    def purge(self, now: float | None = None) -> int:
        """Delete rows and feedback older than the retention, a few hours per transaction
        (short write locks); the rollups keep their totals, until their own retention. The
        rows deleted."""
        now = now or self._clock()
        with self.db.transaction() as session:
            session.execute("DELETE FROM usage_minute WHERE bucket < ?", (now - MINUTES_KEPT_S,))
        if self.rollup_retention_s is not None:
            with self.db.transaction() as session:
                for table in ("usage_hourly", "latency_hourly", "feedback_hourly"):
                    session.execute(
                        f"DELETE FROM {table} WHERE bucket < ?", (now - self.rollup_retention_s,)
                    )
        if self.retention_s is None:
            return 0
        cutoff = now - self.retention_s
        with self.db.transaction(write=False) as session:
            oldest = session.execute("SELECT MIN(ts) FROM requests")[0][0]
        deleted = 0
        start = oldest if oldest is not None else cutoff
        while start < cutoff:
            end = min(start + PURGE_CHUNK_S, cutoff)
            with self.db.transaction() as session:
                session.execute("DELETE FROM requests WHERE ts < ?", (end,))
                deleted += session.rowcount
                session.execute("DELETE FROM feedback WHERE request_ts < ?", (end,))
                session.execute("DELETE FROM feedback_requests WHERE request_ts < ?", (end,))
            start = end
        return deleted

    def cutoff(self) -> float | None:
        """The oldest time rows are kept for (None: kept for ever)."""
        return None if self.retention_s is None else self._clock() - self.retention_s

    # -- reads (blocking: run them in a thread) --------------------------------------------

    def totals(self, group_by: str, since: float | None = None) -> list[dict[str, Any]]:
        """Requests, tokens and cost per group since a Unix time. Per key, also its name,
        team and metadata (as of its latest request)."""
        return _usage.totals(self.db, group_by, since, self.cutoff(), self._clock())

    def series(self, group_by: str, since: float, bucket_s: int) -> list[dict[str, Any]]:
        """Requests, tokens and cost per time bucket and group (charts)."""
        return _usage.series(self.db, group_by, since, bucket_s)

    def recent_errors(self, since: float, limit: int = 20) -> list[dict[str, Any]]:
        return _usage.recent_errors(self.db, since, limit)

    def experiment(self, name: str, since: float | None = None) -> dict[str, Any]:
        """What the experiment report is computed from (see `llmops._report`)."""
        return _usage.experiment(self.db, name, since, self.cutoff(), self._clock())

    def rows(self, since: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Raw rows since a Unix time, oldest first (exports, tests; never an endpoint)."""
        return _usage.rows(self.db, since, limit)

    def add_feedback(
        self,
        request_id: str,
        score: float,
        label: str | None,
        comment: str | None,
        key_id: str | None = None,
    ) -> bool:
        """Attach an outcome to a logged request; False if no such request (blocking).
        `key_id`: only a request that key made (a key scores its own traffic only)."""
        self.flush(2.0)
        return _usage.add_feedback(self.db, request_id, score, label, comment, key_id)

    def feedback(self, request_id: str) -> list[dict[str, Any]]:
        return _usage.feedback(self.db, request_id)

    def feedback_scores(self, since: float | None = None) -> dict[str, float]:
        """Mean feedback score per request id (of requests since a Unix time)."""
        return _usage.feedback_scores(self.db, since)


def _insert_new(session: Session, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Insert the rows the ledger does not have yet; those rows. Almost always all of them:
    then one statement does it. When some were there already (a batch shipped twice), that
    attempt is undone and the known ones are looked up first."""
    session.execute("SAVEPOINT fresh")
    session.executemany(_INSERT, rows)
    if session.rowcount == len(rows):
        session.execute("RELEASE SAVEPOINT fresh")
        return rows
    session.execute("ROLLBACK TO SAVEPOINT fresh")
    session.execute("RELEASE SAVEPOINT fresh")
    known = _known(session, rows)
    new = [row for row in rows if (row[_ID], row[_TS]) not in known]
    session.executemany(_INSERT, new)
    return new


def _known(session: Session, rows: Sequence[tuple[Any, ...]]) -> set[tuple[Any, Any]]:
    """Which of these rows the ledger has already (shipped twice): one indexed lookup per
    chunk, in the writing transaction, so the rollups count each row once."""
    found: set[tuple[Any, Any]] = set()
    ids = sorted({row[_ID] for row in rows})
    for start in range(0, len(ids), _KNOWN_CHUNK):
        chunk = ids[start : start + _KNOWN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        found.update(
            (request_id, ts)
            for request_id, ts in session.execute(
                f"SELECT request_id, ts FROM requests WHERE request_id IN ({marks})", chunk
            )
        )
    return found


def _roll_up(
    session: Session, rows: Sequence[tuple[Any, ...]], described: dict[str, tuple[Any, ...]]
) -> None:
    """Add new rows to the rollups, aggregated first (per minute, then the minutes per hour):
    one upsert per minute or hour and dimension set in the batch, not per row."""
    if not rows:
        return
    minutes: dict[tuple[Any, ...], list[float]] = {}
    latency: dict[tuple[Any, ...], int] = {}
    keys: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        ts, took = row[_TS], row[_LATENCY_AT]
        dims = tuple(NO_VALUE if value is None else value for value in _DIMS_OF(row))
        place = (int(ts // MINUTE) * MINUTE, *dims)
        sums = minutes.get(place)
        if sums is None:
            sums = minutes[place] = list(_NO_SUMS)
        sums[0] += 1
        sums[1] += row[_PROMPT] or 0
        sums[2] += row[_COMPLETION] or 0
        sums[3] += row[_COST] or 0.0
        sums[4] += row[_ESTIMATED] or 0.0
        if (row[_STATUS] or 0) >= 400:
            sums[5] += 1
        cached = row[_CACHE]
        if cached == "hit":
            sums[8] += 1
            sums[10] += row[_SAVED] or 0.0
        elif cached == "miss":
            sums[9] += 1
        if row[_GUARDRAIL] not in (None, "passed"):
            sums[11] += 1
        if took is not None:
            sums[6] += took
            sums[7] += 1
            if dims[5]:  # experiments only: the report is what reads the histograms
                binned = (dims[5], int(ts // HOUR) * HOUR, dims[6], latency_bin(took))
                latency[binned] = latency.get(binned, 0) + 1
        key = row[_KEY]
        if key is not None and (key not in keys or keys[key][-1] <= ts):
            keys[key] = (row[_KEY_NAME], row[_TEAM], row[_METADATA], ts)
    hours: dict[tuple[Any, ...], list[float]] = {}
    for (minute, *rest), sums in minutes.items():
        total = hours.setdefault((minute // HOUR * HOUR, *rest), list(_NO_SUMS))
        for index, value in enumerate(sums):
            total[index] += value
    for table, found in (("usage_minute", minutes), ("usage_hourly", hours)):
        session.executemany(_ROLLUP[table], [(*place, *sums) for place, sums in found.items()])
    session.executemany(_LATENCY, [(*place, n) for place, n in latency.items()])
    changed = {key: d for key, d in keys.items() if described.get(key, ())[:3] != d[:3]}
    session.executemany(_KEY_NAMES, [(key, *d) for key, d in changed.items()])
    described.update(changed)


def open_ledger(config: LedgerConfig, db: Database | Path) -> Ledger:
    """The ledger a `ledger:` section describes, in `db` (its retention)."""
    return Ledger(
        db,
        retention_days=config.retention_days,
        rollup_retention_days=config.rollup_retention_days,
    )
