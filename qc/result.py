"""What a lip-sync scorer reports (`LipSyncResult`), and the interface every scorer offers.

Kept free of media and model imports (numpy only): the stored QC record and the review page
read results without decoding anything.

Offset sign, everywhere in avatarflow: `offset_frames = +d` means the audio is LATE by d frames
(the sound that belongs to the mouth shape of frame i is heard at frame i + d); negative means
the audio is early. (SyncNet's own scripts print the opposite sign; see `qc.syncnet`.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from avatarflow.errors import AvatarflowError

REPORT_WINDOW_S = 2.0  # the raw per-window values' length
NEAR_OFFSET = 2  # frames: real recordings peak within this of 0; 200 ms (5 frames) must fall outside
OFFSET_CONVENTION = "positive: audio late (lags the picture), in 25 fps frames"


class LipSyncError(AvatarflowError):
    """A video or soundtrack cannot be scored at all (no audio stream, nothing to compare)."""


def curve_features(
    *, confidence: float | None, correlation: float | None, distance: float | None,
    offset_frames: int | None, offsets: Sequence[int], curve: Sequence[float], curve_kind: str,
) -> dict[str, float]:  # fmt: skip
    """The raw numbers a calibration may use, by name (only those that were measured).

    near_peak: the best value within NEAR_OFFSET frames of 0; near_confidence: that minus the
    median over all offsets; near_margin: that minus the best further out. Smooth versions of "confidence"
    and "|offset| small", which a logistic map handles better than the jumpy integer offset.
    """
    out: dict[str, float] = {}
    if confidence is not None:
        out["confidence"] = float(confidence)
    if correlation is not None:
        out["peak"] = float(correlation)
    if distance is not None:
        out["distance"] = float(distance)
    if offset_frames is not None:
        out["abs_offset"] = float(abs(offset_frames))
    if len(curve) and len(offsets):
        # The same two numbers for either kind of curve, oriented so higher is better.
        oriented = np.array(curve, dtype=np.float64) * (-1.0 if curve_kind == "distance" else 1.0)
        near = np.abs(np.array(offsets)) <= NEAR_OFFSET
        out["near_peak"] = float(oriented[near].max())
        out["near_confidence"] = float(oriented[near].max() - np.median(oriented))
        out["near_margin"] = float(oriented[near].max() - oriented[~near].max())
    return out


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), digits)


@dataclass
class SyncWindow:
    """One 5 s analysis window measured on its own: the unit the calibration was fitted on.

    `score` is the calibrated P(in sync) of this window alone (None: uncalibrated, or the face
    was not tracked well enough to measure it, see `reason`). Windows are noisier than the whole
    video, whose score comes from the curve averaged over all of them.
    """

    start_s: float
    end_s: float
    offset_frames: int | None = None
    features: dict[str, float] = field(default_factory=dict)  # what the calibration reads
    score: float | None = None
    reason: str | None = None  # why there is no measurement

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": round(self.start_s, 2), "end_s": round(self.end_s, 2),
                "offset_frames": self.offset_frames,
                "features": {k: _round(v) for k, v in self.features.items()},
                "score": _round(self.score), "reason": self.reason}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SyncWindow:
        return cls(start_s=float(data["start_s"]), end_s=float(data["end_s"]),
                   offset_frames=data.get("offset_frames"),
                   features={k: float(v) for k, v in (data.get("features") or {}).items() if v is not None},
                   score=data.get("score"), reason=data.get("reason"))  # fmt: skip


@dataclass
class LipSyncResult:
    """Raw lip-sync metrics of one video, and the calibrated score.

    offset_frames > 0: the audio is late by that many 25 fps frames; < 0: early.
    """

    scorer: str
    video: str
    audio: str | None  # None: the video's own soundtrack
    frames: int  # 25 fps frames analysed
    duration_s: float
    face_fraction: float  # share of frames with a tracked face
    confidence: float | None  # landmark: peak - median correlation; SyncNet: LSE-C
    correlation: float | None  # landmark: peak canonical correlation; SyncNet: None
    distance: float | None  # SyncNet: LSE-D (min mean distance); landmark: None
    offset_frames: int | None
    offsets: list[int] = field(default_factory=list)  # the offsets searched ...
    curve: list[float] = field(default_factory=list)  # ... and the value at each
    curve_kind: str = "correlation"  # "correlation" (higher: better) or "distance" (lower)
    # Raw values over time: the landmark scorer's canonical-variate correlation or SyncNet's
    # frame confidence per `window_s` piece, at the best global offset. Not on the score's scale.
    window_s: float = REPORT_WINDOW_S
    window_starts_s: list[float] = field(default_factory=list)
    window_values: list[float | None] = field(default_factory=list)
    # Calibrated values over time: each 5 s analysis window scored on its own.
    sync_windows: list[SyncWindow] = field(default_factory=list)
    score: float | None = None  # P(in sync) from the calibration
    score_reason: str | None = None  # why score is None (or a caveat)
    calibration: str | None = None  # which calibration produced the score
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.confidence is not None and self.offset_frames is not None

    def features(self) -> dict[str, float]:
        """The raw numbers a calibration may use, by name (only those that were measured)."""
        out = curve_features(confidence=self.confidence, correlation=self.correlation,
                             distance=self.distance, offset_frames=self.offset_frames,
                             offsets=self.offsets, curve=self.curve, curve_kind=self.curve_kind)  # fmt: skip
        valid = [v for v in self.window_values if v is not None]
        if valid:
            out["window_min"] = float(min(valid))
        out["face_fraction"] = float(self.face_fraction)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, numbers rounded; `from_dict` reads it back."""
        data = asdict(self)
        for key in ("confidence", "correlation", "distance", "score", "face_fraction", "duration_s"):
            data[key] = _round(data[key])
        data["curve"] = [_round(v) for v in self.curve]
        data["window_values"] = [_round(v) for v in self.window_values]
        data["window_starts_s"] = [round(float(v), 2) for v in self.window_starts_s]
        data["sync_windows"] = [w.to_dict() for w in self.sync_windows]
        data["timings_s"] = {k: round(float(v), 3) for k, v in self.timings_s.items()}
        data["offset_convention"] = OFFSET_CONVENTION
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LipSyncResult:
        """A result from `to_dict()` output (keys it does not know are ignored)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["sync_windows"] = [SyncWindow.from_dict(w) for w in data.get("sync_windows") or []]
        known["curve"] = [0.0 if v is None else float(v) for v in data.get("curve") or []]
        return cls(**known)


@runtime_checkable
class LipSyncScorer(Protocol):
    """Anything that scores a video's lip sync."""

    name: str

    def score(self, video: Path, audio: Path | None = None) -> LipSyncResult:
        """Raw metrics and calibrated score; `audio` None scores the video's own soundtrack."""
        ...


class CalibratableScorer(LipSyncScorer, Protocol):
    """A scorer that can measure many soundtracks against one decoded video (for calibration)."""

    calibration_features: tuple[str, ...]

    def prepare(self, video: Path) -> Any:
        """Decode and track the video once; the result is passed to `measure`."""
        ...

    def own_audio(self, video: Path) -> np.ndarray:
        """The video's soundtrack, 16 kHz mono, sample 0 at the video's time 0."""
        ...

    def measure(
        self, prepared: Any, pcm: np.ndarray, start: int = 0, stop: int | None = None,
        *, video: str = "", audio: str | None = None,
    ) -> LipSyncResult:
        """Raw metrics (no score) of frames [start, stop) against `pcm` (aligned to frame 0)."""
        ...
