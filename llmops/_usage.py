"""Reads of the ledger, computed in SQL over the hourly rollups: what they cost grows with the
hours and groups in the answer, not with the requests behind it.

A window that starts inside an hour reads that first partial hour from the minute rollups,
and its first partial minute from the raw rows (by the time index), so totals are exact to
the second. A window older than the retention starts at its hour: the raw rows are gone, the
hour's rollup is all there is."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from llmops._ledger_schema import BINNED, DIMS, HOUR, MINUTE, MINUTES_KEPT_S, bin_value
from llmops._record import LEDGER_COLUMNS
from storage import Database, Session

GROUPS = {
    "backend": "backend",
    "route": "route",
    "key": "key_id",
    "team": "team",
    "task": "task",
    "arm": "arm",
    "template": "template",
}
SAMPLES_MAX = 500  # scores per arm read for resampling; beyond, their moments suffice
_ERROR = "CASE WHEN status >= 400 THEN 1 ELSE 0 END"
# What each table contributes to a sum, by measure.
_ROLLED = (
    "requests, prompt_tokens, completion_tokens, cost_usd, estimated_cost_usd, errors, "
    "cache_hits, cache_misses, saved_usd, guardrail_interventions"
)
_RAW = (
    "1, COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0), COALESCE(cost_usd, 0), "
    f"COALESCE(estimated_cost_usd, 0), {_ERROR}, CASE WHEN cache = 'hit' THEN 1 ELSE 0 END, "
    "CASE WHEN cache = 'miss' THEN 1 ELSE 0 END, COALESCE(saved_usd, 0), "
    "CASE WHEN guardrail IS NULL OR guardrail = 'passed' THEN 0 ELSE 1 END"
)
_SUMS = ", ".join(f"SUM({measure})" for measure in _ROLLED.split(", "))


@dataclass(frozen=True)
class _Window:
    """A window from `since` as three ranges: raw rows, minute rollups, hour rollups."""

    raw: tuple[float, float]
    minutes: tuple[float, float]
    hours: float

    @classmethod
    def of(cls, since: float | None, cutoff: float | None, now: float) -> _Window:
        start = since or 0.0
        floor_hour = math.floor(start / HOUR) * HOUR
        if floor_hour == start or (cutoff is not None and start < cutoff):
            return cls((start, start), (start, start), floor_hour)  # whole hours only
        hour = floor_hour + HOUR
        if start < now - MINUTES_KEPT_S + HOUR:  # its minutes are no longer rolled up
            return cls((start, hour), (hour, hour), hour)
        minute = math.ceil(start / MINUTE) * MINUTE
        return cls((start, minute), (minute, hour), hour)


def _rolled(
    db: Database,
    groups: Sequence[str],
    window: _Window,
    where: str = "",
    params: Sequence[Any] = (),
) -> list[tuple[Any, ...]]:
    """Sums per distinct `groups` (DIMS) over a window: hour rollups, then minute rollups
    for its first partial hour, then raw rows for its first partial minute. `where` uses
    `COALESCE(dim, '')` forms, which read alike in every table."""
    assert all(group in DIMS for group in groups)
    cols = ", ".join(f"COALESCE({g}, '') AS g{i}" for i, g in enumerate(groups))
    names = ", ".join(f"g{i}" for i in range(len(groups)))
    condition = f" AND {where}" if where else ""
    sql = (
        f"SELECT {names}, {_SUMS} FROM ("
        f"SELECT {cols}, {_ROLLED} FROM usage_hourly WHERE bucket >= ?{condition} "
        f"UNION ALL SELECT {cols}, {_ROLLED} FROM usage_minute "
        f"WHERE bucket >= ? AND bucket < ?{condition} "
        f"UNION ALL SELECT {cols}, {_RAW} FROM requests WHERE ts >= ? AND ts < ?{condition}"
        f") AS u GROUP BY {names}"
    )
    args = (window.hours, *params, *window.minutes, *params, *window.raw, *params)
    with db.transaction(write=False) as session:
        return session.execute(sql, args)


def _sums(values: Sequence[Any]) -> dict[str, Any]:
    requests, prompt, completion, cost, estimated, errors, hits, misses, saved, guarded = values
    return {
        "requests": int(requests or 0),
        "prompt_tokens": int(prompt or 0),
        "completion_tokens": int(completion or 0),
        "cost_usd": round(float(cost or 0.0), 10),
        "estimated_cost_usd": round(float(estimated or 0.0), 10),
        "errors": int(errors or 0),
        # The response cache: hits and misses of the requests it could serve, what hits saved.
        "cache_hits": int(hits or 0),
        "cache_misses": int(misses or 0),
        "saved_usd": round(float(saved or 0.0), 10),
        "guardrail_interventions": int(guarded or 0),  # requests masked or refused
    }


def _value(text: Any) -> Any:
    return None if text == "" else text


def totals(
    db: Database, group_by: str, since: float | None, cutoff: float | None, now: float
) -> list[dict[str, Any]]:
    found = _rolled(db, [GROUPS[group_by]], _Window.of(since, cutoff, now))
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
    db: Database, name: str, since: float | None, cutoff: float | None, now: float
) -> dict[str, Any]:
    """An experiment's arms (sums, latency histogram, feedback moments: and the scores
    themselves when few), its callers per key and arm: what the report needs, nothing per
    row but a window's first partial hour (when `since` falls inside one)."""
    where = "COALESCE(experiment, '') = ? AND COALESCE(arm, '') <> 'shadow'"
    window = _Window.of(since, cutoff, now)
    arms = {arm: _sums(sums) for arm, *sums in _rolled(db, ["arm"], window, where, (name,))}
    callers = _rolled(db, ["key_id", "arm"], window, where, (name,))
    head = (window.raw[0], window.hours)  # empty when the window starts on an hour
    with db.transaction(write=False) as session:
        latency = _latency(session, name, window.hours, head)
        feedback = _feedback(session, name, window.hours, head)
        for arm, scored in feedback.items():
            if scored["n"] <= SAMPLES_MAX:
                scored["samples"] = [
                    float(mean)
                    for (mean,) in session.execute(
                        "SELECT total / n FROM feedback_requests WHERE experiment = ? AND "
                        "arm = ? AND request_ts >= ? ORDER BY request_id",
                        (name, arm, head[0]),
                    )
                ]
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


