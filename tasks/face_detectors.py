"""Face detectors: MediaPipe (bundled models, the default) and face-alignment (optional, local weights).

Both run offline: MediaPipe 0.10.21 bundles its face models in the wheel (see DESIGN.md);
`FaceAlignmentDetector` only ever uses weights already on disk. `default_detector` is the one
process-wide MediaPipe detector every stage shares (preprocessing, the CPU engine, QC).

Landmark names follow the person's own left and right (as MediaPipe and anatomy do): in a frontal
photo `left_eye` is on the image's right-hand side.
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tasks.face_types import Box, DetectedFace, FaceError, box_area

# MediaPipe face-mesh indices (468-point canonical mesh, 478 with refined irises).
_MESH = {
    "right_eye_outer": 33,
    "right_eye_inner": 133,
    "left_eye_inner": 362,
    "left_eye_outer": 263,
    "nose_tip": 1,
    "mouth_right": 61,  # the person's right corner: image left on a frontal face
    "mouth_left": 291,
    "upper_lip": 13,  # inner edge, centre
    "lower_lip": 14,
    "upper_lip_top": 0,
    "lower_lip_bottom": 17,
    "chin": 152,
    "forehead": 10,
    "face_right": 234,  # silhouette at cheek level
    "face_left": 454,
}
_RIGHT_IRIS, _LEFT_IRIS = 468, 473


class MediaPipeDetector:
    """MediaPipe's bundled BlazeFace detectors for boxes and its face mesh for dense landmarks.

    Construct once and reuse: the graphs are built in the constructor. Calls are serialised with a
    lock because a MediaPipe graph is not re-entrant.
    """

    def __init__(self, min_score: float = 0.5, max_refined: int = 5) -> None:
        import mediapipe as mp  # here: it is slow to import and logs on import

        self.name = f"mediapipe-{mp.__version__}"
        self.min_score = min_score
        self.max_refined = max_refined
        detection = mp.solutions.face_detection
        self._short = detection.FaceDetection(model_selection=0, min_detection_confidence=min_score)
        self._full = detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)
        # The mesh runs on a crop around one detected face, so one face per call is enough; its
        # own detector threshold is lower because the crop is already known to hold a face.
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=0.3,
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._short.close()
            self._full.close()
            self._mesh.close()

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        with self._lock:
            # Short range suits portraits; full range finds smaller faces; square windows help
            # when a wide image shrinks the face below what the 128-px short-range input sees.
            faces = self._boxes(self._short, rgb)
            if not faces:
                faces = self._boxes(self._full, rgb)
            if faces:
                faces.sort(key=lambda f: box_area(f.box), reverse=True)
                return [
                    self._refine(rgb, face) if i < self.max_refined else face
                    for i, face in enumerate(faces)
                ]
            # Windows find stylised faces the full-image passes miss, but also the odd animal:
            # keep only what the face mesh confirms as a face.
            refined = [self._refine(rgb, face) for face in self._windowed(rgb)[: self.max_refined]]
            return [face for face in refined if face.landmark_source == "mesh"]

    def _boxes(
        self, model: Any, rgb: np.ndarray, offset: tuple[int, int] = (0, 0)
    ) -> list[DetectedFace]:
        h, w = rgb.shape[:2]
        ox, oy = offset
        result = model.process(rgb)
        faces = []
        for det in result.detections or []:
            rel = det.location_data.relative_bounding_box
            x0 = max(0.0, rel.xmin * w) + ox
            y0 = max(0.0, rel.ymin * h) + oy
            x1 = min(float(w), (rel.xmin + rel.width) * w) + ox
            y1 = min(float(h), (rel.ymin + rel.height) * h) + oy
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            kp = det.location_data.relative_keypoints
            names = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
            landmarks = {n: (p.x * w + ox, p.y * h + oy) for n, p in zip(names, kp, strict=False)}
            faces.append(DetectedFace((x0, y0, x1, y1), float(det.score[0]), landmarks))
        return faces

    def _windowed(self, rgb: np.ndarray) -> list[DetectedFace]:
        h, w = rgb.shape[:2]
        side = min(h, w)
        if max(h, w) < 1.2 * side:
            return []  # already square: windows would only repeat the full-image pass
        span = max(h, w) - side
        faces: list[DetectedFace] = []
        for start in (0, span // 2, span):
            if w > h:
                window, offset = rgb[:, start : start + side], (start, 0)
            else:
                window, offset = rgb[start : start + side, :], (0, start)
            faces += self._boxes(self._short, np.ascontiguousarray(window), offset)
        return _nms(faces)

    def _refine(self, rgb: np.ndarray, face: DetectedFace) -> DetectedFace:
        """Dense landmarks and head pose from the face mesh, run on a crop around the face."""
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = face.box
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, 2.0 * max(x1 - x0, y1 - y0)
        cx0, cy0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        cx1, cy1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
        crop = rgb[cy0:cy1, cx0:cx1]
        if min(crop.shape[:2]) < 24:
            return face
        cw, ch = cx1 - cx0, cy1 - cy0
        factor = 320.0 / max(cw, ch)  # the mesh model looks at 192 px; 320 keeps its detector happy
        resized = cv2.resize(
            crop,
            (max(1, round(cw * factor)), max(1, round(ch * factor))),
            interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR,
        )
        result = self._mesh.process(np.ascontiguousarray(resized))
        if not result.multi_face_landmarks:
            return face
        marks = result.multi_face_landmarks[0].landmark
        # Relative coordinates are relative to the crop; z uses the scale of x.
        pts = np.array([(m.x * cw + cx0, m.y * ch + cy0, m.z * cw) for m in marks])
        nose = pts[_MESH["nose_tip"], :2]
        mx, my = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
        if not (x0 - mx <= nose[0] <= x1 + mx and y0 - my <= nose[1] <= y1 + my):
            return face  # the mesh latched onto a neighbouring face
        landmarks = {name: (float(pts[i, 0]), float(pts[i, 1])) for name, i in _MESH.items()}
        iris = len(pts) > _LEFT_IRIS
        right = pts[_RIGHT_IRIS, :2] if iris else (pts[33, :2] + pts[133, :2]) / 2
        left = pts[_LEFT_IRIS, :2] if iris else (pts[362, :2] + pts[263, :2]) / 2
        landmarks["right_eye"] = (float(right[0]), float(right[1]))
        landmarks["left_eye"] = (float(left[0]), float(left[1]))
        mouth = (pts[_MESH["upper_lip"], :2] + pts[_MESH["lower_lip"], :2]) / 2
        landmarks["mouth_center"] = (float(mouth[0]), float(mouth[1]))
        for ear in ("right_ear", "left_ear"):
            if ear in face.landmarks:
                landmarks[ear] = face.landmarks[ear]
        return replace(face, landmarks=landmarks, pose=_pose_from_mesh(pts), landmark_source="mesh")


def _pose_from_mesh(pts: np.ndarray) -> tuple[float, float, float]:
    """Yaw, pitch, roll (degrees) from the mesh's 3D eye line and forehead-to-chin line.

    yaw > 0: the face turns towards the image's right; pitch > 0: looking up; roll > 0: the head
    tilts clockwise in the image.
    """
    ex = pts[_MESH["left_eye_outer"]] - pts[_MESH["right_eye_outer"]]
    ey = pts[_MESH["chin"]] - pts[_MESH["forehead"]]
    ex = ex / (np.linalg.norm(ex) + 1e-9)
    ey = ey - ex * float(ex @ ey)
    ey = ey / (np.linalg.norm(ey) + 1e-9)
    yaw = math.degrees(math.atan2(ex[2], math.hypot(ex[0], ex[1])))
    pitch = math.degrees(math.atan2(-ey[2], math.hypot(ey[0], ey[1])))
    roll = math.degrees(math.atan2(ex[1], ex[0]))
    return yaw, pitch, roll


# face-alignment (1adrianb) weights, as its own download URLs name them.
FACE_ALIGNMENT_FILES = {"detector": "s3fd-619a316812.pth", "landmarks": "2DFAN4-cd938726ad.zip"}
FACE_ALIGNMENT_SETTING = "AVATARFLOW_FACE_ALIGNMENT_WEIGHTS"


class FaceAlignmentDetector:
    """Optional backend: S3FD boxes and 2D-FAN 68-point landmarks from the `face-alignment` package.

    face-alignment downloads its weights when its `FaceAlignment` class is constructed, so this
    class never constructs it: it loads the two weight files from `weights_dir` directly and
    refuses, naming the missing file, when they are not there.
    """

    def __init__(self, weights_dir: Path, device: str = "cpu", min_score: float = 0.5) -> None:
        weights_dir = Path(weights_dir)
        missing = [f for f in FACE_ALIGNMENT_FILES.values() if not (weights_dir / f).is_file()]
        if missing:
            raise FaceError(
                "backend_unavailable",
                f"face-alignment weights not found: {', '.join(missing)} missing in {weights_dir}. "
                f"Copy them there (they are never downloaded at run time) or point "
                f"{FACE_ALIGNMENT_SETTING} at the folder that holds them.",
            )
        try:
            import torch
            from face_alignment.detection.sfd.sfd_detector import SFDDetector
            from face_alignment.utils import crop as fan_crop
            from face_alignment.utils import get_preds_fromhm
        except ImportError as exc:
            raise FaceError(
                "backend_unavailable",
                f"the face-alignment backend needs the packages 'face-alignment' and 'torch' "
                f"({exc}). Install them, or unset {FACE_ALIGNMENT_SETTING} to use MediaPipe.",
            ) from exc
        self.name = "face-alignment"
        self.min_score = min_score
        self._torch = torch
        self._crop = fan_crop
        self._preds = get_preds_fromhm
        # path_to_detector makes S3FD load the local file instead of its download URL.
        self._sfd = SFDDetector(
            device=device, path_to_detector=str(weights_dir / FACE_ALIGNMENT_FILES["detector"])
        )
        self._fan = torch.jit.load(
            str(weights_dir / FACE_ALIGNMENT_FILES["landmarks"]), map_location=device
        )
        self._fan.eval()
        self._device = device
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        torch = self._torch
        faces = []
        with self._lock, torch.no_grad():
            # RGB, as face_alignment.api passes it since 1.3.
            boxes = self._sfd.detect_from_image(np.ascontiguousarray(rgb).copy())
            for box in boxes:
                x0, y0, x1, y1, score = (float(v) for v in box[:5])
                if score < self.min_score:
                    continue
                # The FAN crop convention, as in face_alignment.api.
                center = np.array([(x0 + x1) / 2, (y0 + y1) / 2 - (y1 - y0) * 0.12])
                scale = (x1 - x0 + y1 - y0) / self._sfd.reference_scale
                patch = self._crop(rgb, center, scale)
                inp = torch.from_numpy(patch.transpose((2, 0, 1))).float().div(255.0).unsqueeze(0)
                heatmaps = self._fan(inp.to(self._device)).detach().cpu().numpy()
                pts = np.asarray(self._preds(heatmaps, center, scale)[1]).reshape(68, 2)
                faces.append(
                    DetectedFace((x0, y0, x1, y1), score, _fan_landmarks(pts), None, "fan")
                )
        return faces


def _fan_landmarks(pts: np.ndarray) -> dict[str, tuple[float, float]]:
    """Named points from the 68-point (iBUG 300-W) layout."""

    def at(*idx: int) -> tuple[float, float]:
        p = pts[list(idx)].mean(axis=0)
        return float(p[0]), float(p[1])

    return {
        "right_eye": at(36, 37, 38, 39, 40, 41),
        "left_eye": at(42, 43, 44, 45, 46, 47),
        "nose_tip": at(30),
        "mouth_right": at(48),
        "mouth_left": at(54),
        "upper_lip": at(62),
        "lower_lip": at(66),
        "mouth_center": at(62, 66),
        "chin": at(8),
        "face_right": at(0),
        "face_left": at(16),
    }


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def _nms(faces: list[DetectedFace], threshold: float = 0.3) -> list[DetectedFace]:
    kept: list[DetectedFace] = []
    for face in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(_iou(face.box, k.box) < threshold for k in kept):
            kept.append(face)
    return kept


# Landmark refinement (the face mesh) for at most this many faces per image; 0: boxes and the
# detector's six keypoints only, about 4x cheaper (what QC's per-frame tracking needs).
DEFAULT_MAX_REFINED = 5
_DEFAULTS: dict[int, MediaPipeDetector] = {}
_DEFAULTS_LOCK = threading.Lock()


def default_detector(*, max_refined: int = DEFAULT_MAX_REFINED) -> MediaPipeDetector:
    """The process-wide MediaPipe detector (one per `max_refined`), built on first use.

    Building one loads three graphs, and a graph is not re-entrant (each detector serialises its
    calls), so every stage of a process shares these rather than building its own.
    """
    with _DEFAULTS_LOCK:
        if max_refined not in _DEFAULTS:
            _DEFAULTS[max_refined] = MediaPipeDetector(max_refined=max_refined)
        return _DEFAULTS[max_refined]
