"""Face preprocessing: turn any portrait into a square head-and-shoulders RGB crop, or say why not.

The generator wants one human face, centred, at a consistent scale, in an exactly 512x512 RGB
image. Operators send whatever they have: phone photos with EXIF rotation, PNGs with alpha,
greyscale scans, CMYK print files, 16-bit PNGs, tiny thumbnails, huge renders, group photos and
sometimes a cat. `crop_face` handles all of these and either writes the crop or raises
`FaceError` with a short machine code and a message that tells the operator what to send instead.

Face detection runs offline: MediaPipe 0.10.21 bundles its face models in the wheel (see
DESIGN.md). `FaceAlignmentDetector` is an optional backend that only ever uses weights already
on disk. Coordinates everywhere in the results are source pixels (after EXIF orientation).

Landmark names follow the person's own left and right (as MediaPipe and anatomy do): in a frontal
photo `left_eye` is on the image's right-hand side.
"""

from __future__ import annotations

import io
import math
import textwrap
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from avatarflow.errors import AvatarflowError
from avatarflow.storage import atomic_path

# Crop geometry. The face-detector box is this fraction of the crop side; 0.45 leaves room for
# the hair above and the shoulders below, which the generator needs to animate a talking head.
FACE_FRACTION = 0.45
# The crop centre sits this fraction of the crop side below the face centre, so more of the
# shoulders than of the background above the head is kept.
CENTRE_DROP = 0.06
DETECT_MAX_SIDE = 1280  # detection input; MediaPipe itself looks at 128/192 px, so more is waste
GREY = (128, 128, 128)  # neutral background for transparent pixels and refused tiles

# Warning thresholds.
UPSCALE_WARN = 1.25  # output pixels per source pixel
BLUR_WARN = 25.0  # variance of the Laplacian on the face resized to BLUR_FACE_PX wide
BLUR_FACE_PX = 128  # a fixed face width, so sharpness is comparable between photos of any size
YAW_WARN = 35.0  # degrees; beyond this the face is closer to profile than to frontal
ROLL_WARN = 25.0
LOW_SCORE_WARN = 0.75  # real frontal photos score 0.85-0.97 with MediaPipe
PAD_WARN = 0.15  # fraction of the crop area that had to be invented

PAD_MODES = ("blur", "reflect")


class FaceError(AvatarflowError):
    """A portrait cannot become a face crop; `code` is for machines, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class DetectedFace:
    """One face as a detector sees it, in the pixels of the array it was given."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
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


# --------------------------------------------------------------------------------------------
# Loading


def load_portrait(image_path: Path) -> tuple[np.ndarray, list[str]]:
    """Read any still image as upright 8-bit sRGB (H, W, 3), with notes about what was converted."""
    rgb, notes, to_srgb = _read(Path(image_path))
    return _apply_icc(rgb, to_srgb), notes