def _hours_and_head(
    session: Session,
    hourly: str,
    partial: str,
    name: str,
    hours: float,
    head: tuple[float, float],
) -> list[Any]:
    """An experiment's rows of an hourly table from `hours`, and of its first partial hour
    (`head`, where it has one) read by `partial` from finer records."""
    found = session.execute(hourly, (name, hours))
    if head[0] < head[1]:
        found += session.execute(partial, (name, *head))
    return found


def _latency(
    session: Session, name: str, hours: float, head: tuple[float, float]
) -> dict[str, list[tuple[float, int]]]:
    """Per arm, (bin value, count) in increasing order: whole hours from the histograms,
    the first partial hour binned from its rows."""
    counts: dict[tuple[str, int], int] = {}
    found = _hours_and_head(
        session,
        "SELECT arm, bin, SUM(n) FROM latency_hourly WHERE experiment = ? AND bucket >= ? "
        "AND arm <> 'shadow' GROUP BY arm, bin",
        f"SELECT COALESCE(arm, ''), {BINNED} AS k, COUNT(*) FROM requests WHERE "
        "experiment = ? AND ts >= ? AND ts < ? AND latency_ms IS NOT NULL AND "
        "COALESCE(arm, '') <> 'shadow' GROUP BY COALESCE(arm, ''), k",
        name, hours, head,
    )  # fmt: skip
    for arm, index, count in found:
        counts[(arm, int(index))] = counts.get((arm, int(index)), 0) + int(count)
    latency: dict[str, list[tuple[float, int]]] = {}
    for (arm, index), count in sorted(counts.items()):
        latency.setdefault(arm, []).append((bin_value(index), count))
    return latency


