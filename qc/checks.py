"""QC's single entry point: every check of one generated video, from one pass over it.

`check_video` probes the file once and decodes it once (one ffmpeg process for the picture and
both soundtrack renditions); the face track of that pass feeds the lip-sync scorer's mouth
signals and the technical checks' face samples, and its frames the black and frozen
statistics. The result is a `VideoChecks` (`qc.record`), stored with `to_record()`.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, runtime_checkable

from avatarflow.errors import AvatarflowError
from qc.decode import FPS
from qc.facetrack import MeshTracker
from qc.lipsync import thread_scorer
from qc.picture import FACE_SAMPLE_FPS, PictureScan
from qc.record import VideoChecks
from qc.result import LipSyncResult, LipSyncScorer
from qc.scan import Scan, scan_video
from qc.technical import Thresholds, evaluate, pass_limit, probe_failure, run_checks
from qc.verdicts import CheckResult
from qc.visual import VisualScan, spans_text
from tasks.face_types import FaceDetector

# A 5 s window less likely than not to be in sync (calibrated P, which assumes 80 % of videos in
# sync) is marked as an out-of-sync stretch: about 1 genuine window in 10 on the dev clips, most
# windows with shifted or foreign audio (benchmarks/qc_trust.py prints both). A mark sends the
# video to a person with the stretch; single windows are too noisy to fail a video on.
WINDOW_OUT_OF_SYNC = 0.5


def sync_over_time(lipsync: LipSyncResult, below: float = WINDOW_OUT_OF_SYNC) -> CheckResult:
    """The lip-sync score of each 5 s window: the stretches clearly out of sync, as time ranges."""
    threshold = f"every 5 s window P(in sync) ≥ {below:g} (warn: a person looks at the stretch)"
    scored = [w for w in lipsync.sync_windows if w.score is not None]
    if not scored:
        why = lipsync.score_reason or "no window could be scored"
        return CheckResult("lipsync_windows", None, threshold, "pass", f"sync over time not measured: {why}")
    worst = min(scored, key=lambda w: w.score or 0.0)
    low = worst.score or 0.0
    bad = [w for w in scored if (w.score or 0.0) < below]
    details = {"windows": [[round(w.start_s, 2), round(w.end_s, 2), round(w.score or 0.0, 3)] for w in scored]}
    if not bad:
        return CheckResult("lipsync_windows", round(low, 4), threshold, "pass",
                           f"all {len(scored)} windows are in sync (lowest P {low:.2f})", details)  # fmt: skip
    ranges: list[tuple[float, float]] = []
    for w in sorted(bad, key=lambda w: w.start_s):
        if ranges and w.start_s <= ranges[-1][1] + 1e-6:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], w.end_s))
        else:
            ranges.append((w.start_s, w.end_s))
    reason = (f"{len(bad)} of {len(scored)} windows look out of sync (P as low as {low:.2f} at "
              f"{worst.start_s:.1f}-{worst.end_s:.1f} s): {spans_text(ranges)}")  # fmt: skip
    return CheckResult("lipsync_windows", round(low, 4), threshold, "warn", reason, details,
                       ranges=ranges, worst_s=(worst.start_s + worst.end_s) / 2)  # fmt: skip


@runtime_checkable
class PassScorer(Protocol):
    """A scorer that measures from QC's one pass (the landmark scorer does; SyncNet does not)."""

    name: str
    short_side: int  # the decode resolution it needs
    mesh_stride: int

    def tracker(self) -> MeshTracker: ...

    def score_scan(self, scan: Scan) -> LipSyncResult: ...


def check_video(
    video: Path,
    *,
    expected_seconds: float,
    expected_size: tuple[int, int] | None,
    reference_image: Path | None,
    scorer: LipSyncScorer | None = None,
    thresholds: Thresholds = Thresholds(),
    detector: FaceDetector | None = None,
    fps: float = FPS,
    face_fps: float = FACE_SAMPLE_FPS,
    timeout_s: float | None = None,
) -> VideoChecks:
    """The lip-sync score and every technical check of `video`.

    `expected_seconds`, `expected_size`, `reference_image`, `thresholds`, `detector`, `fps`,
    `face_fps` and `timeout_s` mean what they mean for `qc.technical.run_checks`. `scorer`
    defaults to the calling thread's scorer from the settings (`qc.lipsync.thread_scorer`). A scorer that
    cannot read QC's pass (SyncNet: its face crops need a second look at every frame) decodes
    the video itself, in a thread next to the technical checks. A scorer that fails leaves its
    error in `lipsync_error`; the checks still run.
    """
    started = time.perf_counter()
    video = Path(video)
    if not expected_seconds > 0:
        raise ValueError(f"expected_seconds must be positive, not {expected_seconds}")
    th = thresholds
    scorer = scorer if scorer is not None else thread_scorer()
    info = probe_failure(video)
    if isinstance(info, list):  # nothing to decode: the one failed check says why
        return VideoChecks(str(video), scorer.name, None, info[0].reason, info,
                           {"total": time.perf_counter() - started})  # fmt: skip
    limit = pass_limit(info, expected_seconds, timeout_s)
    timings = {"probe": time.perf_counter() - started}
    lipsync: LipSyncResult | None = None
    error: str | None = None

    if not isinstance(scorer, PassScorer):
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-lipsync") as pool:
            scoring = pool.submit(scorer.score, video)
            checks = run_checks(video, expected_seconds=expected_seconds, expected_size=expected_size,
                                reference_image=reference_image, fps=fps, thresholds=th,
                                detector=detector, face_fps=face_fps, timeout_s=limit)  # fmt: skip
            try:
                lipsync = scoring.result()
            except AvatarflowError as exc:
                error = str(exc)
        timings["total"] = time.perf_counter() - started
        return VideoChecks(str(video), scorer.name, lipsync, error, checks, timings)

    picture = PictureScan(face_fps, th.black_luma)
    visual = VisualScan()
    scan = scan_video(video, scorer.tracker(), info=info, short_side=scorer.short_side,
                      stride=scorer.mesh_stride, consumers=[picture, visual], speech=True, native=True,
                      timeout_s=limit)  # fmt: skip
    timings["pass"] = scan.mouth.seconds
    t1 = time.perf_counter()
    # The checks' own work (the reference portrait, loudness) overlaps the offset search.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-checks") as pool:
        judged = pool.submit(evaluate, scan, picture.stats, expected_seconds=expected_seconds,
                             expected_size=expected_size, reference_image=reference_image, fps=fps,
                             thresholds=th, detector=detector, visual=visual.stats)  # fmt: skip
        try:
            lipsync = scorer.score_scan(scan)
        except AvatarflowError as exc:
            error = str(exc)
        timings["lipsync"] = time.perf_counter() - t1
        checks = judged.result()
    if lipsync is not None:
        checks.append(sync_over_time(lipsync))
    timings["after_pass"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - started
    return VideoChecks(str(video), scorer.name, lipsync, error, checks, timings)
