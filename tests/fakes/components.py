"""Named fakes of the pipeline's swappable components, for fast tests of the stage functions.

- `ScriptedEngine`: an engine that plays a script — each `generate` call takes the next step:
  copy a given video into place (a success) or return a given failure. It records the requests.
- `FixedScorer`: a lip-sync scorer that gives every video the same calibrated score.
- `FixedFaceDetector`: a face detector that finds one face at a fixed box (no MediaPipe).
- `CountingLock`: a gang lock that counts how often it was taken (the real in-process lock
  underneath: db.stage.process_gang_lock).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.stage import process_gang_lock
from inference.engine import (
    Failure,
    FailureKind,
    GenerationMetrics,
    GenerationRequest,
    GenerationResult,
    GpuGang,
)
from qc.lipsync import LipSyncResult
from tasks.face_types import DetectedFace


@dataclass
class ScriptedEngine:
    """FAKE engine: step i of `script` is a Path (that video is the output) or a FailureKind."""

    script: list[Path | FailureKind]
    name: str = "scripted"
    requests: list[GenerationRequest] = field(default_factory=list)
    load_seconds: float | None = None  # reported by the first job, as a warm worker's load
    seconds: float = 0.0  # how long each job takes

    def generate(self, request: GenerationRequest, gang: GpuGang, progress: Any = None) -> GenerationResult:
        self.requests.append(request)
        step = self.script[min(len(self.requests), len(self.script)) - 1]
        if self.seconds:
            time.sleep(self.seconds)
        metrics = GenerationMetrics(total_seconds=0.01, clips_planned=1, clips_done=1,
                                    load_seconds=self.load_seconds if len(self.requests) == 1 else None)
        if isinstance(step, FailureKind):
            return GenerationResult(self.name, {"step": len(self.requests)},
                                    failure=Failure(step, f"scripted {step.value}"), metrics=metrics)
        request.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(step, request.output)
        return GenerationResult(self.name, {"step": len(self.requests)}, output=request.output, metrics=metrics)

    def close(self) -> None:
        pass


@dataclass
class FixedScorer:
    """FAKE lip-sync scorer: every video gets the calibrated score `value`."""

    value: float
    name: str = "fixed"

    def score(self, video: Path, audio: Path | None = None) -> LipSyncResult:
        return LipSyncResult(scorer=self.name, video=str(video), audio=None, frames=50, duration_s=2.0,
                             face_fraction=1.0, confidence=0.3, correlation=0.6, distance=None, offset_frames=0,
                             score=self.value, calibration="fixed (test)")


@dataclass
class FixedFaceDetector:
    """FAKE face detector: one frontal face in the middle third of the image."""

    name: str = "fixed-face"

    def detect(self, rgb: Any) -> list[DetectedFace]:
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = w / 3, h / 4, 2 * w / 3, 3 * h / 4
        cx, cy, fw, fh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        landmarks = {"right_eye": (cx - fw / 5, cy - fh / 8), "left_eye": (cx + fw / 5, cy - fh / 8),
                     "nose_tip": (cx, cy), "mouth_center": (cx, cy + fh / 5),
                     "mouth_right": (cx - fw / 8, cy + fh / 5), "mouth_left": (cx + fw / 8, cy + fh / 5)}
        return [DetectedFace(box=(x0, y0, x1, y1), score=0.99, landmarks=landmarks, pose=(0.0, 0.0, 0.0))]


@dataclass
class CountingLock:
    """The in-process gang lock, counting how often a stage took it."""

    taken: int = 0

    @contextmanager
    def __call__(self, gang: Any, *, lease_seconds: float) -> Iterator[None]:
        self.taken += 1
        with process_gang_lock(gang, lease_seconds=lease_seconds):
            yield
