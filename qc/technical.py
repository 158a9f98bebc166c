"""Technical checks of a generated video: is it a sound, watchable video of the right person?

`run_checks` answers, for one video, the questions a reviewer would otherwise answer by eye:
does it decode, does it have picture and sound, is it 25 fps at the expected size, does it last
as long as the speech, are there black or frozen stretches, is there a face in nearly every
frame, does that face stay the person (and the colours) of the reference portrait for the whole
video, and is the sound neither silent nor clipped. Each check returns a `CheckResult` with a
value, a human-readable threshold, a verdict ("pass", "warn", "fail") and a one-sentence reason.
The gate (`qc.gate`) turns the list into a decision.

How it stays fast: the checks read QC's one pass over the video (`qc.scan`): one ffprobe, then
one ffmpeg process decodes the picture onto the 25 fps grid (short side 360 px) and the
soundtrack at its own rate; every frame feeds the black/frozen statistics, every 5th (5 fps)
gives a face sample from the face track (MediaPipe's face mesh, the same track the lip-sync
scorer reads: `qc.checks.check_video` runs both on one pass). The identity and colour features
are described in `qc.identity`.

Identity, measured on the nine real clips in ../shared/media/video (`benchmarks/qc_identity.py`:
worst 1 s window, each clip against its own first frame and against every other clip's first
frame): the clips score 0.81-0.96 against themselves (the lowest is the most expressive
speaker); a different person scores 0.22-0.77: below 0.67 in 57 of the 72 pairs and 0.67-0.77 in
the other 15. So the proxy fails a face that turns into somebody else or melts into a generic
face (below 0.67) and sends look-alikes to a person (warn below 0.78); the margin between the
most expressive real speaker and the closest stranger is small, so it is a tripwire, not a face
recogniser. (With BlazeFace's eye keypoints instead of the face mesh's irises, the same study
gave 0.76-0.95 and 0.20-0.74, and the thresholds were 0.65 and 0.75.)

Colour: against their own first frame, the real clips drift by at most 2.5 ΔE over their length
(4.0 for the full-body phone videos, whose small faces move through changing light); a 10-15 %
colour cast gives 6-13.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatarflow import media
from qc.decode import DECODE_SHORT_SIDE, FPS, DecodeError, probe_video
from qc.facetrack import MeshTracker
from qc.identity import FaceSample, reference_face, similarity
from qc.picture import FACE_SAMPLE_FPS, PictureScan, PictureStats
from qc.scan import Scan, scan_video
from qc.verdicts import CheckResult, summarise, worst_verdict
from qc.visual import (
    VisualScan,
    VisualStats,
    VisualThresholds,
    evaluate_visual,
    merge_ranges,
    runs,
    spans_text,
)  # fmt: skip
from tasks.audio import find_speech, measure_loudness, measure_true_peak_db
from tasks.face_detectors import default_detector
from tasks.face_types import FaceDetector


@dataclass(frozen=True)
class Thresholds:
    """Every limit the checks apply, with the reason for its default.

    Durations are in seconds of video, luma on the 0-255 scale, ΔE in CIELAB units.
    """

    # 25 fps is what Live Avatar and the CPU engine write; anything else is a wrong encode.
    fps_tolerance: float = 0.01
    # "Within a frame or two": AAC priming and muxing legitimately add up to ~1 frame; more than
    # 2 frames (+ a small epsilon for container rounding) means the video was cut or padded.
    duration_tolerance_frames: float = 2.0
    duration_epsilon_s: float = 0.02
    # A frame is black when its mean luma is at most this (a lit face averages 60-180; ffmpeg's
    # blackdetect uses 0.10 of full scale per pixel, about the same level).
    black_luma: float = 20.0
    black_warn_s: float = 0.08  # 2 frames: a visible flash
    black_fail_s: float = 0.5
    # Two frames are identical when no 16x16 block's mean absolute luma change exceeds this. A
    # talking head always moves somewhere (mouth, eyes, camera noise): on the real clips the
    # most-changed block typically moves by 2-30 levels per frame; the odd duplicated source
    # frame (or a frame rate converted up to 25) repeats for one or two frames, never 0.5 s.
    frozen_block_diff: float = 0.75
    frozen_warn_s: float = 0.5
    frozen_fail_s: float = 1.0
    # Share of sampled frames with a detected face.
    face_pass: float = 0.95
    face_warn: float = 0.80
    # Identity proxy (see module docstring): the worst 1 s window's median similarity.
    identity_warn: float = 0.78
    identity_fail: float = 0.67
    # Colour drift of the face region, worst 1 s window's median ΔE*ab against the reference.
    # ΔE 5 is a cast a viewer notices side by side; 10 an obviously different colour.
    colour_warn_delta_e: float = 5.0
    colour_fail_delta_e: float = 10.0
    window_s: float = 1.0  # identity and colour are judged per window, so one bad frame is noise
    # Loudness (BS.1770, LUFS). Prepared speech is normalised to -23 LUFS; below -50 nobody
    # hears it (that is silence with a bit of hiss); below -40 it is suspiciously quiet.
    loudness_fail_lufs: float = -50.0
    loudness_warn_lufs: float = -40.0
    min_speech_s: float = 0.3  # less detected speech than this: the track holds no speech
    # Clipping. AAC's ringing destroys the flat tops of clipped samples, so count samples near
    # full scale instead: real speech normalised to -1.5 dBTP has none above 0.95; the real
    # clips at most 0.004 %; speech overdriven by 20 dB before encoding about 1 %.
    clip_level: float = 0.95
    clip_warn_fraction: float = 5e-4
    clip_fail_fraction: float = 5e-3
    true_peak_warn_db: float = 0.0  # inter-sample overs distort on playback


def _grade_high(value: float, pass_at: float, warn_at: float) -> str:
    """Verdict for a value where higher is better."""
    return "pass" if value >= pass_at else "warn" if value >= warn_at else "fail"


def _grade_low(value: float, warn_above: float, fail_above: float) -> str:
    """Verdict for a value where lower is better."""
    return "fail" if value > fail_above else "warn" if value > warn_above else "pass"


def _clock(t: float) -> str:
    return f"{t:.1f} s"




# --------------------------------------------------------------------------- the checks




def _check_decodable(scan: Scan) -> CheckResult:
    threshold = "ffmpeg decodes every frame without errors"
    run = scan.decoding
    if run.timed_out:
        return CheckResult("decodable", run.frames_read, threshold, "fail",
                           f"decoding did not finish within {run.timeout_s:.0f} s "
                           f"({run.frames_read} frames read); the file may be damaged")  # fmt: skip
    if run.returncode != 0 or run.frames_read == 0:
        return CheckResult("decodable", run.frames_read, threshold, "fail",
                           f"ffmpeg could not decode the picture (exit {run.returncode}, "
                           f"{run.frames_read} frames): {run.errors or 'no message'}")
    if run.errors:
        return CheckResult("decodable", run.frames_read, threshold, "warn",
                           f"all {run.frames_read} frames decoded but ffmpeg reported errors, so "
                           f"some may be damaged: {run.errors[-300:]}")  # fmt: skip
    details = {"analysis_size": list(run.size), "scan_s": round(run.seconds, 3)}
    return CheckResult("decodable", run.frames_read, threshold, "pass",
                       f"all {run.frames_read} frames decode cleanly", details)  # fmt: skip


def _size(info: media.MediaInfo) -> tuple[int, int]:
    assert info.video is not None and info.video.display_size is not None
    return info.video.display_size  # as a player shows it (a rotated phone video stands upright)


def _check_streams(info: media.MediaInfo) -> list[CheckResult]:
    assert info.video is not None
    width, height = _size(info)
    video = CheckResult("video_stream", info.video.codec, "present", "pass",
                        f"{info.video.codec} video, {width}x{height}")  # fmt: skip
    if info.audio is None:
        audio = CheckResult("audio_stream", None, "present", "fail",
                            "the file has no audio stream: muxing the speech failed")  # fmt: skip
    else:
        audio = CheckResult("audio_stream", info.audio.codec, "present", "pass",
                            f"{info.audio.codec} audio at {info.audio.sample_rate} Hz")  # fmt: skip
    return [video, audio]


def _check_fps(info: media.MediaInfo, fps: float, th: Thresholds) -> CheckResult:
    assert info.video is not None
    threshold = f"{fps:g} fps (± {th.fps_tolerance:g})"
    actual = info.video.fps or 0.0
    value = round(actual, 3)
    if abs(actual - fps) <= th.fps_tolerance:
        return CheckResult("frame_rate", value, threshold, "pass", f"the video runs at {fps:g} fps")
    return CheckResult("frame_rate", value, threshold, "fail",
                       f"the video runs at {actual:.2f} fps on average (variable or wrong frame "
                       f"rate); deliveries must be constant {fps:g} fps")  # fmt: skip


def _check_size(info: media.MediaInfo, expected: tuple[int, int]) -> CheckResult:
    width, height = _size(info)
    value = f"{width}x{height}"
    threshold = f"= {expected[0]}x{expected[1]}"
    if (width, height) == tuple(expected):
        reason = f"the video is {value} as planned"
        return CheckResult("resolution", value, threshold, "pass", reason)
    reason = f"the video is {value} but {expected[0]}x{expected[1]} was planned"
    return CheckResult("resolution", value, threshold, "fail", reason)


def _check_duration(
    file_s: float, picture_s: float | None, audio_s: float | None, expected_s: float,
    fps: float, th: Thresholds,
) -> CheckResult:  # fmt: skip
    tolerance = th.duration_tolerance_frames / fps + th.duration_epsilon_s
    frames = th.duration_tolerance_frames
    threshold = f"|video − speech| ≤ {tolerance:.2f} s ({frames:g} frames)"
    measured = [("the file", file_s)]
    if picture_s:
        measured.append(("the picture", picture_s))
    if audio_s is not None:
        measured.append(("the soundtrack", audio_s))
    # Judge by whichever is furthest off: a file of the right length whose picture stops early
    # or whose sound is cut short is as wrong as a file that is too short.
    what, seconds = max(measured, key=lambda m: abs(m[1] - expected_s))
    error = seconds - expected_s
    # file_s, picture_s, soundtrack_s, speech_s
    details = {name.split()[-1] + "_s": round(s, 3) for name, s in measured}
    details["speech_s"] = round(expected_s, 3)
    if abs(error) <= tolerance:
        return CheckResult("duration", round(seconds, 3), threshold, "pass",
                           f"{what} lasts {seconds:.2f} s, the speech {expected_s:.2f} s",
                           details)  # fmt: skip
    side = "shorter" if error < 0 else "longer"
    return CheckResult("duration", round(seconds, 3), threshold, "fail",
                       f"{what} lasts {seconds:.2f} s, {abs(error):.2f} s ({abs(error) * fps:.0f} "
                       f"frames) {side} than the speech ({expected_s:.2f} s)", details)  # fmt: skip


def _check_black(decoded: PictureStats, fps: float, th: Thresholds) -> CheckResult:
    black = np.array(decoded.luma) <= th.black_luma
    spans = [(a / fps, b / fps) for a, b in runs(black)]
    longest = max((b - a for a, b in spans), default=0.0)
    threshold = f"no black stretch ≥ {th.black_fail_s:g} s (warn ≥ {th.black_warn_s:g} s)"
    details = {"black_spans_s": [[round(a, 2), round(b, 2)] for a, b in spans]}
    verdict = _grade_low(longest, th.black_warn_s - 1e-9, th.black_fail_s - 1e-9)
    if not spans:
        reason = "no black frames"
    elif verdict == "pass":
        reason = f"only single black frames ({spans_text(spans)})"
    else:
        reason = (f"the picture is black for {longest:.2f} s at most (mean luma ≤ "
                  f"{th.black_luma:g}): {spans_text(spans)}")  # fmt: skip
    bad = [(a, b) for a, b in spans if b - a >= th.black_warn_s - 1e-9] if verdict != "pass" else []
    worst = max(bad, key=lambda sp: sp[1] - sp[0]) if bad else None
    return CheckResult("black_frames", round(longest, 3), threshold, verdict, reason, details,
                       ranges=bad, worst_s=None if worst is None else (worst[0] + worst[1]) / 2)


def _check_frozen(decoded: PictureStats, fps: float, th: Thresholds) -> CheckResult:
    diffs = np.array(decoded.block_diff)
    black = np.array(decoded.luma) <= th.black_luma
    # Frame i repeats frame i-1. Black stretches are reported by the black check, not here.
    same = (diffs < th.frozen_block_diff) & ~black
    # A run of k repeats shows one picture for k+1 frames.
    spans = [((a - 1) / fps, b / fps) for a, b in runs(same)]
    longest = max((b - a for a, b in spans), default=0.0)
    threshold = f"no still stretch ≥ {th.frozen_fail_s:g} s (warn ≥ {th.frozen_warn_s:g} s)"
    verdict = _grade_low(longest, th.frozen_warn_s - 1e-9, th.frozen_fail_s - 1e-9)
    shown = [(a, b) for a, b in spans if b - a >= th.frozen_warn_s - 1e-9]
    details = {"frozen_spans_s": [[round(a, 2), round(b, 2)] for a, b in shown],
               "smallest_change": round(float(np.min(diffs[1:])), 3) if diffs.size > 1 else None}
    if verdict == "pass":
        reason = ("the picture moves throughout" if not spans else
                  f"no still stretch longer than {longest:.2f} s")  # fmt: skip
    else:
        reason = (f"the picture is frozen (identical frames) for {longest:.2f} s at most: "
                  f"{spans_text(shown)}")  # fmt: skip
    bad = shown if verdict != "pass" else []
    worst = max(bad, key=lambda sp: sp[1] - sp[0]) if bad else None
    return CheckResult("frozen_frames", round(longest, 3), threshold, verdict, reason, details,
                       ranges=bad, worst_s=None if worst is None else (worst[0] + worst[1]) / 2)


def _check_face(decoded: PictureStats, th: Thresholds) -> CheckResult:
    fraction = len(decoded.face_times) / max(decoded.sampled, 1)
    threshold = f"≥ {th.face_pass:.2f} of sampled frames (warn ≥ {th.face_warn:.2f})"
    verdict = _grade_high(fraction, th.face_pass, th.face_warn)
    missing = decoded.missing_times
    details = {"sampled_frames": decoded.sampled, "without_face_s": [round(t, 2) for t in missing]}
    if not missing:
        reason = f"a face is found in all {decoded.sampled} sampled frames"
    else:
        shown = ", ".join(_clock(t) for t in missing[:5]) + (" ..." if len(missing) > 5 else "")
        reason = (f"a face is found in {fraction:.0%} of {decoded.sampled} sampled frames; "
                  f"none at {shown}")  # fmt: skip
    return CheckResult("face_presence", round(fraction, 4), threshold, verdict, reason, details)


def _windows(
    times: Sequence[float], values: Sequence[float], window_s: float
) -> list[tuple[float, float]]:
    """(window start, median value) per window holding at least 2 values (or the only one)."""
    if not values:
        return []
    t, v = np.asarray(times), np.asarray(values)
    keys = np.floor(t / window_s + 1e-9).astype(int)
    out = []
    for key in np.unique(keys):
        chosen = v[keys == key]
        if chosen.size >= 2 or len(values) < 2:
            out.append((float(key * window_s), float(np.median(chosen))))
    if not out:  # every window had a single value: judge the video as one window
        out.append((0.0, float(np.median(v))))
    return out




def _worst_frame(decoded: PictureStats, values: Sequence[float], start: float, th: Thresholds,
                 pick: Callable[..., Any]) -> float:
    """The time of the worst sampled face inside the worst window."""
    inside = [(f.t, v) for f, v in zip(decoded.faces, values, strict=True) if start <= f.t < start + th.window_s]
    return pick(inside, key=lambda tv: tv[1])[0] if inside else start + th.window_s / 2


def _check_identity(
    decoded: PictureStats, ref: FaceSample | str, th: Thresholds
) -> CheckResult:
    threshold = (f"≥ {th.identity_warn:.2f} in every {th.window_s:g} s window "
                 f"(fail < {th.identity_fail:.2f})")  # fmt: skip
    if isinstance(ref, str):
        return CheckResult("identity", None, threshold, "warn",
                           f"identity not checked: {ref}")  # fmt: skip
    if not decoded.faces:
        return CheckResult("identity", None, threshold, "fail",
                           "identity not measurable: no face in any sampled frame")  # fmt: skip
    sims = [similarity(ref, f) for f in decoded.faces]
    windows = _windows([f.t for f in decoded.faces], sims, th.window_s)
    start, worst = min(windows, key=lambda w: w[1])
    verdict = _grade_high(worst, th.identity_warn, th.identity_fail)
    low = merge_ranges([a for a, v in windows if v < th.identity_warn], th.window_s)
    details = {"windows": [[round(a, 2), round(v, 3)] for a, v in windows],
               "median": round(float(np.median(sims)), 3)}
    if verdict == "pass":
        reason = (f"the face stays close to the reference portrait (similarity ≥ {worst:.2f} "
                  f"in every {th.window_s:g} s window)")  # fmt: skip
    else:
        reason = (f"the face drifts away from the reference portrait: similarity falls to "
                  f"{worst:.2f} at {spans_text([(start, start + th.window_s)])} and is below "
                  f"{th.identity_warn:.2f} over {spans_text(low)}")  # fmt: skip
    return CheckResult("identity", round(worst, 4), threshold, verdict, reason, details,
                       ranges=low if verdict != "pass" else [], worst_s=_worst_frame(decoded, sims, start, th, min))


def _check_colour(decoded: PictureStats, ref: FaceSample | str, th: Thresholds) -> CheckResult:
    threshold = (f"ΔE*ab ≤ {th.colour_warn_delta_e:g} in every {th.window_s:g} s window "
                 f"(fail > {th.colour_fail_delta_e:g})")  # fmt: skip
    if isinstance(ref, str):
        return CheckResult("colour", None, threshold, "warn", f"colour not checked: {ref}")
    if not decoded.faces:
        return CheckResult("colour", None, threshold, "fail",
                           "colour not measurable: no face in any sampled frame")  # fmt: skip
    deltas = [float(np.linalg.norm(f.lab - ref.lab)) for f in decoded.faces]
    windows = _windows([f.t for f in decoded.faces], deltas, th.window_s)
    start, worst = max(windows, key=lambda w: w[1])
    verdict = _grade_low(worst, th.colour_warn_delta_e, th.colour_fail_delta_e)
    # Which way the worst window went, in words a reviewer can check by eye.
    in_worst = [f.lab for f in decoded.faces if start <= f.t < start + th.window_s]
    d_l, d_a, d_b = (np.mean(in_worst or [f.lab for f in decoded.faces], axis=0) - ref.lab).tolist()
    high = merge_ranges([a for a, v in windows if v > th.colour_warn_delta_e], th.window_s)
    details = {"windows": [[round(a, 2), round(v, 2)] for a, v in windows],
               "worst_shift_lab": [round(d_l, 2), round(d_a, 2), round(d_b, 2)]}
    if verdict == "pass":
        reason = (f"the face keeps the reference portrait's colour (ΔE ≤ {worst:.1f} in every "
                  f"{th.window_s:g} s window)")  # fmt: skip
    else:
        shifts = []
        if abs(d_l) >= 2:
            shifts.append("darker" if d_l < 0 else "brighter")
        if abs(d_a) >= 2:
            shifts.append("greener" if d_a < 0 else "redder")
        if abs(d_b) >= 2:
            shifts.append("bluer" if d_b < 0 else "yellower")
        how = ", ".join(shifts) or "shifted in hue"
        reason = (f"the face's colour drifts from the reference portrait: ΔE {worst:.1f} at "
                  f"{spans_text([(start, start + th.window_s)])} ({how}), above "
                  f"{th.colour_warn_delta_e:g} over {spans_text(high)}")  # fmt: skip
    return CheckResult("colour", round(worst, 3), threshold, verdict, reason, details,
                       ranges=high if verdict != "pass" else [], worst_s=_worst_frame(decoded, deltas, start, th, max))


def _check_audio(scan: Scan, th: Thresholds) -> tuple[list[CheckResult], float | None]:
    """Silence and clipping of the soundtrack (at its own rate), and its length."""
    level_threshold = (f"≥ {th.loudness_fail_lufs:g} LUFS with speech (warn < "
                       f"{th.loudness_warn_lufs:g} LUFS)")  # fmt: skip
    clip_threshold = (f"< {th.clip_warn_fraction:.2%} of samples ≥ {th.clip_level:g} FS "
                      f"(fail ≥ {th.clip_fail_fraction:.1%}); "
                      f"true peak ≤ {th.true_peak_warn_db:g} dBTP")  # fmt: skip
    x, rate = scan.native, scan.native_rate
    if scan.decoding.failed or x is None or not rate:
        why = scan.decoding.failure() or "ffmpeg wrote no samples"
        message = f"the soundtrack cannot be decoded: {why}"
        return [CheckResult("audio_level", None, level_threshold, "fail", message),
                CheckResult("audio_clipping", None, clip_threshold, "fail", message)], None
    loudness = measure_loudness(x, rate)
    speech_s = sum(b - a for a, b in find_speech(x, rate))
    seconds = x.size / rate
    details = {"loudness_lufs": loudness, "speech_s": round(speech_s, 2),
               "audio_s": round(seconds, 2)}  # fmt: skip
    if not math.isfinite(loudness) or loudness < th.loudness_fail_lufs:
        shown = "no signal at all" if not math.isfinite(loudness) else f"{loudness:.1f} LUFS"
        level = CheckResult("audio_level", loudness, level_threshold, "fail",
                            f"the soundtrack is silent ({shown})", details)  # fmt: skip
    elif speech_s < th.min_speech_s:
        level = CheckResult("audio_level", loudness, level_threshold, "fail",
                            f"the soundtrack holds no speech ({loudness:.1f} LUFS of noise or "
                            f"tone, {speech_s:.2f} s of speech found)", details)  # fmt: skip
    elif loudness < th.loudness_warn_lufs:
        level = CheckResult("audio_level", loudness, level_threshold, "warn",
                            f"the speech is very quiet ({loudness:.1f} LUFS; prepared speech is "
                            f"about -23 LUFS)", details)  # fmt: skip
    else:
        level = CheckResult("audio_level", loudness, level_threshold, "pass",
                            f"speech at {loudness:.1f} LUFS ({speech_s:.1f} s of {seconds:.1f} s "
                            f"is speech)", details)  # fmt: skip

    near = float(np.mean(np.abs(x) >= th.clip_level)) if x.size else 0.0
    peak = measure_true_peak_db(x)
    clip_details = {"near_full_scale_fraction": near, "true_peak_dbtp": peak}
    if near >= th.clip_fail_fraction:
        clipping = CheckResult("audio_clipping", near, clip_threshold, "fail",
                               f"the sound is clipped: {near:.2%} of samples sit at full scale "
                               f"(true peak {peak:+.1f} dBTP)", clip_details)  # fmt: skip
    elif near >= th.clip_warn_fraction or peak > th.true_peak_warn_db:
        clipping = CheckResult("audio_clipping", near, clip_threshold, "warn",
                               f"the sound may distort: {near:.3%} of samples near full scale, "
                               f"true peak {peak:+.1f} dBTP", clip_details)  # fmt: skip
    else:
        clipping = CheckResult("audio_clipping", near, clip_threshold, "pass",
                               f"no clipping (true peak {peak:+.1f} dBTP)", clip_details)
    return [level, clipping], seconds


# --------------------------------------------------------------------------- entry point


def pass_limit(info: media.MediaInfo, expected_seconds: float, timeout_s: float | None) -> float:
    """The time one pass over the video may take: 60 s + 2 s per second of video, unless given."""
    if timeout_s is not None:
        return timeout_s
    return 60.0 + 2.0 * max(float(info.duration_s or 0.0), expected_seconds)


def probe_failure(video: Path) -> list[CheckResult] | media.MediaInfo:
    """The file's streams, or the one failed check that says why there are none to check."""
    try:
        return probe_video(video)
    except DecodeError as exc:
        name = "video_stream" if exc.code == "no_video" else "decodable"
        return [CheckResult(name, None, "a readable video file", "fail", str(exc))]


