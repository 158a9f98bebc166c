"""The geometry of a face crop: which face, where the square goes, how the photo fills it.

Coordinates are source pixels (after EXIF orientation). The face (detector box) is FACE_FRACTION
of the crop side, centred a little above the crop's centre so the shoulders stay in frame.
"""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
from PIL import Image

from tasks.face_types import Box, DetectedFace, box_area
from tasks.images import GREY

# The face-detector box is this fraction of the crop side; 0.45 leaves room for the hair above
# and the shoulders below, which the generator needs to animate a talking head.
FACE_FRACTION = 0.45
# The crop centre sits this fraction of the crop side below the face centre, so more of the
# shoulders than of the background above the head is kept.
CENTRE_DROP = 0.06
# A photo with little room around the head (a tight headshot, a face at the edge) is framed
# tighter — the face up to this share of the crop side — and the square moved off-centre by at
# most OFF_CENTRE of its side, before anything past the photo's edge is invented: a band of blur
# is no use to the generator, a closer framing is.
MAX_FACE_FRACTION = 0.70
OFF_CENTRE = 0.12
PAD_TOLERATED = 0.02  # an invented share this small is left as it is
BLUR_FACE_PX = 128  # sharpness is measured at this face width, so photos of any size compare


def scaled_face(face: DetectedFace, k: float) -> DetectedFace:
    if k == 1.0:
        return face
    return replace(
        face,
        box=tuple(v * k for v in face.box),  # type: ignore[arg-type]
        landmarks={n: (x * k, y * k) for n, (x, y) in face.landmarks.items()},
    )


def face_px(face: DetectedFace) -> float:
    """Face size: the larger box side, since a box clipped at the photo's edge loses one side."""
    return max(face.box[2] - face.box[0], face.box[3] - face.box[1])


def main_face(faces: list[DetectedFace], w: int, h: int) -> DetectedFace:
    """The largest, most central face: size counts most, distance from centre breaks near-ties."""
    biggest = max(math.sqrt(box_area(f.box)) for f in faces)
    half_diag = math.hypot(w, h) / 2

    def priority(f: DetectedFace) -> float:
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        off_centre = math.hypot(cx - w / 2, cy - h / 2) / half_diag
        return math.sqrt(box_area(f.box)) / biggest - 0.5 * off_centre

    return max(faces, key=priority)


