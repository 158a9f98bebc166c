"""Visual checks of what reviewers reject generated talking heads for, measured over time.

Each check reads QC's one pass (`qc.scan`): the face track's landmarks and 32x24 mouth patches
on every 25 fps frame, the soundtrack, and what `VisualScan` collects from the frames (the
sharpness of the mouth against the eyes, the face's brightness). Each returns a `CheckResult`
with a value, a threshold, a verdict, a reason, the stretches that fail or warn (`ranges`) and
the time of the worst frame (`worst_s`):

- mouth_region: is the mouth a real mouth? Two measures of a 64x48 patch aligned on the mouth
  corners, per 1 s window: its detail (mean absolute Laplacian) over that of the eyes, which a
  blur or smear takes down, and its flat share (pixels whose Laplacian is under 0.75 grey
  levels), which a flat fill takes up: lips, teeth, tongue and skin always have some texture.
- mouth_motion: does the mouth move while the speech goes on? The longest stretch of speech
  during which the darkness of the face track's mouth patch stays still (its 0.5 s standard
  deviation under a floor). The pixels, not the landmarks: the face mesh's lip points jitter by
  as much as a frozen mouth's would move.
- flicker: the face's brightness jumping from frame to frame (its second difference, per 1 s).
- jitter: the face jumping in place (the second difference of its position over the eye
  distance, per 1 s window, on the frames the face mesh ran on).
- eye_blinks: the longest stretch without a blink (the lid gap over the eye width dipping):
  eyes that stop blinking for 20 s look dead; a person judges, so this only warns.

The thresholds come from the real clips in ../shared/media/video and the broken copies
`qc.defects` makes of them (`benchmarks/qc_trust.py` prints both sides of every threshold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from qc.decode import FPS, HOP, Frame
from qc.facetrack import MESH_STRIDE, POS, MouthTrack
from qc.verdicts import CheckResult

STILL_FRAMES = 12  # 0.5 s: the window a still mouth is judged over
DETAIL_EVERY = 2  # frames: the mouth and eye detail is measured on every second frame
MOUTH_W, MOUTH_H = 64, 48
EYES_W, EYES_H = 96, 32


@dataclass(frozen=True)
class VisualThresholds:
    """The visual checks' limits, with where each default comes from (see the module docstring)."""

    window_s: float = 1.0
    # mouth detail / eye detail, worst 1 s window's median (a blur or smear lowers it).
    # Real mouths 0.32-1.6 on the dev clips (the lowest: VASA-1's smooth generated mouth, which
    # warns); the corpus's blurred mouths 0.15-0.50, most under 0.34.
    mouth_detail_fail: float = 0.31
    mouth_detail_warn: float = 0.345
    # Flat share of the mouth patch, worst 1 s window's median: real mouths at most 0.105 on
    # the dev clips, a flat fill 0.30.
    mouth_flat_warn: float = 0.15
    mouth_flat_fail: float = 0.20
    # A still mouth: the 0.5 s standard deviation of the mouth patch's darkness (grey levels)
    # under this while there is speech. Real speech: at least 1.2 in 98 % of its frames on the
    # dev clips; the corpus's frozen mouths 0.3-0.8.
    still_darkness_std: float = 1.0
    mouth_still_warn_s: float = 0.8
    mouth_still_fail_s: float = 1.2
    # Face brightness second difference (0-255 levels), worst 1 s window's mean: real clips up
    # to 7.2 (a phone video whose small face moves through changing light), the corpus's
    # flicker (±18 levels every frame) about 36.
    flicker_warn: float = 9.0
    flicker_fail: float = 14.0
    # Face position second difference over the eye distance, worst 1 s window's median: real
    # clips up to 0.086 (an expressive child): only gross jitter is caught.
    jitter_warn: float = 0.12
    jitter_fail: float = 0.25
    # Longest stretch without a blink, seconds (warn only).
    blink_gap_warn_s: float = 20.0


