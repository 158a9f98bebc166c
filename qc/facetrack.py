"""The face-mesh track of a video: landmarks on every 25 fps frame, and the mouth read from them.

One track feeds every face measurement QC makes: the lip-sync scorers read the mouth (lip
height, the darkness of the mouth patch) and SyncNet its face box; the technical checks align
the eyes and mouth of sampled frames for identity and colour, and count the frames with a face.

MediaPipe's face mesh runs in video mode (it tracks from the previous landmarks; its face
detector only runs when the track is lost) on every `stride`-th frame; landmarks in between are
interpolated (the lip-sync band ends at 6 Hz, under the 12.5 Hz Nyquist limit of that sampling),
which is what makes ~8 s of video per second possible on two cores.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from avatarflow import media
from qc.decode import Frame

MESH_STRIDE = 2

# Face-mesh indices (468-point canonical mesh), as in tasks.face.
LANDMARKS = {
    "upper_lip_top": 0,
    "lower_lip_bottom": 17,
    "upper_lip": 13,
    "lower_lip": 14,
    "mouth_right": 61,
    "mouth_left": 291,
    "right_eye_outer": 33,
    "left_eye_outer": 263,
    "right_eye_inner": 133,
    "left_eye_inner": 362,
    "forehead": 10,
    "chin": 152,
    "face_right": 234,
    "face_left": 454,
    # Eyelids (the eye check's openness: lid gap over eye width) and the inner lip corners.
    "right_upper_lid": 159,
    "right_lower_lid": 145,
    "left_upper_lid": 386,
    "left_lower_lid": 374,
    "inner_right": 78,
    "inner_left": 308,
}
_IDX = list(LANDMARKS.values())
_RIGHT_IRIS, _LEFT_IRIS = 468, 473  # only in the refined mesh (478 points)
# Rows of the stored (k, 2) arrays: the mesh points above, then the eye centres (the irises of
# the refined mesh, else the middle of the eye corners: the points tasks.face reports as
# right_eye / left_eye, so a video's face and its reference portrait are aligned alike).
ROWS = [*LANDMARKS, "right_eye", "left_eye"]
POS = {name: i for i, name in enumerate(ROWS)}

PATCH_W, PATCH_H = 32, 24
PATCH_SPAN = 1.6  # patch width / mouth width: lips plus a margin of cheek
PATCH_CENTRE = (slice(8, 16), slice(10, 22))  # rows, cols of the mouth opening in the patch


class MeshTracker:
    """MediaPipe face mesh in video mode. Not re-entrant: one video at a time, under `lock`.

    `refine` adds the attention model's refined lips and irises: about 25 % more time, and a
    clearly better lip signal for the landmark scorer (cross-validated AUC against mismatched
    audio 0.90 without, 0.96 with, on the reference clips).
    """

    def __init__(self, refine: bool = True) -> None:
        import mediapipe as mp  # slow to import and logs on import: only when a tracker is built

        self.refine = refine
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=refine,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )
        self.lock = threading.Lock()

    def reset(self) -> None:
        self._mesh.reset()  # a new video: forget the previous track

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        """The tracked face's ROWS in an RGB frame, (k, 2) pixel coordinates, or None."""
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        marks = result.multi_face_landmarks[0].landmark
        h, w = rgb.shape[:2]
        pts = np.array([(marks[i].x * w, marks[i].y * h) for i in _IDX], dtype=np.float32)
        if len(marks) > _LEFT_IRIS:
            eyes = np.array([(marks[i].x * w, marks[i].y * h) for i in (_RIGHT_IRIS, _LEFT_IRIS)],
                            dtype=np.float32)  # fmt: skip
        else:
            eyes = np.stack([(pts[POS["right_eye_outer"]] + pts[POS["right_eye_inner"]]) / 2,
                             (pts[POS["left_eye_outer"]] + pts[POS["left_eye_inner"]]) / 2])  # fmt: skip
        return np.vstack([pts, eyes])

    def close(self) -> None:
        self._mesh.close()


class OwnedTracker:
    """A scorer's face mesh: built on first use (the graph takes a while), closed with the scorer."""

    def __init__(self, refine: bool) -> None:
        self.refine = refine
        self._tracker: MeshTracker | None = None
        self._lock = threading.Lock()

    def get(self) -> MeshTracker:
        with self._lock:
            if self._tracker is None:
                self._tracker = MeshTracker(refine=self.refine)
            return self._tracker

    def close(self) -> None:
        with self._lock:
            if self._tracker is not None:
                self._tracker.close()
                self._tracker = None


