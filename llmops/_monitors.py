"""Drift monitors: a labelled set (the `gateway eval` format) run on a schedule against chosen
backends or routes, each run's score with its 95% interval kept, and an alert when a score
leaves the interval of its baseline (the first runs); and cheap signals of live answers
(refusals, empty answers) for the metrics. The runs are kept in the ledger's database."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from pydantic import Field, model_validator

from llmops._config import Strict
from llmops._evals import SCORERS
from storage import Database, Dialect, Migration, Session, SqliteDatabase, migrate

# Phrases of an answer that refuses or hedges instead of answering (lower case).
REFUSALS = (
    "as an ai language model",
    "as an ai model",
    "i cannot help with",
    "i can't help with",
    "i cannot assist",
    "i can't assist",
    "i'm sorry, but i can",
    "i am sorry, but i can",
    "i am unable to",
    "i'm unable to",
    "i cannot provide",
    "i can't provide",
)
BASELINE, OK, ALERT = "baseline", "ok", "alert"


class MonitorConfig(Strict):
    """One labelled set, run every `interval_s` against each of `targets`."""

    dataset: str = Field(
        description="JSONL of `messages` and `expected` (the `gateway eval` format), relative "
        "to the project folder."
    )
    targets: tuple[str, ...] = Field(
        min_length=1, description="Backends or routes the set is sent to, each scored apart."
    )
    metric: str = Field(default="exact", description="exact | contains | json_fields.")
    interval_s: float = Field(default=3600.0, ge=1.0, description="Seconds between runs.")
    limit: int | None = Field(default=None, ge=1, description="The first N examples only.")
    max_tokens: int = Field(default=128, ge=1, description="Output limit of each request.")
    baseline_runs: int = Field(
        default=1,
        ge=1,
        description="Runs that make the baseline: their mean score and the mean of their "
        "intervals; a later run whose score leaves that interval is an alert.",
    )

    @model_validator(mode="after")
    def _known_metric(self) -> Self:
        if self.metric not in SCORERS:
            raise ValueError(f"metric must be one of {', '.join(SCORERS)}")
        return self


class MonitorsConfig(Strict):
    """Scheduled evaluations (`checks`) and live-answer signals (always on)."""

    checks: dict[str, MonitorConfig] = Field(
        default_factory=dict, description="Name -> a labelled set run on a schedule."
    )
    api_key_env: str | None = Field(
        default=None,
        description="Variable holding the monitor key the runs are made with (and charged "
        "to) where keys are on (`auth.keys`); unset there: runs are refused, and say so.",
    )
    refusal_phrases: tuple[str, ...] = Field(
        default=REFUSALS,
        description="Lower-case phrases that mark a live answer as a refusal "
        "(`gateway_answer_signals{signal=refusal}`).",
    )


@dataclass(frozen=True, slots=True)
class MonitorRun:
    """One run of one monitor on one target."""

    monitor: str
    target: str
    ts: float
    n: int
    errors: int
    score: float
    low: float
    high: float
    baseline: float | None  # the baseline's score and interval (None: this run is in it)
    baseline_low: float | None
    baseline_high: float | None
    state: str  # "baseline", "ok" or "alert"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judged(
    monitor: str,
    target: str,
    n: int,
    errors: int,
    score: float,
    interval: tuple[float, float],
    earlier: Sequence[MonitorRun],
    baseline_runs: int,
) -> MonitorRun:
    """A run's state against the baseline made of the first `baseline_runs` of `earlier`."""
    base = list(earlier[:baseline_runs])
    if len(base) < baseline_runs:
        return MonitorRun(monitor, target, time.time(), n, errors, score, *interval,
                          None, None, None, BASELINE)  # fmt: skip
    mean = sum(r.score for r in base) / len(base)
    low = sum(r.low for r in base) / len(base)
    high = sum(r.high for r in base) / len(base)
    # Wilson's interval of a perfect score ends a rounding error below 1: not a drift.
    state = OK if low - 1e-9 <= score <= high + 1e-9 else ALERT
    return MonitorRun(monitor, target, time.time(), n, errors, score, *interval,
                      mean, low, high, state)  # fmt: skip


def answer_signals(text: str, phrases: Sequence[str]) -> tuple[bool, bool]:
    """(empty, refusal) of an answer's text."""
    stripped = text.strip()
    if not stripped:
        return True, False
    lowered = stripped.lower()
    return False, any(phrase in lowered for phrase in phrases)


def _table(session: Session) -> None:
    if session.dialect == Dialect.SQLITE:
        key = "id INTEGER PRIMARY KEY AUTOINCREMENT"
    else:
        key = "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    real, big = session.dialect.real, session.dialect.bigint
    session.execute(
        f"CREATE TABLE IF NOT EXISTS monitor_runs ({key}, monitor TEXT NOT NULL, "
        f"target TEXT NOT NULL, ts {real} NOT NULL, n {big}, errors {big}, score {real}, "
        f"low {real}, high {real}, baseline {real}, baseline_low {real}, "
        f"baseline_high {real}, state TEXT)"
    )
    session.execute(
        "CREATE INDEX IF NOT EXISTS monitor_runs_by ON monitor_runs (monitor, target, id)"
    )


MIGRATIONS = (Migration(1, "drift monitor runs", _table),)
_FIELDS = ("monitor", "target", "ts", "n", "errors", "score", "low", "high", "baseline",
           "baseline_low", "baseline_high", "state")  # fmt: skip


class MonitorStore:
    """The runs, in the ledger's SQLite file or the cluster's PostgreSQL (blocking)."""

    def __init__(self, db: Database | Path) -> None:
        self.db: Database = db if isinstance(db, Database) else SqliteDatabase(db)
        migrate(self.db, "monitors", MIGRATIONS)

    def add(self, run: MonitorRun) -> None:
        values = tuple(getattr(run, name) for name in _FIELDS)
        marks = ", ".join("?" for _ in _FIELDS)
        with self.db.transaction() as session:
            session.execute(
                f"INSERT INTO monitor_runs ({', '.join(_FIELDS)}) VALUES ({marks})", values
            )

    def first(self, monitor: str, target: str, count: int) -> list[MonitorRun]:
        """The first `count` runs of `monitor` on `target`: its baseline."""
        with self.db.transaction(write=False) as session:
            found = session.execute(
                f"SELECT {', '.join(_FIELDS)} FROM monitor_runs WHERE monitor = ? AND "
                "target = ? ORDER BY id LIMIT ?",
                (monitor, target, count),
            )
        return [MonitorRun(*row) for row in found]

    def runs(self, monitor: str | None = None, limit: int = 200) -> list[MonitorRun]:
        """Runs oldest first: of one monitor, or of all; the newest `limit` of each target."""
        where, args = ("WHERE monitor = ?", (monitor,)) if monitor else ("", ())
        with self.db.transaction(write=False) as session:
            found = session.execute(
                f"SELECT {', '.join(_FIELDS)} FROM monitor_runs {where} ORDER BY id", args
            )
        runs = [MonitorRun(*row) for row in found]
        kept: dict[tuple[str, str], list[MonitorRun]] = {}
        for run in runs:
            kept.setdefault((run.monitor, run.target), []).append(run)
        return [run for group in kept.values() for run in group[-limit:]]

    def close(self) -> None:
        self.db.close()