def _eyes_mouth(face: DetectedFace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lm = face.landmarks
    left, right = np.array(lm["left_eye"]), np.array(lm["right_eye"])
    if "mouth_center" in lm:
        mouth = np.array(lm["mouth_center"])
    else:
        mouth = (np.array(lm["mouth_left"]) + np.array(lm["mouth_right"])) / 2
    return left, right, mouth


def crop_box(face: DetectedFace, fraction: float = FACE_FRACTION) -> tuple[int, int, int, int]:
    """A square around the face: centred on the face, dropped a little for the shoulders.

    The side is set by the detector box so the face is `fraction` of the crop (FACE_FRACTION
    unless the photo leaves too little room, see `fit_crop`).
    The centre is the mean of the point between eyes and mouth and the box centre: the same point
    on a frontal face, but when the head turns the features slide towards the profile side while
    the box stays on the head, and the mean keeps both the features and the head in frame.
    """
    left, right, mouth = _eyes_mouth(face)
    features = ((left + right) / 2 + mouth) / 2
    box_centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
    centre = (features + box_centre) / 2
    side = max(8, round(face_px(face) / fraction))
    cx, cy = centre[0], centre[1] + CENTRE_DROP * side
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    return x0, y0, x0 + side, y0 + side


def padded_share(box: tuple[int, int, int, int], w: int, h: int) -> float:
    """The share of the square `box` that lies outside a w×h photo."""
    x0, y0, x1, y1 = box
    inside = max(0, min(w, x1) - max(0, x0)) * max(0, min(h, y1) - max(0, y0))
    return 1.0 - inside / float((x1 - x0) * (y1 - y0))


def _moved_in(start: int, side: int, length: int, lo: float, hi: float, limit: float) -> int:
    """Move a span [start, start+side) into [0, length) by at most `limit`, keeping [lo, hi] in it."""
    target = min(max(start, 0), max(0, length - side)) if side <= length else round((length - side) / 2)
    target = min(max(target, start - limit), start + limit)
    return round(min(max(target, hi - side), lo))


def fit_crop(face: DetectedFace, w: int, h: int) -> tuple[tuple[int, int, int, int], float, float]:
    """The crop box, its invented share and how far it was moved off the face's centre (share of
    its side): the usual framing when the photo holds it; else moved a little and framed
    tighter, step by step, until (almost) nothing is invented; else the least invented of those
    (the caller decides whether that is still usable)."""
    centred = crop_box(face)
    if padded_share(centred, w, h) <= PAD_TOLERATED:
        return centred, padded_share(centred, w, h), 0.0
    best: tuple[tuple[int, int, int, int], float, float] | None = None
    for fraction in np.linspace(FACE_FRACTION, MAX_FACE_FRACTION, 6):
        x0, y0, x1, _ = crop_box(face, float(fraction))
        side = x1 - x0
        limit = OFF_CENTRE * side
        nx = _moved_in(x0, side, w, face.box[0], face.box[2], limit)
        ny = _moved_in(y0, side, h, face.box[1], face.box[3], limit)
        box = (nx, ny, nx + side, ny + side)
        share = padded_share(box, w, h)
        if best is None or share < best[1] - 1e-9:
            best = (box, share, max(abs(nx - x0), abs(ny - y0)) / side)
        if share <= PAD_TOLERATED:
            break
    assert best is not None
    return best


def sharpness(rgb: np.ndarray, box: Box) -> float:
    """Variance of the Laplacian of the face box resized to BLUR_FACE_PX wide; higher is sharper."""
    h, w = rgb.shape[:2]
    x0, x1 = (int(np.clip(v, 0, w)) for v in (box[0], box[2]))
    y0, y1 = (int(np.clip(v, 0, h)) for v in (box[1], box[3]))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return 0.0
    grey = cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    k = BLUR_FACE_PX / (x1 - x0)
    resized = cv2.resize(
        grey,
        (BLUR_FACE_PX, max(8, round((y1 - y0) * k))),
        interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC,
    )
    return float(cv2.Laplacian(resized, cv2.CV_64F).var())


def with_mouth(face: DetectedFace) -> dict[str, tuple[float, float]]:
    """The face's landmarks, with mouth corners and lips estimated when the backend gave none."""
    lm = dict(face.landmarks)
    if "mouth_left" in lm and "mouth_right" in lm:
        if "mouth_center" not in lm:
            (lx, ly), (rx, ry) = lm["mouth_left"], lm["mouth_right"]
            lm["mouth_center"] = ((lx + rx) / 2, (ly + ry) / 2)
        return lm
    left, right, mouth = _eyes_mouth(face)
    # Mouth corners sit about 0.4 eye distances either side of the mouth centre, along the eye line.
    half = 0.4 * (left - right)
    down = np.array([-half[1], half[0]]) * 0.25
    lm["mouth_left"] = tuple(float(v) for v in mouth + half)  # type: ignore[assignment]
    lm["mouth_right"] = tuple(float(v) for v in mouth - half)  # type: ignore[assignment]
    lm.setdefault("upper_lip", tuple(float(v) for v in mouth - down))  # type: ignore[arg-type]
    lm.setdefault("lower_lip", tuple(float(v) for v in mouth + down))  # type: ignore[arg-type]
    return lm


def pose_from_2d(
    lm: dict[str, tuple[float, float]],
) -> tuple[float | None, float | None, float | None]:
    """Yaw and roll from 2D landmarks alone (pitch needs depth); signs as in the face mesh's pose
    (`tasks.face_detectors`)."""
    left, right, nose = (
        np.array(lm["left_eye"]),
        np.array(lm["right_eye"]),
        np.array(lm["nose_tip"]),
    )
    axis = left - right
    roll = math.degrees(math.atan2(axis[1], axis[0]))
    u = axis / (np.linalg.norm(axis) + 1e-9)
    yaw = None
    # Head as a cylinder: ear points sit at ±90° (offset/half-width = tan yaw), silhouette points
    # are always the visible extremes (offset/half-width = sin yaw).
    for a, b, inverse in (
        ("right_ear", "left_ear", math.atan),
        ("face_right", "face_left", math.asin),
    ):
        if a in lm and b in lm:
            pa, pb = np.array(lm[a]), np.array(lm[b])
            half = float((pb - pa) @ u) / 2
            if half > 1e-6:
                ratio = float((nose - (pa + pb) / 2) @ u) / half
                yaw = math.degrees(inverse(float(np.clip(ratio, -1.0, 1.0))))
            break
    return yaw, None, roll


def render_crop(
    rgb: np.ndarray, box: tuple[int, int, int, int], size: int, pad_mode: str
) -> tuple[np.ndarray, float]:
    """Cut `box` out of `rgb` at size×size, filling what lies outside the image.

    Returns the crop and the fraction of its area that was filled.
    """
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    side = x1 - x0
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    k = size / side
    if ix1 <= ix0 or iy1 <= iy0:
        return np.full((size, size, 3), GREY, np.uint8), 1.0
    # Work at output scale: the inside part is resized once, padding is done on the small image.
    left, top = round((ix0 - x0) * k), round((iy0 - y0) * k)
    right_edge, bottom_edge = round((ix1 - x0) * k), round((iy1 - y0) * k)
    iw, ih = max(1, right_edge - left), max(1, bottom_edge - top)
    region = Image.fromarray(rgb[iy0:iy1, ix0:ix1])
    # LANCZOS with reducing_gap: antialiased when shrinking a big photo, sharp when enlarging.
    inner = np.asarray(region.resize((iw, ih), Image.Resampling.LANCZOS, reducing_gap=3.0))
    pads = ((top, size - top - ih), (left, size - left - iw), (0, 0))
    padded = 1.0 - (iw * ih) / float(size * size)
    if pads[0] == (0, 0) and pads[1] == (0, 0):
        return np.ascontiguousarray(inner), 0.0
    if pad_mode == "reflect":
        return np.pad(inner, pads, mode="reflect"), padded
    # "blur": mirror a strip along each edge, stretch it over the padding, blur it, and fade from
    # the sharp seam into the blur so there is no visible edge.
    stretched = _stretch_pad(inner, pads)
    # A wide blur is cheap on a quarter-size copy and looks the same once scaled back up.
    small = cv2.resize(stretched, (size // 4, size // 4), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), size / 128.0)
    blurred = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    xs, ys = np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32)
    dx = np.maximum(np.maximum(left - xs, xs - (left + iw - 1)), 0)
    dy = np.maximum(np.maximum(top - ys, ys - (top + ih - 1)), 0)
    feather = max(2.0, size / 16.0)
    alpha = np.clip(1.0 - np.hypot(dy[:, None], dx[None, :]) / feather, 0.0, 1.0)[:, :, None]
    out = stretched * alpha + blurred * (1.0 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), padded


def _stretch_pad(inner: np.ndarray, pads: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Pad with mirrored strips of the edge region stretched over the padding (rows, then columns).

    Edge-pixel replication makes hard streaks and plain reflection can duplicate half a face;
    a narrow mirrored strip, stretched, continues the surroundings without either.
    """
    (top, bottom), (left, right), _ = pads
    out = inner
    for before, after, axis in ((top, bottom, 0), (left, right, 1)):
        parts = []
        n = out.shape[axis]
        strip = max(1, round(0.1 * n))  # the outer 10% of the photo along this axis
        if before > 0:
            edge = np.flip(np.take(out, range(strip), axis=axis), axis=axis)
            parts.append(_resize_axis(edge, before, axis))
        parts.append(out)
        if after > 0:
            edge = np.flip(np.take(out, range(n - strip, n), axis=axis), axis=axis)
            parts.append(_resize_axis(edge, after, axis))
        out = np.concatenate(parts, axis=axis)
    return np.ascontiguousarray(out)


def _resize_axis(part: np.ndarray, length: int, axis: int) -> np.ndarray:
    h, w = part.shape[:2]
    dsize = (w, length) if axis == 0 else (length, h)
    return cv2.resize(np.ascontiguousarray(part), dsize, interpolation=cv2.INTER_LINEAR)
