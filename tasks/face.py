"""Face preprocessing: turn any portrait into a square head-and-shoulders RGB crop, or say why not.

The generator wants one human face, centred, at a consistent scale, in an exactly 512x512 RGB
image. Operators send whatever they have: phone photos with EXIF rotation, PNGs with alpha,
greyscale scans, CMYK print files, 16-bit PNGs, tiny thumbnails, huge renders, group photos and
sometimes a cat. `crop_face` handles all of these and either writes the crop or raises
`FaceError` with a short machine code and a message that tells the operator what to send instead.

The parts live beside it: reading images (`tasks.images`), the detectors and the process-wide
default one (`tasks.face_detectors`), the crop's geometry (`tasks.face_crop`), the contact sheet
(`tasks.contact_sheet`) and the shared types (`tasks.face_types`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from avatarflow.storage import atomic_path
from tasks.face_crop import (
    FACE_FRACTION,
    face_px,
    fit_crop,
    main_face,
    pose_from_2d,
    render_crop,
    scaled_face,
    sharpness,
    with_mouth,
)
from tasks.face_detectors import default_detector
from tasks.face_types import FaceDetector, FaceError
from tasks.images import MAX_PIXELS, apply_icc, read_portrait, save_image

__all__ = ["FaceCrop", "crop_face"]

DETECT_MAX_SIDE = 1280  # detection input; MediaPipe itself looks at 128/192 px, so more is waste

# Warning thresholds.
UPSCALE_WARN = 1.25  # output pixels per source pixel
BLUR_WARN = 25.0  # variance of the Laplacian on the face resized to BLUR_FACE_PX wide
YAW_WARN = 35.0  # degrees; beyond this the face is closer to profile than to frontal
ROLL_WARN = 25.0
LOW_SCORE_WARN = 0.75  # real frontal photos score 0.85-0.97 with MediaPipe
PAD_WARN = 0.15  # fraction of the crop area that had to be invented
# Refused past this invented share, even framed as tightly as fit_crop goes (AVATARFLOW_FACE_MAX_PADDED).
MAX_PADDED = 0.25

PAD_MODES = ("blur", "reflect")


@dataclass
class FaceCrop:
    """What `crop_face` made, and what it noticed on the way."""

    out_path: Path
    source_size: tuple[int, int]  # w, h after EXIF orientation
    face_box: tuple[float, float, float, float]  # x0, y0, x1, y1 in source pixels
    landmarks: dict[str, tuple[float, float]]  # source pixels
    crop_box: tuple[float, float, float, float]  # source pixels; may extend past the image
    faces_found: int
    warnings: list[str] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)
    backend: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable values, for storing on the asset."""
        data = asdict(self)
        data["out_path"] = str(self.out_path)
        data["source_size"] = list(self.source_size)
        data["face_box"] = [round(float(v), 1) for v in self.face_box]
        data["crop_box"] = [round(float(v), 1) for v in self.crop_box]
        data["landmarks"] = {
            k: [round(float(x), 1), round(float(y), 1)] for k, (x, y) in self.landmarks.items()
        }
        data["quality"] = {k: _plain(v) for k, v in self.quality.items()}
        return data


