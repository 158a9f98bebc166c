"""What every face module speaks: the error a portrait is refused with, a detected face, a detector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from avatarflow.errors import AvatarflowError

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


class FaceError(AvatarflowError):
    """A portrait cannot become a face crop; `code` is for machines, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class DetectedFace:
    """One face as a detector sees it, in the pixels of the array it was given."""

    box: Box
    score: float
    landmarks: dict[str, tuple[float, float]]
    pose: tuple[float, float, float] | None = None  # yaw, pitch, roll in degrees, when measured
    landmark_source: str = "detector"  # "detector" (a few keypoints) or "mesh" / "fan" (dense)


class FaceDetector(Protocol):
    """Anything that finds faces in an RGB uint8 array."""

    name: str

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Every face found, with at least eye, nose and mouth landmarks."""
        ...


def box_area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
