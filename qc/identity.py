"""Face features for the identity and colour checks: an aligned crop, what it looks like, its colour.

No identity embedding runs offline here (MediaPipe bundles detectors, not recognisers), so
identity is a cheap proxy: each face is aligned on its eyes and mouth into a 96 px crop and
compared with the reference portrait's crop by three cues, 0.4 x the cosine of their HOG
descriptors (edge structure: eyes, brows, nose, jaw line) + 0.3 x the normalised
cross-correlation of the blurred grey faces (proportions, shading) + 0.3 x the Bhattacharyya
coefficient of their hue/saturation histograms (skin and hair colour).

The eyes (iris centres) and mouth (between the inner lips) of a video frame come from QC's face
track (`qc.facetrack`); those of the reference portrait from `tasks.face`'s detector, whose face
mesh reports the same points, so both faces are aligned alike. Colour is the mean CIELAB colour
of the central face region (forehead to nose, between the cheeks: no mouth interior, no
background), compared as ΔE*ab (CIE76).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from qc.facetrack import POS
from tasks.face_types import DetectedFace, FaceDetector, FaceError
from tasks.images import load_portrait

ALIGNED_PX = 96  # side of the eye-and-mouth-aligned face crop used for identity and colour
# Identity mix. Each cue alone confuses pairs of the real clips that another cue tells apart;
# the weights were chosen on those clips.
HOG_WEIGHT = 0.4  # edge structure: eyes, brows, nose, jaw line
NCC_WEIGHT = 0.3  # the blurred grey face itself: proportions and shading
HIST_WEIGHT = 0.3  # skin and hair colour
DETECT_MAX_SIDE = 1280  # the reference portrait is shrunk to this before detection


@dataclass
class FaceSample:
    """What one sampled frame's face contributes to identity and colour."""

    t: float
    eye_px: float  # distance between the eye centres, in the frame's pixels
    hog: np.ndarray
    grey: np.ndarray
    hist: np.ndarray
    lab: np.ndarray


def face_from_marks(marks: np.ndarray) -> DetectedFace:
    """A face-track landmark set (`qc.facetrack.ROWS`) as the eye and mouth points tasks.face reports."""

    def at(name: str) -> tuple[float, float]:
        return float(marks[POS[name], 0]), float(marks[POS[name], 1])

    xs = (marks[POS["face_right"], 0], marks[POS["face_left"], 0])
    ys = (marks[POS["forehead"], 1], marks[POS["chin"], 1])
    mouth = (marks[POS["upper_lip"]] + marks[POS["lower_lip"]]) / 2
    return DetectedFace(
        box=(float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))), score=1.0,
        landmarks={"right_eye": at("right_eye"), "left_eye": at("left_eye"),
                   "mouth_center": (float(mouth[0]), float(mouth[1]))},
        landmark_source="mesh",
    )  # fmt: skip


