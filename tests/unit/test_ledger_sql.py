"""The ledger's reads in SQL over hourly rollups, on SQLite and on a real PostgreSQL: exact
totals for windows that start inside an hour, rows shipped twice counted once, retention that
deletes rows but keeps their totals, and an older ledger file upgraded in place."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from llmops import LEDGER_COLUMNS, Ledger, build_report
from storage import Database, open_database

HOUR = 3600


def _db(url: str | None, tmp_path: Path) -> Database:
    return open_database(url, tmp_path / "ledger.sqlite")


def _row(index: int, ts: float, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": f"r{index}",
        "endpoint": "chat/completions",
        "stream": False,
        "ts": ts,
        "backend": ("a", "b")[index % 2],
        "key_id": f"key_{index % 3}",
        "key_name": f"app-{index % 3}",
        "team": "search",
        "status": 500 if index % 10 == 0 else 200,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost_usd": 0.001 * (1 + index % 2),
        "latency_ms": 100.0 + index,
        **fields,
    }


def _naive_totals(rows: list[dict[str, Any]], column: str, since: float) -> dict[Any, Any]:
    found: dict[Any, list[float]] = {}
    for row in rows:
        if row["ts"] >= since:
            sums = found.setdefault(row[column], [0, 0, 0.0, 0])
            sums[0] += 1
            sums[1] += row["prompt_tokens"] + row["completion_tokens"]
            sums[2] += row["cost_usd"]
            sums[3] += row["status"] >= 400
    return {
        name: (n, tokens, round(cost, 9), errors)
        for name, (n, tokens, cost, errors) in found.items()
    }


def test_totals_are_exact_for_any_window_and_count_a_row_once(
    database_url: str | None, tmp_path: Path
) -> None:
    now = time.time()
    rows = [_row(i, now - i * 97.0) for i in range(600)]  # 16 hours, windows mid-hour
    ledger = Ledger(_db(database_url, tmp_path))
    for row in rows:
        ledger.add(row)
    assert ledger.flush()
    # Delivery is at least once: the same rows again are no new rows and no new totals.
    assert ledger.insert([tuple(r.get(c) for c in LEDGER_COLUMNS) for r in rows[:50]]) == 0
    for since in (now - 3 * HOUR - 1234.5, now - 10 * HOUR, 0.0):
        for group_by, column in (("backend", "backend"), ("key", "key_id")):
            got = {
                t[group_by]: (t["requests"], t["prompt_tokens"] + t["completion_tokens"],
                              round(t["cost_usd"], 9), t["errors"])
                for t in ledger.totals(group_by, since)
            }  # fmt: skip
            assert got == _naive_totals(rows, column, since), (since, group_by)
    by_key = {t["key"]: t for t in ledger.totals("key", now - HOUR)}
    assert by_key["key_1"]["key_name"] == "app-1" and by_key["key_1"]["team"] == "search"
    errors = ledger.recent_errors(now - 5 * HOUR, limit=3)
    assert [e["request_id"] for e in errors] == ["r0", "r10", "r20"]
    ledger.close()


def test_series_per_hour_and_per_minute_add_up_to_the_totals(
    database_url: str | None, tmp_path: Path
) -> None:
    now = time.time()
    rows = [_row(i, now - i * 13.0) for i in range(500)]  # under two hours
    ledger = Ledger(_db(database_url, tmp_path))
    for row in rows:
        ledger.add(row)
    assert ledger.flush()
    for bucket_s, since in ((HOUR, now - 3 * HOUR), (60, now - 3 * HOUR)):
        points = ledger.series("backend", since, bucket_s)
        assert sum(p["requests"] for p in points) == 500
        assert all(p["bucket"] % bucket_s == 0 for p in points)
        per_b = sum(p["cost_usd"] for p in points if p["backend"] == "b")
        assert per_b == pytest.approx(sum(r["cost_usd"] for r in rows if r["backend"] == "b"))
    ledger.close()


def test_retention_deletes_old_rows_and_keeps_their_totals(
    database_url: str | None, tmp_path: Path
) -> None:
    now = time.time()
    ledger = Ledger(_db(database_url, tmp_path), retention_days=1)
    old = [_row(i, now - 3 * 86400 - i) for i in range(40)]
    new = [_row(100 + i, now - i) for i in range(10)]
    for row in (*old, *new):
        ledger.add(row)
    assert ledger.flush()  # the writer purges as it goes (at most every 10 minutes)
    assert [r["request_id"] for r in ledger.rows()] == [f"r{100 + i}" for i in range(9, -1, -1)]
    assert not ledger.add_feedback("r1", 1.0, None, None)  # its row is gone
    # A week of usage still counts the deleted rows: the rollups keep them.
    assert sum(t["requests"] for t in ledger.totals("backend", now - 7 * 86400)) == 50
    assert ledger.add_feedback("r100", 1.0, None, None)
    assert ledger.purge(now + 2 * 86400) == 10  # two days on: the rest, and its feedback
    assert ledger.rows() == [] and ledger.feedback_scores() == {}
    assert sum(t["requests"] for t in ledger.totals("backend", now - 7 * 86400)) == 50
    ledger.close()


def test_the_report_reads_sums_histograms_and_scores(
    database_url: str | None, tmp_path: Path
) -> None:
    now = time.time()
    ledger = Ledger(_db(database_url, tmp_path))
    for index in range(1200):  # beyond the bootstrap's reach: the normal approximation
        arm = ("a", "b")[index % 2]
        ledger.add(
            _row(index, now - index, experiment="x", arm=arm, latency_ms=100.0 * (1 + index % 2))
        )
    assert ledger.flush()
    for index in range(1200):
        assert ledger.add_feedback(
            f"r{index}", 0.9 if index % 2 else 0.5 + (index % 7) / 100, None, None
        )
    # A second score for a request replaces its mean, not adds a request.
    assert ledger.add_feedback("r1", 0.5, None, None)
    assert ledger.feedback_scores()["r1"] == pytest.approx(0.7)
    report = build_report(ledger, "x")
    arms = {a["arm"]: a for a in report["arms"]}
    assert arms["a"]["requests"] == arms["b"]["requests"] == 600
    assert arms["a"]["latency_p50_ms"] == pytest.approx(100, rel=0.02)
    assert arms["b"]["latency_p95_ms"] == pytest.approx(200, rel=0.02)
    assert report["comparison"]["best"] == "b" and "Welch" in report["comparison"]["test"]
    assert arms["b"]["feedback_n"] == 600
    assert arms["b"]["feedback_mean"] == pytest.approx((599 * 0.9 + 0.7) / 600)
    assert {c["key"] for c in report["callers"]} == {"app-0", "app-1", "app-2"}
    ledger.close()


def test_an_older_ledger_file_is_upgraded_in_place(tmp_path: Path) -> None:
    """A ledger as the gateway wrote it before rollups: one table, no migrations table."""
    path = tmp_path / "old.sqlite"
    old_columns = [c for c in LEDGER_COLUMNS if c != "template"]  # and one column short
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE requests ({', '.join(old_columns)}, PRIMARY KEY (request_id, ts))")
    db.execute("CREATE TABLE feedback (request_id, ts, score REAL, label, comment)")
    now = time.time()
    marks = ", ".join("?" * len(old_columns))
    for index in range(30):
        row = _row(index, now - index * 600)
        db.execute(
            f"INSERT INTO requests ({', '.join(old_columns)}) VALUES ({marks})",
            [row.get(c) for c in old_columns],
        )
    db.execute("INSERT INTO feedback VALUES ('r3', ?, 1.0, NULL, NULL)", (now,))
    db.commit()
    db.close()
    ledger = Ledger(path)
    assert sum(t["requests"] for t in ledger.totals("backend")) == 30
    assert ledger.feedback_scores() == {"r3": 1.0}
    with sqlite3.connect(path) as check:
        steps = check.execute("SELECT version FROM schema_migrations WHERE component = 'ledger'")
        assert [v for (v,) in steps] == [1, 2, 3, 4]
    ledger.close()
    Ledger(path).close()  # opening again applies nothing twice


def test_the_report_from_a_time_inside_an_hour_counts_only_what_came_after(
    database_url: str | None, tmp_path: Path
) -> None:
    """The CLI's `--since`: sums, feedback and latency of the window only, to the second,
    however much of the same experiment came earlier in that hour."""
    hour = (time.time() // HOUR - 1) * HOUR
    ledger = Ledger(_db(database_url, tmp_path))
    for index in range(40):  # 20 before the report's start, 20 after: same hour
        ts = hour + 600 + index * 30
        arm = ("a", "b")[index % 2]
        slow = 1000.0 if index < 20 else 100.0 * (1 + index % 2)
        ledger.add(_row(index, ts, experiment="x", arm=arm, latency_ms=slow))
    assert ledger.flush()
    for index in range(40):
        assert ledger.add_feedback(f"r{index}", 0.0 if index < 20 else 1.0 + index % 2, None, None)
    report = build_report(ledger, "x", since=hour + 600 + 20 * 30)
    arms = {a["arm"]: a for a in report["arms"]}
    assert arms["a"]["requests"] == arms["a"]["feedback_n"] == 10
    assert arms["b"]["feedback_mean"] == pytest.approx(2.0) and arms["a"]["feedback_mean"] == 1.0
    assert arms["a"]["latency_p95_ms"] == pytest.approx(100, rel=0.02)
    assert arms["b"]["latency_p50_ms"] == pytest.approx(200, rel=0.02)
    ledger.close()
