"""Offline evaluation: score answers against labels, summarise per candidate with a 95%
interval, render the result, and keep measured quality in the file the router reads.

The runner that sends the requests lives with the HTTP code (`gateway/cli/eval.py`); this
module only judges and summarises, so it is tested without a gateway.
"""

from __future__ import annotations

import html
import json
import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

METRICS = ("exact", "contains", "json_fields")
Z95 = 1.959964
BOOTSTRAP_RESAMPLES = 2000
JUDGE_RUBRIC = (
    "You grade an answer against a reference. Reply with one digit from 1 (wrong or "
    "unrelated) to 5 (fully correct and complete), nothing else.\n\n"
    "Question:\n{question}\n\nReference answer:\n{expected}\n\nAnswer to grade:\n{answer}"
)


def _normal(value: Any) -> str:
    return " ".join(str(value).split()).casefold()


def _first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a text (models wrap JSON in prose or code fences)."""
    start = text.find("{")
    while start != -1:
        depth = 0
        for index in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                try:
                    found = json.loads(text[start : index + 1])
                except ValueError:
                    break
                return found if isinstance(found, dict) else None
        start = text.find("{", start + 1)
    return None


def score_exact(answer: str, expected: Any) -> float:
    if not isinstance(expected, str):
        found = _first_json_object(answer)
        return float(found == expected)
    return float(_normal(answer) == _normal(expected))


def score_contains(answer: str, expected: Any) -> float:
    return float(_normal(expected) in _normal(answer))


def score_json_fields(answer: str, expected: Any) -> float:
    """The share of the expected object's fields the answer's JSON has right (numbers and
    text compared without case or spacing differences)."""
    if not isinstance(expected, Mapping) or not expected:
        raise ValueError("json_fields needs `expected` to be a JSON object")
    found = _first_json_object(answer) or {}
    right = sum(_normal(found.get(key)) == _normal(value) for key, value in expected.items())
    return right / len(expected)


SCORERS: dict[str, Callable[[str, Any], float]] = {
    "exact": score_exact,
    "contains": score_contains,
    "json_fields": score_json_fields,
}


def judge_score(reply: str) -> float | None:
    """A judge's 1-5 grade as 0..1 (None when it gave none)."""
    match = re.search(r"[1-5]", reply)
    return None if match is None else (int(match[0]) - 1) / 4


