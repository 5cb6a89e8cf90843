"""The experiment report (`python -m gateway report --experiment NAME`): per arm requests,
latency, cost, feedback with a 95% interval, a significance test between the leading arms,
and a plain-language verdict.

Statistics without assumptions about the score distribution: bootstrap percentile intervals for
the mean feedback, a two-sided permutation test for the difference of means (seeded, so a report
is reproducible). Beyond EXACT_MAX scored requests per arm, where resampling would cost seconds
and the central limit theorem holds, the normal interval and Welch's test instead. Latency
percentiles come from the ledger's histograms (2% bins).
"""

from __future__ import annotations

import html
import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from llmops._ledger import LedgerReader

RESAMPLES = 4000
EXACT_MAX = 500
ALPHA = 0.05


@dataclass
class ArmSummary:
    arm: str
    requests: int
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost_per_request_usd: float
    feedback_n: int
    feedback_mean: float | None
    feedback_ci95: tuple[float, float] | None


def mean_ci(scored: dict[str, Any], rng: random.Random) -> tuple[float, float] | None:
    """95% interval of the mean of an arm's scores (`n`, `mean`, `variance`, and `samples`
    when few): bootstrap while they are few, beyond the normal approximation (as good
    there, and it costs no pass over the scores)."""
    if scored["n"] < 2:
        return None
    if scored["samples"] is not None and scored["n"] <= EXACT_MAX:
        return bootstrap_ci(scored["samples"], rng)
    half = 1.959964 * _standard_error(scored)
    return scored["mean"] - half, scored["mean"] + half


def _standard_error(scored: dict[str, Any]) -> float:
    return float(math.sqrt(scored["variance"] / scored["n"]))


def bootstrap_ci(values: list[float], rng: random.Random) -> tuple[float, float] | None:
    if len(values) < 2:
        return None
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(RESAMPLES))
    return means[int(0.025 * RESAMPLES)], means[int(0.975 * RESAMPLES) - 1]


def permutation_p(a: list[float], b: list[float], rng: random.Random) -> float:
    """Two-sided p-value of the difference of means under random relabelling."""
    observed = abs(statistics.fmean(a) - statistics.fmean(b))
    pooled, extreme = a + b, 0
    for _ in range(RESAMPLES):
        rng.shuffle(pooled)
        if abs(statistics.fmean(pooled[: len(a)]) - statistics.fmean(pooled[len(a) :])) >= (
            observed - 1e-12
        ):
            extreme += 1
    return (extreme + 1) / (RESAMPLES + 1)


def build_report(
    ledger: LedgerReader, experiment: str, since: float | None = None
) -> dict[str, Any]:
    """Computed from the ledger's sums per arm and caller, its latency histograms and the
    scored requests' feedback: no request row is read."""
    found = ledger.experiment(experiment, since)
    rng = random.Random(0)
    summaries, scores = [], {}
    for arm, sums in sorted(found["arms"].items()):
        feedback = found["feedback"].get(arm) or {"n": 0, "mean": 0.0, "variance": 0.0,
                                                  "samples": []}  # fmt: skip
        histogram = found["latency"].get(arm, [])
        scores[arm] = feedback
        summaries.append(
            ArmSummary(
                arm=arm,
                requests=sums["requests"],
                errors=sums["errors"],
                latency_p50_ms=_histogram_percentile(histogram, 50),
                latency_p95_ms=_histogram_percentile(histogram, 95),
                cost_per_request_usd=sums["cost_usd"] / max(1, sums["requests"]),
                feedback_n=feedback["n"],
                feedback_mean=feedback["mean"] if feedback["n"] else None,
                feedback_ci95=mean_ci(feedback, rng),
            )
        )
    comparison = _compare(summaries, scores, rng)
    return {
        "experiment": experiment,
        "since": since,
        "arms": [asdict(s) for s in summaries],
        "callers": _callers(found["callers"]),
        "comparison": comparison,
        "verdict": _verdict(experiment, summaries, comparison),
    }


def _histogram_percentile(histogram: list[tuple[float, int]], percent: int) -> float | None:
    """From (bin value, count) pairs in increasing order: within a bin's width (2%)."""
    total = sum(count for _, count in histogram)
    if not total:
        return None
    wanted, seen = percent / 100 * total, 0
    for value, count in histogram:
        seen += count
        if seen >= wanted:
            return round(value, 1)
    return round(histogram[-1][0], 1)


