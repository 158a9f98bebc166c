"""Technical checks of a generated video: is it a sound, watchable video of the right person?

`run_checks` answers, for one video, the questions a reviewer would otherwise answer by eye:
does it decode, does it have picture and sound, is it 25 fps at the expected size, does it last
as long as the speech, are there black or frozen stretches, is there a face in nearly every
frame, does that face stay the person (and the colours) of the reference portrait for the whole
video, and is the sound neither silent nor clipped. Each check returns a `CheckResult` with a
value, a human-readable threshold, a verdict ("pass", "warn", "fail") and a one-sentence reason.
The gate (`qc.gate`) turns the list into a decision.

How it stays fast (the target is well above 8 s of video per wall second on 2 cores):
- the file is probed once (`inference.verify.probe_video`);
- the picture is decoded once by one ffmpeg process into a raw YUV pipe at a low resolution
  (short side 256 px) and a fixed 25 fps grid; Python reads it frame by frame while ffmpeg keeps
  decoding, so decoding and analysis overlap on the two cores. Every frame feeds the cheap
  black/frozen statistics; every 5th (5 fps) also goes to face detection, identity and colour;
- the soundtrack is decoded by `tasks.audio.load_pcm` in a thread at the same time;
- face detection uses MediaPipe's bundled BlazeFace only (no face mesh): its eye and mouth
  keypoints are enough to align a face crop, and the mesh would cost about 4x more per frame.

Identity without a face-recognition model. No identity embedding runs offline here (MediaPipe
bundles detectors, not recognisers), so identity is a cheap proxy: each face is aligned on its
eyes and mouth into a 96 px crop and compared with the reference portrait's crop by three cues,
0.4 x the cosine of their HOG descriptors (edge structure: eyes, brows, nose, jaw line) + 0.3 x
the normalised cross-correlation of the blurred grey faces (proportions, shading) + 0.3 x the
Bhattacharyya coefficient of their hue/saturation histograms (skin and hair colour). The eye
and mouth keypoints come from a second detection on a square around the face (see `find_face`):
on a whole wide frame they can be a few pixels off, enough to make one person look like two.
Measured on the nine real clips in ../shared/media/video (worst 1 s window, each clip against
its own first frame and against every other clip's first frame): the clips score 0.76-0.95
against themselves (the lowest is the most expressive speaker); a different person scores
0.20-0.74: below 0.65 in 57 of the 72 pairs and 0.65-0.74 in the other 15. So the proxy fails a
face that turns into somebody else or melts into a generic face (below 0.65) and sends
look-alikes to a person (warn below 0.75); the margin between the most expressive real speaker
and the closest stranger is small, so it is a tripwire, not a face recogniser. CPU-engine videos
made from four real portraits score 0.93-0.97 against the original photo (ΔE ≤ 1.7) and
0.93-0.98 against the 512x512 crop the engine was given (ΔE ≤ 0.8): either works as reference.

Colour is the mean CIELAB colour of the central face region (forehead to nose, between the
cheeks: no mouth interior, no background) compared with the reference portrait's, as ΔE*ab
(CIE76). Against their own first frame, the real clips drift by at most 2.5 over their length
(4.0 for the full-body phone videos, whose small faces move through changing light); a 10-15 %
colour cast gives 6-13. Frames are converted to RGB with the BT.601 matrix after
ffmpeg has converted any tagged matrix (BT.709 phone video) to it, so the colours match what
ffmpeg itself shows.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference.engine import Failure, FailureKind
from inference.verify import FPS, VideoInfo, probe_video
from tasks.audio import AudioError, find_speech, load_pcm, measure_loudness, measure_true_peak_db
from tasks.face import DetectedFace, FaceDetector, FaceError, MediaPipeDetector, load_portrait

VERDICTS = ("pass", "warn", "fail")

# Analysis geometry: frames are decoded with their short side at this many pixels (never
# upscaled). 256 px keeps a head-and-shoulders face at 90-130 px and a full-body phone video's
# face at 60-70 px: enough for the detector and a 96 px identity crop, cheap to move and scan.
ANALYSIS_SHORT_SIDE = 256
FACE_SAMPLE_FPS = 5.0  # face, identity and colour are measured on 5 frames per second
ALIGNED_PX = 96  # side of the eye-and-mouth-aligned face crop used for identity and colour
BLOCK_PX = 16  # frozen detection compares 16x16-pixel blocks (at analysis resolution)
# Identity mix (see the module docstring). Each cue alone confuses pairs of the real clips
# that another cue tells apart; the weights were chosen on those clips.
HOG_WEIGHT = 0.4  # edge structure: eyes, brows, nose, jaw line
NCC_WEIGHT = 0.3  # the blurred grey face itself: proportions and shading
HIST_WEIGHT = 0.3  # skin and hair colour
DETECT_MAX_SIDE = 1280  # the reference portrait is shrunk to this before detection


@dataclass(frozen=True)
class Thresholds:
    """Every limit the checks apply, with the reason for its default.

    Durations are in seconds of video, luma on the 0-255 scale, ΔE in CIELAB units.
    """

    # 25 fps is what Live Avatar and the CPU engine write; anything else is a wrong encode.
    fps_tolerance: float = 0.01
    # "Within a frame or two": AAC priming and muxing legitimately add up to ~1 frame; more than
    # 2 frames (+ a small epsilon for container rounding) means the video was cut or padded.
    duration_tolerance_frames: float = 2.0
    duration_epsilon_s: float = 0.02
    # A frame is black when its mean luma is at most this (a lit face averages 60-180; ffmpeg's
    # blackdetect uses 0.10 of full scale per pixel, about the same level).
    black_luma: float = 20.0
    black_warn_s: float = 0.08  # 2 frames: a visible flash
    black_fail_s: float = 0.5
    # Two frames are identical when no 16x16 block's mean absolute luma change exceeds this. A
    # talking head always moves somewhere (mouth, eyes, camera noise): on the real clips the
    # most-changed block typically moves by 2-30 levels per frame; the odd duplicated source
    # frame (or a frame rate converted up to 25) repeats for one or two frames, never 0.5 s.
    frozen_block_diff: float = 0.75
    frozen_warn_s: float = 0.5
    frozen_fail_s: float = 1.0
    # Share of sampled frames with a detected face.
    face_pass: float = 0.95
    face_warn: float = 0.80
    # Identity proxy (see module docstring): the worst 1 s window's median similarity.
    identity_warn: float = 0.75
    identity_fail: float = 0.65
    # Colour drift of the face region, worst 1 s window's median ΔE*ab against the reference.
    # ΔE 5 is a cast a viewer notices side by side; 10 an obviously different colour.
    colour_warn_delta_e: float = 5.0
    colour_fail_delta_e: float = 10.0
    window_s: float = 1.0  # identity and colour are judged per window, so one bad frame is noise
    # Loudness (BS.1770, LUFS). Prepared speech is normalised to -23 LUFS; below -50 nobody
    # hears it (that is silence with a bit of hiss); below -40 it is suspiciously quiet.
    loudness_fail_lufs: float = -50.0
    loudness_warn_lufs: float = -40.0
    min_speech_s: float = 0.3  # less detected speech than this: the track holds no speech
    # Clipping. AAC's ringing destroys the flat tops of clipped samples, so count samples near
    # full scale instead: real speech normalised to -1.5 dBTP has none above 0.95; the real
    # clips at most 0.004 %; speech overdriven by 20 dB before encoding about 1 %.
    clip_level: float = 0.95
    clip_warn_fraction: float = 5e-4
    clip_fail_fraction: float = 5e-3
    true_peak_warn_db: float = 0.0  # inter-sample overs distort on playback


@dataclass
class CheckResult:
    """One check's outcome, written for the reviewer who reads it."""

    name: str
    value: Any  # the measurement (number, string or None when it could not be measured)
    threshold: str  # human-readable, e.g. "≥ 0.95 (warn ≥ 0.80)"
    verdict: str  # "pass" | "warn" | "fail"
    reason: str  # one sentence
    details: dict[str, Any] = field(default_factory=dict)  # where, per-window values, ...

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (non-finite numbers become None)."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            name=data["name"], value=data.get("value"), threshold=data.get("threshold", ""),
            verdict=data["verdict"], reason=data.get("reason", ""),
            details=dict(data.get("details") or {}),
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4) if math.isfinite(float(value)) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _grade_high(value: float, pass_at: float, warn_at: float) -> str:
    """Verdict for a value where higher is better."""
    return "pass" if value >= pass_at else "warn" if value >= warn_at else "fail"


