"""Line charts drawn with braille dots: downsampling and rasterising are pure functions (no Textual).

A braille cell holds 2 x 4 dots, so a chart of W x H cells has 2W x 4H dots. Series are first
bucketed to at most 2W points (the mean of each bucket), so drawing costs the same for 100 points
and for 100,000: the monitor of a long run stays responsive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

Point = tuple[float, float]

# Dot bit of braille cell position (column 0-1, row 0-3), from the Unicode braille pattern block.
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
_BRAILLE = 0x2800


def finite(points: Sequence[Point], *, positive: bool = False) -> list[Point]:
    """The points whose value is a finite number (and > 0 when `positive`, for a log scale)."""
    return [(x, y) for x, y in points if math.isfinite(y) and (y > 0 or not positive)]


def bucket(points: Sequence[Point], limit: int) -> list[Point]:
    """At most `limit` points: consecutive runs of points replaced by their mean (order kept)."""
    n = len(points)
    if limit <= 0:
        return []
    if n <= limit:
        return list(points)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    out = []
    for i in range(limit):
        lo, hi = i * n // limit, (i + 1) * n // limit
        if hi > lo:
            out.append((sum(xs[lo:hi]) / (hi - lo), sum(ys[lo:hi]) / (hi - lo)))
    return out


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]
    style: str
    marker: bool = False
    """Draw dots only (for sparse series such as validation loss), not joined lines."""


def _ticks(value: float, log: bool) -> str:
    if log:
        value = 10**value
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e4 or magnitude < 1e-2:
        return f"{value:.1e}"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _prepare(series: Sequence[Series], plot_w: int, log: bool) -> tuple[list[tuple[Series, list[Point]]], list[float]]:
    """Each series' finite points, bucketed to the plot's dot columns (log10 of y on a log chart), and the
    x range of the points before bucketing: the axis shows the real first and last step."""
    prepared = []
    x_range: list[float] = []
    for s in series:
        pts = finite(s.points, positive=log)
        if pts:
            x_range += [min(p[0] for p in pts), max(p[0] for p in pts)]
        pts = bucket(pts, 2 * plot_w)
        if log:
            pts = [(x, math.log10(y)) for x, y in pts]
        prepared.append((s, pts))
    return prepared, x_range


class _Canvas:
    """Braille cells of plot_w x plot_h characters, 2 x 4 dots each; a cell takes the style of the
    series that drew in it last."""

    def __init__(self, plot_w: int, plot_h: int, x: tuple[float, float], y: tuple[float, float]) -> None:
        self.w, self.h, self.x, self.y = plot_w, plot_h, x, y
        self.cells = [[0] * plot_w for _ in range(plot_h)]
        self.owner: list[list[int | None]] = [[None] * plot_w for _ in range(plot_h)]

    def to_dot(self, p: Point) -> tuple[int, int]:
        (x_lo, x_hi), (y_lo, y_hi) = self.x, self.y
        col = round((p[0] - x_lo) / (x_hi - x_lo) * (2 * self.w - 1))
        row = round((y_hi - p[1]) / (y_hi - y_lo) * (4 * self.h - 1))
        return col, row

    def plot(self, col: int, row: int, index: int) -> None:
        cy, cx = row // 4, col // 2
        self.cells[cy][cx] |= _DOTS[row % 4][col % 2]
        self.owner[cy][cx] = index

    def draw(self, index: int, s: Series, pts: list[Point]) -> None:
        previous = None
        for p in pts:
            col, row = self.to_dot(p)
            if s.marker or previous is None:
                self.plot(col, row, index)
                if s.marker:  # a marker is two dots wide so that it stands out from the lines
                    self.plot(min(col + 1, 2 * self.w - 1), row, index)
            else:
                for c, r in _line(previous, (col, row)):
                    self.plot(c, r, index)
            previous = (col, row)


def _label(cy: int, plot_h: int, y_lo: float, y_hi: float, log: bool) -> str:
    if cy == 0:
        return _ticks(y_hi, log)
    if cy == plot_h - 1:
        return _ticks(y_lo, log)
    if cy == plot_h // 2 and plot_h >= 5:
        return _ticks((y_hi + y_lo) / 2, log)
    return ""


def render(series: Sequence[Series], width: int, height: int, *, log: bool = False,
           empty: str = "waiting for data") -> Text:
    """A chart of `width` x `height` cells (y labels on the left, the step range on the last line)."""
    if width < 12 or height < 3:
        return Text("")
    label_width = 8
    plot_w, plot_h = width - label_width, height - 1
    prepared, x_range = _prepare(series, plot_w, log)
    every = [p for _, pts in prepared for p in pts]
    if not every:
        lines = [" " * width] * height
        lines[height // 2] = empty.center(width)[:width]
        return Text("\n".join(lines), style="dim")
    x_lo, x_hi = min(x_range), max(x_range)
    y_lo, y_hi = min(p[1] for p in every), max(p[1] for p in every)
    if y_hi - y_lo < 1e-12:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    if x_hi - x_lo < 1e-12:
        x_hi = x_lo + 1
    canvas = _Canvas(plot_w, plot_h, (x_lo, x_hi), (y_lo, y_hi))
    for index, (s, pts) in enumerate(prepared):
        canvas.draw(index, s, pts)
    text = Text(no_wrap=True, overflow="crop")
    for cy in range(plot_h):
        label = _label(cy, plot_h, y_lo, y_hi, log)
        text.append(f"{label:>{label_width - 1}}┤" if label else " " * (label_width - 1) + "│", style="dim")
        for bits, who in zip(canvas.cells[cy], canvas.owner[cy]):
            text.append(chr(_BRAILLE + bits) if bits else " ", style=prepared[who][0].style if who is not None else "")
        text.append("\n")
    left, right = f"{x_lo:.0f}", f"{x_hi:.0f}"
    axis = " " * (label_width - 1) + "└" + left + right.rjust(plot_w - len(left))
    text.append(axis[:width], style="dim")
    return text


def _line(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """Dots from a to b (Bresenham), b included and a left out (it was drawn already)."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    out = []
    while (x0, y0) != (x1, y1):
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy
        out.append((x0, y0))
    return out
