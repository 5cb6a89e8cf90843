"""The console's pages as HTML strings, from the same data the JSON endpoints serve."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from gateway.http.console._charts import intervals, legend, stacked_bars

NAV = (
    ("Overview", "/console"),
    ("Usage", "/console/usage"),
    ("Experiments", "/console/experiments"),
    ("Monitors", "/console/monitors"),
)
GROUPINGS = ("backend", "route", "key", "task")
PERIODS = {"1h": (3600, 60), "24h": (86400, 3600), "7d": (7 * 86400, 6 * 3600)}


def page(title: str, body: str, prefix: str = "", csrf: str = "") -> str:
    """`csrf`: the session's token, carried by the sign-out form (none: signed in by a
    bearer key, or keys are off)."""
    field = f'<input type=hidden name=csrf value="{escape(csrf)}">' if csrf else ""
    links = "".join(
        f'<a href="{prefix}{href}"{" class=current" if name == title else ""}>{name}</a>'
        for name, href in NAV
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} · LLM gateway</title>"
        f'<link rel=stylesheet href="{prefix}/console/static/console.css">'
        '<link rel=icon href="data:,">'
        f"</head><body><header><strong>LLM gateway</strong><nav>{links}</nav>"
        f'<form method=post action="{prefix}/console/logout">{field}<button>Sign out</button>'
        "</form>"
        f"</header><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def login_page(prefix: str, error: str = "") -> str:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Sign in · LLM gateway"
        f'</title><link rel=stylesheet href="{prefix}/console/static/console.css">'
        '<link rel=icon href="data:,"></head><body><main class="login"><h1>LLM gateway</h1>'
        f'{message}<form method=post action="{prefix}/console/login">'
        "<label>Admin key <input type=password name=key autocomplete=off required></label>"
        "<button>Sign in</button></form><p>The master key or an admin key.</p></main>"
        "</body></html>"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell_html(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def cell_html(value: Any) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    if isinstance(value, float):
        return escape(f"{value:.6g}")
    return escape(str(value))


def _ms(value: Any) -> Any:
    return round(value, 1) if isinstance(value, int | float) else None


BACKEND_COLUMNS = ["backend", "kind", "health", "circuit", "replicas", "TTFT ms", "TPOT ms",
                   "in flight"]  # fmt: skip


def _backend_row(b: dict[str, Any]) -> list[Any]:
    health, latency, view = b["health"], b["latency"], b["deployment"]
    replicas = view.get("replicas")
    running = (replicas or {}).get("RUNNING") if replicas is not None else None
    target = view.get("target_replicas")
    placed = f"{running or 0} of {target}" if target is not None else view.get("status")
    state = "up" if health["available"] else f"down: {health['reason'] or ''}"
    sampled = latency["samples"]
    return [b["id"], b["kind"], state, b["circuit"].get("state"), placed,
            latency["ttft_ms"] if sampled else None, latency["tpot_ms"] if sampled else None,
            b["in_flight"]]  # fmt: skip


def overview(
    backends: list[dict[str, Any]],
    routes: Mapping[str, Any],
    totals: dict[str, Any],
    errors: list[dict[str, Any]],
    cached: list[dict[str, Any]],
    guarded: list[dict[str, Any]],
) -> str:
    cards = "".join(
        f'<div class=card><span class=figure data-total="{name}">{cell_html(totals[name])}</span>'
        f"<span class=label>{label}</span></div>"
        for name, label in (
            ("requests", "requests (24 h)"),
            ("tokens", "tokens (24 h)"),
            ("cost_usd", "cost USD (24 h)"),
            ("errors", "errors (24 h)"),
            ("saved_usd", "saved by the cache USD (24 h)"),
            ("guarded", "guardrail interventions (24 h)"),
        )
    )
    backend_rows = [_backend_row(b) for b in backends]
    route_rows = [
        [name, r.policy, ", ".join(r.candidates), ", ".join(r.fallbacks)]
        for name, r in routes.items()
    ]
    error_rows = [
        [
            time.strftime("%H:%M:%S", time.localtime(e["ts"])),
            e["status"],
            e["error_code"],
            e["route"],
            e["backend"],
            e["key_name"] or e["key_id"],
        ]
        for e in errors
    ]
    return (
        f"<section class=cards>{cards}</section>"
        "<h2>Backends</h2>"
        + table(
            BACKEND_COLUMNS,
            backend_rows,
            "backends",
        )
        + "<h2>Routes</h2>"
        + table(["route", "policy", "candidates", "fallbacks"], route_rows, "routes")
        + _cache_section(cached)
        + _guardrails_section(guarded)
        + "<h2>Recent errors</h2>"
        + (
            table(["time", "status", "code", "route", "backend", "key"], error_rows, "errors")
            if error_rows
            else "<p class=muted>No errors in the last 24 hours.</p>"
        )
    )


def _cache_section(cached: list[dict[str, Any]]) -> str:
    """Per caching route (24 h): hits, misses, hit rate, money saved."""
    rows = [
        [
            t["route"],
            t["cache_hits"],
            t["cache_misses"],
            f"{t['cache_hits'] / (t['cache_hits'] + t['cache_misses']):.1%}",
            t["saved_usd"],
        ]
        for t in cached
    ]
    if not rows:
        return "<h2>Response cache</h2><p class=muted>No cached route was called in 24 hours.</p>"
    columns = ["route", "hits", "misses", "hit rate", "saved USD"]
    return "<h2>Response cache</h2>" + table(columns, rows, "cache")


def _guardrails_section(guarded: list[dict[str, Any]]) -> str:
    """Per route (24 h): requests masked or refused by guardrails, and their share. Entity
    types and counts are in each ledger row and `gateway_guardrail_entities`, never values."""
    rows = [
        [t["route"], t["guardrail_interventions"], t["requests"],
         f"{t['guardrail_interventions'] / max(1, t['requests']):.1%}"]
        for t in guarded
    ]  # fmt: skip
    if not rows:
        return "<h2>Guardrails</h2><p class=muted>No guardrail intervened in 24 hours.</p>"
    columns = ["route", "interventions", "requests", "share"]
    return "<h2>Guardrails</h2>" + table(columns, rows, "guardrails")


def usage(
    by: str, period: str, series: list[dict[str, Any]], totals: list[dict[str, Any]], now: float
) -> str:
    """Charts from the ledger's series (per bucket and group) and a table of its totals."""
    span, bucket = PERIODS[period]
    start = (now - span) // bucket * bucket
    count = int((now - start) // bucket) + 1
    labels = [time.strftime("%d %H:%M", time.localtime(start + i * bucket)) for i in range(count)]
    names = [str(t[by]) for t in totals]  # "None": requests refused before routing
    metrics = {"requests": {}, "tokens": {}, "cost_usd": {}}  # type: dict[str, dict[str, list[float]]]
    for metric in metrics:
        metrics[metric] = {name: [0.0] * count for name in names}
    for point in series:
        index = int((point["bucket"] - start) // bucket)
        name = str(point[by])
        if not 0 <= index < count or name not in metrics["requests"]:
            continue
        for metric in metrics:
            metrics[metric][name][index] += point[metric]
    choose = (
        " ".join(
            f'<a href="?by={g}&since={period}"{" class=current" if g == by else ""}>{g}</a>'
            for g in GROUPINGS
        )
        + " · "
        + " ".join(
            f'<a href="?by={by}&since={p}"{" class=current" if p == period else ""}>{p}</a>'
            for p in PERIODS
        )
    )
    charts = "".join(
        stacked_bars(f"{title} per {bucket // 60} min by {by}", labels, metrics[metric])
        for metric, title in (
            ("requests", "Requests"),
            ("tokens", "Tokens"),
            ("cost_usd", "Cost (USD)"),
        )
    )
    return (
        f'<p class="choose">{choose}</p>{legend(names)}<div class="charts">{charts}</div>'
        "<h2>Totals</h2>" + _totals_table(by, totals)
    )


_TOTALS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "errors", "cache_hits",
           "saved_usd", "guardrail_interventions")  # fmt: skip


def _totals_table(by: str, totals: list[dict[str, Any]]) -> str:
    rows = [[t[by], *(t[name] for name in _TOTALS)] for t in totals]
    return table([by, *(name.replace("_usd", " USD").replace("_", " ") for name in _TOTALS)],
                 rows, "totals")  # fmt: skip


def experiments(reports: list[dict[str, Any]]) -> str:
    if not reports:
        return "<p class=muted>No experiment is configured.</p>"
    parts = []
    for report in reports:
        rows = [
            (a["arm"], a["feedback_mean"], *(a["feedback_ci95"] or (None, None)))
            for a in report["arms"]
            if a["feedback_mean"] is not None
        ]
        chart = intervals("Mean feedback per arm (95% interval)", rows) if rows else ""
        arm_rows = [
            [
                a["arm"],
                a["requests"],
                a["errors"],
                _ms(a["latency_p50_ms"]),
                a["cost_per_request_usd"],
                a["feedback_n"],
                a["feedback_mean"],
            ]
            for a in report["arms"]
        ]
        parts.append(
            f"<section class=experiment><h2>{escape(report['experiment'])}</h2>"
            f"<p class=verdict>{escape(report['verdict'])}</p>"
            + table(
                ["arm", "requests", "errors", "p50 ms", "cost/request USD", "scored", "mean score"],
                arm_rows,
                "arms",
            )
            + chart
            + "</section>"
        )
    return "".join(parts)


def monitors(described: dict[str, Any] | None) -> str:
    """Each drift monitor's targets: state, and the runs' scores with their 95% intervals
    beside the baseline's."""
    if not described:
        return "<p class=muted>No drift monitor is configured (`monitors.checks`).</p>"
    parts = []
    for name, check in described.items():
        parts.append(f"<section class=monitor><h2>{escape(name)}</h2><p class=muted>"
                     f"{escape(check['dataset'])} · {escape(check['metric'])} · every "
                     f"{check['interval_s']:g} s</p>")  # fmt: skip
        for target, found in check["targets"].items():
            history = found["history"]
            rows = [(time.strftime("%m-%d %H:%M", time.localtime(r["ts"])), r["score"],
                     r["low"], r["high"]) for r in history[-30:]]  # fmt: skip
            state = found["state"]
            parts.append(f"<h3>{escape(target)}: <span class=state-{escape(state)}>"
                         f"{escape(state)}</span></h3>")  # fmt: skip
            if rows:
                parts.append(intervals(f"{name} on {target}: score per run (95% interval)", rows))
            parts.append(table(
                ["time", "n", "errors", "score", "low", "high", "baseline", "state"],
                [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"])), r["n"],
                  r["errors"], r["score"], r["low"], r["high"],
                  "" if r["baseline_low"] is None
                  else f"{r['baseline_low']:.3f}..{r['baseline_high']:.3f}", r["state"]]
                 for r in reversed(history[-30:])],
                "runs",
            ))  # fmt: skip
        parts.append("</section>")
    return "".join(parts)
