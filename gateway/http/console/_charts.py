"""Charts as inline SVG, drawn on the server: no script, no build step, nothing fetched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#3b6fd8", "#e0822b", "#2a9d6a", "#c0434f", "#8a5cc7", "#6b7280", "#c9a227")
WIDTH, HEIGHT, PAD = 720, 220, 36
LEFT = 64  # room for the axis figures


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _number(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


def stacked_bars(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float]]) -> str:
    """One bar per label (a time bucket), stacked by series (a backend, route, key...)."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    top = max(totals, default=0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - PAD, HEIGHT - 2 * PAD
    step = plot_w / max(1, len(labels))
    bar = max(1.0, step * 0.8)
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} '
        f'{HEIGHT}" width="100%" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{PAD}" y="18" class="chart-title">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'stroke="#999"/>',
        f'<text x="{LEFT - 4}" y="{PAD + 4}" text-anchor="end" class="tick">{_number(top)}</text>',
        f'<text x="{LEFT - 4}" y="{HEIGHT - PAD}" text-anchor="end" class="tick">0</text>',
    ]
    for i, label in enumerate(labels):
        x, bottom = LEFT + i * step + (step - bar) / 2, float(HEIGHT - PAD)
        for index, (name, values) in enumerate(series.items()):
            height = plot_h * values[i] / top
            if height <= 0:
                continue
            bottom -= height
            parts.append(
                f'<rect x="{x:.1f}" y="{bottom:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{color(index)}"><title>{escape(label)} {escape(name)}: '
                f"{_number(values[i])}</title></rect>"
            )
    for i in (0, len(labels) - 1) if labels else ():
        parts.append(
            f'<text x="{LEFT + i * step + step / 2:.1f}" y="{HEIGHT - PAD + 16}" '
            f'text-anchor="middle" class="tick">{escape(labels[i])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def legend(names: Sequence[str]) -> str:
    items = "".join(
        f'<li><span class="swatch c{i % len(PALETTE)}"></span>{escape(name)}</li>'
        for i, name in enumerate(names)
    )
    return f'<ul class="legend">{items}</ul>'


def intervals(title: str, rows: Sequence[tuple[str, float, float | None, float | None]]) -> str:
    """Each row's mean as a dot and its confidence interval as a whisker, on one scale."""
    values = [v for _, mean, low, high in rows for v in (mean, low, high) if v is not None]
    low_end, high_end = (min(values), max(values)) if values else (0.0, 1.0)
    span = (high_end - low_end) or 1.0
    row_h, left = 34, 140
    height = PAD + row_h * len(rows) + 20
    plot_w = WIDTH - left - PAD

    def x(value: float) -> float:
        return left + plot_w * (value - low_end) / span

    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} '
        f'{height}" width="100%" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="8" y="18" class="chart-title">{escape(title)}</text>',
    ]
    axis = height - 4
    for value, anchor in ((low_end, "start"), (high_end, "end")):
        parts.append(
            f'<text x="{x(value):.1f}" y="{axis}" text-anchor="{anchor}" '
            f'class="tick">{_number(value)}</text>'
        )
    for i, (name, mean, low, high) in enumerate(rows):
        y = PAD + row_h * i + row_h / 2
        parts.append(f'<text x="8" y="{y + 4:.1f}" class="tick">{escape(name)}</text>')
        if low is not None and high is not None:
            parts.append(
                f'<line x1="{x(low):.1f}" y1="{y:.1f}" x2="{x(high):.1f}" y2="{y:.1f}" '
                f'stroke="{color(i)}" stroke-width="3"/>'
            )
        parts.append(
            f'<circle cx="{x(mean):.1f}" cy="{y:.1f}" r="5" fill="{color(i)}">'
            f"<title>{escape(name)}: {_number(mean)}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
