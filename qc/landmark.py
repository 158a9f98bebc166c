"""The default lip-sync scorer (landmark-v2): the mouth against the mouth its speech predicts.

How it measures (and why):
- Frames and soundtrack come from QC's one pass (`qc.scan`): the 25 fps grid at a short side of
  at most 360 px, the soundtrack at 16 kHz with sample 0 at the video's time 0.
- Mouth, per frame: the outer and inner lip openings over the eye distance, from the face
  track (MediaPipe's face mesh with the refined lips, every third frame, interpolated between),
  and the darkness of the centre of a 32x24 grey mouth patch aligned on the mouth corners (an
  open mouth shows its dark cavity; the pixels see every frame, the mesh smooths the lips).
- Audio, per video frame: log energies of 7 speech bands (100 Hz - 7 kHz) in an 80 ms Hann
  window centred on the frame.
- Both are band-passed to 0.3-6 Hz (zero-phase: no lag is introduced), the syllable rhythm
  where lip motion and the speech envelope move together, and standardised per video.
- `qc.mouth_model` predicts the three mouth signals from the speech bands of the 17 frames
  around each frame: one fixed linear map fitted on real clips and shipped in the calibration.
- For each offset of up to +-15 frames (+-0.6 s), the correlation of the mouth with the
  predicted mouth, averaged over the three signals and over 5 s analysis windows (2.5 s hop).
  Averaging window curves keeps the scale the same for a 5 s and a 60 s video (the calibration
  is fitted on 5 s windows), while longer videos get a less noisy curve.
- confidence = peak - median over offsets (the idea of SyncNet's LSE-C); correlation = the
  peak; offset = where it is. near_peak / near_margin (what the calibration uses): see
  `qc.result.curve_features`. Each 5 s window's own curve gives its own features, so the
  calibration scores every window too (`LipSyncResult.sync_windows`). Raw per-window values: the
  correlation at the best offset in 2 s windows.

Measured on the 24 real clips of 14 sources in ../shared/media/video, leave-one-source-out: see
the report stored in qc/calibrations/landmark-v2.json and `benchmarks/qc_trust.py`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qc.calibration import Calibration, Calibrator
from qc.decode import DECODE_SHORT_SIDE, DECODE_TIMEOUT_S, FPS, HOP, load_audio, own_soundtrack
from qc.facetrack import MeshTracker, MouthTrack, OwnedTracker
from qc.mouth_model import SIGNALS, MouthModel, fit_mouth_model, mouth_signals
from qc.result import NEAR_OFFSET, LipSyncError, LipSyncResult, SyncWindow, curve_features
from qc.scan import Scan, scan_video
from qc.speech import BAND_EDGES_HZ, band_energies
from qc.sync_search import (
    MAX_OFFSET,
    MIN_FRAMES,
    SIGNAL_BAND_HZ,
    WINDOW_FRAMES,
    WINDOW_HOP,
    SyncCurve,
    offset_curve,
    window_correlations,
)  # fmt: skip


def _summary(offsets: np.ndarray, curve: np.ndarray) -> tuple[int, float, float, list[float]]:
    """(offset, peak, confidence, the curve with unmeasured offsets as 0) of a correlation curve."""
    best = int(np.nanargmax(curve))
    peak = float(curve[best])
    return (int(offsets[best]), peak, peak - float(np.nanmedian(curve)),
            [float(v) if np.isfinite(v) else 0.0 for v in curve])  # fmt: skip


def _windows(curve: SyncCurve) -> list[SyncWindow]:
    """Each analysis window measured on its own, as calibration measures a 5 s window."""
    out = []
    for a, b, row in curve.rows:
        window = SyncWindow(start_s=a / FPS, end_s=b / FPS)
        if row is None or not np.isfinite(row).any():
            window.reason = "face tracked in under 80 % of the window's frames"
        else:
            offset, peak, confidence, clean = _summary(curve.offsets, row)
            window.offset_frames = offset
            window.features = curve_features(
                confidence=confidence, correlation=peak, distance=None, offset_frames=offset,
                offsets=[int(d) for d in curve.offsets], curve=clean, curve_kind="correlation")  # fmt: skip
        out.append(window)
    return out


class LandmarkSyncScorer:
    """Weight-free lip-sync scorer: mouth landmarks and mouth-patch darkness against speech bands.

    Construct once per worker thread and reuse (the face mesh graph is built once). `calibration`:
    None loads the stored default for this scorer (`qc/calibrations/landmark-v2.json`) on first
    use; pass a `qc.calibration.Calibration` to use another, or `False` for raw metrics only.
    The mouth model comes from the calibration unless given as `mouth_model` (calibrating sets
    `self.mouth_model` to each fold's model in turn).
    """

    name = "landmark-v2"
    # "How well does the mouth follow the speech near offset 0" and "how much better than at
    # any offset further out": smooth, where the integer offset is jumpy.
    calibration_features: tuple[str, ...] = ("near_peak", "near_margin")

    def __init__(
        self,
        *,
        calibration: Calibration | Literal[False] | None = None,
        calibration_path: Path | None = None,
        mesh_stride: int = 3,
        mouth_model: MouthModel | None = None,
        mesh_refine: bool = True,
        signals: tuple[str, ...] = SIGNALS,
        short_side: int = DECODE_SHORT_SIDE,
        max_offset: int = MAX_OFFSET,
    ) -> None:
        self.mesh_stride = mesh_stride
        self.mesh_refine = mesh_refine
        self.signals = signals
        self.short_side = short_side
        self.max_offset = max_offset
        self.calibrator = Calibrator(self.name, calibration, calibration_path)
        self.mouth_model = mouth_model
        self._mesh = OwnedTracker(refine=mesh_refine)

    def settings(self) -> dict[str, Any]:
        """What shapes the raw metrics: stored with a calibration as its provenance."""
        return {"mesh_stride": self.mesh_stride, "mesh_refine": self.mesh_refine,
                "signals": list(self.signals), "decode_short_side": self.short_side,
                "max_offset": self.max_offset, "window_frames": WINDOW_FRAMES,
                "mouth_model": "qc.mouth_model (ridge, fitted with the calibration)",
                "window_hop": WINDOW_HOP, "signal_band_hz": list(SIGNAL_BAND_HZ),
                "audio_bands_hz": list(BAND_EDGES_HZ), "near_offset": NEAR_OFFSET}  # fmt: skip

    def tracker(self) -> MeshTracker:
        """This scorer's face mesh (built on first use); QC's one pass tracks the face with it."""
        return self._mesh.get()

    # -- the CalibratableScorer interface

    def prepare(self, video: Path, *, soundtrack: bool = False) -> MouthTrack:
        """Decode and track `video` (with its own soundtrack when asked); raises if it cannot."""
        scan = scan_video(Path(video), self.tracker(), short_side=self.short_side, stride=self.mesh_stride,
                          speech=soundtrack, timeout_s=DECODE_TIMEOUT_S)  # fmt: skip
        scan.decoding.raise_for_failure()
        if soundtrack and scan.speech is None:
            raise LipSyncError(f"{Path(video).name} has no audio stream: nothing to compare the mouth with")
        return scan.mouth

    def own_audio(self, video: Path) -> np.ndarray:
        return own_soundtrack(Path(video))

    def measure(
        self, prepared: MouthTrack, pcm: np.ndarray, start: int = 0, stop: int | None = None,
        *, video: str = "", audio: str | None = None,
    ) -> LipSyncResult:  # fmt: skip
        track = prepared
        t0 = time.perf_counter()
        n_audio = int(math.ceil(pcm.size / HOP))
        stop = track.frames if stop is None else min(stop, track.frames)
        mouth, ok = mouth_signals(track, self.signals)
        face_fraction = float(track.tracked[start:stop].mean()) if stop > start else 0.0
        result = LipSyncResult(
            scorer=self.name, video=video or track.video, audio=audio, frames=max(0, stop - start),
            duration_s=max(0, stop - start) / FPS, face_fraction=face_fraction,
            confidence=None, correlation=None, distance=None, offset_frames=None,
        )  # fmt: skip
        if stop - start < MIN_FRAMES:
            result.score_reason = f"too short to score: {(stop - start) / FPS:.1f} s (need {MIN_FRAMES / FPS:.0f} s)"
            return result
        if ok[start:stop].sum() < MIN_FRAMES:
            result.score_reason = (f"a face was tracked in only {face_fraction:.0%} of the frames: "
                                   "no mouth to compare with the speech")  # fmt: skip
            return result
        if not np.any(pcm) or float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) < 1e-5:
            result.score_reason = "the soundtrack is silent: nothing to compare the mouth with"
            return result
        model = self.model()
        if model is None:
            result.score_reason = f"no mouth model: {self.calibrator.reason()}"
            return result
        predicted = model.predict(band_energies(pcm, max(n_audio, 1)))
        curve = offset_curve(mouth, predicted, ok, start, stop, self.max_offset)
        if curve is None:
            result.score_reason = ("no 5 s stretch with a face in 80 % of its frames and "
                                   "overlapping audio: cannot measure")  # fmt: skip
            return result
        offset, peak, confidence, clean = _summary(curve.offsets, curve.curve)
        result.offsets = [int(d) for d in curve.offsets]
        result.curve = clean
        result.correlation = peak
        result.confidence = confidence
        result.offset_frames = offset
        result.sync_windows = _windows(curve)
        result.window_starts_s, result.window_values = window_correlations(
            mouth, predicted, ok, start, stop, offset
        )
        if face_fraction < 0.9:
            result.notes.append(f"face tracked in {face_fraction:.0%} of frames only")
        result.timings_s["measure"] = time.perf_counter() - t0
        return result

    def learn(self, examples: Sequence[tuple[str, MouthTrack, np.ndarray]]) -> MouthModel:
        """Fit the mouth model on in-sync (name, track, own soundtrack) clips and use it."""
        data = [(name, *mouth_signals(track, self.signals), band_energies(pcm, track.frames))
                for name, track, pcm in examples]  # fmt: skip
        self.mouth_model = fit_mouth_model(data, signals=self.signals)
        return self.mouth_model

    def model(self) -> MouthModel | None:
        """The mouth model in use: the one given, else the calibration's (None: neither)."""
        if self.mouth_model is None:
            calibration = self.calibrator.calibration()
            if calibration is not None and calibration.mouth_model:
                self.mouth_model = MouthModel.from_dict(calibration.mouth_model)
        return self.mouth_model

    def apply_calibration(self, result: LipSyncResult) -> LipSyncResult:
        """Fill in `score` (and its reason) from the calibration, for the video and each window."""
        return self.calibrator.apply(result)

    # -- scoring

    def score_scan(self, scan: Scan) -> LipSyncResult:
        """Score the mouth track and soundtrack of QC's one pass (`qc.checks.check_video`)."""
        scan.decoding.raise_for_failure()
        if scan.speech is None:
            raise LipSyncError(f"{scan.video.name} has no audio stream: nothing to compare the mouth with")
        result = self.measure(scan.mouth, scan.speech, video=str(scan.video))
        result.timings_s["decode_track"] = scan.mouth.seconds
        return self.apply_calibration(result)

    def score(self, video: Path, audio: Path | None = None) -> LipSyncResult:
        video = Path(video)
        t0 = time.perf_counter()
        if audio is None:
            track = self.prepare(video, soundtrack=True)
            pcm = track.soundtrack
            assert pcm is not None
        else:
            # A separate speech file decodes in a thread (ffmpeg does the work) meanwhile.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipsync-audio") as pool:
                sound = pool.submit(load_audio, Path(audio))
                track = self.prepare(video)
                pcm = sound.result()
        t1 = time.perf_counter()
        result = self.measure(track, pcm, video=str(video), audio=None if audio is None else str(audio))
        result.timings_s.update({"decode_track": t1 - t0, "total": time.perf_counter() - t0})
        return self.apply_calibration(result)

    def close(self) -> None:
        self._mesh.close()

