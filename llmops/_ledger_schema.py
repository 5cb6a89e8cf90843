"""The ledger's tables and their migrations.

`requests`: one row per request (the columns are `RequestRecord`'s ledger fields). Reads scan
it for a window's first partial minute at most: `usage_hourly` rolls every row up per hour and
per dimension set (backend, route, key, team, task, experiment, arm, template),
`usage_minute` the same per minute for the last MINUTES_KEPT_S, `latency_hourly` keeps a
latency histogram per experiment arm and hour (experiments' rows only: the report reads
them), and `key_names` the latest name, team and metadata of each key. The writer maintains
them in the same transaction as the rows, so they are never out of step. Feedback rows carry
their request's experiment, arm and time; `feedback_requests` holds each scored request's
count and sum of scores, `feedback_hourly` the sums of those means (and of their squares) per
experiment arm and hour: the report's statistics without reading a score."""

from __future__ import annotations

import math
import time
import typing
from dataclasses import fields

from llmops._record import LEDGER_COLUMNS, RequestRecord
from storage import Dialect, Migration, Session

DIMS = ("backend", "route", "key_id", "team", "task", "experiment", "arm", "template")
_MEASURES_V2 = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "estimated_cost_usd",
    "errors",
    "latency_ms_sum",
    "latency_n",
)
# Migration 3: the response cache's hits and misses, and what the hits saved.
_CACHE_MEASURES = ("cache_hits", "cache_misses", "saved_usd")
# Migration 4: requests the guardrails changed or refused.
_GUARDRAIL_MEASURES = ("guardrail_interventions",)
MEASURES = _MEASURES_V2 + _CACHE_MEASURES + _GUARDRAIL_MEASURES
HOUR = 3600
MINUTE = 60
# Minute rollups: the first partial hour of a window comes from them (and only its first
# partial minute from the raw rows); kept long enough for a week's window and then some.
MINUTES_KEPT_S = 8 * 86400
USAGE_TABLES = ("usage_hourly", "usage_minute")
# Latency histogram bins: 2% wide, so a percentile read from them is within 1%.
BIN_RATIO = 1.02
_LOG_RATIO = math.log(BIN_RATIO)
NO_VALUE = ""  # a NULL dimension in the rollups (NULLs never match in a unique key)


# `latency_bin` in SQL (both dialects have LN and FLOOR).
BINNED = (
    "CAST(FLOOR(LN(CASE WHEN latency_ms > 0.01 THEN latency_ms ELSE 0.01 END) / "
    f"{_LOG_RATIO!r}) AS INTEGER)"
)


def latency_bin(latency_ms: float) -> int:
    return math.floor(math.log(max(latency_ms, 0.01)) / _LOG_RATIO)


def bin_value(index: int) -> float:
    """A bin's geometric middle."""
    return float(BIN_RATIO ** (index + 0.5))


def _pg_type(name: str) -> str:
    hint = str(typing.get_type_hints(RequestRecord)[name])
    if "bool" in hint:
        return "BOOLEAN"
    if "int" in hint:
        return "BIGINT"
    if "float" in hint:
        return "DOUBLE PRECISION"
    return "TEXT"


PG_TYPES = {f.name: _pg_type(f.name) for f in fields(RequestRecord) if f.name in LEDGER_COLUMNS}


def _columns(dialect: Dialect) -> str:
    if dialect == Dialect.SQLITE:  # typeless, as every ledger file has been
        return ", ".join(LEDGER_COLUMNS)
    return ", ".join(
        f"{name} {PG_TYPES[name]}{' NOT NULL' if name in ('request_id', 'ts') else ''}"
        for name in LEDGER_COLUMNS
    )