def _feedback(
    session: Session, name: str, hours: float, head: tuple[float, float]
) -> dict[str, dict[str, Any]]:
    """Per arm, the moments of its scored requests' mean scores: whole hours from the hourly
    sums, the first partial hour from the scored requests themselves."""
    found = _hours_and_head(
        session,
        "SELECT arm, SUM(requests), SUM(mean_sum), SUM(mean_squares) FROM feedback_hourly "
        "WHERE experiment = ? AND bucket >= ? AND arm <> 'shadow' GROUP BY arm",
        "SELECT arm, COUNT(*), SUM(total / n), SUM((total / n) * (total / n)) FROM "
        "feedback_requests WHERE experiment = ? AND request_ts >= ? AND request_ts < ? "
        "AND arm <> 'shadow' GROUP BY arm",
        name, hours, head,
    )  # fmt: skip
    sums: dict[str, list[float]] = {}
    for arm, n, total, squares in found:
        entry = sums.setdefault(arm, [0, 0.0, 0.0])
        entry[0] += int(n or 0)
        entry[1] += float(total or 0.0)
        entry[2] += float(squares or 0.0)
    return {arm: _moments(*entry) for arm, entry in sums.items()}


def _moments(n: Any, total: Any, squares: Any) -> dict[str, Any]:
    """Count, mean and sample variance of the per-request mean scores."""
    count = int(n or 0)
    mean = float(total or 0.0) / count if count else 0.0
    variance = 0.0
    if count > 1:
        variance = max(0.0, (float(squares or 0.0) - count * mean * mean) / (count - 1))
    return {"n": count, "mean": mean, "variance": variance, "samples": None}


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
        experiment, arm, request_ts = known[0]
        session.execute(
            "INSERT INTO feedback (request_id, ts, score, label, comment, experiment, arm, "
            "request_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (request_id, time.time(), score, label, comment, experiment, arm, request_ts),
        )
        _add_to_sums(session, request_id, experiment or "", arm or "", request_ts, score)
    return True


def _add_to_sums(
    session: Session, request_id: str, experiment: str, arm: str, request_ts: float, score: float
) -> None:
    """The request's count and sum of scores, and its arm's hour: the mean it adds, in place
    of the mean it had."""
    before = session.execute(
        "SELECT n, total FROM feedback_requests WHERE request_id = ?", (request_id,)
    )
    n, total = (int(before[0][0]), float(before[0][1])) if before else (0, 0.0)
    old_mean = total / n if n else 0.0
    new_mean = (total + score) / (n + 1)
    session.execute(
        "INSERT INTO feedback_requests (request_id, experiment, arm, request_ts, n, total) "
        "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (request_id) DO UPDATE SET "
        "n = feedback_requests.n + 1, total = feedback_requests.total + excluded.total",
        (request_id, experiment, arm, request_ts, score),
    )
    session.execute(
        "INSERT INTO feedback_hourly (experiment, bucket, arm, requests, mean_sum, "
        "mean_squares) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (experiment, bucket, arm) DO "
        "UPDATE SET requests = feedback_hourly.requests + excluded.requests, mean_sum = "
        "feedback_hourly.mean_sum + excluded.mean_sum, mean_squares = "
        "feedback_hourly.mean_squares + excluded.mean_squares",
        (experiment, math.floor(request_ts / HOUR) * HOUR, arm, 0 if n else 1,
         new_mean - old_mean, new_mean * new_mean - old_mean * old_mean),
    )  # fmt: skip


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
            "SELECT request_id, total / n FROM feedback_requests WHERE request_ts >= ?",
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
