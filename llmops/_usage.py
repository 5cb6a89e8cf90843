"""Reads of the ledger, computed in SQL over the hourly rollups: what they cost grows with the
hours and groups in the answer, not with the requests behind it.

A window that starts inside an hour reads that first partial hour from the raw rows (at most
an hour of them, by the time index) and every later hour from the rollups, so totals are
exact. A window older than the retention starts at its hour: the raw rows are gone, the
hour's rollup is all there is."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import orjson

from llmops._ledger_schema import DIMS, HOUR, bin_value
from llmops._record import LEDGER_COLUMNS
from storage import Database

GROUPS = {
    "backend": "backend",
    "route": "route",
    "key": "key_id",
    "team": "team",
    "task": "task",
    "arm": "arm",
    "template": "template",
}
_ERROR = "CASE WHEN status >= 400 THEN 1 ELSE 0 END"
# What each table contributes to a sum, by measure.
_ROLLED = "requests, prompt_tokens, completion_tokens, cost_usd, estimated_cost_usd, errors"
_RAW = (
    "1, COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0), COALESCE(cost_usd, 0), "
    f"COALESCE(estimated_cost_usd, 0), {_ERROR}"
)
_SUMS = (
    "SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd), "
    "SUM(estimated_cost_usd), SUM(errors)"
)


def _window(since: float | None, cutoff: float | None) -> tuple[float, float]:
    """(start of the raw head, start of the rolled-up hours) for a window from `since`."""
    start = since or 0.0
    hour = math.floor(start / HOUR) * HOUR
    if hour == start or (cutoff is not None and start < cutoff):
        return hour, hour  # no head: whole hours only
    return start, hour + HOUR


def _rolled(
    db: Database,
    groups: Sequence[str],
    since: float | None,
    cutoff: float | None,
    where: str = "",
    params: Sequence[Any] = (),
) -> list[tuple[Any, ...]]:
    """Sums per distinct `groups` (DIMS) since a time, rollups plus the raw head. `where`
    uses `COALESCE(dim, '')` forms, which read alike in both tables."""
    assert all(group in DIMS for group in groups)
    head, hours = _window(since, cutoff)
    cols = ", ".join(f"COALESCE({g}, '') AS g{i}" for i, g in enumerate(groups))
    names = ", ".join(f"g{i}" for i in range(len(groups)))
    condition = f" AND {where}" if where else ""
    sql = (
        f"SELECT {names}, {_SUMS} FROM ("
        f"SELECT {cols}, {_ROLLED} FROM usage_hourly WHERE bucket >= ?{condition} "
        f"UNION ALL SELECT {cols}, {_RAW} FROM requests WHERE ts >= ? AND ts < ?{condition}"
        f") AS u GROUP BY {names}"
    )
    with db.transaction(write=False) as session:
        return session.execute(sql, (hours, *params, head, hours, *params))


def _sums(values: Sequence[Any]) -> dict[str, Any]:
    requests, prompt, completion, cost, estimated, errors = values
    return {
        "requests": int(requests or 0),
        "prompt_tokens": int(prompt or 0),
        "completion_tokens": int(completion or 0),
        "cost_usd": round(float(cost or 0.0), 10),
        "estimated_cost_usd": round(float(estimated or 0.0), 10),
        "errors": int(errors or 0),
    }


def _value(text: Any) -> Any:
    return None if text == "" else text


def totals(
    db: Database, group_by: str, since: float | None, cutoff: float | None
) -> list[dict[str, Any]]:
    found = _rolled(db, [GROUPS[group_by]], since, cutoff)
    entries = [{group_by: _value(name), **_sums(sums)} for name, *sums in found]
    entries.sort(key=lambda entry: -entry["cost_usd"])
    if group_by == "key":
        described = _key_names(db, [e["key"] for e in entries if e["key"] is not None])
        for entry in entries:
            name, team, metadata = described.get(entry["key"], (None, None, None))
            entry.update(key_name=name, team=team, key_metadata=metadata)
    return entries


def _key_names(db: Database, keys: Sequence[str]) -> dict[str, tuple[Any, Any, Any]]:
    found: dict[str, tuple[Any, Any, Any]] = {}
    with db.transaction(write=False) as session:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for key, name, team, metadata in session.execute(
                "SELECT key_id, key_name, team, key_metadata FROM key_names "
                f"WHERE key_id IN ({marks})",
                chunk,
            ):
                found[key] = (name, team, orjson.loads(metadata) if metadata else None)
    return found


def series(db: Database, group_by: str, since: float, bucket_s: int) -> list[dict[str, Any]]:
    """Per `bucket_s` from `since` (aligned down to it) and group: requests, tokens, cost.
    Whole hours come from the rollups; finer buckets from the raw rows of the window."""
    column = GROUPS[group_by]
    start = math.floor(since / bucket_s) * bucket_s
    if bucket_s % HOUR == 0:
        sql = (
            f"SELECT CAST(FLOOR(bucket / ?) AS BIGINT), {column}, SUM(requests), "
            "SUM(prompt_tokens + completion_tokens), SUM(cost_usd) FROM usage_hourly "
            "WHERE bucket >= ? GROUP BY 1, 2"
        )
    else:
        sql = (
            f"SELECT CAST(FLOOR(ts / ?) AS BIGINT), COALESCE({column}, ''), COUNT(*), "
            "SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)), "
            "SUM(COALESCE(cost_usd, 0)) FROM requests WHERE ts >= ? GROUP BY 1, 2"
        )
    with db.transaction(write=False) as session:
        found = session.execute(sql, (bucket_s, start))
    return [
        {
            "bucket": int(index) * bucket_s,
            group_by: _value(name),
            "requests": int(requests or 0),
            "tokens": int(tokens or 0),
            "cost_usd": float(cost or 0.0),
        }
        for index, name, requests, tokens, cost in found
    ]


def recent_errors(db: Database, since: float, limit: int) -> list[dict[str, Any]]:
    """The newest failed requests, newest first (a partial index on failures)."""
    with db.transaction(write=False) as session:
        found = session.execute(
            f"SELECT {', '.join(LEDGER_COLUMNS)} FROM requests "
            "WHERE status >= 400 AND ts >= ? ORDER BY ts DESC LIMIT ?",
            (since, limit),
        )
    return [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in found]


def experiment(
    db: Database, name: str, since: float | None, cutoff: float | None
) -> dict[str, Any]:
    """An experiment's arms (sums and latency histogram), its callers per key and arm, and
    each scored request's mean feedback per arm: what the report needs, nothing per row."""
    where = "COALESCE(experiment, '') = ? AND COALESCE(arm, '') <> 'shadow'"
    arms = {arm: _sums(sums) for arm, *sums in _rolled(db, ["arm"], since, cutoff, where, (name,))}
    callers = _rolled(db, ["key_id", "arm"], since, cutoff, where, (name,))
    hours = math.floor((since or 0.0) / HOUR) * HOUR
    with db.transaction(write=False) as session:
        bins = session.execute(
            "SELECT arm, bin, SUM(n) FROM latency_hourly WHERE experiment = ? AND arm <> "
            "'shadow' AND bucket >= ? GROUP BY arm, bin",
            (name, hours),
        )
        scored = session.execute(
            "SELECT arm, AVG(score) FROM feedback WHERE experiment = ? AND request_ts >= ? "
            "AND COALESCE(arm, '') <> 'shadow' GROUP BY arm, request_id",
            (name, since or 0.0),
        )
    latency: dict[str, list[tuple[float, int]]] = {}
    for arm, index, count in sorted(bins, key=lambda b: (b[0], b[1])):
        latency.setdefault(arm, []).append((bin_value(int(index)), int(count)))
    feedback: dict[str, list[float]] = {}
    for arm, score in scored:
        feedback.setdefault(arm, []).append(float(score))
    keys = _key_names(db, sorted({key for key, _arm, *_ in callers if key}))
    return {
        "arms": arms,
        "latency": latency,
        "feedback": feedback,
        "callers": [
            {"key_id": key, "arm": arm, "described": keys.get(key), **_sums(sums)}
            for key, arm, *sums in callers
            if key
        ],
    }