def _aligned(grey: np.ndarray, a: np.ndarray, b: np.ndarray, span: float, size: tuple[int, int]) -> np.ndarray:
    """A `size` patch centred between points a and b, level with them, `span` times their distance wide."""
    centre = (a + b) / 2
    width = float(np.linalg.norm(b - a))
    angle = math.degrees(math.atan2(float(b[1] - a[1]), float(b[0] - a[0])))
    scale = size[0] / max(span * width, 1e-3)
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    m[0, 2] += size[0] / 2 - centre[0]
    m[1, 2] += size[1] / 2 - centre[1]
    return cv2.warpAffine(grey, m, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _detail(patch: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(patch.astype(np.float32), cv2.CV_32F, ksize=3)).mean())


@dataclass
class VisualStats:
    detail_t: list[float] = field(default_factory=list)
    mouth_detail: list[float] = field(default_factory=list)  # mouth detail / eye detail
    mouth_flat: list[float] = field(default_factory=list)  # flat share of the mouth patch
    face_luma: list[float] = field(default_factory=list)  # per frame, NaN without a face


class VisualScan:
    """Collects `VisualStats` from the frames of one pass (a `qc.scan.FrameConsumer`)."""

    def __init__(self) -> None:
        self.stats = VisualStats()

    def add(self, frame: Frame, marks: np.ndarray | None) -> None:
        out = self.stats
        if marks is None:
            out.face_luma.append(math.nan)
            return
        grey = frame.luma
        eyes = (marks[POS["right_eye"]], marks[POS["left_eye"]])
        mouth = (marks[POS["mouth_right"]], marks[POS["mouth_left"]])
        # The cheeks between eyes and mouth: skin, lit like the face, no mouth or eye motion.
        centre = (eyes[0] + eyes[1] + mouth[0] + mouth[1]) / 4
        r = max(2, int(0.2 * float(np.linalg.norm(eyes[1] - eyes[0]))))
        x, y = int(centre[0]), int(centre[1])
        region = grey[max(0, y - r) : y + r, max(0, x - r) : x + r]
        out.face_luma.append(float(region.mean()) if region.size else math.nan)
        if frame.index % DETAIL_EVERY == 0:
            mouth_patch = _aligned(grey, *mouth, 1.4, (MOUTH_W, MOUTH_H))
            eye_patch = _aligned(grey, *eyes, 1.9, (EYES_W, EYES_H))
            lap = np.abs(cv2.Laplacian(mouth_patch.astype(np.float32), cv2.CV_32F, ksize=3))
            inner = lap[MOUTH_H // 4 : -MOUTH_H // 4, MOUTH_W // 5 : -MOUTH_W // 5]
            out.detail_t.append(frame.t)
            out.mouth_detail.append(float(inner.mean()) / max(_detail(eye_patch), 0.5))
            out.mouth_flat.append(float((inner < 0.75).mean()))


# --------------------------------------------------------------------------- helpers


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the runs of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(mask).astype(np.int8), [0]])))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def windowed(times: Sequence[float], values: Sequence[float], window_s: float, how: str = "median") -> list[tuple[float, float]]:
    """(window start, statistic) per `window_s` window with at least 2 finite values."""
    t = np.asarray(times, np.float64)
    v = np.asarray(values, np.float64)
    keep = np.isfinite(v)
    t, v = t[keep], v[keep]
    if not t.size:
        return []
    out = []
    for start in np.arange(0.0, float(t.max()) + 1e-9, window_s):
        sel = (t >= start) & (t < start + window_s)
        if sel.sum() >= 2:
            out.append((float(start), float(np.median(v[sel]) if how == "median" else np.mean(v[sel]))))
    return out