def _base(session: Session) -> None:
    """The tables every ledger has had (a no-op on an older SQLite ledger)."""
    real = session.dialect.real
    session.execute(
        f"CREATE TABLE IF NOT EXISTS requests ({_columns(session.dialect)}, "
        "PRIMARY KEY (request_id, ts))"
    )
    session.execute("CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)")
    session.execute(
        f"CREATE TABLE IF NOT EXISTS feedback (request_id TEXT, ts {real}, score {real}, "
        "label TEXT, comment TEXT)"
    )
    session.execute("CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id)")
    add_new_columns(session)  # an older ledger's table, before later steps read its columns


def _dims_sql() -> str:
    return ", ".join(f"COALESCE({dim}, '') AS {dim}" for dim in DIMS)


def _clustered(session: Session) -> str:
    """SQLite stores these tables in their key's order (time ranges read contiguously)."""
    return " WITHOUT ROWID" if session.dialect == Dialect.SQLITE else ""


def _rollups(session: Session) -> None:
    """The rollups, key names and feedback sums, filled from what an older ledger holds."""
    real = session.dialect.real
    big = session.dialect.bigint
    dims = ", ".join(f"{dim} TEXT NOT NULL" for dim in DIMS)
    for table in USAGE_TABLES:
        session.execute(
            f"CREATE TABLE {table} (bucket {big} NOT NULL, {dims}, requests {big}, "
            f"prompt_tokens {big}, completion_tokens {big}, cost_usd {real}, "
            f"estimated_cost_usd {real}, errors {big}, latency_ms_sum {real}, latency_n {big}, "
            f"PRIMARY KEY (bucket, {', '.join(DIMS)})){_clustered(session)}"
        )
    session.execute(
        f"CREATE TABLE latency_hourly (experiment TEXT NOT NULL, bucket {big} NOT NULL, "
        f"arm TEXT NOT NULL, bin INTEGER NOT NULL, n {big}, "
        f"PRIMARY KEY (experiment, bucket, arm, bin)){_clustered(session)}"
    )
    session.execute(
        f"CREATE TABLE key_names (key_id TEXT PRIMARY KEY, key_name TEXT, team TEXT, "
        f"key_metadata TEXT, ts {real})"
    )
    session.execute("CREATE INDEX requests_errors ON requests (ts) WHERE status >= 400")
    for column in ("experiment", "arm"):
        session.execute(f"ALTER TABLE feedback ADD COLUMN {column} TEXT")
    session.execute(f"ALTER TABLE feedback ADD COLUMN request_ts {real}")
    session.execute(
        f"CREATE TABLE feedback_requests (request_id TEXT PRIMARY KEY, experiment TEXT NOT "
        f"NULL, arm TEXT NOT NULL, request_ts {real}, n {big} NOT NULL, total {real} NOT NULL)"
    )
    session.execute(
        "CREATE INDEX feedback_requests_experiment ON feedback_requests (experiment, request_ts)"
    )
    session.execute(
        f"CREATE TABLE feedback_hourly (experiment TEXT NOT NULL, bucket {big} NOT NULL, "
        f"arm TEXT NOT NULL, requests {big} NOT NULL, mean_sum {real} NOT NULL, "
        f"mean_squares {real} NOT NULL, PRIMARY KEY (experiment, bucket, arm)){_clustered(session)}"
    )
    _backfill(session)


