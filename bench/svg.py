"""Tiny dependency-free SVG charts for benchmark reports (no matplotlib).

    from svg import line_chart, histogram, write
    write("bench/results/latency.svg", histogram({"control": lat_a, "direct": lat_b},
          bins=40, title="Setup latency", x_label="ms", y_label="setups"))

The output is a standalone SVG 1.1 document (``xmlns``, ``width``/``height`` and ``viewBox``
set, a white background, system sans-serif text) that GitHub renders in markdown through
``![](file.svg)``. Pure functions of their arguments: no I/O except :func:`write`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

__all__ = ["COLOURS", "histogram", "line_chart", "nice_ticks", "write"]

COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
"""Series colours, in order (the Tableau 10 palette, distinct on white and for most colour
vision deficiencies in its first four)."""

_FONT = 'font-family="Helvetica, Arial, sans-serif"'
_MARGIN = {"left": 64, "right": 16, "top": 36, "bottom": 48}


def _fmt(v: float) -> str:
    """A tick label: few digits, no trailing zeros, k/M for large values."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a >= 1:
        return f"{v:.6g}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About ``count`` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi] (lo, hi > 0)."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if a == b:
        b += 1
    return [10.0**k for k in range(a, b + 1)]


class _Frame:
    """The plot area, axis scales and the SVG elements drawn so far."""

    def __init__(
        self,
        width: int,
        height: int,
        xr: tuple[float, float],
        yr: tuple[float, float],
        log_x: bool,
        log_y: bool,
    ) -> None:
        self.w, self.h = width, height
        self.x0, self.x1 = _MARGIN["left"], width - _MARGIN["right"]
        self.y0, self.y1 = height - _MARGIN["bottom"], _MARGIN["top"]
        self.log_x, self.log_y = log_x, log_y
        self.xr = self._axis(xr, log_x)
        self.yr = self._axis(yr, log_y)
        self.parts: list[str] = []

    @staticmethod
    def _axis(r: tuple[float, float], log: bool) -> tuple[float, float]:
        lo, hi = r
        if log:
            return math.log10(lo), math.log10(hi)
        return (lo, hi) if hi > lo else (lo - 1, hi + 1)

    def px(self, x: float) -> float:
        v = math.log10(x) if self.log_x else x
        return self.x0 + (v - self.xr[0]) / (self.xr[1] - self.xr[0]) * (self.x1 - self.x0)

    def py(self, y: float) -> float:
        v = math.log10(y) if self.log_y else y
        return self.y0 - (v - self.yr[0]) / (self.yr[1] - self.yr[0]) * (self.y0 - self.y1)

    def axes(
        self,
        xticks: Sequence[float],
        yticks: Sequence[float],
        x_label: str,
        y_label: str,
        title: str,
    ) -> None:
        p = self.parts
        for t in yticks:
            y = self.py(t)
            p.append(
                f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" '
                'stroke="#e5e5e5" stroke-width="1"/>'
            )
            p.append(
                f'<text x="{self.x0 - 6}" y="{y + 4:.1f}" text-anchor="end" '
                f'font-size="11" fill="#333">{escape(_fmt(t))}</text>'
            )
        for t in xticks:
            x = self.px(t)
            p.append(
                f'<line x1="{x:.1f}" y1="{self.y0}" x2="{x:.1f}" y2="{self.y0 + 4}" '
                'stroke="#333" stroke-width="1"/>'
            )
            p.append(
                f'<text x="{x:.1f}" y="{self.y0 + 17}" text-anchor="middle" '
                f'font-size="11" fill="#333">{escape(_fmt(t))}</text>'
            )
        p.append(
            f'<rect x="{self.x0}" y="{self.y1}" width="{self.x1 - self.x0}" '
            f'height="{self.y0 - self.y1}" fill="none" stroke="#333" stroke-width="1"/>'
        )
        cx, cy = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
        p.append(
            f'<text x="{cx:.1f}" y="{self.h - 10}" text-anchor="middle" font-size="12" '
            f'fill="#111">{escape(x_label)}</text>'
        )
        p.append(
            f'<text x="14" y="{cy:.1f}" text-anchor="middle" font-size="12" fill="#111" '
            f'transform="rotate(-90 14 {cy:.1f})">{escape(y_label)}</text>'
        )
        p.append(
            f'<text x="{cx:.1f}" y="22" text-anchor="middle" font-size="14" '
            f'font-weight="bold" fill="#111">{escape(title)}</text>'
        )

    def legend(
        self, names: Sequence[str], colours: Sequence[str], dashed: Sequence[bool] | None = None
    ) -> None:
        if not names:
            return
        row_h, box_w = 16, 18
        width = 12 + box_w + 7 * max(len(n) for n in names)
        x, y = self.x1 - width - 8, self.y1 + 8
        p = self.parts
        p.append(
            f'<rect x="{x}" y="{y}" width="{width}" height="{row_h * len(names) + 8}" '
            'fill="white" fill-opacity="0.85" stroke="#bbb" stroke-width="1"/>'
        )
        for i, (name, colour) in enumerate(zip(names, colours, strict=True)):
            ly = y + 12 + i * row_h
            dash = ' stroke-dasharray="5 3"' if dashed and dashed[i] else ""
            p.append(
                f'<line x1="{x + 6}" y1="{ly}" x2="{x + 6 + box_w}" y2="{ly}" '
                f'stroke="{colour}" stroke-width="2.5"{dash}/>'
            )
            p.append(
                f'<text x="{x + 10 + box_w}" y="{ly + 4}" font-size="11" '
                f'fill="#111">{escape(name)}</text>'
            )

    def document(self) -> str:
        body = "\n".join(self.parts)
        clip = (
            f'<clipPath id="plot"><rect x="{self.x0}" y="{self.y1}" '
            f'width="{self.x1 - self.x0}" height="{self.y0 - self.y1}"/></clipPath>'
        )
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
            f'viewBox="0 0 {self.w} {self.h}" {_FONT}>\n'
            f"<defs>{clip}</defs>\n"
            f'<rect width="{self.w}" height="{self.h}" fill="white"/>\n{body}\n</svg>\n'
        )