def _grade_low(value: float, warn_above: float, fail_above: float) -> str:
    """Verdict for a value where lower is better."""
    return "fail" if value > fail_above else "warn" if value > warn_above else "pass"


def _clock(t: float) -> str:
    return f"{t:.1f} s"


def _spans(spans: Sequence[tuple[float, float]], limit: int = 3) -> str:
    text = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in spans[:limit])
    return text + (f" and {len(spans) - limit} more" if len(spans) > limit else "")


# --------------------------------------------------------------------------- the detector

_DETECTOR: MediaPipeDetector | None = None
_DETECTOR_LOCK = threading.Lock()


def qc_detector() -> MediaPipeDetector:
    """One BlazeFace-only MediaPipe detector per process (no mesh refinement: 4x cheaper)."""
    global _DETECTOR
    with _DETECTOR_LOCK:
        if _DETECTOR is None:
            _DETECTOR = MediaPipeDetector(max_refined=0)
        return _DETECTOR


def _main_face(faces: list[DetectedFace]) -> DetectedFace | None:
    """The largest face: the generator animates one person, shown large."""
    usable = [f for f in faces if {"right_eye", "left_eye"} <= f.landmarks.keys()]
    if not usable:
        return None
    return max(usable, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def _shifted(face: DetectedFace, dx: float, dy: float) -> DetectedFace:
    x0, y0, x1, y1 = face.box
    return DetectedFace(
        box=(x0 + dx, y0 + dy, x1 + dx, y1 + dy),
        score=face.score,
        landmarks={n: (x + dx, y + dy) for n, (x, y) in face.landmarks.items()},
    )


def find_face(
    detector: FaceDetector, rgb: np.ndarray, near: tuple[float, float, float, float] | None = None
) -> DetectedFace | None:
    """The main face with precise keypoints: detected on a square crop around the face.

    BlazeFace looks at the whole image through a 128 px input, so a face that fills a fifth of a
    wide frame gets eye and mouth keypoints a few pixels off, which is enough to misalign the
    identity crop (a tilted head reads as a different face). Detecting again on a square about
    twice the face's size fixes that. `near` is where the face was in the previous sampled frame:
    the crop around it is tried first, so a tracked face costs one detection, not two.
    """
    h, w = rgb.shape[:2]

    def around(box: tuple[float, float, float, float]) -> DetectedFace | None:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = 1.1 * max(box[2] - box[0], box[3] - box[1])
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        face = _main_face(detector.detect(np.ascontiguousarray(rgb[y0:y1, x0:x1])))
        return None if face is None else _shifted(face, x0, y0)

    if near is not None:
        face = around(near)
        if face is not None:
            return face
    face = _main_face(detector.detect(rgb))
    if face is None:
        return None
    side = max(face.box[2] - face.box[0], face.box[3] - face.box[1])
    if side >= 0.45 * min(h, w):
        return face  # already large in the detector's input: its keypoints are as good as it gets
    return around(face.box) or face


# --------------------------------------------------------------------------- face features


@dataclass
class FaceSample:
    """What one sampled frame's face contributes to identity and colour."""

    t: float
    width_px: float
    hog: np.ndarray
    grey: np.ndarray
    hist: np.ndarray
    lab: np.ndarray


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


def _face_sample(t: float, rgb: np.ndarray, face: DetectedFace) -> FaceSample:
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
    width = float(face.box[2] - face.box[0])
    return FaceSample(t=t, width_px=width, hog=hog, grey=grey, hist=hist, lab=lab.mean(axis=0))


def _similarity(a: FaceSample, b: FaceSample) -> float:
    return (HOG_WEIGHT * float(a.hog @ b.hog) + NCC_WEIGHT * float(a.grey @ b.grey)
            + HIST_WEIGHT * float(a.hist @ b.hist))


def reference_face(
    reference_image: Path, detector: FaceDetector, face_width_px: float | None
) -> FaceSample | str:
    """The reference portrait's face features, or why there are none.

    The portrait is scaled so its face is as wide as the video's (`face_width_px`): a 400 px
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
    width = face.box[2] - face.box[0]
    if face_width_px and width > face_width_px * 1.1:
        k = face_width_px / width
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * k)), max(1, round(rgb.shape[0] * k))),
                         interpolation=cv2.INTER_AREA)  # fmt: skip
        face = DetectedFace(
            box=tuple(v * k for v in face.box),  # type: ignore[arg-type]
            score=face.score,
            landmarks={n: (x * k, y * k) for n, (x, y) in face.landmarks.items()},
        )
    return _face_sample(0.0, rgb, face)


# --------------------------------------------------------------------------- decoding


@dataclass
class Decoded:
    """Per-frame statistics and face samples from one pass over the picture."""

    frames: int = 0
    luma: list[float] = field(default_factory=list)  # mean luma per frame
    block_diff: list[float] = field(default_factory=list)  # vs the previous frame; inf for frame 0
    sampled: int = 0  # frames sent to the face detector
    face_times: list[float] = field(default_factory=list)  # sampled frames with a face
    missing_times: list[float] = field(default_factory=list)  # sampled frames without one
    faces: list[FaceSample] = field(default_factory=list)
    returncode: int | None = None
    timed_out: bool = False
    errors: str = ""  # what ffmpeg printed at -v error
    size: tuple[int, int] = (0, 0)  # analysis width, height
    seconds: float = 0.0  # wall time of the pass


def _analysis_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    k = min(1.0, short_side / min(width, height))
    # Even sizes: 4:2:0 chroma has half the luma's width and height.
    return max(2, round(width * k / 2) * 2), max(2, round(height * k / 2) * 2)


_FULL_RANGE = 255.0 / 219.0  # video-range luma steps to 0-255 steps, so thresholds read as RGB


def _read_frames(
    video: Path, size: tuple[int, int], fps: float, timeout_s: float, out: Decoded
) -> Iterator[np.ndarray]:
    """I420 frames (H * 3/2, W) on a `fps` grid, from one ffmpeg process with its own time limit.

    YUV 4:2:0, not RGB: half the bytes through the pipe, no colour conversion in ffmpeg, and the
    black/frozen statistics read the luma plane directly; only the frames sampled for faces are
    converted to RGB. ffmpeg converts a tagged matrix (BT.709 phone video) to BT.601 on the way,
    so that conversion (OpenCV's, BT.601) gives the colours a player shows.
    """
    w, h = size
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", "file:" + str(video),
           "-map", "0:v:0", "-vf",
           f"fps={fps:g},scale={w}:{h}:flags=bilinear:out_color_matrix=bt601:out_range=tv",
           "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"]  # fmt: skip
    frame_bytes = w * h * 3 // 2
    # stderr goes to a file: a damaged file can print more errors than a pipe buffer holds,
    # which would block ffmpeg while we block reading its stdout.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errors, start_new_session=True)  # fmt: skip

        def kill() -> None:
            out.timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group: ffmpeg may fork helpers
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            while True:
                data = proc.stdout.read(frame_bytes)
                if len(data) < frame_bytes:
                    break
                yield np.frombuffer(data, dtype=np.uint8).reshape(h * 3 // 2, w)
        finally:
            timer.cancel()
            if proc.poll() is None and not out.timed_out:
                # The consumer stopped early (an exception): do not leave ffmpeg running.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            out.returncode = proc.wait()
            errors.seek(0)
            out.errors = errors.read().decode("utf-8", errors="replace").strip()[-600:]


def _decode_and_scan(
    video: Path, info: VideoInfo, *, fps: float, face_fps: float, short_side: int,
    timeout_s: float, detector: FaceDetector, thresholds: Thresholds,
) -> Decoded:  # fmt: skip
    started = time.perf_counter()
    size = _analysis_size(info.width, info.height, short_side)
    out = Decoded(size=size)
    every = max(1, round(fps / face_fps))
    previous: np.ndarray | None = None
    last_box: tuple[float, float, float, float] | None = None  # the face in the last sample
    w, h = size
    bw, bh = max(1, w // BLOCK_PX), max(1, h // BLOCK_PX)
    for index, i420 in enumerate(_read_frames(video, size, fps, timeout_s, out)):
        grey = i420[:h]  # the luma plane, video range 16-235
        luma = (float(grey.mean()) - 16.0) * _FULL_RANGE
        out.luma.append(luma)
        if previous is None:
            out.block_diff.append(math.inf)
        else:
            # Mean absolute change per block (INTER_AREA averages each block), then the largest:
            # a moving mouth in a still frame is a small area but a large change.
            diff = cv2.absdiff(grey, previous).astype(np.float32)
            block = cv2.resize(diff, (bw, bh), interpolation=cv2.INTER_AREA)
            out.block_diff.append(float(block.max()) * _FULL_RANGE)
        previous = grey
        if index % every == 0:
            out.sampled += 1
            t = index / fps
            face = None
            if luma > thresholds.black_luma:  # a black frame has no face: skip the detector
                rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
                face = find_face(detector, rgb, near=last_box)
            if face is None:
                out.missing_times.append(t)
                last_box = None
            else:
                out.face_times.append(t)
                out.faces.append(_face_sample(t, rgb, face))
                last_box = face.box
    out.frames = len(out.luma)
    out.seconds = time.perf_counter() - started
    return out


# --------------------------------------------------------------------------- the checks


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the runs of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _check_decodable(decoded: Decoded, timeout_s: float) -> CheckResult:
    threshold = "ffmpeg decodes every frame without errors"
    if decoded.timed_out:
        return CheckResult("decodable", decoded.frames, threshold, "fail",
                           f"decoding did not finish within {timeout_s:.0f} s "
                           f"({decoded.frames} frames read); the file may be damaged")  # fmt: skip
    if decoded.returncode != 0 or decoded.frames == 0:
        return CheckResult("decodable", decoded.frames, threshold, "fail",
                           f"ffmpeg could not decode the picture (exit {decoded.returncode}, "
                           f"{decoded.frames} frames): {decoded.errors or 'no message'}")
    if decoded.errors:
        return CheckResult("decodable", decoded.frames, threshold, "warn",
                           f"all {decoded.frames} frames decoded but ffmpeg reported errors, so "
                           f"some may be damaged: {decoded.errors[-300:]}")  # fmt: skip
    details = {"analysis_size": list(decoded.size), "scan_s": round(decoded.seconds, 3)}
    return CheckResult("decodable", decoded.frames, threshold, "pass",
                       f"all {decoded.frames} frames decode cleanly", details)  # fmt: skip


def _check_streams(info: VideoInfo) -> list[CheckResult]:
    video = CheckResult("video_stream", info.video_codec, "present", "pass",
                        f"{info.video_codec} video, {info.width}x{info.height}")  # fmt: skip
    if info.audio_codec is None:
        audio = CheckResult("audio_stream", None, "present", "fail",
                            "the file has no audio stream: muxing the speech failed")  # fmt: skip
    else:
        audio = CheckResult("audio_stream", info.audio_codec, "present", "pass",
                            f"{info.audio_codec} audio at {info.audio_sample_rate} Hz")  # fmt: skip
    return [video, audio]


def _check_fps(info: VideoInfo, fps: float, th: Thresholds) -> CheckResult:
    threshold = f"{fps:g} fps (± {th.fps_tolerance:g})"
    value = round(info.fps, 3)
    if abs(info.fps - fps) <= th.fps_tolerance:
        return CheckResult("frame_rate", value, threshold, "pass", f"the video runs at {fps:g} fps")
    return CheckResult("frame_rate", value, threshold, "fail",
                       f"the video runs at {info.fps:.2f} fps on average (variable or wrong frame "
                       f"rate); deliveries must be constant {fps:g} fps")  # fmt: skip


def _check_size(info: VideoInfo, expected: tuple[int, int]) -> CheckResult:
    value = f"{info.width}x{info.height}"
    threshold = f"= {expected[0]}x{expected[1]}"
    if (info.width, info.height) == tuple(expected):
        reason = f"the video is {value} as planned"
        return CheckResult("resolution", value, threshold, "pass", reason)
    reason = f"the video is {value} but {expected[0]}x{expected[1]} was planned"
    return CheckResult("resolution", value, threshold, "fail", reason)


def _check_duration(
    info: VideoInfo, decoded: Decoded | None, audio_s: float | None, expected_s: float,
    fps: float, th: Thresholds,
) -> CheckResult:  # fmt: skip
    tolerance = th.duration_tolerance_frames / fps + th.duration_epsilon_s
    frames = th.duration_tolerance_frames
    threshold = f"|video − speech| ≤ {tolerance:.2f} s ({frames:g} frames)"
    measured = [("the file", info.duration_s)]
    if decoded is not None and decoded.frames:
        measured.append(("the picture", decoded.frames / fps))
    if audio_s is not None:
        measured.append(("the soundtrack", audio_s))
    # Judge by whichever is furthest off: a file of the right length whose picture stops early
    # or whose sound is cut short is as wrong as a file that is too short.
    what, seconds = max(measured, key=lambda m: abs(m[1] - expected_s))
    error = seconds - expected_s
    # file_s, picture_s, soundtrack_s, speech_s
    details = {name.split()[-1] + "_s": round(s, 3) for name, s in measured}
    details["speech_s"] = round(expected_s, 3)
    if abs(error) <= tolerance:
        return CheckResult("duration", round(seconds, 3), threshold, "pass",
                           f"{what} lasts {seconds:.2f} s, the speech {expected_s:.2f} s",
                           details)  # fmt: skip
    side = "shorter" if error < 0 else "longer"
    return CheckResult("duration", round(seconds, 3), threshold, "fail",
                       f"{what} lasts {seconds:.2f} s, {abs(error):.2f} s ({abs(error) * fps:.0f} "
                       f"frames) {side} than the speech ({expected_s:.2f} s)", details)  # fmt: skip


def _check_black(decoded: Decoded, fps: float, th: Thresholds) -> CheckResult:
    black = np.array(decoded.luma) <= th.black_luma
    spans = [(a / fps, b / fps) for a, b in _runs(black)]
    longest = max((b - a for a, b in spans), default=0.0)
    threshold = f"no black stretch ≥ {th.black_fail_s:g} s (warn ≥ {th.black_warn_s:g} s)"
    details = {"black_spans_s": [[round(a, 2), round(b, 2)] for a, b in spans]}
    verdict = _grade_low(longest, th.black_warn_s - 1e-9, th.black_fail_s - 1e-9)
    if not spans:
        reason = "no black frames"
    elif verdict == "pass":
        reason = f"only single black frames ({_spans(spans)})"
    else:
        reason = (f"the picture is black for {longest:.2f} s at most (mean luma ≤ "
                  f"{th.black_luma:g}): {_spans(spans)}")  # fmt: skip
    return CheckResult("black_frames", round(longest, 3), threshold, verdict, reason, details)


def _check_frozen(decoded: Decoded, fps: float, th: Thresholds) -> CheckResult:
    diffs = np.array(decoded.block_diff)
    black = np.array(decoded.luma) <= th.black_luma
    # Frame i repeats frame i-1. Black stretches are reported by the black check, not here.
    same = (diffs < th.frozen_block_diff) & ~black
    # A run of k repeats shows one picture for k+1 frames.
    spans = [((a - 1) / fps, b / fps) for a, b in _runs(same)]
    longest = max((b - a for a, b in spans), default=0.0)
    threshold = f"no still stretch ≥ {th.frozen_fail_s:g} s (warn ≥ {th.frozen_warn_s:g} s)"
    verdict = _grade_low(longest, th.frozen_warn_s - 1e-9, th.frozen_fail_s - 1e-9)
    shown = [(a, b) for a, b in spans if b - a >= th.frozen_warn_s - 1e-9]
    details = {"frozen_spans_s": [[round(a, 2), round(b, 2)] for a, b in shown],
               "smallest_change": round(float(np.min(diffs[1:])), 3) if diffs.size > 1 else None}
    if verdict == "pass":
        reason = ("the picture moves throughout" if not spans else
                  f"no still stretch longer than {longest:.2f} s")  # fmt: skip
    else:
        reason = (f"the picture is frozen (identical frames) for {longest:.2f} s at most: "
                  f"{_spans(shown)}")  # fmt: skip
    return CheckResult("frozen_frames", round(longest, 3), threshold, verdict, reason, details)


def _check_face(decoded: Decoded, th: Thresholds) -> CheckResult:
    fraction = len(decoded.face_times) / max(decoded.sampled, 1)
    threshold = f"≥ {th.face_pass:.2f} of sampled frames (warn ≥ {th.face_warn:.2f})"
    verdict = _grade_high(fraction, th.face_pass, th.face_warn)
    missing = decoded.missing_times
    details = {"sampled_frames": decoded.sampled, "without_face_s": [round(t, 2) for t in missing]}
    if not missing:
        reason = f"a face is found in all {decoded.sampled} sampled frames"
    else:
        shown = ", ".join(_clock(t) for t in missing[:5]) + (" ..." if len(missing) > 5 else "")
        reason = (f"a face is found in {fraction:.0%} of {decoded.sampled} sampled frames; "
                  f"none at {shown}")  # fmt: skip
    return CheckResult("face_presence", round(fraction, 4), threshold, verdict, reason, details)


def _windows(
    times: Sequence[float], values: Sequence[float], window_s: float
) -> list[tuple[float, float]]:
    """(window start, median value) per window holding at least 2 values (or the only one)."""
    if not values:
        return []
    t, v = np.asarray(times), np.asarray(values)
    keys = np.floor(t / window_s + 1e-9).astype(int)
    out = []
    for key in np.unique(keys):
        chosen = v[keys == key]
        if chosen.size >= 2 or len(values) < 2:
            out.append((float(key * window_s), float(np.median(chosen))))
    if not out:  # every window had a single value: judge the video as one window
        out.append((0.0, float(np.median(v))))
    return out


def _merge(starts: Sequence[float], length: float) -> list[tuple[float, float]]:
    """Adjacent windows [start, start + length) merged into spans."""
    spans: list[tuple[float, float]] = []
    for a in sorted(starts):
        if spans and a <= spans[-1][1] + 1e-9:
            spans[-1] = (spans[-1][0], a + length)
        else:
            spans.append((a, a + length))
    return spans


def _check_identity(
    decoded: Decoded, ref: FaceSample | str, th: Thresholds
) -> CheckResult:
    threshold = (f"≥ {th.identity_warn:.2f} in every {th.window_s:g} s window "
                 f"(fail < {th.identity_fail:.2f})")  # fmt: skip
    if isinstance(ref, str):
        return CheckResult("identity", None, threshold, "warn",
                           f"identity not checked: {ref}")  # fmt: skip
    if not decoded.faces:
        return CheckResult("identity", None, threshold, "fail",
                           "identity not measurable: no face in any sampled frame")  # fmt: skip
    sims = [_similarity(ref, f) for f in decoded.faces]
    windows = _windows([f.t for f in decoded.faces], sims, th.window_s)
    start, worst = min(windows, key=lambda w: w[1])
    verdict = _grade_high(worst, th.identity_warn, th.identity_fail)
    low = _merge([a for a, v in windows if v < th.identity_warn], th.window_s)
    details = {"windows": [[round(a, 2), round(v, 3)] for a, v in windows],
               "median": round(float(np.median(sims)), 3)}
    if verdict == "pass":
        reason = (f"the face stays close to the reference portrait (similarity ≥ {worst:.2f} "
                  f"in every {th.window_s:g} s window)")  # fmt: skip
    else:
        reason = (f"the face drifts away from the reference portrait: similarity falls to "
                  f"{worst:.2f} at {_spans([(start, start + th.window_s)])} and is below "
                  f"{th.identity_warn:.2f} over {_spans(low)}")  # fmt: skip
    return CheckResult("identity", round(worst, 4), threshold, verdict, reason, details)


def _check_colour(decoded: Decoded, ref: FaceSample | str, th: Thresholds) -> CheckResult:
    threshold = (f"ΔE*ab ≤ {th.colour_warn_delta_e:g} in every {th.window_s:g} s window "
                 f"(fail > {th.colour_fail_delta_e:g})")  # fmt: skip
    if isinstance(ref, str):
        return CheckResult("colour", None, threshold, "warn", f"colour not checked: {ref}")
    if not decoded.faces:
        return CheckResult("colour", None, threshold, "fail",
                           "colour not measurable: no face in any sampled frame")  # fmt: skip
    deltas = [float(np.linalg.norm(f.lab - ref.lab)) for f in decoded.faces]
    windows = _windows([f.t for f in decoded.faces], deltas, th.window_s)
    start, worst = max(windows, key=lambda w: w[1])
    verdict = _grade_low(worst, th.colour_warn_delta_e, th.colour_fail_delta_e)
    # Which way the worst window went, in words a reviewer can check by eye.
    in_worst = [f.lab for f in decoded.faces if start <= f.t < start + th.window_s]
    d_l, d_a, d_b = (np.mean(in_worst or [f.lab for f in decoded.faces], axis=0) - ref.lab).tolist()
    high = _merge([a for a, v in windows if v > th.colour_warn_delta_e], th.window_s)
    details = {"windows": [[round(a, 2), round(v, 2)] for a, v in windows],
               "worst_shift_lab": [round(d_l, 2), round(d_a, 2), round(d_b, 2)]}
    if verdict == "pass":
        reason = (f"the face keeps the reference portrait's colour (ΔE ≤ {worst:.1f} in every "
                  f"{th.window_s:g} s window)")  # fmt: skip
    else:
        shifts = []
        if abs(d_l) >= 2:
            shifts.append("darker" if d_l < 0 else "brighter")
        if abs(d_a) >= 2:
            shifts.append("greener" if d_a < 0 else "redder")
        if abs(d_b) >= 2:
            shifts.append("bluer" if d_b < 0 else "yellower")
        how = ", ".join(shifts) or "shifted in hue"
        reason = (f"the face's colour drifts from the reference portrait: ΔE {worst:.1f} at "
                  f"{_spans([(start, start + th.window_s)])} ({how}), above "
                  f"{th.colour_warn_delta_e:g} over {_spans(high)}")  # fmt: skip
    return CheckResult("colour", round(worst, 3), threshold, verdict, reason, details)


def _check_audio(
    video: Path, info: VideoInfo, th: Thresholds, timeout_s: float
) -> tuple[list[CheckResult], float | None]:
    """Silence and clipping of the soundtrack (decoded at its own rate), and its length."""
    level_threshold = (f"≥ {th.loudness_fail_lufs:g} LUFS with speech (warn < "
                       f"{th.loudness_warn_lufs:g} LUFS)")  # fmt: skip
    clip_threshold = (f"< {th.clip_warn_fraction:.2%} of samples ≥ {th.clip_level:g} FS "
                      f"(fail ≥ {th.clip_fail_fraction:.1%}); "
                      f"true peak ≤ {th.true_peak_warn_db:g} dBTP")  # fmt: skip
    rate = info.audio_sample_rate or 16_000
    try:
        x = load_pcm(video, rate, timeout_s=timeout_s)
    except AudioError as exc:
        message = f"the soundtrack cannot be decoded: {exc}"
        return [CheckResult("audio_level", None, level_threshold, "fail", message),
                CheckResult("audio_clipping", None, clip_threshold, "fail", message)], None
    loudness = measure_loudness(x, rate)
    speech_s = sum(b - a for a, b in find_speech(x, rate))
    seconds = x.size / rate
    details = {"loudness_lufs": loudness, "speech_s": round(speech_s, 2),
               "audio_s": round(seconds, 2)}  # fmt: skip
    if not math.isfinite(loudness) or loudness < th.loudness_fail_lufs:
        shown = "no signal at all" if not math.isfinite(loudness) else f"{loudness:.1f} LUFS"
        level = CheckResult("audio_level", loudness, level_threshold, "fail",
                            f"the soundtrack is silent ({shown})", details)  # fmt: skip
    elif speech_s < th.min_speech_s:
        level = CheckResult("audio_level", loudness, level_threshold, "fail",
                            f"the soundtrack holds no speech ({loudness:.1f} LUFS of noise or "
                            f"tone, {speech_s:.2f} s of speech found)", details)  # fmt: skip
    elif loudness < th.loudness_warn_lufs:
        level = CheckResult("audio_level", loudness, level_threshold, "warn",
                            f"the speech is very quiet ({loudness:.1f} LUFS; prepared speech is "
                            f"about -23 LUFS)", details)  # fmt: skip
    else:
        level = CheckResult("audio_level", loudness, level_threshold, "pass",
                            f"speech at {loudness:.1f} LUFS ({speech_s:.1f} s of {seconds:.1f} s "
                            f"is speech)", details)  # fmt: skip

    near = float(np.mean(np.abs(x) >= th.clip_level)) if x.size else 0.0
    peak = measure_true_peak_db(x)
    clip_details = {"near_full_scale_fraction": near, "true_peak_dbtp": peak}
    if near >= th.clip_fail_fraction:
        clipping = CheckResult("audio_clipping", near, clip_threshold, "fail",
                               f"the sound is clipped: {near:.2%} of samples sit at full scale "
                               f"(true peak {peak:+.1f} dBTP)", clip_details)  # fmt: skip
    elif near >= th.clip_warn_fraction or peak > th.true_peak_warn_db:
        clipping = CheckResult("audio_clipping", near, clip_threshold, "warn",
                               f"the sound may distort: {near:.3%} of samples near full scale, "
                               f"true peak {peak:+.1f} dBTP", clip_details)  # fmt: skip
    else:
        clipping = CheckResult("audio_clipping", near, clip_threshold, "pass",
                               f"no clipping (true peak {peak:+.1f} dBTP)", clip_details)
    return [level, clipping], seconds


# --------------------------------------------------------------------------- entry point


def run_checks(
    video: Path,
    *,
    expected_seconds: float,
    expected_size: tuple[int, int] | None,
    reference_image: Path | None,
    fps: float = FPS,
    thresholds: Thresholds = Thresholds(),
    detector: FaceDetector | None = None,
    face_fps: float = FACE_SAMPLE_FPS,
    short_side: int = ANALYSIS_SHORT_SIDE,
    timeout_s: float | None = None,
) -> list[CheckResult]:
    """Every technical check of `video`, in a fixed order.

    `expected_seconds` is the speech's length; `expected_size` the planned (width, height), or
    None to skip the resolution check; `reference_image` the portrait the video was made from,
    or None to skip the identity and colour checks. Checks that cannot run because an earlier
    one failed are left out: a file that does not decode returns only the failures that say so.
    `timeout_s` bounds each decode, picture and sound (default 60 s + 2 s per second of video).
    `detector` defaults to a shared BlazeFace-only MediaPipe detector; `face_fps` and
    `short_side` set the face sampling rate and the analysis resolution.
    """
    video = Path(video)
    th = thresholds
    if not expected_seconds > 0:
        raise ValueError(f"expected_seconds must be positive, not {expected_seconds}")
    info = probe_video(video)
    if isinstance(info, Failure):
        name = "video_stream" if info.kind == FailureKind.NO_VIDEO_STREAM else "decodable"
        return [CheckResult(name, None, "a readable video file", "fail", info.message)]

    results = _check_streams(info)
    results.append(_check_fps(info, fps, th))
    if expected_size is not None:
        results.append(_check_size(info, expected_size))

    longest = max(info.duration_s, expected_seconds)
    limit = timeout_s if timeout_s is not None else 60.0 + 2.0 * longest
    detector = detector or qc_detector()
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The soundtrack is decoded and measured while the picture is scanned.
        audio: Future[tuple[list[CheckResult], float | None]] | None = None
        if info.audio_codec is not None:
            audio = pool.submit(_check_audio, video, info, th, limit)
        decoded = _decode_and_scan(video, info, fps=fps, face_fps=face_fps, short_side=short_side,
                                   timeout_s=limit, detector=detector, thresholds=th)  # fmt: skip
        reference: FaceSample | str | None = None
        if reference_image is not None:
            widths = [f.width_px for f in decoded.faces]
            reference = reference_face(
                Path(reference_image), detector, float(np.median(widths)) if widths else None
            )
        audio_results, audio_s = audio.result() if audio is not None else ([], None)

    decodable = _check_decodable(decoded, limit)
    results.insert(0, decodable)
    results.append(_check_duration(info, decoded if decoded.frames else None, audio_s,
                                   expected_seconds, fps, th))  # fmt: skip
    if decoded.frames:
        results += [_check_black(decoded, fps, th), _check_frozen(decoded, fps, th),
                    _check_face(decoded, th)]  # fmt: skip
        if reference is not None:
            results.append(_check_identity(decoded, reference, th))
            results.append(_check_colour(decoded, reference, th))
    results += audio_results
    return results


def summarise(results: Sequence[CheckResult]) -> str:
    """One line per check, for logs and the CLI."""
    return "\n".join(f"{r.verdict.upper():4} {r.name:15} {r.reason}" for r in results)


def worst_verdict(results: Sequence[CheckResult]) -> str:
    return max((r.verdict for r in results), key=VERDICTS.index, default="pass")


__all__ = [
    "CheckResult",
    "Thresholds",
    "find_face",
    "qc_detector",
    "reference_face",
    "run_checks",
    "summarise",
    "worst_verdict",
]
