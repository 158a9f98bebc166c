"""What the technical checks measure on the picture, frame by frame, during QC's one pass.

Every frame feeds the cheap statistics (mean luma for black frames, the largest 16x16 block
change for frozen frames); every 5th frame (5 fps) also gives a face sample for the presence,
identity and colour checks, from the face track's landmarks on that frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from qc.decode import FPS, Frame
from qc.identity import FaceSample, face_from_marks, face_sample

FACE_SAMPLE_FPS = 5.0  # face, identity and colour are measured on 5 frames per second
BLOCK_PX = 16  # frozen detection compares 16x16-pixel blocks (at decode resolution)
_FULL_RANGE = 255.0 / 219.0  # video-range luma steps to 0-255 steps, so thresholds read as RGB


@dataclass
class PictureStats:
    """Per-frame statistics and face samples from one pass over the picture."""

    frames: int = 0
    luma: list[float] = field(default_factory=list)  # mean luma per frame, 0-255
    block_diff: list[float] = field(default_factory=list)  # vs the previous frame; inf for frame 0
    sampled: int = 0  # frames sampled for a face
    face_times: list[float] = field(default_factory=list)  # sampled frames with a face
    missing_times: list[float] = field(default_factory=list)  # sampled frames without one
    faces: list[FaceSample] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)  # analysis width, height


class PictureScan:
    """Collects `PictureStats` from the frames (and their face-track landmarks) of one pass.

    A sampled frame at most `black_luma` bright counts as having no face, whatever the track
    interpolated there: a black frame shows nobody.
    """

    def __init__(self, face_fps: float = FACE_SAMPLE_FPS, black_luma: float = 20.0) -> None:
        self.every = max(1, round(FPS / face_fps))
        self.black_luma = black_luma
        self.stats = PictureStats()
        self._previous: np.ndarray | None = None

    def add(self, frame: Frame, marks: np.ndarray | None) -> None:
        out = self.stats
        grey = frame.luma  # video range 16-235
        h, w = grey.shape
        out.size = (w, h)
        luma = (float(grey.mean()) - 16.0) * _FULL_RANGE
        out.luma.append(luma)
        if self._previous is None:
            out.block_diff.append(math.inf)
        else:
            # Mean absolute change per block (INTER_AREA averages each block), then the largest:
            # a moving mouth in a still frame is a small area but a large change.
            diff = cv2.absdiff(grey, self._previous).astype(np.float32)
            block = cv2.resize(diff, (max(1, w // BLOCK_PX), max(1, h // BLOCK_PX)), interpolation=cv2.INTER_AREA)
            out.block_diff.append(float(block.max()) * _FULL_RANGE)
        self._previous = grey
        if frame.index % self.every == 0:
            out.sampled += 1
            if marks is None or luma <= self.black_luma:
                out.missing_times.append(frame.t)
            else:
                out.face_times.append(frame.t)
                out.faces.append(face_sample(frame.t, frame.rgb, face_from_marks(marks)))
        out.frames = len(out.luma)
