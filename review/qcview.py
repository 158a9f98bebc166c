"""Turning a QCResult into what the asset page shows: sync over time, offset, checks, raw metrics.

QC stores its metrics as JSON. The readers below accept the shapes QC writes (per-window values
as numbers or as {start, end, score|value|confidence} objects) and ignore what they do not know,
so a newer QC version never breaks the review page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from review.queue import as_text

WINDOW_KEYS = ("windows", "per_window", "window_scores", "window_values", "sync_windows")
VALUE_KEYS = ("score", "value", "confidence", "correlation", "sync")
OFFSET_KEYS = ("offset_frames", "offset", "av_offset_frames", "av_offset")
_PASSING = {"pass", "passed", "ok", "true"}


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    value: float


@dataclass(frozen=True)
class Chart:
    """Geometry of the inline SVG chart; the template draws it, so no script is needed."""

    width: int
    height: int
    left: int
    bottom: int
    points: list[tuple[float, float, float, float, bool]]  # x, y, start, value, below the line
    line: str
    gate_y: float | None
    gate: float | None
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    duration: float


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def sync_windows(metrics: dict[str, Any], duration: float | None) -> list[Window]:
    raw: list[Any] = []
    for key in WINDOW_KEYS:
        if isinstance(metrics.get(key), list) and metrics[key]:
            raw = metrics[key]
            break
    if not raw:
        return []
    step = _number(metrics.get("window_seconds")) or _number(metrics.get("window_s"))
    if step is None:
        step = (duration / len(raw)) if duration else 1.0
    windows = []
    for i, entry in enumerate(raw):
        start, value = i * step, _number(entry)
        end = start + step
        if isinstance(entry, dict):
            value = next((v for k in VALUE_KEYS if (v := _number(entry.get(k))) is not None), None)
            given = _number(entry.get("start", entry.get("t", entry.get("time"))))
            start = start if given is None else given
            given_end = _number(entry.get("end"))
            end = start + step if given_end is None else given_end
        if value is not None:
            windows.append(Window(start, end, value))
    return windows


def offset_frames(metrics: dict[str, Any]) -> float | None:
    return next((v for k in OFFSET_KEYS if (v := _number(metrics.get(k))) is not None), None)


def scalar_metrics(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The other single-number or short-text metrics, for a small table."""
    shown = []
    for key, value in sorted(metrics.items()):
        if key in WINDOW_KEYS or key in OFFSET_KEYS:
            continue
        if (number := _number(value)) is not None:
            shown.append((key, f"{number:.4g}"))
        elif isinstance(value, str) and len(value) <= 80:
            shown.append((key, value))
    return shown


def check_rows(checks: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for check in checks or []:
        if not isinstance(check, dict):
            rows.append({"name": as_text(check), "value": "", "threshold": "", "verdict": "", "reason": "", "ok": True})
            continue
        verdict = check.get("verdict", check.get("status", check.get("passed", "")))
        rows.append({
            "name": as_text(check.get("name", check.get("check", "?"))),
            "value": _fmt(check.get("value")),
            "threshold": _fmt(check.get("threshold")),
            "verdict": as_text(verdict),
            "reason": as_text(check.get("reason", check.get("message", ""))),
            "ok": str(verdict).lower() in _PASSING,
        })
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if (number := _number(value)) is not None:
        return f"{number:.4g}"
    return as_text(value)


def chart(windows: list[Window], duration: float | None, gate: float | None) -> Chart | None:
    if not windows:
        return None
    width, height, left, right, top, bottom = 560, 160, 40, 10, 10, 24
    span = max(duration or 0.0, windows[-1].end) or 1.0
    values = [w.value for w in windows]
    unit_scale = all(0.0 <= v <= 1.0 for v in values)
    # On a 0-1 scale the gate is a meaningful line; the axis starts at 0.5 (lower when a window
    # falls below) so differences near the gate stay visible. Raw metrics get their own range.
    if unit_scale:
        low, high = max(0.0, min(0.5, math.floor((min(values) - 0.05) * 10) / 10)), 1.0
    else:
        low, high = min(0.0, min(values)), max(values) * 1.1 or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return round(left + plot_w * t / span, 1)

    def y(v: float) -> float:
        return round(top + plot_h * (1 - (v - low) / (high - low)), 1)

    threshold = gate if unit_scale else None
    points = [(x((w.start + w.end) / 2), y(w.value), w.start, w.value,
               threshold is not None and w.value < threshold) for w in windows]
    x_step = 1.0 if span <= 10 else 5.0 if span <= 60 else 30.0
    x_ticks = [(x(t * x_step), f"{t * x_step:g}s") for t in range(int(span // x_step) + 1)]
    y_ticks = [(y(low + (high - low) * f), f"{low + (high - low) * f:.2g}") for f in (0, 0.5, 1)]
    return Chart(width, height, left, height - bottom, points,
                 " ".join(f"{px},{py}" for px, py, *_ in points),
                 y(threshold) if threshold is not None else None, threshold, y_ticks, x_ticks, span)