def _backfill(session: Session) -> None:
    bucket = f"CAST(FLOOR(ts / {HOUR}) AS BIGINT) * {HOUR}"
    errors = "CASE WHEN status >= 400 THEN 1 ELSE 0 END"
    groups = ", ".join(f"COALESCE({dim}, {NO_VALUE!r})" for dim in DIMS)
    sums = (
        f"COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd), "
        f"SUM(estimated_cost_usd), SUM({errors}), SUM(latency_ms), COUNT(latency_ms)"
    )
    for table, width, where in (
        ("usage_hourly", HOUR, ""),
        ("usage_minute", MINUTE, f" WHERE ts >= {time.time() - MINUTES_KEPT_S!r}"),
    ):
        start = f"CAST(FLOOR(ts / {width}) AS BIGINT) * {width}"
        session.execute(
            f"INSERT INTO {table} (bucket, {', '.join(DIMS)}, {', '.join(_MEASURES_V2)}) "
            f"SELECT {start} AS b, {_dims_sql()}, {sums} FROM requests{where} "
            f"GROUP BY b, {groups}"
        )
    binned = BINNED
    session.execute(
        "INSERT INTO latency_hourly (experiment, bucket, arm, bin, n) "
        f"SELECT COALESCE(experiment, ''), {bucket} AS b, COALESCE(arm, ''), {binned} AS k, "
        "COUNT(*) FROM requests WHERE latency_ms IS NOT NULL AND experiment IS NOT NULL "
        "GROUP BY COALESCE(experiment, ''), b, COALESCE(arm, ''), k"
    )
    session.execute(
        "INSERT INTO key_names (key_id, key_name, team, key_metadata, ts) "
        "SELECT key_id, MAX(key_name), MAX(team), MAX(key_metadata), MAX(ts) FROM requests "
        "WHERE key_id IS NOT NULL GROUP BY key_id"
    )
    session.execute(
        "UPDATE feedback SET experiment = r.experiment, arm = r.arm, request_ts = r.ts "
        "FROM requests AS r WHERE r.request_id = feedback.request_id"
    )
    session.execute(
        "INSERT INTO feedback_requests (request_id, experiment, arm, request_ts, n, total) "
        "SELECT request_id, COALESCE(MAX(experiment), ''), COALESCE(MAX(arm), ''), "
        "MAX(request_ts), COUNT(*), SUM(score) FROM feedback GROUP BY request_id"
    )
    request_bucket = f"CAST(FLOOR(request_ts / {HOUR}) AS BIGINT) * {HOUR}"
    session.execute(
        "INSERT INTO feedback_hourly (experiment, bucket, arm, requests, mean_sum, "
        f"mean_squares) SELECT experiment, {request_bucket} AS b, arm, COUNT(*), "
        "SUM(total / n), SUM((total / n) * (total / n)) FROM feedback_requests "
        "WHERE request_ts IS NOT NULL GROUP BY experiment, b, arm"
    )


def _cache_measures(session: Session) -> None:
    """Hits, misses and money saved per rollup row (0 before the cache existed)."""
    kinds = {"cache_hits": session.dialect.bigint, "cache_misses": session.dialect.bigint}
    for table in USAGE_TABLES:
        for column in _CACHE_MEASURES:
            kind = kinds.get(column, session.dialect.real)
            session.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind} DEFAULT 0")


def _guardrail_measures(session: Session) -> None:
    """Guardrail interventions per rollup row (0 before guardrails existed)."""
    for table in USAGE_TABLES:
        session.execute(
            f"ALTER TABLE {table} ADD COLUMN guardrail_interventions "
            f"{session.dialect.bigint} DEFAULT 0"
        )


MIGRATIONS = (
    Migration(1, "requests and feedback", _base),
    Migration(2, "hourly rollups, latency histograms, key names; feedback by experiment", _rollups),
    Migration(3, "response cache hits, misses and savings in the rollups", _cache_measures),
    Migration(4, "guardrail interventions in the rollups", _guardrail_measures),
)


def add_new_columns(session: Session) -> list[str]:
    """Columns `RequestRecord` gained since the table was made (renaming a field adds a
    column instead of silently writing NULL); the ones added."""
    if session.dialect == Dialect.SQLITE:
        known = {row[1] for row in session.execute("PRAGMA table_info(requests)")}
    else:
        known = {
            row[0]
            for row in session.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'requests' AND table_schema = current_schema()"
            )
        }
    added = [column for column in LEDGER_COLUMNS if column not in known]
    for column in added:
        kind = "" if session.dialect == Dialect.SQLITE else f" {PG_TYPES[column]}"
        session.execute(f"ALTER TABLE requests ADD COLUMN {column}{kind}")
    return added
