"""Inline SVG histograms (no plotting library, no network: a few kilobytes of markup per plot)."""
from __future__ import annotations

import html
import math
from typing import Sequence

WIDTH, HEIGHT = 560, 230
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44
BAR = "#3b6fb6"
GRID = "#d9dde3"
TEXT = "#333"


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(1, target)
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power  # pragma: no cover


def svg_histogram(bins: Sequence[Sequence], *, title: str, xlabel: str, kind: str, element_id: str) -> str:
    """A bar chart of ``[[lo, hi, count], ...]``.

    ``kind``: ``"log"`` (integers on a log10(1 + x) axis; bars span ``[lo, hi + 1)``), ``"int"``
    (small integers, linear axis, one bar per bin), ``"fraction"`` (``[0, 1]``, bars ``[lo, hi)``).
    """
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    out = [f'<svg id="{html.escape(element_id)}" class="hist" xmlns="http://www.w3.org/2000/svg" '
           f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{html.escape(title)}">',
           f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
           f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold" fill="{TEXT}">{html.escape(title)}</text>']
    if not bins:
        out.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="13" '
                   f'fill="#888">no rows</text></svg>')
        return "".join(out)

    if kind == "log":
        fx = lambda v: math.log10(v + 1)  # noqa: E731
        lo_dom, hi_dom = fx(bins[0][0]), fx(bins[-1][1] + 1)
        edges = [(fx(lo), fx(hi + 1)) for lo, hi, _ in bins]
    elif kind == "int":
        fx = float
        lo_dom, hi_dom = bins[0][0] - 0.5, bins[-1][1] + 0.5
        edges = [(lo - 0.5 + 0.08, hi + 0.5 - 0.08) for lo, hi, _ in bins]
    elif kind == "fraction":
        fx = float
        lo_dom, hi_dom = 0.0, 1.0
        edges = [(lo, hi) for lo, hi, _ in bins]
    else:
        raise ValueError(f"unknown histogram kind {kind!r}")
    if hi_dom <= lo_dom:
        hi_dom = lo_dom + 1
    sx = lambda v: LEFT + (v - lo_dom) / (hi_dom - lo_dom) * plot_w  # noqa: E731
    top_count = max(count for _, _, count in bins)
    step = _nice_step(top_count, 4)
    y_max = math.ceil(top_count / step) * step
    sy = lambda c: TOP + plot_h - c / y_max * plot_h  # noqa: E731

    # grid and y labels
    tick = 0.0
    while tick <= y_max + 1e-9:
        y = sy(tick)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{TEXT}">'
                   f'{_fmt(tick)}</text>')
        tick += step
    # bars
    for (x0, x1), (lo, hi, count) in zip(edges, bins):
        left, right = sx(x0), sx(x1)
        width = max(1.0, right - left - (0.6 if right - left > 3 else 0))
        y = sy(count)
        label = f"{lo}" if lo == hi else f"{lo}–{hi}"
        out.append(f'<rect class="bar" x="{left:.1f}" y="{y:.1f}" width="{width:.1f}" '
                   f'height="{TOP + plot_h - y:.1f}" fill="{BAR}"><title>{html.escape(str(label))}: '
                   f'{count:,} rows</title></rect>')
    # x axis and ticks
    base = TOP + plot_h
    out.append(f'<line x1="{LEFT}" y1="{base}" x2="{LEFT + plot_w}" y2="{base}" stroke="{TEXT}"/>')
    if kind == "log":
        inside = lambda t: lo_dom - 1e-9 <= fx(t) <= hi_dom + 1e-9  # noqa: E731
        ticks = [t for t in [0] + [m * 10 ** k for k in range(0, 9) for m in (1, 2, 5)] if inside(t)]
        if len(ticks) > 9:
            ticks = [t for t in [0] + [10 ** k for k in range(0, 9)] if inside(t)]
    elif kind == "int":
        step_x = max(1, int(_nice_step(hi_dom - lo_dom, 6)))
        start = math.ceil(lo_dom / step_x) * step_x
        ticks = list(range(int(start), int(hi_dom) + 1, step_x))
    else:
        ticks = [0, 0.25, 0.5, 0.75, 1.0]
    for t in ticks:
        x = sx(fx(t))
        out.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="{TEXT}"/>')
        out.append(f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle" font-size="11" fill="{TEXT}">'
                   f'{_fmt(t)}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle" font-size="11" '
               f'fill="{TEXT}">{html.escape(xlabel)}</text>')
    out.append("</svg>")
    return "".join(out)
