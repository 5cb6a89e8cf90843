"""Drift monitors over in-process fakes: a labelled set run through the gateway's own pipeline,
judged against its baseline, an alert once the fake's answers change; the runs kept in the
ledger's database (SQLite and PostgreSQL); live-answer signals on the records; config
mistakes with their paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig
from gateway.core.build import build_gateway
from llmops import MonitorRun, MonitorStore, answer_signals, judged
from storage import open_database
from tests.helpers import fake_backends

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
REFUSAL = "As an AI language model, I cannot help with that."


def dataset(folder: Path, count: int = 10) -> Path:
    path = folder / "capitals.jsonl"
    lines = [json.dumps({"messages": QUESTION, "expected": "Paris"}) for _ in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp_path: Path, **check: Any) -> dict[str, Any]:
    return {
        "backends": {
            # Answers well for one run of 10, then like a model that changed.
            "steady": {"kind": "fake", "model": "steady-1", "reply": "Paris is the capital.",
                       "drift_after_calls": 10, "drift_reply": REFUSAL},
            "empty": {"kind": "fake", "model": "empty-1", "reply": " "},
        },
        "routes": {"capitals": {"candidates": ["steady"]}},
        "monitors": {"checks": {"capitals": {
            "dataset": str(dataset(tmp_path)), "targets": ["capitals"], "metric": "contains",
            "interval_s": 60, **check}}},
        "ledger": {"path": str(tmp_path / "ledger.sqlite")},
        "request_log": {"enabled": False},
    }  # fmt: skip


async def test_a_changed_backend_raises_an_alert(tmp_path: Path) -> None:
    loaded = GatewayConfig.load(config(tmp_path))
    gateway, ledger = build_gateway(loaded, fake_backends(loaded), tmp_path)
    assert gateway.monitors is not None and ledger is not None
    (first,) = await gateway.monitors.run("capitals")
    (second,) = await gateway.monitors.run("capitals")
    (third,) = await gateway.monitors.run("capitals")
    assert (first.state, first.score, first.n) == ("baseline", 1.0, 10)
    assert first.low < 0.8 and first.high == pytest.approx(1.0)  # Wilson's, of 10 out of 10
    assert (second.state, second.score) == ("alert", 0.0)
    assert (second.baseline_low, second.baseline_high) == (first.low, first.high)
    assert third.state == "alert"
    described = gateway.monitors.describe()["capitals"]["targets"]["capitals"]
    assert described["state"] == "alert" and len(described["history"]) == 3
    await gateway.aclose()
    rows = [r for r in ledger.rows() if r["request_id"].startswith("monitor-")]
    assert len(rows) == 30 and {r["route"] for r in rows} == {"capitals"}
    assert [r["answer_signal"] for r in rows].count("refusal") == 20
    assert {r["finish_reason"] for r in rows} == {"stop"}


async def test_a_run_within_the_baseline_is_ok(tmp_path: Path) -> None:
    loaded = GatewayConfig.load(config(tmp_path, baseline_runs=1))
    backends = fake_backends(loaded)
    gateway, _ = build_gateway(loaded, backends, tmp_path)
    assert gateway.monitors is not None
    await gateway.monitors.run("capitals")
    backends["steady"].calls.clear()  # the same model again: no drift yet
    (again,) = await gateway.monitors.run("capitals")
    assert (again.state, again.score) == ("ok", 1.0)
    await gateway.aclose()


def test_a_keyed_gateway_needs_the_monitor_key(tmp_path: Path) -> None:
    from gateway.core.monitoring import Monitors
    from llmops import MonitorsConfig

    checks = MonitorsConfig.model_validate(config(tmp_path)["monitors"])
    monitors = Monitors(checks, tmp_path, lambda: MonitorStore(tmp_path / "m.sqlite"), keyed=True)
    with pytest.raises(RuntimeError, match=r"monitors\.api_key_env"):
        monitors._auth()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_runs_are_kept_in_the_ledgers_database(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    if database == "postgres":
        url = request.getfixturevalue("postgres_url")
        db = open_database(url, tmp_path / "unused.sqlite")
    else:
        db = open_database(None, tmp_path / "ledger.sqlite")
    store = MonitorStore(db)
    earlier: list[MonitorRun] = []
    for score in (0.9, 0.85, 0.2):
        run = judged("m", "t", 20, 0, score, (score - 0.1, score + 0.1), earlier, 2)
        store.add(run)
        earlier = store.first("m", "t", 2)
    states = [r.state for r in store.runs("m")]
    assert states == ["baseline", "baseline", "alert"]
    (last,) = store.runs("m", limit=1)
    assert last.baseline == pytest.approx(0.875) and last.baseline_low == pytest.approx(0.775)
    store.close()


def test_live_answer_signals() -> None:
    phrases = ("as an ai language model", "i cannot help with")
    assert answer_signals("  \n", phrases) == (True, False)
    assert answer_signals(REFUSAL, phrases) == (False, True)
    assert answer_signals("Paris.", phrases) == (False, False)


@pytest.mark.parametrize(
    ("check", "message"),
    [({"targets": ["nowhere"]}, "monitors.checks.capitals.targets: unknown route or backend"),
     ({"dataset": "missing.jsonl"}, "monitors.checks.capitals.dataset: no file at"),
     ({"metric": "bleu"}, "metric must be one of")],
)  # fmt: skip
def test_config_mistakes_name_their_path(
    tmp_path: Path, check: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        GatewayConfig.load(config(tmp_path, **check))
