"""Turning a stored QC result into what the asset page shows: sync over time, offset, checks, metrics,
and where each check fails or warns (its time ranges on a timeline, its worst frame).

QC stores a typed record (`qc.record.VideoChecks.to_record()`); everything here reads it back
with `VideoChecks.from_record` (a check: `CheckResult.from_dict`) and uses its fields, never
guessed key names. Checks are shown by what they say (verdict, ranges, worst_s), never picked by
name: QC adds checks without this page changing.

What the sync chart shows, and against which line. The gate (0.92 by default) is a threshold on
the *calibrated* score, P(in sync), which the calibration fitted on 5 s windows of real clips. QC
scores every 5 s analysis window of the video with that same calibration
(`LipSyncResult.sync_windows`, a window every 2.5 s), so the chart plots those per-window
probabilities with the gate drawn across them, and a window below the gate is marked: that is
the stretch that would not pass on its own. Single windows are noisier than the whole video
(whose score averages the windows' curves): many genuine 5 s windows stay under 0.92 (see the
calibration report), so red windows on a video that passes overall are a hint where to look,
not a failure; the stretches QC itself flags (the `lipsync_windows` check: windows under P 0.5)
are on the timeline with the other checks' ranges. When there is no calibrated score (no
calibration, or a record stored before QC scored windows), the chart plots the raw per-window
correlations (mouth against predicted mouth, 2 s windows; SyncNet: frame confidence; landmark-v1
records: canonical variates) for their shape only: they are not on
the score's scale, so no gate is drawn and nothing is marked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qc.record import RecordError, VideoChecks
from qc.verdicts import CheckResult
from review.decisions import MAX_RANGES, MAX_SECONDS
from review.queue import as_text

FLAGGED = ("fail", "warn")
MAX_RANGES_SHOWN = 12  # per check in the table; the timeline draws them all
MIN_RANGE_S = 0.04  # one 25 fps frame: a stretch QC gives as a single instant
MIN_SEGMENT_PX = 2.0  # a one-frame stretch of a long video stays visible and clickable


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


@dataclass(frozen=True)
class Segment:
    """One failing or warning stretch on the QC timeline."""

    x: float
    width: float
    start: float  # seconds: where a click seeks to
    verdict: str  # "fail" (red) or "warn" (amber)
    title: str  # the tooltip: check, range, verdict


@dataclass(frozen=True)
class Lane:
    name: str
    verdict: str
    y: float
    segments: list[Segment]


@dataclass(frozen=True)
class Timeline:
    """Geometry of the QC timeline under the player: one lane per check that says where."""

    width: int
    height: int
    left: int
    plot_width: int
    lane_height: int
    bottom: int
    lanes: list[Lane]
    x_ticks: list[tuple[float, str]]
    duration: float


@dataclass(frozen=True)
class Frame:
    """A check's worst frame, shown as a thumbnail."""

    name: str
    verdict: str
    t: float  # seconds, for the frame URL and the seek
    label: str  # the time as the page writes it


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
    """One row per stored check: verdict, reason and where it goes wrong (rows stored before QC
    kept time ranges simply have none)."""
    rows = []
    for check in checks or []:
        parsed = _parse(check)
        if parsed is None:
            rows.append({"name": as_text(check), "value": "", "threshold": "", "verdict": "unreadable",
                         "reason": "not a QC check result", "ok": False, "ranges": [],
                         "more_ranges": 0, "worst_s": None, "worst_label": ""})  # fmt: skip
            continue
        ranges = [(a, b, f"{seconds(a)}–{seconds(b)} s") for a, b in parsed.ranges]
        rows.append({
            "name": parsed.name, "value": _fmt(parsed.value), "threshold": _fmt(parsed.threshold),
            "verdict": parsed.verdict, "reason": parsed.reason, "ok": parsed.verdict == "pass",
            "ranges": ranges[:MAX_RANGES_SHOWN], "more_ranges": max(0, len(ranges) - MAX_RANGES_SHOWN),
            "worst_s": parsed.worst_s,
            "worst_label": seconds(parsed.worst_s) if _finite_time(parsed.worst_s) else "",
        })  # fmt: skip
    return rows


