"""Inline SVG charts for the HTML report: no script, no CDN, nothing fetched.

Every mark carries ``data-label`` and ``data-value`` so a test (or a curious
reader of the source) can check what was drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from relay.evaluation.summary import percentile

__all__ = ["bar_chart", "box_chart", "PALETTE"]

PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5", "#9c6b4e")
_ROW = 30
_LEFT = 170
_WIDTH = 640
_RIGHT = 70


def _frame(chart_id: str, title: str, height: int, body: str) -> str:
    return (
        f'<svg class="chart" id="{escape(chart_id)}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def _label(y: float, text: str) -> str:
    short = text if len(text) <= 24 else text[:23] + "…"
    return f'<text x="{_LEFT - 8}" y="{y:.1f}" text-anchor="end" dominant-baseline="middle">{escape(short)}</text>'


def bar_chart(chart_id: str, title: str, values: Mapping[str, float | None], unit: str = "") -> str:
    """Horizontal bars, one per label; None draws an empty row marked "n/a"."""
    known = [v for v in values.values() if v is not None]
    top = max(known, default=0.0) or 1.0
    span = _WIDTH - _LEFT - _RIGHT
    parts = []
    for index, (label, value) in enumerate(values.items()):
        y = 10 + index * _ROW
        parts.append(_label(y + 10, label))
        if value is None:
            parts.append(f'<text x="{_LEFT}" y="{y + 10}" dominant-baseline="middle" class="na">n/a</text>')
            continue
        width = max(1.0, span * value / top) if value > 0 else 0.0
        color = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<rect class="bar" x="{_LEFT}" y="{y}" width="{width:.1f}" height="20" fill="{color}" '
            f'data-label="{escape(label)}" data-value="{value:.6g}"><title>{escape(label)}: '
            f"{_fmt(value, unit)}</title></rect>"
        )
        parts.append(
            f'<text x="{_LEFT + width + 6:.1f}" y="{y + 10}" dominant-baseline="middle">{_fmt(value, unit)}</text>'
        )
    return _frame(chart_id, title, 20 + len(values) * _ROW, "".join(parts))


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "$":
        return f"${value:,.4f}"
    return f"{value:,.0f} {unit}".strip()


def box_chart(chart_id: str, title: str, samples: Mapping[str, Sequence[float]], unit: str = "ms") -> str:
    """One box per label: whiskers p5 to p95, box p25 to p75, a line at the median, on one shared axis."""
    everything = [v for values in samples.values() for v in values]
    top = max(everything, default=0.0) or 1.0
    span = _WIDTH - _LEFT - _RIGHT

    def x(value: float) -> float:
        return _LEFT + span * value / top

    height = 40 + len(samples) * _ROW
    parts = []
    for index, (label, values) in enumerate(samples.items()):
        y = 10 + index * _ROW
        parts.append(_label(y + 10, label))
        if not values:
            parts.append(f'<text x="{_LEFT}" y="{y + 10}" dominant-baseline="middle" class="na">no data</text>')
            continue
        p5, p25, p50, p75, p95 = (percentile(values, q) or 0.0 for q in (0.05, 0.25, 0.5, 0.75, 0.95))
        color = PALETTE[index % len(PALETTE)]
        tip = f"{label}: p5 {p5:,.0f}, p25 {p25:,.0f}, median {p50:,.0f}, p75 {p75:,.0f}, p95 {p95:,.0f} {unit}"
        parts.append(
            f'<g class="box" data-label="{escape(label)}" data-value="{p50:.6g}"><title>{escape(tip)}</title>'
            f'<line x1="{x(p5):.1f}" x2="{x(p95):.1f}" y1="{y + 10}" y2="{y + 10}" stroke="#555"/>'
            f'<rect x="{x(p25):.1f}" y="{y + 2}" width="{max(1.0, x(p75) - x(p25)):.1f}" height="16" '
            f'fill="{color}" fill-opacity="0.7" stroke="#333"/>'
            f'<line class="median" x1="{x(p50):.1f}" x2="{x(p50):.1f}" y1="{y}" y2="{y + 20}" stroke="#000" '
            'stroke-width="2"/></g>'
        )
    axis_y = height - 22
    ticks = "".join(
        f'<line x1="{x(top * i / 4):.1f}" x2="{x(top * i / 4):.1f}" y1="{axis_y}" y2="{axis_y + 4}" stroke="#555"/>'
        f'<text x="{x(top * i / 4):.1f}" y="{axis_y + 16}" text-anchor="middle">{top * i / 4:,.0f}</text>'
        for i in range(5)
    )
    axis = f'<line x1="{_LEFT}" x2="{x(top):.1f}" y1="{axis_y}" y2="{axis_y}" stroke="#555"/>{ticks}'
    unit_label = f'<text x="{_WIDTH - 4}" y="{axis_y + 16}" text-anchor="end">{escape(unit)}</text>'
    return _frame(chart_id, title, height, "".join(parts) + axis + unit_label)