def evaluate(
    scan: Scan, picture: PictureStats, *, expected_seconds: float,
    expected_size: tuple[int, int] | None, reference_image: Path | None, fps: float = FPS,
    thresholds: Thresholds = Thresholds(), detector: FaceDetector | None = None,
    visual: VisualStats | None = None, visual_thresholds: VisualThresholds = VisualThresholds(),
) -> list[CheckResult]:  # fmt: skip
    """Every technical check of one pass over a video, in a fixed order (see `run_checks`); with
    `visual` (what `qc.visual.VisualScan` collected on the pass) the visual checks too."""
    th = thresholds
    info = scan.info
    results = [_check_decodable(scan), *_check_streams(info), _check_fps(info, fps, th)]
    if expected_size is not None:
        results.append(_check_size(info, expected_size))
    audio_results, audio_s = _check_audio(scan, th) if info.audio is not None else ([], None)
    results.append(_check_duration(float(info.duration_s or 0.0), picture.frames / FPS, audio_s,
                                   expected_seconds, fps, th))  # fmt: skip
    if picture.frames:
        results += [_check_black(picture, FPS, th), _check_frozen(picture, FPS, th),
                    _check_face(picture, th)]  # fmt: skip
        if reference_image is not None:
            eyes = [f.eye_px for f in picture.faces]
            reference = reference_face(Path(reference_image), detector or default_detector(),
                                       float(np.median(eyes)) if eyes else None)  # fmt: skip
            results.append(_check_identity(picture, reference, th))
            results.append(_check_colour(picture, reference, th))
    if visual is not None and picture.frames:
        results += evaluate_visual(scan.mouth, visual, scan.speech, visual_thresholds)
    return results + audio_results