def merge_ranges(starts: Sequence[float], length: float, end: float | None = None) -> list[tuple[float, float]]:
    """Windows starting at `starts`, each `length` long, merged where they touch."""
    merged: list[list[float]] = []
    for a in sorted(starts):
        b = a + length if end is None else min(a + length, end)
        if merged and a <= merged[-1][1] + 1e-6:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def spans_text(spans: Sequence[tuple[float, float]], limit: int = 3) -> str:
    text = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in spans[:limit])
    return text + (f" and {len(spans) - limit} more" if len(spans) > limit else "")


def _grade(value: float, warn: float, fail: float, *, low_is_bad: bool) -> str:
    if low_is_bad:
        return "fail" if value < fail else "warn" if value < warn else "pass"
    return "fail" if value > fail else "warn" if value > warn else "pass"


def _windowed_check(
    name: str, windows: list[tuple[float, float]], th: VisualThresholds, warn: float, fail: float,
    *, low_is_bad: bool, threshold: str, good: str, bad: str, duration: float, digits: int = 2,
) -> CheckResult:  # fmt: skip
    """A per-window check: the worst window's value graded, every window past warn a range."""
    if not windows:
        return CheckResult(name, None, threshold, "warn", f"{name.replace('_', ' ')} not measurable: no face tracked")
    pick = min if low_is_bad else max
    start, worst = pick(windows, key=lambda w: w[1])
    verdict = _grade(worst, warn, fail, low_is_bad=low_is_bad)
    past = [a for a, v in windows if (v < warn if low_is_bad else v > warn)]
    ranges = merge_ranges(past, th.window_s, duration)
    details = {"windows": [[round(a, 2), round(v, 4)] for a, v in windows]}
    if verdict == "pass":
        reason = good.format(worst=worst)
    else:
        reason = bad.format(worst=worst, at=spans_text([(start, start + th.window_s)]), ranges=spans_text(ranges))
    return CheckResult(name, round(worst, digits + 2), threshold, verdict, reason, details,
                       ranges=ranges if verdict != "pass" else [], worst_s=start + th.window_s / 2)  # fmt: skip


# --------------------------------------------------------------------------- the checks


def check_mouth_region(stats: VisualStats, th: VisualThresholds, duration: float) -> CheckResult:
    """The worse of the two mouth measures: flat share (a fill) and detail (a blur or smear)."""
    flat = _windowed_check(
        "mouth_region", windowed(stats.detail_t, stats.mouth_flat, th.window_s), th,
        th.mouth_flat_warn, th.mouth_flat_fail, low_is_bad=False,
        threshold=f"flat share of the mouth ≤ {th.mouth_flat_warn:g} and its detail ≥ "
                  f"{th.mouth_detail_warn:g} of the eyes' in every {th.window_s:g} s",
        good="", bad="the mouth is a flat fill: {worst:.0%} of it has no texture at {at} (above "
                     "the limit over {ranges})",
        duration=duration,
    )  # fmt: skip
    detail = _windowed_check(
        "mouth_region", windowed(stats.detail_t, stats.mouth_detail, th.window_s), th,
        th.mouth_detail_warn, th.mouth_detail_fail, low_is_bad=True, threshold=flat.threshold,
        good="the mouth shows real texture throughout (detail ≥ {worst:.2f} of the eyes', "
             f"flat share ≤ {flat.value if flat.value is not None else 0:.2f})",
        bad="the mouth looks smeared or blurred: its detail falls to {worst:.2f} of the eyes' at "
            "{at} (below the limit over {ranges})",
        duration=duration,
    )  # fmt: skip
    order = ("pass", "warn", "fail")
    worse = flat if order.index(flat.verdict) > order.index(detail.verdict) else detail
    worse.details = {"detail_windows": detail.details.get("windows"), "flat_windows": flat.details.get("windows")}
    return worse