class StridedTrack:
    """Landmarks for every frame fed in, the mesh running on every `stride`-th one.

    `feed` returns the frames it has finished, in order (frames between mesh frames wait, at most
    stride - 1 of them, for the next mesh frame and get landmarks interpolated between the two; a
    frame next to a lost face takes the one landmark set available); `finish` returns the rest.
    The caller holds `tracker.lock` and has called `tracker.reset()`.
    """

    def __init__(self, tracker: MeshTracker, stride: int = MESH_STRIDE) -> None:
        self.tracker = tracker
        self.stride = max(1, stride)
        self._pending: list[Frame] = []
        self._last: tuple[int, np.ndarray | None] | None = None

    def feed(self, frame: Frame) -> list[tuple[Frame, np.ndarray | None]]:
        if frame.index % self.stride:
            self._pending.append(frame)
            return []
        marks = self.tracker.landmarks(frame.rgb)
        done = [(held, _interpolate(self._last, (frame.index, marks), held.index)) for held in self._pending]
        done.append((frame, marks))
        self._pending = []
        self._last = (frame.index, marks)
        return done

    def finish(self) -> list[tuple[Frame, np.ndarray | None]]:
        if not self._pending:
            return []
        # The video ended between mesh frames: run the mesh on its last frame too.
        *held, final = self._pending
        marks = self.tracker.landmarks(final.rgb)
        done = [(f, _interpolate(self._last, (final.index, marks), f.index)) for f in held]
        done.append((final, marks if marks is not None else _interpolate(self._last, None, final.index)))
        self._pending = []
        return done


def _interpolate(
    before: tuple[int, np.ndarray | None] | None,
    after: tuple[int, np.ndarray | None] | None,
    j: int,
) -> np.ndarray | None:
    a = before[1] if before else None
    b = after[1] if after else None
    if a is not None and b is not None and before is not None and after is not None:
        t = (j - before[0]) / (after[0] - before[0])
        return (1 - t) * a + t * b
    return a if a is not None else b


def mouth_patch(grey: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """A PATCH_W x PATCH_H grey patch of the mouth, rotated level and scaled on its corners."""
    right, left = marks[POS["mouth_right"]], marks[POS["mouth_left"]]
    centre = (right + left) / 2
    width = float(np.linalg.norm(left - right))
    angle = math.degrees(math.atan2(float(left[1] - right[1]), float(left[0] - right[0])))
    scale = PATCH_W / max(PATCH_SPAN * width, 1e-3)
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    m[0, 2] += PATCH_W / 2 - centre[0]
    m[1, 2] += PATCH_H / 2 - centre[1]
    return cv2.warpAffine(grey, m, (PATCH_W, PATCH_H), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


@dataclass
class MouthTrack:
    """Per-frame face landmarks and mouth patches of one video at 25 fps (NaN where no face)."""

    video: str
    source: media.MediaInfo | None
    landmarks: np.ndarray  # (n, len(ROWS), 2) pixels of the decoded frames; NaN: no face
    patches: np.ndarray  # (n, PATCH_H, PATCH_W) uint8 grey mouth patches (zeros: no face)
    seconds: float = 0.0  # wall time spent decoding and tracking
    soundtrack: np.ndarray | None = None  # the own audio (16 kHz), when decoded with the picture

    @property
    def frames(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def tracked(self) -> np.ndarray:
        return np.isfinite(self.landmarks[:, 0, 0])

    @property
    def face_fraction(self) -> float:
        return float(self.tracked.mean()) if self.frames else 0.0

    def signal(self, name: str) -> np.ndarray:
        """One mouth signal per frame (NaN where no face was tracked).

        outer / inner: outer / inner lip height over the eye distance (landmarks 0-17 / 13-14);
        width: mouth corner distance over the eye distance; darkness: minus the mean grey level
        of the patch centre (an open mouth shows its dark cavity); contrast: its standard
        deviation (teeth against cavity).
        """
        m = self.landmarks
        eyes = np.linalg.norm(m[:, POS["left_eye_outer"]] - m[:, POS["right_eye_outer"]], axis=1)
        eyes = np.maximum(eyes, 1e-3)
        if name in ("outer", "inner", "width"):
            a, b = {"outer": ("upper_lip_top", "lower_lip_bottom"), "inner": ("upper_lip", "lower_lip"),
                    "width": ("mouth_right", "mouth_left")}[name]  # fmt: skip
            return np.linalg.norm(m[:, POS[a]] - m[:, POS[b]], axis=1) / eyes
        centre = self.patches[:, PATCH_CENTRE[0], PATCH_CENTRE[1]].reshape(self.frames, -1)
        centre = centre.astype(np.float64)
        if name == "darkness":
            values = -centre.mean(axis=1)
        elif name == "contrast":
            values = centre.std(axis=1)
        else:
            raise ValueError(f"unknown mouth signal {name!r}")
        values[~self.tracked] = np.nan
        return values


class MouthRecorder:
    """Collects the landmarks and mouth patch of each tracked frame into a `MouthTrack`."""

    def __init__(self) -> None:
        self._marks: list[np.ndarray] = []
        self._patches: list[np.ndarray] = []
        self._missing = np.full((len(ROWS), 2), np.nan, np.float32)
        self._blank = np.zeros((PATCH_H, PATCH_W), np.uint8)

    def add(self, frame: Frame, marks: np.ndarray | None) -> None:
        if marks is None:
            self._marks.append(self._missing)
            self._patches.append(self._blank)
        else:
            self._marks.append(marks.astype(np.float32))
            self._patches.append(mouth_patch(frame.luma, marks))

    def build(self, video: str, source: media.MediaInfo | None, **extra: Any) -> MouthTrack:
        return MouthTrack(
            video=video, source=source,
            landmarks=np.stack(self._marks) if self._marks else np.zeros((0, len(ROWS), 2), np.float32),
            patches=np.stack(self._patches) if self._patches else np.zeros((0, PATCH_H, PATCH_W), np.uint8),
            **extra,
        )  # fmt: skip