def _read(image_path: Path) -> tuple[np.ndarray, list[str], ImageCms.ImageCmsTransform | None]:
    """Upright 8-bit RGB pixels, notes, and the sRGB transform still to apply to them (if any).

    Colour management of RGB photos (Display P3 from phones is common) is returned rather than
    applied: `crop_face` applies it to the 512² crop, which is far cheaper than the whole photo.
    """
    name = image_path.name
    if not image_path.is_file():
        raise FaceError(
            "missing_image", f"{image_path} does not exist or is not a file; check the path."
        )
    notes: list[str] = []
    try:
        with Image.open(image_path) as opened:
            opened.load()  # decode now: truncated files fail here rather than half-way through
            try:
                upright = ImageOps.exif_transpose(opened)
            except Exception:  # noqa: BLE001 - malformed EXIF must not lose an otherwise fine photo
                upright = opened.copy()
                notes.append("EXIF orientation could not be read; used the pixels as stored")
            if opened.mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "1"):
                notes.append("greyscale photo: the video will be greyscale too")
            rgb, to_srgb = _to_rgb(upright)
    except Image.DecompressionBombError as exc:
        raise FaceError(
            "image_too_large",
            f"{name} is too large to open safely ({exc}). Send a photo under 100 megapixels.",
        ) from exc
    except UnidentifiedImageError as exc:
        raise FaceError(
            "unreadable_image",
            f"{name} is not an image this pipeline can read (not JPEG, PNG, WebP, TIFF, BMP or "
            "GIF, or its header is damaged); send the portrait as JPEG or PNG.",
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise FaceError(
            "unreadable_image",
            f"{name} could not be decoded ({exc}); the file is probably truncated or corrupt. "
            "Send it again as JPEG or PNG.",
        ) from exc
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        raise FaceError(
            "face_too_small",
            f"{name} is only {rgb.shape[1]}x{rgb.shape[0]} px; "
            "send a photo of at least 256x256 px.",
        )
    return rgb, notes, to_srgb


def _to_rgb(image: Image.Image) -> tuple[np.ndarray, ImageCms.ImageCmsTransform | None]:
    """Any PIL mode to 8-bit RGB: alpha over grey, 16-bit scaled, CMYK colour-managed.

    Also returns the transform to sRGB for RGB images with another embedded profile.
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's convert("L") clips 16-bit values at 255 instead of scaling them.
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            top = 1.0 if values.max() <= 1.0 else 255.0
        else:
            top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), None
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode in ("L", "1"):
        image = image.convert("RGB")
    profile = _icc_profile(image)
    to_srgb = None
    if profile is not None and image.mode == "CMYK":
        # CMYK must become RGB before anything else can look at it.
        try:
            image = ImageCms.profileToProfile(
                image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # broken profiles are common; PIL's plain conversion below is close enough
    elif profile is not None and image.mode in ("RGB", "RGBA"):
        try:
            to_srgb = ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), "RGB", "RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            to_srgb = None
    if image.mode == "RGBA":
        # Transparent backgrounds become neutral grey: black or white halos look wrong on video.
        background = Image.new("RGB", image.size, GREY)
        background.paste(image, mask=image.getchannel("A"))
        image = background
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy(), to_srgb


def _icc_profile(image: Image.Image) -> ImageCms.ImageCmsProfile | None:
    """The embedded ICC profile, unless it is missing, broken or already sRGB."""
    icc = image.info.get("icc_profile")
    if not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if image.mode != "CMYK" and "srgb" in ImageCms.getProfileDescription(profile).lower():
            return None
        return profile
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None


def _apply_icc(rgb: np.ndarray, to_srgb: ImageCms.ImageCmsTransform | None) -> np.ndarray:
    if to_srgb is None:
        return rgb
    converted = ImageCms.applyTransform(Image.fromarray(rgb), to_srgb)
    return rgb if converted is None else np.asarray(converted, dtype=np.uint8).copy()


# --------------------------------------------------------------------------------------------
# Detectors

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
        import mediapipe as mp  # imported here: it is slow to import and logs on import

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
                faces.sort(key=lambda f: _box_area(f.box), reverse=True)
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


def _box_area(box: tuple[float, float, float, float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = _box_area(a) + _box_area(b) - inter
    return inter / union if union > 0 else 0.0


def _nms(faces: list[DetectedFace], threshold: float = 0.3) -> list[DetectedFace]:
    kept: list[DetectedFace] = []
    for face in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(_iou(face.box, k.box) < threshold for k in kept):
            kept.append(face)
    return kept


# --------------------------------------------------------------------------------------------
# Cropping


def crop_face(
    image_path: Path,
    out_path: Path,
    *,
    size: int = 512,
    min_face_px: int = 64,
    detector: FaceDetector | None = None,
    pad_mode: str = "blur",
) -> FaceCrop:
    """Write a size×size RGB head-and-shoulders crop of the main face in `image_path` to `out_path`.

    The face (detector box) is FACE_FRACTION of the crop width. Where the square runs past the
    photo's edge it is filled, never stretched: pad_mode "blur" continues the edge region out of
    focus; "reflect" mirrors the photo (which mirrors part of the face if it touches the edge).
    Raises FaceError (codes: missing_image, unreadable_image, image_too_large, no_face,
    face_too_small) with a message that says what to send instead.
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, not {pad_mode!r}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px, not {size}")
    image_path, out_path = Path(image_path), Path(out_path)
    name = image_path.name
    detector = detector if detector is not None else default_detector()
    rgb, warnings, to_srgb = _read(image_path)
    h, w = rgb.shape[:2]

    # Detect on a smaller copy of big images; scale the results back to source pixels.
    factor = min(1.0, DETECT_MAX_SIDE / max(h, w))
    work = (
        rgb
        if factor == 1.0
        else cv2.resize(rgb, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
    )
    faces = [_scaled(f, 1.0 / factor) for f in detector.detect(work)]
    if not faces:
        raise FaceError(
            "no_face",
            f"No human face found in {name}. Send a well-lit, frontal photo of one human face "
            "(head and shoulders, eyes and mouth visible).",
        )
    face = _main_face(faces, w, h)
    x0, y0, x1, y1 = face.box
    face_px = _face_px(face)
    if face_px < min_face_px:
        raise FaceError(
            "face_too_small",
            f"The face in {name} is only {face_px:.0f} px wide; at least {min_face_px} px is "
            f"needed, and {round(FACE_FRACTION * size)}+ px gives a sharp {size}x{size} video. "
            "Send a closer or higher-resolution photo.",
        )

    crop_box = _crop_box(face)
    side = crop_box[2] - crop_box[0]
    out, padded = _render(rgb, crop_box, size, pad_mode)
    out = _apply_icc(out, to_srgb)
    upscale = size / side

    landmarks = _with_mouth(face)
    pose = face.pose if face.pose is not None else _pose_from_2d(landmarks)
    blur = _sharpness(rgb, face.box)
    quality = {
        "face_size_px": round(face_px, 1),
        "face_fraction": round(face_px / side, 3),
        "blur": round(blur, 1),
        "yaw": _round(pose[0]),
        "pitch": _round(pose[1]),
        "roll": _round(pose[2]),
        "score": round(face.score, 3),
        "upscale": round(upscale, 3),
        "padded_fraction": round(padded, 3),
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
            and crop_box[0] <= (f.box[0] + f.box[2]) / 2 <= crop_box[2]
            and crop_box[1] <= (f.box[1] + f.box[3]) / 2 <= crop_box[3]
        )
        if inside:
            text += f"; {inside} other face(s) inside the crop may confuse lip-sync"
        warnings.append(text)
    if upscale > UPSCALE_WARN:
        warnings.append(
            f"upscaled {upscale:.1f}x: the face is {face_px:.0f} px wide in the source but the "
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
    if padded > PAD_WARN:
        warnings.append(
            f"{padded:.0%} of the crop lies outside the photo and was filled ({pad_mode}); "
            "a photo with more space around the head avoids this"
        )

    with atomic_path(out_path) as tmp:
        _save(Image.fromarray(out), tmp, out_path.suffix)
    return FaceCrop(
        out_path=out_path,
        source_size=(w, h),
        face_box=tuple(float(v) for v in face.box),  # type: ignore[arg-type]
        landmarks={k: (float(x), float(y)) for k, (x, y) in landmarks.items()},
        crop_box=tuple(float(v) for v in crop_box),  # type: ignore[arg-type]
        faces_found=len(faces),
        warnings=warnings,
        quality=quality,
        backend=detector.name,
    )


_DEFAULT_DETECTOR: MediaPipeDetector | None = None
_DEFAULT_LOCK = threading.Lock()


def default_detector() -> MediaPipeDetector:
    """One MediaPipe detector per process, built on first use."""
    global _DEFAULT_DETECTOR
    with _DEFAULT_LOCK:
        if _DEFAULT_DETECTOR is None:
            _DEFAULT_DETECTOR = MediaPipeDetector()
        return _DEFAULT_DETECTOR


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def _scaled(face: DetectedFace, k: float) -> DetectedFace:
    if k == 1.0:
        return face
    return replace(
        face,
        box=tuple(v * k for v in face.box),  # type: ignore[arg-type]
        landmarks={n: (x * k, y * k) for n, (x, y) in face.landmarks.items()},
    )


def _face_px(face: DetectedFace) -> float:
    """Face size: the larger box side, since a box clipped at the photo's edge loses one side."""
    return max(face.box[2] - face.box[0], face.box[3] - face.box[1])


def _main_face(faces: list[DetectedFace], w: int, h: int) -> DetectedFace:
    """The largest, most central face: size counts most, distance from centre breaks near-ties."""
    biggest = max(math.sqrt(_box_area(f.box)) for f in faces)
    half_diag = math.hypot(w, h) / 2

    def priority(f: DetectedFace) -> float:
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        off_centre = math.hypot(cx - w / 2, cy - h / 2) / half_diag
        return math.sqrt(_box_area(f.box)) / biggest - 0.5 * off_centre

    return max(faces, key=priority)


def _eyes_mouth(face: DetectedFace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lm = face.landmarks
    left, right = np.array(lm["left_eye"]), np.array(lm["right_eye"])
    if "mouth_center" in lm:
        mouth = np.array(lm["mouth_center"])
    else:
        mouth = (np.array(lm["mouth_left"]) + np.array(lm["mouth_right"])) / 2
    return left, right, mouth


def _crop_box(face: DetectedFace) -> tuple[int, int, int, int]:
    """A square around the face: centred on the face, dropped a little for the shoulders.

    The side is set by the detector box so the face is FACE_FRACTION of the crop in every output.
    The centre is the mean of the point between eyes and mouth and the box centre: the same point
    on a frontal face, but when the head turns the features slide towards the profile side while
    the box stays on the head, and the mean keeps both the features and the head in frame.
    """
    left, right, mouth = _eyes_mouth(face)
    features = ((left + right) / 2 + mouth) / 2
    box_centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
    centre = (features + box_centre) / 2
    side = max(8, round(_face_px(face) / FACE_FRACTION))
    cx, cy = centre[0], centre[1] + CENTRE_DROP * side
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    return x0, y0, x0 + side, y0 + side


def _render(
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


def _sharpness(rgb: np.ndarray, box: tuple[float, float, float, float]) -> float:
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


def _with_mouth(face: DetectedFace) -> dict[str, tuple[float, float]]:
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


def _pose_from_2d(
    lm: dict[str, tuple[float, float]],
) -> tuple[float | None, float | None, float | None]:
    """Yaw and roll from 2D landmarks alone (pitch needs depth); signs as in `_pose_from_mesh`."""
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


def _save(image: Image.Image, path: Path, suffix: str) -> None:
    fmt = Image.registered_extensions().get(suffix.lower(), "PNG")
    if fmt == "JPEG":
        image.save(path, format=fmt, quality=95, subsampling=0)
    elif fmt == "PNG":
        image.save(path, format=fmt, compress_level=3)  # level 6 is 2x slower for 5% less
    else:
        image.save(path, format=fmt)


# --------------------------------------------------------------------------------------------
# Contact sheet


def make_contact_sheet(
    items: list[tuple[str, Path | None, str]], out_path: Path, *, tile: int = 256, columns: int = 4
) -> None:
    """A grid of crops with captions (name, then status or warnings) for a person to look over.

    An item whose path is None (a refused image) is drawn as a grey tile showing the reason.
    """
    out_path = Path(out_path)
    caption_h = 96
    columns = max(1, min(columns, len(items) or 1))
    rows = max(1, math.ceil(len(items) / columns))
    gap = 8
    sheet = Image.new(
        "RGB",
        (columns * (tile + gap) + gap, rows * (tile + caption_h + gap) + gap),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(sheet)
    font = _font(13)
    bold = _font(14)
    chars = max(10, int(tile / 7.2))
    for i, (name, path, caption) in enumerate(items):
        x = gap + (i % columns) * (tile + gap)
        y = gap + (i // columns) * (tile + caption_h + gap)
        thumb = _thumb(path, tile)
        if thumb is None:
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=(150, 150, 150))
            lines = textwrap.wrap(caption, width=chars)[:14]
            draw.multiline_text(
                (x + 8, y + 8), "\n".join(lines), fill=(255, 255, 255), font=font, spacing=3
            )
            text = "REFUSED"
        else:
            sheet.paste(thumb, (x, y))
            text = caption
        draw.text((x, y + tile + 4), textwrap.shorten(name, width=chars), fill=(0, 0, 0), font=bold)
        lines = textwrap.wrap(text, width=chars)
        if len(lines) > 5:
            lines = lines[:4] + [lines[4][: chars - 1] + "…"]
        draw.multiline_text(
            (x, y + tile + 22), "\n".join(lines), fill=(70, 70, 70), font=font, spacing=2
        )
    with atomic_path(out_path) as tmp:
        _save(sheet, tmp, out_path.suffix)


def _thumb(path: Path | None, tile: int) -> Image.Image | None:
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS)
    except (OSError, ValueError):
        return None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the small bitmap font
        return ImageFont.load_default()