def _plain(value: Any) -> Any:
    """numpy scalars and tuples to plain JSON values."""
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else round(float(value), 3)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def crop_face(
    image_path: Path,
    out_path: Path,
    *,
    size: int = 512,
    min_face_px: int = 64,
    detector: FaceDetector | None = None,
    pad_mode: str = "blur",
    max_pixels: int = MAX_PIXELS,
    max_padded: float = MAX_PADDED,
) -> FaceCrop:
    """Write a size×size RGB head-and-shoulders crop of the main face in `image_path` to `out_path`.

    The face (detector box) is FACE_FRACTION of the crop width. Where the square runs past the
    photo's edge it is filled, never stretched: pad_mode "blur" continues the edge region out of
    focus; "reflect" mirrors the photo (which mirrors part of the face if it touches the edge).
    A photo with little room around the head is framed tighter and moved a little instead
    (`tasks.face_crop.fit_crop`); refused (`too_tight`) when even that would invent more than
    `max_padded` of the crop. Raises FaceError (codes: missing_image, unreadable_image,
    image_too_large, no_face, face_too_small, too_tight) with a message that says what to send instead.
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, not {pad_mode!r}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px, not {size}")
    image_path, out_path = Path(image_path), Path(out_path)
    name = image_path.name
    detector = detector if detector is not None else default_detector()
    rgb, warnings, to_srgb = read_portrait(image_path, max_pixels=max_pixels)
    h, w = rgb.shape[:2]

    # Detect on a smaller copy of big images; scale the results back to source pixels.
    factor = min(1.0, DETECT_MAX_SIDE / max(h, w))
    work = (
        rgb
        if factor == 1.0
        else cv2.resize(rgb, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
    )
    faces = [scaled_face(f, 1.0 / factor) for f in detector.detect(work)]
    if not faces:
        raise FaceError(
            "no_face",
            f"No human face found in {name}. Send a well-lit, frontal photo of one human face "
            "(head and shoulders, eyes and mouth visible).",
        )
    face = main_face(faces, w, h)
    x0, y0, x1, y1 = face.box
    width_px = face_px(face)
    if width_px < min_face_px:
        raise FaceError(
            "face_too_small",
            f"The face in {name} is only {width_px:.0f} px wide; at least {min_face_px} px is "
            f"needed, and {round(FACE_FRACTION * size)}+ px gives a sharp {size}x{size} video. "
            "Send a closer or higher-resolution photo.",
        )

    box, invented, moved = fit_crop(face, w, h)
    side = box[2] - box[0]
    if invented > max_padded:
        raise FaceError(
            "too_tight",
            f"{name} leaves too little room around the face: even framed tightly (the face "
            f"{width_px / side:.0%} of the crop) {invented:.0%} of the {size}x{size} crop would lie outside "
            f"the photo, more than the {max_padded:.0%} allowed (AVATARFLOW_FACE_MAX_PADDED). Send a photo "
            "with more space around the head and shoulders.",
        )
    out, padded = render_crop(rgb, box, size, pad_mode)
    out = apply_icc(out, to_srgb)
    upscale = size / side

    landmarks = with_mouth(face)
    pose = face.pose if face.pose is not None else pose_from_2d(landmarks)
    blur = sharpness(rgb, face.box)
    quality = {
        "face_size_px": round(width_px, 1),
        "face_fraction": round(width_px / side, 3),
        "blur": round(blur, 1),
        "yaw": _round(pose[0]),
        "pitch": _round(pose[1]),
        "roll": _round(pose[2]),
        "score": round(face.score, 3),
        "upscale": round(upscale, 3),
        "padded_fraction": round(padded, 3),
        "moved_fraction": round(moved, 3),  # the crop moved off the face's centre, share of its side
        "landmark_source": face.landmark_source,
    }

    if len(faces) > 1:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        text = (
            f"{len(faces)} faces found; used the largest, most central one at ({cx:.0f}, {cy:.0f})"
        )
        inside = sum(
            1
            for f in faces
            if f is not face
            and box[0] <= (f.box[0] + f.box[2]) / 2 <= box[2]
            and box[1] <= (f.box[1] + f.box[3]) / 2 <= box[3]
        )
        if inside:
            text += f"; {inside} other face(s) inside the crop may confuse lip-sync"
        warnings.append(text)
    if upscale > UPSCALE_WARN:
        warnings.append(
            f"upscaled {upscale:.1f}x: the face is {width_px:.0f} px wide in the source but the "
            f"{size}x{size} crop needs about {FACE_FRACTION * size:.0f} px; "
            "a larger photo gives a sharper video"
        )
    if blur < BLUR_WARN:
        warnings.append(
            f"the face looks blurry (sharpness {blur:.0f}, below {BLUR_WARN:.0f}); "
            "send a sharper photo if you can"
        )
    if pose[0] is not None and abs(pose[0]) > YAW_WARN:
        warnings.append(
            f"head turned about {abs(pose[0]):.0f}° from frontal (towards profile); "
            "lip-sync works best on a frontal face"
        )
    if pose[2] is not None and abs(pose[2]) > ROLL_WARN:
        warnings.append(f"head tilted about {abs(pose[2]):.0f}°; a level head animates better")
    if face.score < LOW_SCORE_WARN:
        warnings.append(
            f"low face-detection confidence ({face.score:.2f}): this may be a cartoon, painting, "
            "mask or partly hidden face; check the crop before generating"
        )
    if face.landmark_source == "detector":
        warnings.append(
            "detailed landmarks unavailable; mouth corners estimated from the detector's keypoints"
        )
    if width_px / side > FACE_FRACTION + 0.01:
        warnings.append(
            f"framed tighter than usual (the face {width_px / side:.0%} of the crop, normally "
            f"{FACE_FRACTION:.0%}): the photo has little room around the head"
        )
    if padded > PAD_WARN:
        warnings.append(
            f"{padded:.0%} of the crop lies outside the photo and was filled ({pad_mode}); "
            "a photo with more space around the head avoids this"
        )

    with atomic_path(out_path) as tmp:
        save_image(Image.fromarray(out), tmp, out_path.suffix)
    return FaceCrop(
        out_path=out_path,
        source_size=(w, h),
        face_box=tuple(float(v) for v in face.box),  # type: ignore[arg-type]
        landmarks={k: (float(x), float(y)) for k, (x, y) in landmarks.items()},
        crop_box=tuple(float(v) for v in box),  # type: ignore[arg-type]
        faces_found=len(faces),
        warnings=warnings,
        quality=quality,
        backend=detector.name,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)
