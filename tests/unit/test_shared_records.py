"""One ledger for a cluster: ingress replicas ship records to one owner, spool what it cannot
take and ship that first once it answers. The owner here is real (SQLite ledger, log file);
only the carrier between them is in process. On real Serve: tests/integration/
test_cluster_records.py."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmops import (
    LEDGER_COLUMNS,
    Ledger,
    LocalRecordsTransport,
    RecordsOwner,
    RecordsUnavailable,
    Redactor,
    RequestLog,
    RequestRecord,
    SharedRecords,
    log_entry,
)


class Carrier(LocalRecordsTransport):
    """The owner in process, with a switch that makes it unreachable like a stopped replica."""

    def __init__(self, owner: RecordsOwner) -> None:
        super().__init__(owner)
        self.down = False
        self.calls: list[str] = []

    def call(self, op: str, payload: dict[str, Any]) -> Any:
        self.calls.append(op)
        if self.down:
            raise ConnectionError("owner stopped")
        return super().call(op, payload)


def _owner(tmp_path: Path) -> RecordsOwner:
    return RecordsOwner(
        Ledger(tmp_path / "owner" / "ledger.sqlite"),
        RequestLog(tmp_path / "owner" / "requests.jsonl", 2**20, 1),
    )


def _replica(carrier: Carrier, spool: Path, bodies: bool = False) -> SharedRecords:
    redact = Redactor((r"secret-\w+",))
    return SharedRecords(
        carrier,
        spool,
        ledger=True,
        log_entry=lambda record: log_entry(record, bodies, redact),
    )


def _record(request_id: str, cost: float = 0.01, **fields: Any) -> RequestRecord:
    record = RequestRecord(request_id, "chat/completions", False, backend="a", **fields)
    record.cost_usd = cost
    record.prompt_tokens, record.completion_tokens = 3, 2
    return record


def _log_ids(owner: RecordsOwner) -> list[str]:
    assert owner.request_log is not None
    lines = owner.request_log.path.read_text().splitlines()
    return [orjson.loads(line)["request_id"] for line in lines]


def test_two_replicas_write_one_ledger_and_read_the_same_totals(tmp_path: Path) -> None:
    owner = _owner(tmp_path)
    carrier = Carrier(owner)
    first = _replica(carrier, tmp_path / "host-a" / "spool.sqlite")
    second = _replica(carrier, tmp_path / "host-b" / "spool.sqlite")
    for index in range(5):
        first.write(_record(f"a{index}"))
        second.write(_record(f"b{index}", cost=0.02))
    assert first.flush() and second.flush()
    for replica in (first, second):
        (total,) = replica.totals("backend")
        assert total["requests"] == 10 and total["cost_usd"] == pytest.approx(0.15)
    assert sorted(_log_ids(owner)) == sorted(
        [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]
    )
    assert first.add_feedback("b3", 1.0, "good", None)  # a request another replica answered
    assert second.feedback_scores() == {"b3": 1.0}
    assert not second.add_feedback("nope", 1.0, None, None)
    first.close(), second.close(), owner.close()


def test_records_the_owner_cannot_take_are_spooled_then_shipped_oldest_first(
    tmp_path: Path,
) -> None:
    owner = _owner(tmp_path)
    carrier = Carrier(owner)
    replica = _replica(carrier, tmp_path / "spool.sqlite")
    replica.write(_record("before"))
    assert replica.flush()
    carrier.down = True
    for index in range(3):
        replica.write(_record(f"down{index}"))
    assert replica.flush()
    assert replica.spooled == 3 and len(owner.ledger.rows()) == 1  # type: ignore[union-attr]
    with pytest.raises(RecordsUnavailable, match="ConnectionError"):
        replica.totals("backend")  # a read says the owner is away, never a stale answer
    carrier.down = False
    replica.write(_record("after"))
    assert replica.flush()
    assert replica.spooled == 0
    assert _log_ids(owner) == ["before", "down0", "down1", "down2", "after"]
    (total,) = replica.totals("backend")
    assert total["requests"] == 5
    replica.close(), owner.close()


def test_a_replica_stopping_while_the_owner_is_gone_loses_nothing(tmp_path: Path) -> None:
    owner = _owner(tmp_path)
    carrier = Carrier(owner)
    spool = tmp_path / "spool.sqlite"
    replica = _replica(carrier, spool)
    carrier.down = True  # the owner stopped first
    for index in range(4):
        replica.write(_record(f"late{index}"))
    replica.close()  # writes what is queued: to the spool
    with sqlite3.connect(spool) as db:
        assert db.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 4
    carrier.down = False  # the next deployment: its replica ships the spool when it starts
    restarted = _replica(carrier, spool)
    assert restarted.flush()
    assert restarted.spooled == 0
    assert [row["request_id"] for row in owner.ledger.rows()] == [  # type: ignore[union-attr]
        f"late{index}" for index in range(4)
    ]
    restarted.close(), owner.close()


def test_a_batch_shipped_twice_is_one_ledger_row(tmp_path: Path) -> None:
    """A call that timed out may still have landed; the spool then ships it again."""
    owner = _owner(tmp_path)
    record = _record("twice")
    row = [getattr(record, column) for column in LEDGER_COLUMNS]
    owner.call("append", {"records": [(row, None)]})
    owner.call("append", {"records": [(row, None)]})
    assert [r["request_id"] for r in owner.ledger.rows()] == ["twice"]  # type: ignore[union-attr]
    owner.close()


def test_bodies_are_redacted_before_they_leave_the_replica(tmp_path: Path) -> None:
    owner = _owner(tmp_path)
    carrier = Carrier(owner)
    replica = _replica(carrier, tmp_path / "spool.sqlite", bodies=True)
    record = _record("r", request_body={"messages": [{"role": "user", "content": "secret-abc"}]})
    record.response_text = "the secret-xyz is out"
    carrier.down = True
    replica.write(record)
    replica.close()
    spooled = b"".join(path.read_bytes() for path in tmp_path.glob("spool.sqlite*"))
    assert b"[REDACTED]" in spooled
    assert b"secret-abc" not in spooled and b"secret-xyz" not in spooled
    carrier.down = False
    _replica(carrier, tmp_path / "spool.sqlite", bodies=True).close()  # ships the spool
    assert owner.request_log is not None
    (line,) = owner.request_log.path.read_text().splitlines()
    assert "secret" not in line and orjson.loads(line)["response"] == "the [REDACTED] is out"
    owner.close()


def test_unknown_operations_and_a_disabled_ledger_are_clear_errors(tmp_path: Path) -> None:
    owner = RecordsOwner(None, RequestLog(tmp_path / "requests.jsonl", 2**20, 1))
    assert owner.call("append", {"records": [(None, '{"request_id": "x"}')]}) == 1
    with pytest.raises(RecordsUnavailable, match="disabled"):
        owner.call("totals", {"group_by": "backend"})
    owner.ledger = Ledger(tmp_path / "l.sqlite")
    with pytest.raises(ValueError, match="unknown records operation"):
        owner.call("drop_table", {})
    owner.close()


def test_a_spool_another_replica_left_is_shipped_without_new_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redeploy starts the new replica before the old one stops: what the old one spools
    on its way out is shipped by the new one's spool check, not only by its next request."""
    import llmops._shared as shared

    monkeypatch.setattr(shared, "SPOOL_CHECK_S", 0.1)
    owner = _owner(tmp_path)
    spool = tmp_path / "spool.sqlite"
    new = _replica(Carrier(owner), spool)
    stopped_owner = Carrier(owner)
    stopped_owner.down = True
    old = _replica(stopped_owner, spool)
    old.write(_record("last-of-the-old"))
    old.close()  # spooled on the way out
    deadline = time.monotonic() + 5
    while new.spooled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert new.flush() and new.spooled == 0
    assert _log_ids(owner) == ["last-of-the-old"]
    new.close(), owner.close()
