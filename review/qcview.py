"""Turning a stored QC result into what the asset page shows: sync over time, offset, checks, metrics.

QC stores a typed record (`qc.record.VideoChecks.to_record()`); everything here reads it back
with `VideoChecks.from_record` and uses its fields, never guessed key names.

What the sync chart shows, and against which line. The gate (0.92 by default) is a threshold on
the *calibrated* score, P(in sync), which the calibration fitted on 5 s windows of real clips. QC
scores every 5 s analysis window of the video with that same calibration
(`LipSyncResult.sync_windows`, a window every 2.5 s), so the chart plots those per-window
probabilities with the gate drawn across them, and a window below the gate is marked: that is
the stretch that would not pass on its own. Single windows are noisier than the whole video
(whose score averages the windows' curves): only about half of genuine 5 s windows reach 0.92
(see the calibration report), so marked windows on a video that passes overall are a hint where
to look, not a failure. When there is no calibrated score (no calibration, or a record stored
before QC scored windows), the chart plots the raw per-window correlations (canonical mouth and
speech variates, 2 s windows; SyncNet: frame confidence) for their shape only: they are not on
the score's scale, so no gate is drawn and nothing is marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from qc.record import RecordError, VideoChecks
from qc.verdicts import CheckResult
from review.queue import as_text


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    value: float
    calibrated: bool = True  # P(in sync), on the gate's scale; False: a raw value


@dataclass(frozen=True)
class Chart:
    """Geometry of the inline SVG chart; the template draws it, so no script is needed."""

    width: int
    height: int
    left: int
    bottom: int
    points: list[tuple[float, float, float, float, bool]]  # x, y, start, value, below the gate
    line: str
    gate_y: float | None
    gate: float | None
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    duration: float
    caption: str  # what the values are


def read(metrics: dict[str, Any] | None, checks: list[Any] | None = None) -> VideoChecks | None:
    """The stored record, typed; None when it is in no format QC wrote (the page shows less)."""
    try:
        return VideoChecks.from_record(metrics, checks if isinstance(checks, list) else [])
    except RecordError:
        return None


def sync_windows(metrics: dict[str, Any], duration: float | None = None) -> list[Window]:
    """The values the chart plots: per-window P(in sync) when calibrated, else the raw values."""
    record = read(metrics)
    lip = record.lipsync if record is not None else None
    if lip is None:
        return []
    if lip.score is not None:
        scored = [Window(w.start_s, w.end_s, w.score) for w in lip.sync_windows if w.score is not None]
        if scored:
            return scored
    end_of_video = lip.duration_s or duration or math.inf
    return [Window(start, min(start + lip.window_s, end_of_video), value, calibrated=False)
            for start, value in zip(lip.window_starts_s, lip.window_values, strict=False)
            if value is not None and math.isfinite(value)]  # fmt: skip


def offset_frames(metrics: dict[str, Any]) -> float | None:
    record = read(metrics)
    if record is None or record.lipsync is None or record.lipsync.offset_frames is None:
        return None
    return float(record.lipsync.offset_frames)


def scalar_metrics(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The lip-sync scorer's single numbers, for a small table."""
    record = read(metrics)
    if record is None:
        return [("QC record", "stored in a format this page cannot read")] if metrics else []
    lip = record.lipsync
    if lip is None:
        return [("lip-sync error", record.lipsync_error)] if record.lipsync_error else []
    rows: list[tuple[str, str | None]] = [
        ("scorer", lip.scorer),
        ("calibration", lip.calibration),
        ("confidence", _fmt(lip.confidence)),
        ("peak correlation", _fmt(lip.correlation)),
        ("distance (LSE-D)", _fmt(lip.distance)),
        ("face tracked", f"{lip.face_fraction:.0%} of frames"),
        ("frames (25 fps)", f"{lip.frames} ({lip.duration_s:.1f} s)"),
        ("no score because", lip.score_reason if lip.score is None else None),
    ]
    return [(k, v) for k, v in rows if v]


def check_rows(checks: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for check in checks or []:
        try:
            parsed = CheckResult.from_dict(check)
        except (KeyError, TypeError, ValueError, AttributeError):
            rows.append({"name": as_text(check), "value": "", "threshold": "", "verdict": "unreadable",
                         "reason": "not a QC check result", "ok": False})  # fmt: skip
            continue
        rows.append({
            "name": parsed.name, "value": _fmt(parsed.value), "threshold": _fmt(parsed.threshold),
            "verdict": parsed.verdict, "reason": parsed.reason, "ok": parsed.verdict == "pass",
        })  # fmt: skip
    return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if (number := _number(value)) is not None:
        return f"{number:.4g}"
    return as_text(value)


def chart(windows: list[Window], duration: float | None, gate: float | None) -> Chart | None:
    """The chart of `windows`; the gate is drawn (and windows below it marked) only across
    calibrated values, the scale it is a threshold on (see the module docstring)."""
    if not windows:
        return None
    width, height, left, right, top, bottom = 560, 160, 40, 10, 10, 24
    span = max(duration or 0.0, windows[-1].end) or 1.0
    values = [w.value for w in windows]
    calibrated = all(w.calibrated for w in windows)
    if calibrated:
        # The axis starts at 0.5 (lower when a window falls below) so differences near the gate
        # stay visible.
        low, high = max(0.0, min(0.5, math.floor((min(values) - 0.05) * 10) / 10)), 1.0
        caption = "P(in sync) per 5 s window"
    else:
        low, high = min(0.0, min(values)), max(values) * 1.1 or 1.0
        caption = "raw per-window sync values (uncalibrated: no gate applies)"
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return round(left + plot_w * t / span, 1)

    def y(v: float) -> float:
        return round(top + plot_h * (1 - (v - low) / (high - low)), 1)

    threshold = gate if calibrated else None
    points = [(x((w.start + w.end) / 2), y(w.value), w.start, w.value,
               threshold is not None and w.value < threshold) for w in windows]  # fmt: skip
    x_step = 1.0 if span <= 10 else 5.0 if span <= 60 else 30.0
    x_ticks = [(x(t * x_step), f"{t * x_step:g}s") for t in range(int(span // x_step) + 1)]
    y_ticks = [(y(low + (high - low) * f), f"{low + (high - low) * f:.2g}") for f in (0, 0.5, 1)]
    return Chart(width, height, left, height - bottom, points,
                 " ".join(f"{px},{py}" for px, py, *_ in points),
                 y(threshold) if threshold is not None else None, threshold, y_ticks, x_ticks, span,
                 caption)  # fmt: skip