def run_checks(
    video: Path,
    *,
    expected_seconds: float,
    expected_size: tuple[int, int] | None,
    reference_image: Path | None,
    fps: float = FPS,
    thresholds: Thresholds = Thresholds(),
    detector: FaceDetector | None = None,
    face_fps: float = FACE_SAMPLE_FPS,
    short_side: int = DECODE_SHORT_SIDE,
    timeout_s: float | None = None,
    tracker: MeshTracker | None = None,
    stride: int | None = None,
) -> list[CheckResult]:
    """Every technical check of `video`, in a fixed order.

    `expected_seconds` is the speech's length; `expected_size` the planned (width, height), or
    None to skip the resolution check; `reference_image` the portrait the video was made from,
    or None to skip the identity and colour checks. Checks that cannot run because an earlier
    one failed are left out: a file that does not decode returns only the failures that say so.
    `timeout_s` bounds the one decode of picture and sound (default 60 s + 2 s per second of
    video). `detector` finds the face in the reference portrait (default: `tasks.face`'s shared
    detector); `tracker` tracks the face in the video (default: a face mesh built for this call:
    pass a scorer's `tracker()` to reuse one). `face_fps` and `short_side` set the face sampling
    rate and the decode resolution; `stride` how often the face mesh runs (default: on the
    sampled frames only, all these checks look at; the lip-sync scorer's pass runs it on every
    second frame, which moves identity and colour values by a few hundredths). With a lip-sync score as
    well, use `qc.checks.check_video`: it reads the video once for both.
    """
    video = Path(video)
    if not expected_seconds > 0:
        raise ValueError(f"expected_seconds must be positive, not {expected_seconds}")
    info = probe_failure(video)
    if isinstance(info, list):
        return info
    picture = PictureScan(face_fps, thresholds.black_luma)
    visual = VisualScan()
    own = tracker is None
    mesh = MeshTracker() if tracker is None else tracker
    try:
        scan = scan_video(video, mesh, info=info, short_side=short_side, stride=stride or picture.every,
                          consumers=[picture, visual], native=True, speech=True,
                          timeout_s=pass_limit(info, expected_seconds, timeout_s))  # fmt: skip
    finally:
        if own:
            mesh.close()
    return evaluate(scan, picture.stats, expected_seconds=expected_seconds, expected_size=expected_size,
                    reference_image=reference_image, fps=fps, thresholds=thresholds, detector=detector,
                    visual=visual.stats)


__all__ = [
    "CheckResult",
    "Thresholds",
    "evaluate",
    "run_checks",
    "summarise",
    "worst_verdict",
]