def _range(values: Sequence[float], log: bool) -> tuple[float, float]:
    vals = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not vals:
        return (1.0, 10.0) if log else (0.0, 1.0)
    return min(vals), max(vals)


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 640,
    height: int = 360,
    log_x: bool = False,
    y_min: float | None = None,
    hlines: dict[str, float] | None = None,
) -> str:
    """One polyline (with point markers) per series; ``hlines`` adds labelled dashed
    horizontal reference lines (e.g. a threshold). ``log_x`` drops points with x <= 0.
    ``y_min`` fixes the bottom of the y axis (default: the data's minimum, or 0 if all data are
    positive and the minimum is within the lower half). Returns the SVG text."""
    hlines = hlines or {}
    pts = {
        name: [
            (x, y)
            for x, y in data
            if math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)
        ]
        for name, data in series.items()
    }
    xs = [x for data in pts.values() for x, _ in data]
    ys = [y for data in pts.values() for _, y in data] + list(hlines.values())
    xlo, xhi = _range(xs, log_x)
    ylo, yhi = _range(ys, False)
    if y_min is not None:
        ylo = y_min
    elif 0 <= ylo <= yhi / 2:
        ylo = 0.0
    if log_x:
        xticks = _log_ticks(xlo, xhi)
        xlo, xhi = xticks[0], xticks[-1]
    else:
        xticks = nice_ticks(xlo, xhi)
        xlo, xhi = xticks[0], xticks[-1]
    yticks = [t for t in nice_ticks(ylo, max(yhi, ylo + 1e-12)) if t >= ylo - 1e-12]
    yhi = max(yticks[-1], yhi)
    f = _Frame(width, height, (xlo, xhi), (ylo, yhi), log_x, False)
    f.axes(xticks, yticks, x_label, y_label, title)
    names, colours, dashed = [], [], []
    for i, (name, data) in enumerate(pts.items()):
        colour = COLOURS[i % len(COLOURS)]
        names.append(name)
        colours.append(colour)
        dashed.append(False)
        data = sorted(data)
        if not data:
            continue
        path = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in data)
        f.parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" '
            'stroke-width="2" stroke-linejoin="round" clip-path="url(#plot)"/>'
        )
        for x, y in data:
            f.parts.append(
                f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="2.8" fill="{colour}"/>'
            )
    for j, (name, y) in enumerate(hlines.items()):
        colour = COLOURS[(len(pts) + j) % len(COLOURS)]
        names.append(name)
        colours.append(colour)
        dashed.append(True)
        f.parts.append(
            f'<line x1="{f.x0}" y1="{f.py(y):.1f}" x2="{f.x1}" y2="{f.py(y):.1f}" '
            f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="5 3"/>'
        )
    f.legend(names, colours, dashed)
    return f.document()


