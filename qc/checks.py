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
from tasks.face_types import FaceDetector


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
    scan = scan_video(video, scorer.tracker(), info=info, short_side=scorer.short_side,
                      stride=scorer.mesh_stride, consumers=[picture], speech=True, native=True,
                      timeout_s=limit)  # fmt: skip
    timings["pass"] = scan.mouth.seconds
    t1 = time.perf_counter()
    # The checks' own work (the reference portrait, loudness) overlaps the offset search.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-checks") as pool:
        judged = pool.submit(evaluate, scan, picture.stats, expected_seconds=expected_seconds,
                             expected_size=expected_size, reference_image=reference_image, fps=fps,
                             thresholds=th, detector=detector)  # fmt: skip
        try:
            lipsync = scorer.score_scan(scan)
        except AvatarflowError as exc:
            error = str(exc)
        timings["lipsync"] = time.perf_counter() - t1
        checks = judged.result()
    timings["after_pass"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - started
    return VideoChecks(str(video), scorer.name, lipsync, error, checks, timings)
