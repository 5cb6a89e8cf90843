"""Cost ledger, request log, redaction, costing and stream usage, without Ray."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from gateway.core.attempts import Feedback
from gateway.core.relay import ChatWire, relay, take_usage
from gateway.core.resilience import Limits
from llmops import (
    DEFAULT_REDACTIONS,
    LEDGER_COLUMNS,
    Accounting,
    Ledger,
    Price,
    Redactor,
    RequestLog,
    RequestRecord,
    key_id,
    parse_since,
)


def test_ledger_is_wal_and_groups_totals(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    assert ledger.journal_mode == "wal"
    now = time.time()
    rows = [
        {"ts": now - 7200, "request_id": "old", "backend": "a", "cost_usd": 5.0, "status": 200},
        {"ts": now, "request_id": "r1", "backend": "a", "route": "auto", "prompt_tokens": 10,
         "completion_tokens": 5, "cost_usd": 0.25, "status": 200},
        {"ts": now, "request_id": "r2", "backend": "b", "route": "auto", "prompt_tokens": 1,
         "completion_tokens": 1, "cost_usd": 0.5, "status": 502},
    ]  # fmt: skip
    for row in rows:
        ledger.add(row)
    assert ledger.flush()
    by_backend = {r["backend"]: r for r in ledger.totals("backend", since=now - 60)}
    assert by_backend["a"]["requests"] == 1 and by_backend["a"]["cost_usd"] == 0.25
    assert by_backend["a"]["prompt_tokens"] == 10 and by_backend["b"]["errors"] == 1
    (auto,) = ledger.totals("route", since=now - 60)
    assert auto["requests"] == 2 and auto["cost_usd"] == 0.75
    assert sum(r["requests"] for r in ledger.totals("backend")) == 3
    ledger.close()
    with sqlite3.connect(tmp_path / "l.sqlite") as db:  # durable, readable by other tools
        assert db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 3


def test_parse_since() -> None:
    assert abs((parse_since("24h") or 0) - (time.time() - 86400)) < 2
    assert parse_since("1700000000") == 1700000000.0
    assert parse_since("2026-01-01T00:00:00+00:00") == 1767225600.0
    assert parse_since(None) is None
    with pytest.raises(ValueError, match="since"):
        parse_since("yesterday")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("mail me at jane.doe@example.com please", "jane.doe@example.com"),
        ("my key is sk-proj-abcdefghijklmnop1234", "sk-proj-abcdefghijklmnop1234"),
        ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
    ],
)
def test_redaction_removes_planted_secrets(text: str, secret: str) -> None:
    redacted = Redactor(DEFAULT_REDACTIONS)(text)
    assert secret not in redacted and "[REDACTED]" in redacted


def test_redaction_leaves_ordinary_text() -> None:
    text = "The capital of France is Paris; 2 + 2 = 4 (since 1999)."
    assert Redactor(DEFAULT_REDACTIONS)(text) == text


def test_request_log_rotates(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "r.jsonl", max_bytes=2048, backups=2)
    for index in range(100):
        log.write(RequestRecord(f"r{index}", "chat/completions", False, error_code="x" * 100))
    log.flush()
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    last = (tmp_path / "r.jsonl").read_text().splitlines()[-1]
    assert orjson.loads(last)["request_id"] == "r99"


def test_key_id_is_stable_and_not_the_key() -> None:
    assert key_id("Bearer sk-secret-1") == key_id("Bearer sk-secret-1")
    assert key_id("Bearer sk-secret-1") != key_id("Bearer sk-secret-2")
    assert "secret" not in (key_id("Bearer sk-secret-1") or "")
    assert key_id(None) is None


def _accounting(tmp_path: Path, bodies: bool = True) -> tuple[Accounting, Ledger, RequestLog]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    log = RequestLog(
        tmp_path / "requests.jsonl", 2**20, 1, bodies=bodies, redact=Redactor(DEFAULT_REDACTIONS)
    )
    return Accounting({"fake": Price(2.0, 8.0)}, [ledger, log]), ledger, log


def test_ledger_columns_are_the_record_fields_and_old_ledgers_gain_new_ones(
    tmp_path: Path,
) -> None:
    record_fields = set(RequestRecord.__dataclass_fields__)
    assert set(LEDGER_COLUMNS) <= record_fields and "request_id" in LEDGER_COLUMNS
    assert "request_body" not in LEDGER_COLUMNS  # bodies go to the request log only
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # a ledger from before `error_code` was a column
        db.execute("CREATE TABLE requests (ts, request_id, status, PRIMARY KEY (request_id, ts))")
    ledger = Ledger(path)
    ledger.write(RequestRecord("r1", "chat/completions", False, status=502, error_code="boom"))
    assert ledger.flush()
    (row,) = ledger.rows()
    assert (row["status"], row["error_code"]) == (502, "boom")
    ledger.close()


def test_finish_costs_from_actual_usage_and_logs_redacted_bodies(tmp_path: Path) -> None:
    accounting, ledger, log = _accounting(tmp_path)
    trace = RequestRecord(
        request_id="req-1", endpoint="chat/completions", stream=False, key_id="key-1"
    )
    trace.backend, trace.route, trace.attempts = "fake", "auto", ["broken", "fake"]
    trace.request_body = {"messages": [{"role": "user", "content": "I am bob@corp.example"}]}
    trace.response_text = "noted, sk-live-0123456789abcdefXYZ"
    trace.take_usage({"prompt_tokens": 1000, "completion_tokens": 500})
    accounting.finish(trace)
    ledger.flush()
    (row,) = ledger.rows()
    assert row["cost_usd"] == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert row["usage_source"] == "upstream"
    log.flush()
    entry = orjson.loads((tmp_path / "requests.jsonl").read_text().splitlines()[-1])
    assert entry["request_id"] == "req-1" and entry["fallback_chain"] == ["broken", "fake"]
    assert entry["api_key_id"] == "key-1" and entry["cost_usd"] == row["cost_usd"]
    logged = orjson.dumps(entry).decode()
    assert "bob@corp.example" not in logged and "sk-live-0123456789abcdef" not in logged
    assert "[REDACTED]" in entry["request"]["messages"][0]["content"]
    accounting.close()


def test_finish_estimates_when_upstream_reports_no_usage(tmp_path: Path) -> None:
    accounting, ledger, _ = _accounting(tmp_path, bodies=False)
    trace = RequestRecord(request_id="req-2", endpoint="chat/completions", stream=True)
    trace.backend, trace.estimated_prompt_tokens, trace.completion_tokens = "fake", 40, 10
    accounting.finish(trace)
    ledger.flush()
    (row,) = ledger.rows()
    assert row["usage_source"] == "estimated" and row["prompt_tokens"] == 40
    assert row["cost_usd"] == pytest.approx((40 * 2.0 + 10 * 8.0) / 1e6)
    accounting.close()


USAGE_CHUNK = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'
TOKEN = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}'


def test_take_usage_strips_only_the_usage_chunk() -> None:
    events = TOKEN + b"\n\n" + USAGE_CHUNK + b"\n\ndata: [DONE]\n\n"
    usage, kept = take_usage(events, strip=True)
    assert usage == {"prompt_tokens": 3, "completion_tokens": 2}
    assert kept == TOKEN + b"\n\ndata: [DONE]\n\n"
    assert take_usage(events, strip=False)[1] == events


async def test_relay_finds_usage_split_across_chunks_and_hides_it() -> None:
    stream = TOKEN + b"\n\n" + USAGE_CHUNK + b"\n\ndata: [DONE]\n\n"
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]  # cut mid-event

    async def rest() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    trace = RequestRecord(request_id="r", endpoint="chat/completions", stream=True)
    attempt = Feedback().attempt("fake", trace, streamed=True)
    events = relay(attempt, rest(), Limits(10, 10), trace, ChatWire(strip_usage=True))
    out = b"".join([chunk async for chunk in events])
    assert out == TOKEN + b"\n\ndata: [DONE]\n\n"  # whole events, usage hidden
    assert trace.usage_source == "upstream" and attempt.outcome.succeeded
    assert (trace.prompt_tokens, trace.completion_tokens) == (3, 2)
    assert attempt.outcome.tokens == 2 and trace.attempts == ["fake"]


async def test_feedback_attaches_to_a_known_request_only(tmp_path: Path) -> None:
    from gateway.http.usage import record_feedback

    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.add({"ts": time.time(), "request_id": "req-9", "backend": "a", "status": 200})
    ok = await record_feedback(
        orjson.dumps({"request_id": "req-9", "score": 4, "label": "good"}), ledger
    )
    assert ok.status_code == 200 and orjson.loads(ok.body)["recorded"] is True
    assert ledger.feedback("req-9")[0]["score"] == 4.0
    unknown = await record_feedback(orjson.dumps({"request_id": "nope", "score": 1}), ledger)
    assert unknown.status_code == 404
    assert orjson.loads(unknown.body)["error"]["code"] == "request_not_found"
    for bad, param in (
        ({"score": 1}, "request_id"),
        ({"request_id": "req-9", "score": "5"}, "score"),
        ({"request_id": "req-9", "score": True}, "score"),
    ):
        response = await record_feedback(orjson.dumps(bad), ledger)
        assert response.status_code == 400
        assert orjson.loads(response.body)["error"]["param"] == param
    ledger.close()


def test_the_request_log_rotates_daily_and_deletes_old_files(tmp_path: Path) -> None:
    """Rotation by age (as logrotate's daily) and expiry (its maxage), not only by size."""
    path = tmp_path / "r.jsonl"
    stale = tmp_path / "r.jsonl.2"
    stale.write_text('{"ts": 1}\n')
    month_ago = time.time() - 40 * 86400
    os.utime(stale, (month_ago, month_ago))
    day = 0.5 / 86400  # half a second, as days
    log = RequestLog(path, 2**20, 3, rotate_after_days=day, max_age_days=30)
    assert not stale.exists()  # older than 30 days: deleted when the log opens
    log.write_lines([orjson.dumps({"ts": time.time()}).decode()])
    time.sleep(0.6)
    log.write_lines([orjson.dumps({"ts": time.time()}).decode()])
    log.close()
    assert (tmp_path / "r.jsonl.1").read_text().count("\n") == 1  # the first line's file
    assert path.read_text().count("\n") == 1