def rows(db: Database, since: float | None, limit: int | None) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM requests WHERE ts >= ? ORDER BY ts"
    params: tuple[Any, ...] = (since or 0.0,)
    if limit is not None:
        sql, params = sql + " LIMIT ?", (*params, limit)
    with db.transaction(write=False) as session:
        found = session.execute(sql, params)
    return [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in found]


def add_feedback(
    db: Database,
    request_id: str,
    score: float,
    label: str | None,
    comment: str | None,
    key_id: str | None,
) -> bool:
    query = "SELECT experiment, arm, ts FROM requests WHERE request_id = ?"
    args: tuple[str, ...] = (request_id,)
    if key_id is not None:
        query, args = query + " AND key_id = ?", (request_id, key_id)
    with db.transaction() as session:
        known = session.execute(query + " LIMIT 1", args)
        if not known:
            return False
        session.execute(
            "INSERT INTO feedback (request_id, ts, score, label, comment, experiment, arm, "
            "request_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (request_id, time.time(), score, label, comment, *known[0]),
        )
    return True


def feedback(db: Database, request_id: str) -> list[dict[str, Any]]:
    with db.transaction(write=False) as session:
        found = session.execute(
            "SELECT score, label, comment, ts FROM feedback WHERE request_id = ? ORDER BY ts",
            (request_id,),
        )
    return [{"score": s, "label": lb, "comment": c, "ts": ts} for s, lb, c, ts in found]


def feedback_scores(db: Database, since: float | None) -> dict[str, float]:
    with db.transaction(write=False) as session:
        found = session.execute(
            "SELECT request_id, AVG(score) FROM feedback WHERE COALESCE(request_ts, ts) >= ? "
            "GROUP BY request_id",
            (since or 0.0,),
        )
    return {request_id: float(score) for request_id, score in found}


def parse_since(value: str | None) -> float | None:
    """`since` as Unix seconds, ISO 8601, or a duration back from now (`15m`, `24h`, `7d`)."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * units[value[-1]]
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            "since: expected Unix seconds, an ISO 8601 time or a duration like 24h"
        ) from None
    return parsed.timestamp()