def speech_frames(pcm: np.ndarray | None, frames: int) -> np.ndarray:
    """Per 25 fps frame: is there speech (energy within 25 dB of the loud frames)?"""
    if pcm is None or not pcm.size:
        return np.zeros(frames, bool)
    n = min(frames, pcm.size // HOP)
    energy = np.square(pcm[: n * HOP].astype(np.float64)).reshape(n, HOP).mean(axis=1)
    db = 10 * np.log10(energy + 1e-12)
    loud = np.percentile(db, 90) if n else 0.0
    speech = db > max(loud - 25.0, -60.0)
    # Close gaps under 0.2 s: the mouth keeps moving through a short stop consonant.
    for a, b in runs(~speech):
        if b - a < 5 and a > 0:
            speech[a:b] = True
    return np.concatenate([speech, np.zeros(frames - n, bool)])


def check_mouth_motion(track: MouthTrack, pcm: np.ndarray | None, th: VisualThresholds) -> CheckResult:
    threshold = (f"mouth still for < {th.mouth_still_warn_s:g} s while there is speech "
                 f"(fail ≥ {th.mouth_still_fail_s:g} s)")  # fmt: skip
    n = track.frames
    half = STILL_FRAMES // 2
    if n < STILL_FRAMES or not track.tracked.any():
        return CheckResult("mouth_motion", None, threshold, "pass", "mouth motion not measurable: too short or no face")
    darkness = track.signal("darkness")
    moving = np.full(n, np.inf)
    for i in range(half, n - half):  # centred 0.5 s windows
        moving[i] = np.std(darkness[i - half : i + half])
    speaking = speech_frames(pcm, n)
    ok = track.tracked & np.isfinite(moving)
    still = ok & speaking & (moving < th.still_darkness_std)
    spans: list[tuple[float, float]] = []
    for a, b in runs(still):  # each run widened to its windows; touching or near runs are one
        span = (max(0, a - half) / FPS, min(n, b + half) / FPS)
        if spans and span[0] <= spans[-1][1] + 0.2:
            spans[-1] = (spans[-1][0], max(spans[-1][1], span[1]))
        else:
            spans.append(span)
    longest = max((b - a for a, b in spans), default=0.0)
    shown = [(a, b) for a, b in spans if b - a >= th.mouth_still_warn_s - 1e-9]
    verdict = _grade(longest, th.mouth_still_warn_s - 1e-9, th.mouth_still_fail_s - 1e-9, low_is_bad=False)
    details = {"speech_s": round(float(speaking.sum()) / FPS, 2)}
    if verdict == "pass":
        reason = (f"the mouth moves while the speech goes on (still for {longest:.2f} s at most)"
                  if speaking.any() else "no speech to move with")  # fmt: skip
        return CheckResult("mouth_motion", round(longest, 3), threshold, "pass", reason, details)
    worst = max(shown, key=lambda s: s[1] - s[0])
    reason = (f"the mouth freezes while the speech goes on: still for {longest:.2f} s at "
              f"{spans_text([worst])}")  # fmt: skip
    return CheckResult("mouth_motion", round(longest, 3), threshold, verdict, reason, details,
                       ranges=shown, worst_s=(worst[0] + worst[1]) / 2)  # fmt: skip


def check_flicker(stats: VisualStats, th: VisualThresholds, duration: float) -> CheckResult:
    luma = np.asarray(stats.face_luma, np.float64) * (255.0 / 219.0)  # video range to 0-255 steps
    jump = np.full(luma.size, np.nan)
    if luma.size >= 3:
        jump[1:-1] = np.abs(luma[1:-1] - (luma[:-2] + luma[2:]) / 2)
    times = np.arange(luma.size) / FPS
    windows = windowed(times, jump, th.window_s, how="mean")
    return _windowed_check(
        "flicker", windows, th, th.flicker_warn, th.flicker_fail, low_is_bad=False,
        threshold=f"face brightness jumps ≤ {th.flicker_warn:g} levels per frame in every "
                  f"{th.window_s:g} s (fail > {th.flicker_fail:g})",
        good="the face's brightness is steady (jumps ≤ {worst:.1f} levels per frame)",
        bad="the face flickers: its brightness jumps {worst:.1f} levels per frame at {at} "
            "(above the limit over {ranges})",
        duration=duration,
    )  # fmt: skip


def check_jitter(track: MouthTrack, th: VisualThresholds, duration: float) -> CheckResult:
    m = track.landmarks
    idx = np.arange(0, track.frames, MESH_STRIDE)  # the frames the mesh really ran on
    centre = (m[idx, POS["right_eye"]] + m[idx, POS["left_eye"]] + m[idx, POS["upper_lip"]]) / 3
    eyes = np.linalg.norm(m[idx, POS["left_eye"]] - m[idx, POS["right_eye"]], axis=1)
    jump = np.full(idx.size, np.nan)
    if idx.size >= 3:
        jump[1:-1] = np.linalg.norm(centre[1:-1] - (centre[:-2] + centre[2:]) / 2, axis=1) / np.maximum(eyes[1:-1], 1e-3)
    windows = windowed(idx / FPS, jump, th.window_s)
    return _windowed_check(
        "jitter", windows, th, th.jitter_warn, th.jitter_fail, low_is_bad=False,
        threshold=f"face position jumps ≤ {th.jitter_warn:g} eye distances per frame in every "
                  f"{th.window_s:g} s (fail > {th.jitter_fail:g})",
        good="the face moves smoothly (jumps ≤ {worst:.3f} eye distances)",
        bad="the face jitters: it jumps {worst:.3f} eye distances per frame at {at} (above the "
            "limit over {ranges})",
        duration=duration, digits=3,
    )  # fmt: skip


def check_eye_blinks(track: MouthTrack, th: VisualThresholds) -> CheckResult:
    threshold = f"a blink at least every {th.blink_gap_warn_s:g} s (warn only)"
    m = track.landmarks
    gap = (np.linalg.norm(m[:, POS["right_upper_lid"]] - m[:, POS["right_lower_lid"]], axis=1)
           + np.linalg.norm(m[:, POS["left_upper_lid"]] - m[:, POS["left_lower_lid"]], axis=1))
    width = (np.linalg.norm(m[:, POS["right_eye_outer"]] - m[:, POS["right_eye_inner"]], axis=1)
             + np.linalg.norm(m[:, POS["left_eye_outer"]] - m[:, POS["left_eye_inner"]], axis=1))  # fmt: skip
    openness = gap / np.maximum(width, 1e-3)
    ok = np.isfinite(openness)
    if ok.sum() < FPS:
        return CheckResult("eye_blinks", None, threshold, "pass", "eyes not measurable: too few frames with a face")
    typical = float(np.median(openness[ok]))
    blink = ok & (openness < 0.6 * typical)
    blinks = runs(blink)
    edges = [0.0] + [((a + b) / 2) / FPS for a, b in blinks] + [track.frames / FPS]
    gaps = [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    start, end = max(gaps, key=lambda g: g[1] - g[0])
    longest = end - start
    details = {"blinks": len(blinks), "openness_median": round(typical, 3)}
    if longest < th.blink_gap_warn_s:
        reason = f"{len(blinks)} blink(s); never more than {longest:.1f} s without one"
        return CheckResult("eye_blinks", round(longest, 2), threshold, "pass", reason, details)
    reason = f"the eyes do not blink for {longest:.1f} s ({start:.1f}-{end:.1f} s): they may look frozen"
    return CheckResult("eye_blinks", round(longest, 2), threshold, "warn", reason, details,
                       ranges=[(start, end)], worst_s=(start + end) / 2)  # fmt: skip


def evaluate_visual(track: MouthTrack, stats: VisualStats, pcm: np.ndarray | None,
                    th: VisualThresholds = VisualThresholds()) -> list[CheckResult]:  # fmt: skip
    """Every visual check of one pass, in a fixed order."""
    duration = track.frames / FPS
    return [check_mouth_region(stats, th, duration), check_mouth_motion(track, pcm, th),
            check_flicker(stats, th, duration), check_jitter(track, th, duration),
            check_eye_blinks(track, th)]  # fmt: skip