def histogram(
    values_by_series: dict[str, list[float]],
    *,
    bins: int | Sequence[float],
    title: str,
    x_label: str,
    y_label: str,
    log_y: bool = False,
    width: int = 640,
    height: int = 360,
) -> str:
    """Overlaid histograms on shared bins: each series as a translucent filled outline.

    ``bins`` is a count (equal bins over all the values) or the bin edges (values outside are
    not counted). ``log_y`` uses a log count axis (empty bins drop to the axis). Returns the
    SVG text."""
    allv = [v for vs in values_by_series.values() for v in vs if math.isfinite(v)]
    if isinstance(bins, int):
        lo, hi = _range(allv, False)
        if hi <= lo:
            hi = lo + 1.0
        n = max(1, bins)
        edges = [lo + (hi - lo) * k / n for k in range(n + 1)]
    else:
        edges = sorted(float(e) for e in bins)
    n = len(edges) - 1
    counts: dict[str, list[int]] = {}
    for name, vs in values_by_series.items():
        c = [0] * n
        for v in vs:
            if not math.isfinite(v) or v < edges[0] or v > edges[-1]:
                continue
            k = _bin_index(edges, v)
            c[k] += 1
        counts[name] = c
    top = max((max(c) for c in counts.values() if c), default=1) or 1
    xticks = nice_ticks(edges[0], edges[-1])
    xticks = [t for t in xticks if edges[0] - 1e-12 <= t <= edges[-1] + 1e-12] or [edges[0]]
    if log_y:
        yticks = _log_ticks(1.0, max(top, 2))
        yr = (0.8, yticks[-1])
        floor = 0.8
    else:
        yticks = nice_ticks(0.0, float(top))
        yr = (0.0, yticks[-1])
        floor = 0.0
    f = _Frame(width, height, (edges[0], edges[-1]), yr, False, log_y)
    f.axes(xticks, [t for t in yticks if t >= yr[0]], x_label, y_label, title)
    names, colours = [], []
    for i, (name, c) in enumerate(counts.items()):
        colour = COLOURS[i % len(COLOURS)]
        names.append(f"{name} (n={sum(c)})")
        colours.append(colour)
        pts = [(f.px(edges[0]), f.py(floor))]
        for k in range(n):
            y = f.py(c[k] if c[k] > 0 or not log_y else floor)
            pts += [(f.px(edges[k]), y), (f.px(edges[k + 1]), y)]
        pts.append((f.px(edges[-1]), f.py(floor)))
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        f.parts.append(
            f'<polygon points="{path}" fill="{colour}" fill-opacity="0.25" '
            f'stroke="{colour}" stroke-width="1.5" stroke-linejoin="miter" '
            'clip-path="url(#plot)"/>'
        )
    f.legend(names, colours)
    return f.document()


def _bin_index(edges: Sequence[float], v: float) -> int:
    """Index of the bin holding ``v`` (the last bin includes its right edge)."""
    lo, hi = 0, len(edges) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if v >= edges[mid]:
            lo = mid
        else:
            hi = mid
    return lo


def write(path: str | Path, svg: str) -> Path:
    """Write ``svg`` to ``path`` (parent folders created); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(svg, encoding="utf-8")
    return p