def wilson(successes: float, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def interval95(scores: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean score: Wilson's for pass/fail scores, a seeded percentile
    bootstrap for partial credit."""
    n = len(scores)
    if n == 0:
        return 0.0, 1.0
    if all(score in (0.0, 1.0) for score in scores):
        return wilson(sum(scores), n)
    rng = random.Random(seed)
    means = sorted(
        sum(rng.choice(scores) for _ in range(n)) / n for _ in range(BOOTSTRAP_RESAMPLES)
    )
    return means[int(0.025 * BOOTSTRAP_RESAMPLES)], means[int(0.975 * BOOTSTRAP_RESAMPLES) - 1]


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class CandidateResult:
    candidate: str
    backend: str | None  # what answered (the last answer's x-gateway-backend)
    n: int
    errors: int
    score: float
    interval: tuple[float, float]
    cost_per_request_usd: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


def summarise(
    candidate: str,
    scores: Sequence[float],
    latencies_ms: Sequence[float],
    costs_usd: Sequence[float],
    errors: int,
    backend: str | None,
) -> CandidateResult:
    """Errors score 0: a candidate that fails to answer is not better for it."""
    counted = [*scores, *([0.0] * errors)]
    return CandidateResult(
        candidate=candidate,
        backend=backend,
        n=len(counted),
        errors=errors,
        score=sum(counted) / len(counted) if counted else 0.0,
        interval=interval95(counted),
        cost_per_request_usd=sum(costs_usd) / len(costs_usd) if costs_usd else None,
        latency_p50_ms=_percentile(latencies_ms, 0.5),
        latency_p95_ms=_percentile(latencies_ms, 0.95),
    )


def as_dict(result: CandidateResult) -> dict[str, Any]:
    found = asdict(result)
    found["interval"] = list(result.interval)
    return found


def render_table(results: Sequence[CandidateResult], task: str, metric: str) -> str:
    lines = [
        f"task {task}, metric {metric}",
        f"{'candidate':<24} {'n':>4} {'score':>6} {'95% interval':>15} {'$/req':>11} "
        f"{'p50 ms':>8} {'p95 ms':>8}",
    ]
    for r in results:
        cost = f"{r.cost_per_request_usd:.8f}" if r.cost_per_request_usd is not None else "-"
        p50 = f"{r.latency_p50_ms:.0f}" if r.latency_p50_ms is not None else "-"
        p95 = f"{r.latency_p95_ms:.0f}" if r.latency_p95_ms is not None else "-"
        errors = f" ({r.errors} errors)" if r.errors else ""
        lines.append(
            f"{r.candidate:<24} {r.n:>4} {r.score:>6.3f} "
            f"{f'[{r.interval[0]:.3f}, {r.interval[1]:.3f}]':>15} {cost:>11} {p50:>8} "
            f"{p95:>8}{errors}"
        )
    return "\n".join(lines)


def render_html(results: Sequence[CandidateResult], task: str, metric: str) -> str:
    """One page: the table and a bar chart of scores with their intervals (inline SVG)."""
    width, bar, gap, left = 640, 26, 14, 190
    height = len(results) * (bar + gap) + 40
    scale = width - left - 20
    bars = []
    for index, r in enumerate(results):
        y = 20 + index * (bar + gap)
        low, high = (left + v * scale for v in r.interval)
        bars.append(
            f'<text x="{left - 8}" y="{y + bar * 0.7}" text-anchor="end">'
            f"{html.escape(r.candidate)}</text>"
            f'<rect x="{left}" y="{y}" width="{r.score * scale:.1f}" height="{bar}" '
            f'fill="#4c78a8"><title>{r.score:.3f}</title></rect>'
            f'<line x1="{low:.1f}" x2="{high:.1f}" y1="{y + bar / 2}" y2="{y + bar / 2}" '
            'stroke="#222" stroke-width="2"/>'
        )
    y = height - 12
    axis = f'<line x1="{left}" x2="{left + scale}" y1="{y}" y2="{y}" stroke="#888"/>'
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="13">{"".join(bars)}{axis}</svg>'
    )
    table = html.escape(render_table(results, task, metric))
    return (
        f"<!doctype html><meta charset=utf-8><title>eval {html.escape(task)}</title>"
        f"<h1>{html.escape(task)} ({html.escape(metric)})</h1>{svg}<pre>{table}</pre>"
    )


def write_quality(
    path: Path,
    results: Sequence[CandidateResult],
    task: str,
    metric: str,
    dataset: str,
) -> dict[str, Any]:
    """Record each candidate's measured score as its quality for `task` (merged into what the
    file already holds). Keyed by the backend that answered: the router's candidates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    known: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    for r in results:
        name = r.backend or r.candidate
        known.setdefault(name, {})[task] = {
            "score": round(r.score, 4),
            "interval": [round(v, 4) for v in r.interval],
            "n": r.n,
            "metric": metric,
            "dataset": dataset,
            "measured": stamp,
        }
    path.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    return known


class QualityFile:
    """The quality file as the router reads it: at start, then again whenever it changed
    (checked at most every `interval_s`, from the request path: one stat)."""

    def __init__(self, path: Path, interval_s: float = 5.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self._checked = time.monotonic()
        self._stamp = self._mtime()

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def due(self) -> bool:
        """Whether the file changed since it was last read (cheap; rate-limited)."""
        now = time.monotonic()
        if now - self._checked < self.interval_s:
            return False
        self._checked = now
        stamp = self._mtime()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True

    def read(self) -> dict[str, dict[str, dict[str, Any]]]:
        try:
            return read_quality(self.path)
        except ValueError:
            return {}


def read_quality(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Backend -> task -> measurement; an absent file measures nothing."""
    if not path.exists():
        return {}
    found = json.loads(path.read_text())
    if not isinstance(found, dict):
        raise ValueError(f"{path}: expected a JSON object of backend -> task -> measurement")
    return found