def _callers(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who sent the experiment's traffic: per key (with its team and metadata, e.g. owner),
    requests per arm and cost. Empty without keys."""
    callers: dict[str, dict[str, Any]] = {}
    for entry in found:
        name, team, metadata = entry["described"] or (None, None, None)
        if not name:
            continue
        caller = callers.setdefault(
            name,
            {"key": name, "team": team, "metadata": metadata, "requests": {}, "cost_usd": 0.0},
        )
        caller["requests"][entry["arm"]] = (
            caller["requests"].get(entry["arm"], 0) + entry["requests"]
        )
        caller["cost_usd"] += entry["cost_usd"]
    return sorted(callers.values(), key=lambda c: -sum(c["requests"].values()))


def _compare(
    summaries: list[ArmSummary], scores: dict[str, dict[str, Any]], rng: random.Random
) -> dict[str, Any] | None:
    scored = sorted(
        (s for s in summaries if s.feedback_n >= 2 and s.feedback_mean is not None),
        key=lambda s: s.feedback_mean or 0.0,
        reverse=True,
    )
    if len(scored) < 2:
        return None
    best, runner_up = scored[0], scored[1]
    a, b = scores[best.arm], scores[runner_up.arm]
    if a["samples"] is None or b["samples"] is None or max(a["n"], b["n"]) > EXACT_MAX:
        p, test = welch_p(a, b), "two-sided Welch test of mean feedback (normal approximation)"
    else:
        p = permutation_p(a["samples"], b["samples"], rng)
        test = "two-sided permutation test of mean feedback"
    return {"best": best.arm, "runner_up": runner_up.arm, "p_value": round(p, 4),
            "test": test}  # fmt: skip


def welch_p(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Two-sided p-value of the difference of means for large samples (from their moments)."""
    error = math.hypot(_standard_error(a), _standard_error(b))
    if error == 0:
        return 1.0 if a["mean"] == b["mean"] else 0.0
    return math.erfc(abs(a["mean"] - b["mean"]) / error / math.sqrt(2))


def _verdict(
    experiment: str, summaries: list[ArmSummary], comparison: dict[str, Any] | None
) -> str:
    if not summaries:
        return f"No requests of experiment {experiment!r} in the ledger for this period."
    if comparison is None:
        return "Not enough feedback to compare arms yet (at least 2 scored requests per arm)."
    arms = {s.arm: s for s in summaries}
    best, other, p = arms[comparison["best"]], arms[comparison["runner_up"]], comparison["p_value"]
    means = f"mean feedback {best.feedback_mean:.2f} vs {other.feedback_mean:.2f}"
    if p >= ALPHA:
        return (
            f"No significant difference between arms {best.arm} and {other.arm} yet ({means}, "
            f"p = {p:.2f}); keep collecting feedback (n = {best.feedback_n} and "
            f"{other.feedback_n})."
        )
    cost = ""
    if other.cost_per_request_usd > 0:
        ratio = best.cost_per_request_usd / other.cost_per_request_usd
        cost = f" It costs {ratio:.2f}x as much per request"
    elif best.cost_per_request_usd > 0:
        cost = f" It costs ${best.cost_per_request_usd:.6f} per request (the other arm: $0)"
    latency = ""
    if best.latency_p50_ms is not None and other.latency_p50_ms is not None:
        delta = best.latency_p50_ms - other.latency_p50_ms
        latency = f"{' and' if cost else ' Its'} p50 latency is {abs(delta):.0f} ms " + (
            "higher" if delta > 0 else "lower"
        )
    tail = f"{cost}{latency}." if cost or latency else ""
    return f"Arm {best.arm} is better than {other.arm}: {means} (p = {p:.3f}).{tail}"


def render_table(report: dict[str, Any]) -> str:
    header = ("arm", "requests", "errors", "p50 ms", "p95 ms", "$/request", "feedback", "95% CI")
    lines = [header]
    for arm in report["arms"]:
        ci = arm["feedback_ci95"]
        lines.append(
            (
                arm["arm"],
                str(arm["requests"]),
                str(arm["errors"]),
                _num(arm["latency_p50_ms"], 0),
                _num(arm["latency_p95_ms"], 0),
                f"{arm['cost_per_request_usd']:.6f}",
                f"{_num(arm['feedback_mean'], 2)} (n={arm['feedback_n']})",
                f"{ci[0]:.2f}..{ci[1]:.2f}" if ci else "-",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in lines]  # fmt: skip
    comparison = report["comparison"]
    if comparison:
        text.append(f"\n{comparison['test']}: {comparison['best']} vs "
                    f"{comparison['runner_up']}, p = {comparison['p_value']}")  # fmt: skip
    for caller in report.get("callers") or ():
        owner = (caller["metadata"] or {}).get("owner")
        who = "/".join(part for part in (caller["team"], caller["key"]) if part)
        arms = ", ".join(f"{arm} {n}" for arm, n in sorted(caller["requests"].items()))
        text.append(f"caller {who}{f' (owner {owner})' if owner else ''}: {arms}; "
                    f"${caller['cost_usd']:.6f}")  # fmt: skip
    text.append(f"\n{report['verdict']}")
    return "\n".join(text)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_html(report: dict[str, Any]) -> str:
    """A page with the table and a bar chart of mean feedback with its 95% interval."""
    arms = report["arms"]
    top = max([a["feedback_ci95"][1] for a in arms if a["feedback_ci95"]] + [
        a["feedback_mean"] or 0 for a in arms] + [1.0])  # fmt: skip
    bars = []
    for index, arm in enumerate(arms):
        x, mean = 60 + index * 120, arm["feedback_mean"] or 0.0
        height = 200 * mean / top
        bars.append(f'<rect x="{x}" y="{230 - height:.1f}" width="60" height="{height:.1f}" '
                    'fill="#4a78c2"/>')  # fmt: skip
        if arm["feedback_ci95"]:
            low, high = (230 - 200 * v / top for v in arm["feedback_ci95"])
            bars.append(f'<line x1="{x + 30}" x2="{x + 30}" y1="{low:.1f}" y2="{high:.1f}" '
                        'stroke="black" stroke-width="2"/>')  # fmt: skip
        bars.append(f'<text x="{x + 30}" y="250" text-anchor="middle">'
                    f"{html.escape(arm['arm'])}</text>")  # fmt: skip
    width = 120 * max(1, len(arms)) + 60
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="260">'
           + "".join(bars) + "</svg>")  # fmt: skip
    title = html.escape(f"Experiment {report['experiment']}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>{title}</h1><p>{html.escape(report['verdict'])}</p>"
        f"<pre>{html.escape(render_table(report))}</pre>"
        f"<h2>Mean feedback per arm (95% interval)</h2>{svg}</body></html>"
    )
