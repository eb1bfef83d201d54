"""Tiny inline SVG line charts for the admin: no JavaScript, no plotting dependency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

COLOURS = ("#8a3d5c", "#2f6f9f", "#3a8f4b", "#c77d1a")


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    width: int = 420,
    height: int = 180,
    y_range: tuple[float, float] | None = None,
) -> SafeString:
    """One polyline per series over shared axes; points with a None y are left out."""
    points = {name: [(x, y) for x, y in values if y is not None] for name, values in series.items()}
    every = [p for values in points.values() for p in values]
    if not every:
        return mark_safe("")
    pad = 34
    xs = [x for x, _ in every]
    ys = [y for _, y in every]
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = y_range or (min(ys), max(ys))
    if y1 == y0:
        y1 = y0 + 1

    def sx(x: float) -> float:
        return pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad + (y - y0) / (y1 - y0) * -(height - 2 * pad)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" class="chart">',
        f'<text x="{pad}" y="16" font-size="12" fill="#333">{escape(title)}</text>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
        f'<text x="4" y="{sy(y1) + 4:.1f}" font-size="10" fill="#666">{y1:.2f}</text>',
        f'<text x="4" y="{sy(y0) + 4:.1f}" font-size="10" fill="#666">{y0:.2f}</text>',
        f'<text x="{pad}" y="{height - pad + 14}" font-size="10" fill="#666">{x0:g}</text>',
        f'<text x="{width - pad - 10}" y="{height - pad + 14}" font-size="10" fill="#666">{x1:g}</text>',
    ]
    for index, (name, values) in enumerate(points.items()):
        colour = COLOURS[index % len(COLOURS)]
        if values:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        parts.append(
            f'<text x="{width - pad - 110}" y="{pad + 12 * index}" font-size="11" fill="{colour}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))