def _main_face(faces: list[DetectedFace]) -> DetectedFace | None:
    """The largest face: the generator animates one person, shown large."""
    usable = [f for f in faces if {"right_eye", "left_eye"} <= f.landmarks.keys()]
    if not usable:
        return None
    return max(usable, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def _shifted(face: DetectedFace, dx: float, dy: float) -> DetectedFace:
    x0, y0, x1, y1 = face.box
    return DetectedFace(
        box=(x0 + dx, y0 + dy, x1 + dx, y1 + dy), score=face.score,
        landmarks={n: (x + dx, y + dy) for n, (x, y) in face.landmarks.items()},
        landmark_source=face.landmark_source,
    )  # fmt: skip


def find_face(detector: FaceDetector, rgb: np.ndarray) -> DetectedFace | None:
    """The main face with precise keypoints: detected again on a square crop around the face.

    A detector that looks at the whole image through a small input (BlazeFace: 128 px) places
    the keypoints of a face that fills a fifth of a wide image a few pixels off, which is enough
    to misalign the identity crop; detecting again on a square about twice the face's size fixes
    that.
    """
    h, w = rgb.shape[:2]
    face = _main_face(detector.detect(rgb))
    if face is None:
        return None
    side = max(face.box[2] - face.box[0], face.box[3] - face.box[1])
    if side >= 0.45 * min(h, w):
        return face  # already large in the detector's input: its keypoints are as good as it gets
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    half = 1.1 * side
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return face
    closer = _main_face(detector.detect(np.ascontiguousarray(rgb[y0:y1, x0:x1])))
    return face if closer is None else _shifted(closer, x0, y0)


def _similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + shift taking `src` points onto `dst` (2x3).

    A similarity keeps the face's own proportions, which are part of who it is; an affine fit
    would squeeze every face into the same shape. (OpenCV's estimateAffinePartial2D is RANSAC,
    which with three points may drop one as an "outlier".)
    """
    src, dst = src.astype(np.float64), dst.astype(np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    a = (src - src_mean) @ np.array([1.0, 1j])  # points as complex numbers: dst = z * src + t
    b = (dst - dst_mean) @ np.array([1.0, 1j])
    z = (np.conj(a) @ b) / max(float((np.conj(a) @ a).real), 1e-12)
    rotation = np.array([[z.real, -z.imag], [z.imag, z.real]])
    return np.hstack([rotation, (dst_mean - rotation @ src_mean)[:, None]])


def _aligned_crop(rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
    """The face warped so the eyes and mouth land on fixed points of an ALIGNED_PX square."""
    lm = face.landmarks
    s = ALIGNED_PX
    # right_eye is the person's right: on the image's left in a frontal face.
    src = [lm["right_eye"], lm["left_eye"]]
    dst = [(0.3 * s, 0.4 * s), (0.7 * s, 0.4 * s)]
    if "mouth_center" in lm:
        src.append(lm["mouth_center"])
        dst.append((0.5 * s, 0.8 * s))
    matrix = _similarity_transform(np.array(src), np.array(dst))
    return cv2.warpAffine(rgb, matrix, (s, s), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


_HOG = cv2.HOGDescriptor((ALIGNED_PX, ALIGNED_PX), (16, 16), (8, 8), (8, 8), 9)


def _eye_px(face: DetectedFace) -> float:
    (rx, ry), (lx, ly) = face.landmarks["right_eye"], face.landmarks["left_eye"]
    return float(np.hypot(lx - rx, ly - ry))


def face_sample(t: float, rgb: np.ndarray, face: DetectedFace) -> FaceSample:
    """The identity and colour features of `face` in the RGB frame at time `t`."""
    crop = _aligned_crop(rgb, face)
    grey = cv2.equalizeHist(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY))  # lighting-independent
    hog = _HOG.compute(grey).ravel().astype(np.float64)
    hog /= np.linalg.norm(hog) + 1e-12
    s = ALIGNED_PX
    # Zero-mean, unit-norm blurred grey face (brow to chin): its dot product is the normalised
    # cross-correlation, blind to brightness and contrast; the blur forgives small misalignment.
    plain = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    blurred = cv2.GaussianBlur(plain, (0, 0), 1.5)
    grey = blurred[int(0.1 * s) : int(0.95 * s), int(0.1 * s) : int(0.9 * s)].ravel()
    grey = grey.astype(np.float64)
    grey -= grey.mean()
    grey /= np.linalg.norm(grey) + 1e-12
    hsv = cv2.cvtColor(crop[s // 5 : 4 * s // 5, s // 5 : 4 * s // 5], cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel().astype(np.float64)
    hist = np.sqrt(hist / max(hist.sum(), 1e-12))  # sqrt: dot product = Bhattacharyya coefficient
    # Forehead to nose between the cheeks: skin, no mouth interior, no background.
    region = crop[int(0.2 * s) : int(0.68 * s), int(0.22 * s) : int(0.78 * s)]
    lab = cv2.cvtColor(region.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    return FaceSample(t=t, eye_px=_eye_px(face), hog=hog, grey=grey, hist=hist, lab=lab.mean(axis=0))


def similarity(a: FaceSample, b: FaceSample) -> float:
    """The identity proxy: 1 for the same crop, about 0.2-0.75 for different people."""
    return (HOG_WEIGHT * float(a.hog @ b.hog) + NCC_WEIGHT * float(a.grey @ b.grey)
            + HIST_WEIGHT * float(a.hist @ b.hist))


def reference_face(
    reference_image: Path, detector: FaceDetector, eye_px: float | None
) -> FaceSample | str:
    """The reference portrait's face features, or why there are none.

    The portrait is scaled so its eyes are as far apart as the video's (`eye_px`): a 400 px
    photo face and a 100 px video face would otherwise differ in detail, not in identity.
    """
    try:
        rgb, _ = load_portrait(Path(reference_image))
    except FaceError as exc:
        return f"the reference portrait cannot be read ({exc.message})"
    k = min(1.0, DETECT_MAX_SIDE / max(rgb.shape[:2]))
    if k < 1.0:
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * k), round(rgb.shape[0] * k)),
                         interpolation=cv2.INTER_AREA)  # fmt: skip
    face = find_face(detector, rgb)
    if face is None:
        return "no face was found in the reference portrait"
    if eye_px and _eye_px(face) > eye_px * 1.1:
        k = eye_px / _eye_px(face)
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * k)), max(1, round(rgb.shape[0] * k))),
                         interpolation=cv2.INTER_AREA)  # fmt: skip
        face = DetectedFace(
            box=tuple(v * k for v in face.box),  # type: ignore[arg-type]
            score=face.score,
            landmarks={n: (x * k, y * k) for n, (x, y) in face.landmarks.items()},
        )
    return face_sample(0.0, rgb, face)