def _parse(check: Any) -> CheckResult | None:
    try:
        return CheckResult.from_dict(check)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def flagged(checks: list[Any]) -> list[CheckResult]:
    """The readable checks that fail or warn, in their stored order."""
    parsed = (_parse(check) for check in checks or [])
    return [c for c in parsed if c is not None and c.verdict in FLAGGED]


def seconds(value: float) -> str:
    """12.0, 14.5, 12.04: at least one decimal, at most two (QC rounds ranges to 0.01 s)."""
    text = f"{value:.2f}"
    return text[:-1] if text.endswith("0") else text


def _finite_time(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and 0.0 <= value <= MAX_SECONDS


def worst_frames(checks: list[Any]) -> list[Frame]:
    """A frame to look at for each failing or warning check that names its worst moment."""
    return [Frame(c.name, c.verdict, round(c.worst_s, 2), seconds(c.worst_s))
            for c in flagged(checks) if _finite_time(c.worst_s)]  # fmt: skip


def qc_ranges(checks: list[Any], duration: float | None) -> list[tuple[float, float]]:
    """The failing and warning stretches of every check, merged and inside the video, at most as
    many as a decision takes (the closest neighbours are joined first)."""
    end_of_video = duration if duration else MAX_SECONDS
    spans = sorted((max(0.0, a), min(b, end_of_video)) for c in flagged(checks) for a, b in c.ranges
                   if _finite_time(a) and math.isfinite(b) and a < end_of_video)  # fmt: skip
    merged: list[tuple[float, float]] = []
    for a, b in spans:
        b = max(b, min(a + MIN_RANGE_S, end_of_video))  # a one-frame stretch is still a range
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    while len(merged) > MAX_RANGES:
        i = min(range(len(merged) - 1), key=lambda k: merged[k + 1][0] - merged[k][1])
        merged[i:i + 2] = [(merged[i][0], merged[i + 1][1])]
    return [(a, b) for a, b in merged if b > a]


def ranges_text(ranges: list[tuple[float, float]]) -> str:
    """As the reviewer's time-range field reads them: "1.2-2.5, 4-5"."""
    return ", ".join(f"{_plain(a)}-{_plain(b)}" for a, b in ranges)


def _plain(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def timeline(checks: list[Any], duration: float | None) -> Timeline | None:
    """One lane per failing or warning check that has time ranges, across the whole video; None
    when no check says where it goes wrong."""
    lanes_of = [c for c in flagged(checks) if c.ranges]
    if not lanes_of:
        return None
    span = duration or max(b for c in lanes_of for _, b in c.ranges)
    if not span or not math.isfinite(span) or span <= 0:
        return None
    width, left, right, top, lane_h, gap, axis = 560, 120, 10, 4, 12, 4, 16
    plot_w = width - left - right

    def x(t: float) -> float:
        return round(left + plot_w * min(max(t, 0.0), span) / span, 1)

    lanes = []
    for check in lanes_of:
        segments = [Segment(x(a), round(max(MIN_SEGMENT_PX, x(b) - x(a)), 1), a, check.verdict,
                            f"{check.name}: {seconds(a)}–{seconds(b)} s ({check.verdict})")
                    for a, b in check.ranges if math.isfinite(a) and math.isfinite(b) and a < span]  # fmt: skip
        if segments:  # a check flagged only past the end of this video has nothing to draw
            lanes.append(Lane(check.name, check.verdict, top + len(lanes) * (lane_h + gap), segments))
    if not lanes:
        return None
    bottom = top + len(lanes) * (lane_h + gap)
    return Timeline(width, bottom + axis, left, plot_w, lane_h, bottom, lanes, _x_ticks(span, x), span)


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
    x_ticks = _x_ticks(span, x)
    y_ticks = [(y(low + (high - low) * f), f"{low + (high - low) * f:.2g}") for f in (0, 0.5, 1)]
    return Chart(width, height, left, height - bottom, points,
                 " ".join(f"{px},{py}" for px, py, *_ in points),
                 y(threshold) if threshold is not None else None, threshold, y_ticks, x_ticks, span,
                 caption)  # fmt: skip


def _x_ticks(span: float, x: Callable[[float], float]) -> list[tuple[float, str]]:
    """Second marks along a time axis: every 1, 5 or 30 s depending on the length."""
    step = 1.0 if span <= 10 else 5.0 if span <= 60 else 30.0
    return [(x(i * step), f"{i * step:g}s") for i in range(int(span // step) + 1)]
