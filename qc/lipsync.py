"""Lip-sync scoring: does the mouth in a video move with its speech?

Two scorers share one interface (`LipSyncScorer.score(video, audio=None) -> LipSyncResult`):

- `LandmarkSyncScorer` (default, no model weights): tracks the mouth with MediaPipe's bundled
  face mesh and compares its motion with the speech, searching audio-video offsets of up to
  +-15 frames (+-0.6 s) at 25 fps;
- `qc.syncnet.SyncNetScorer`: SyncNet (LSE-C, LSE-D, offset) when its weights are configured.

Both report raw metrics (confidence, correlation or distance, best offset, per-window values,
the fraction of frames with a tracked face) and a `score` in [0, 1]: the probability that the
video is in sync, from the scorer's stored calibration (`qc.calibration`). `score` is None, with
`score_reason` saying why, when there is no calibration or nothing could be measured.

Offset sign, everywhere in avatarflow: `offset_frames = +d` means the audio is LATE by d frames
(the sound that belongs to the mouth shape of frame i is heard at frame i + d); negative means
the audio is early. (SyncNet's own scripts print the opposite sign; see `qc.syncnet`.)

How the landmark scorer measures (and why):
- Frames: one ffmpeg process resamples any source (VFR, 30 fps, HEVC 1080x1920) onto the 25 fps
  grid of the container timeline (`fps=25:start_time=0`) at a short side of at most 360 px, as
  I420, and writes the soundtrack (16 kHz mono, sample 0 at time 0) in the same run; a reader
  thread keeps ffmpeg decoding on one core while the face mesh runs on the other.
- Mouth, per frame: (1) the outer lip height (landmarks 0-17) over the eye distance, from
  MediaPipe's face mesh in video mode with the refined lip landmarks, and (2) the darkness of
  the centre of a 32x24 grey mouth patch aligned on the mouth corners: an open mouth shows its
  dark cavity. The landmarks alone are a weak signal (the mesh smooths the lips); the pixels see
  what the lips really do. The mesh runs on every second frame (`mesh_stride`), which is what
  makes ~8 s of video per second possible on two cores; landmarks in between are interpolated
  (the band used below ends at 6 Hz, under the 12.5 Hz Nyquist limit of that sampling), while
  the patch is read on every frame.
- Audio, per video frame: log energies of 7 speech bands (100 Hz - 7 kHz) in an 80 ms Hann
  window centred on the frame.
- Both are band-passed to 0.3-6 Hz (zero-phase: no lag is introduced), the syllable rhythm
  where lip motion and the speech envelope move together.
- For each offset, the first canonical correlation between the 2 mouth signals and the 7 band
  signals, in 5 s windows (2.5 s hop), averaged over the windows: a canonical correlation lets
  each band count with its own sign and weight (vowel energy opens the mouth, fricatives do
  not), which a single envelope cannot. Averaging window curves keeps the scale of the values
  the same for a 5 s and a 60 s video (the calibration is fitted on 5 s windows), while longer
  videos get a less noisy curve.
- confidence = peak - median over offsets (the idea of SyncNet's LSE-C); correlation = the
  peak; offset = where it is. near_confidence / near_margin (what the calibration uses): the
  best value within +-3 frames of 0 minus the median / minus the best value further out; real
  recordings peak within 3 frames of 0. Per-window values: the correlation of the canonical
  mouth and audio variates (weights fitted on the whole video at the best offset) in 2 s
  windows.

Measured on the nine real clips in ../shared/media/video (see the report stored in
qc/calibrations/landmark-v1.json): cross-validated ROC AUC 0.997 against 480 ms shifts, 0.97
against another clip's audio, 0.89 against 200 ms shifts, on 5 s windows. Known misses: the
variable-frame-rate retalking_face1 peaks at -10 frames; a 200 ms shift of a clip whose natural
offset is -2 or -3 frames lands inside the +-3 frame tolerance.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import scipy.signal as sps

from avatarflow.errors import AvatarflowError

FPS = 25
SAMPLE_RATE = 16_000
HOP = SAMPLE_RATE // FPS  # audio samples per video frame (640)
NEAR_OFFSET = 3  # frames: real recordings peak within this of 0 (the mouth leads a little)
MAX_OFFSET = 15  # frames searched each way (0.6 s): more than the 480 ms shifts QC must catch
DECODE_SHORT_SIDE = 360  # px; the mesh looks at 192 px, the mouth patch at 32 px
MESH_STRIDE = 2
SIGNALS = ("outer", "darkness")  # the mouth signals compared with the speech bands
WINDOW_FRAMES = 125  # 5 s analysis windows ...
WINDOW_HOP = 62  # ... every 2.5 s
MIN_FRAMES = 50  # 2 s: less cannot hold enough syllables to find a correlation peak
REPORT_WINDOW_S = 2.0  # per-window values in the result
BAND_EDGES_HZ = (100, 300, 600, 1000, 1600, 2500, 4000, 7000)
SIGNAL_BAND_HZ = (0.3, 6.0)
MIN_TRACKED_IN_WINDOW = 0.8  # analysis windows with fewer tracked frames are left out
MAX_GAP_FRAMES = 12  # face lost longer than this (0.5 s) is not interpolated over
DECODE_TIMEOUT_S = 900.0

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
    "forehead": 10,
    "chin": 152,
    "face_right": 234,
    "face_left": 454,
}
_IDX = list(LANDMARKS.values())
_POS = {name: i for i, name in enumerate(LANDMARKS)}  # rows in the stored (k, 2) arrays

PATCH_W, PATCH_H = 32, 24
PATCH_SPAN = 1.6  # patch width / mouth width: lips plus a margin of cheek
PATCH_CENTRE = (slice(8, 16), slice(10, 22))  # rows, cols of the mouth opening in the patch


class LipSyncError(AvatarflowError):
    """A video or soundtrack cannot be scored at all (unreadable, no video stream, timeout)."""


# --------------------------------------------------------------------------------------------
# Result


@dataclass
class LipSyncResult:
    """Raw lip-sync metrics of one video, and the calibrated score.

    offset_frames > 0: the audio is late by that many 25 fps frames; < 0: early.
    """

    scorer: str
    video: str
    audio: str | None  # None: the video's own soundtrack
    frames: int  # 25 fps frames analysed
    duration_s: float
    face_fraction: float  # share of frames with a tracked face
    confidence: float | None  # landmark: peak - median correlation; SyncNet: LSE-C
    correlation: float | None  # landmark: peak canonical correlation; SyncNet: None
    distance: float | None  # SyncNet: LSE-D (min mean distance); landmark: None
    offset_frames: int | None
    offsets: list[int] = field(default_factory=list)  # the offsets searched ...
    curve: list[float] = field(default_factory=list)  # ... and the value at each
    curve_kind: str = "correlation"  # "correlation" (higher: better) or "distance" (lower)
    window_s: float = REPORT_WINDOW_S
    window_starts_s: list[float] = field(default_factory=list)
    window_values: list[float | None] = field(default_factory=list)  # at the best global offset
    score: float | None = None  # P(in sync) from the calibration
    score_reason: str | None = None  # why score is None (or a caveat)
    calibration: str | None = None  # which calibration produced the score
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.confidence is not None and self.offset_frames is not None

    def features(self) -> dict[str, float]:
        """The raw numbers a calibration may use, by name (only those that were measured)."""
        out: dict[str, float] = {}
        if self.confidence is not None:
            out["confidence"] = float(self.confidence)
        if self.correlation is not None:
            out["peak"] = float(self.correlation)
        if self.distance is not None:
            out["distance"] = float(self.distance)
        if self.offset_frames is not None:
            out["abs_offset"] = float(abs(self.offset_frames))
        if self.curve and self.offsets:
            # The same two numbers for either kind of curve, oriented so higher is better.
            curve = np.array(self.curve) * (-1.0 if self.curve_kind == "distance" else 1.0)
            near = np.abs(np.array(self.offsets)) <= NEAR_OFFSET
            out["near_confidence"] = float(curve[near].max() - np.median(curve))
            out["near_margin"] = float(curve[near].max() - curve[~near].max())
        valid = [v for v in self.window_values if v is not None]
        if valid:
            out["window_min"] = float(min(valid))
        out["face_fraction"] = float(self.face_fraction)
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("confidence", "correlation", "distance", "score", "face_fraction", "duration_s"):
            if data[key] is not None:
                data[key] = round(float(data[key]), 4)
        data["curve"] = [round(float(v), 4) for v in self.curve]
        data["window_values"] = [None if v is None else round(float(v), 4) for v in self.window_values]
        data["window_starts_s"] = [round(float(v), 2) for v in self.window_starts_s]
        data["timings_s"] = {k: round(float(v), 3) for k, v in self.timings_s.items()}
        data["offset_convention"] = "positive: audio late (lags the picture), in 25 fps frames"
        return data


@runtime_checkable
class LipSyncScorer(Protocol):
    """Anything that scores a video's lip sync."""

    name: str

    def score(self, video: Path, audio: Path | None = None) -> LipSyncResult:
        """Raw metrics and calibrated score; `audio` None scores the video's own soundtrack."""
        ...


class CalibratableScorer(LipSyncScorer, Protocol):
    """A scorer that can measure many soundtracks against one decoded video (for calibration)."""

    calibration_features: tuple[str, ...]

    def prepare(self, video: Path) -> Any:
        """Decode and track the video once; the result is passed to `measure`."""
        ...

    def own_audio(self, video: Path) -> np.ndarray:
        """The video's soundtrack, 16 kHz mono, sample 0 at the video's time 0."""
        ...

    def measure(
        self, prepared: Any, pcm: np.ndarray, start: int = 0, stop: int | None = None,
        *, video: str = "", audio: str | None = None,
    ) -> LipSyncResult:
        """Raw metrics (no score) of frames [start, stop) against `pcm` (aligned to frame 0)."""
        ...


# --------------------------------------------------------------------------------------------
# Probing and decoding


@dataclass(frozen=True)
class SourceInfo:
    width: int  # as displayed (rotation applied)
    height: int
    fps: float
    codec: str
    duration_s: float
    video_start_s: float
    audio_start_s: float | None  # None: no audio stream

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_source(path: Path, timeout_s: float = 60.0) -> SourceInfo:
    """What ffprobe says about the first video stream (and the first audio stream's start)."""
    path = Path(path)
    if not path.is_file():
        raise LipSyncError(f"{path}: no such file")
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format",
           str(path)]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise LipSyncError(f"{path.name}: ffprobe took more than {timeout_s:g} s") from exc
    if done.returncode != 0:
        raise LipSyncError(f"{path.name} cannot be read as media: {done.stderr.strip()[-300:]}")
    data = json.loads(done.stdout or "{}")
    streams = data.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise LipSyncError(f"{path.name} has no video stream: nothing to score")
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    rotation = 0.0
    for side in video.get("side_data_list") or []:
        if "rotation" in side:
            rotation = float(side["rotation"])
    if round(abs(rotation)) % 180 == 90:  # ffmpeg auto-rotates when decoding
        width, height = height, width
    num, _, den = str(video.get("avg_frame_rate") or "0/1").partition("/")
    fps = float(num) / float(den) if den and float(den) else 0.0
    duration = float((data.get("format") or {}).get("duration") or video.get("duration") or 0.0)
    return SourceInfo(
        width=width, height=height, fps=fps, codec=str(video.get("codec_name")),
        duration_s=duration, video_start_s=float(video.get("start_time") or 0.0),
        audio_start_s=float(audio.get("start_time") or 0.0) if audio else None,
    )  # fmt: skip


def decode_size(info: SourceInfo, short_side: int = DECODE_SHORT_SIDE) -> tuple[int, int]:
    """Even output size with the short side at most `short_side` (never upscaled)."""
    k = min(1.0, short_side / max(1, min(info.width, info.height)))
    return max(2, int(round(info.width * k / 2)) * 2), max(2, int(round(info.height * k / 2)) * 2)


# The soundtrack as 16 kHz mono float32 with its sample 0 at the container's time 0: ffmpeg
# pads (or trims) a stream that starts later (or earlier) than the picture's timeline.
SOUNDTRACK_ARGS = ["-map", "0:a:0", "-vn", "-sn", "-ac", "1",
                   "-af", f"aresample={SAMPLE_RATE}:async=1:first_pts=0",
                   "-c:a", "pcm_f32le", "-f", "f32le"]  # fmt: skip


def decode_frames(
    path: Path, size: tuple[int, int], *, timeout_s: float = DECODE_TIMEOUT_S, prefetch: int = 6,
    soundtrack_to: Path | None = None,
) -> Iterator[np.ndarray]:  # fmt: skip
    """I420 frames (h * 3 / 2, w) on the 25 fps grid of the container's timeline, frame 0 = t 0.

    I420 rather than RGB: the luma plane is the grey picture the mouth patch needs, and only the
    frames the face mesh looks at are converted to RGB (`to_rgb`), which halves what ffmpeg
    converts and what the pipe carries.

    `fps=25:start_time=0` resamples variable and other frame rates onto the grid the audio is
    measured on (frame i covers [i/25, (i+1)/25) s), repeating the first picture when the video
    stream starts after 0 (so frame indices stay aligned with the soundtrack). A reader thread
    keeps ffmpeg decoding while the caller works on the previous frames (2 cores in parallel).
    """
    w, h = size
    frame_bytes = w * h * 3 // 2
    # Bilinear is enough before a 192 px mesh and a 32 px patch and costs far less than area
    # averaging on 1080x1920 HEVC; skipping the loop filter speeds the decoder up for free at
    # this downscale.
    cmd = ["ffmpeg", "-nostdin", "-y", "-v", "error", "-skip_loop_filter", "all", "-i", str(path),
           "-map", "0:v:0", "-an", "-sn",
           "-vf", f"fps={FPS}:start_time=0,scale={w}:{h}:flags=bilinear",
           "-pix_fmt", "yuv420p", "-f", "rawvideo", "pipe:1"]  # fmt: skip
    if soundtrack_to is not None:
        # The same process writes the soundtrack too: starting ffmpeg or ffprobe costs about
        # 0.17 s of CPU each on the reference machine, as much as decoding 2 s of video.
        cmd += [*SOUNDTRACK_ARGS, str(soundtrack_to)]
    frames: queue.Queue[np.ndarray | None | BaseException] = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    # stderr to a file: a damaged file can print more than a pipe holds and block ffmpeg.
    errors = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errors, start_new_session=True)  # fmt: skip
    except FileNotFoundError as exc:
        errors.close()
        raise LipSyncError("ffmpeg is not installed or not on PATH") from exc

    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group
        except ProcessLookupError:
            pass

    def reader() -> None:
        assert proc.stdout is not None
        try:
            while not stop.is_set():
                data = proc.stdout.read(frame_bytes)
                if len(data) < frame_bytes:
                    break
                frames.put(np.frombuffer(data, dtype=np.uint8).reshape(h * 3 // 2, w))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            frames.put(exc)
            return
        frames.put(None)

    thread = threading.Thread(target=reader, name="lipsync-decode", daemon=True)
    timer = threading.Timer(timeout_s, kill)
    thread.start()
    timer.start()
    started = time.monotonic()
    try:
        while True:
            item = frames.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise LipSyncError(f"{Path(path).name}: reading decoded frames failed: {item}")
            yield item
        rc = proc.wait()
        if rc != 0:
            errors.seek(0)
            tail = errors.read().decode("utf-8", "replace").strip()[-300:]
            if time.monotonic() - started >= timeout_s:
                raise LipSyncError(f"{Path(path).name}: decoding took more than {timeout_s:g} s")
            raise LipSyncError(f"{Path(path).name}: ffmpeg could not decode it (exit {rc}): {tail}")
    finally:
        stop.set()
        timer.cancel()
        if proc.poll() is None:
            kill()
        # Unblock a reader waiting on a full queue, then reap ffmpeg.
        while thread.is_alive():
            try:
                frames.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        errors.close()


def to_rgb(yuv: np.ndarray) -> np.ndarray:
    """An I420 frame from `decode_frames` as RGB (h, w, 3)."""
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)


def luma(yuv: np.ndarray) -> np.ndarray:
    """The grey (Y) plane of an I420 frame, (h, w), without a copy."""
    return yuv[: yuv.shape[0] * 2 // 3]


# --------------------------------------------------------------------------------------------
# Face tracking (face mesh on every `stride`-th frame, interpolated in between)


class MeshTracker:
    """MediaPipe face mesh in video mode (it tracks from the previous landmarks; the face detector
    only runs when the track is lost). Not re-entrant: one video at a time, under a lock.

    `refine` adds the attention model's refined lips (and irises): about 25 % more time, and a
    clearly better lip signal for the landmark scorer (cross-validated AUC against mismatched
    audio 0.90 without, 0.96 with, on the reference clips).
    """

    def __init__(self, refine: bool = False) -> None:
        import mediapipe as mp  # slow to import and logs on import: only when needed

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
        """The tracked face's LANDMARKS in an RGB frame, (k, 2) pixel coordinates, or None."""
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        marks = result.multi_face_landmarks[0].landmark
        h, w = rgb.shape[:2]
        return np.array([(marks[i].x * w, marks[i].y * h) for i in _IDX], dtype=np.float32)

    def close(self) -> None:
        self._mesh.close()


def track_frames(
    frames: Iterator[np.ndarray], tracker: MeshTracker, stride: int = MESH_STRIDE
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """(index, I420 frame, landmarks or None) for every frame of `decode_frames`, in order.

    The mesh runs on every `stride`-th frame; frames in between wait (at most stride - 1 of
    them) for the next mesh frame and get landmarks interpolated between the two. A frame next
    to a lost face takes the one landmark set available.
    """
    pending: list[tuple[int, np.ndarray]] = []
    last: tuple[int, np.ndarray | None] | None = None
    index = -1
    for index, yuv in enumerate(frames):
        if index % stride:
            pending.append((index, yuv))
            continue
        marks = tracker.landmarks(to_rgb(yuv))
        for j, held in pending:
            yield j, held, _interpolate(last, (index, marks), j)
        pending = []
        yield index, yuv, marks
        last = (index, marks)
    if pending:  # the video ended between mesh frames: run the mesh on its last frame too
        end, final = pending[-1]
        marks = tracker.landmarks(to_rgb(final))
        for j, held in pending[:-1]:
            yield j, held, _interpolate(last, (end, marks), j)
        yield end, final, marks if marks is not None else _interpolate(last, None, end)


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
    right, left = marks[_POS["mouth_right"]], marks[_POS["mouth_left"]]
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
    """Per-frame mouth measurements of one video at 25 fps (NaN where no face was tracked)."""

    video: str
    source: SourceInfo | None
    landmarks: np.ndarray  # (n, len(LANDMARKS), 2) pixels of the decoded frames; NaN: no face
    patches: np.ndarray  # (n, PATCH_H, PATCH_W) uint8 grey mouth patches (zeros: no face)
    seconds: float = 0.0  # wall time spent decoding and tracking
    soundtrack: np.ndarray | None = None  # the own audio, when decoded with the picture

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
        eyes = np.linalg.norm(m[:, _POS["left_eye_outer"]] - m[:, _POS["right_eye_outer"]], axis=1)
        eyes = np.maximum(eyes, 1e-3)
        if name in ("outer", "inner", "width"):
            a, b = {"outer": ("upper_lip_top", "lower_lip_bottom"), "inner": ("upper_lip", "lower_lip"),
                    "width": ("mouth_right", "mouth_left")}[name]  # fmt: skip
            return np.linalg.norm(m[:, _POS[a]] - m[:, _POS[b]], axis=1) / eyes
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


def track_mouth(
    video: Path, tracker: MeshTracker, *, stride: int = MESH_STRIDE,
    short_side: int = DECODE_SHORT_SIDE, timeout_s: float = DECODE_TIMEOUT_S,
    info: SourceInfo | None = None, soundtrack: bool = False,
) -> MouthTrack:  # fmt: skip
    """Decode `video` onto the 25 fps grid; landmarks and a mouth patch for every frame.

    With `soundtrack`, the same ffmpeg run also decodes the video's own audio (as
    `own_soundtrack` does) into `MouthTrack.soundtrack`.
    """
    started = time.perf_counter()
    info = info or probe_source(video)
    if soundtrack and info.audio_start_s is None:
        raise LipSyncError(f"{Path(video).name} has no audio stream: nothing to compare the mouth with")
    size = decode_size(info, short_side)
    marks_all: list[np.ndarray] = []
    patches: list[np.ndarray] = []
    blank = np.zeros((PATCH_H, PATCH_W), np.uint8)
    missing = np.full((len(LANDMARKS), 2), np.nan, np.float32)
    with tempfile.TemporaryDirectory(prefix="lipsync-") as scratch:
        audio_file = Path(scratch) / "soundtrack.f32" if soundtrack else None
        frames = decode_frames(video, size, timeout_s=timeout_s, soundtrack_to=audio_file)
        with tracker.lock:
            tracker.reset()
            for _, yuv, marks in track_frames(frames, tracker, stride):
                if marks is None:
                    marks_all.append(missing)
                    patches.append(blank)
                else:
                    marks_all.append(marks.astype(np.float32))
                    patches.append(mouth_patch(luma(yuv), marks))
        pcm = np.fromfile(audio_file, dtype="<f4") if audio_file is not None else None
    return MouthTrack(
        video=str(video), source=info,
        landmarks=np.stack(marks_all) if marks_all else np.zeros((0, len(LANDMARKS), 2), np.float32),
        patches=np.stack(patches) if patches else np.zeros((0, PATCH_H, PATCH_W), np.uint8),
        seconds=time.perf_counter() - started, soundtrack=pcm,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Audio


def own_soundtrack(video: Path, info: SourceInfo | None = None,
                   timeout_s: float = DECODE_TIMEOUT_S) -> np.ndarray:  # fmt: skip
    """The video's first audio stream, 16 kHz mono float32, sample 0 at the video's time 0.

    Decoded exactly as `LandmarkSyncScorer.score` decodes it next to the picture
    (SOUNDTRACK_ARGS), so calibration and scoring see the same samples. (`tasks.audio.load_pcm`
    decodes separate speech files; it starts at a stream's first sample, which is not the
    video's time 0 when the audio stream starts late.)
    """
    info = info or probe_source(video)
    if info.audio_start_s is None:
        raise LipSyncError(f"{Path(video).name} has no audio stream: nothing to compare the mouth with")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), *SOUNDTRACK_ARGS, "pipe:1"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise LipSyncError(f"{Path(video).name}: decoding its soundtrack took more than {timeout_s:g} s") from None
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip()[-300:]
        raise LipSyncError(f"{Path(video).name}: ffmpeg could not decode its soundtrack: {tail}")
    return np.frombuffer(out[: len(out) - len(out) % 4], dtype="<f4").copy()


def load_audio(path: Path) -> np.ndarray:
    """Any file's audio, 16 kHz mono float32 (a separate speech file starts at the video's 0)."""
    from tasks.audio import AudioError, load_pcm

    try:
        return load_pcm(Path(path), SAMPLE_RATE)
    except AudioError as exc:
        raise LipSyncError(str(exc)) from exc


def shift_audio(pcm: np.ndarray, frames: float) -> np.ndarray:
    """The same soundtrack made late by `frames` video frames (early when negative), same length."""
    s = int(round(frames * HOP))
    if s == 0:
        return pcm.copy()
    out = np.zeros_like(pcm)
    if s > 0:
        out[s:] = pcm[: max(0, pcm.size - s)]
    else:
        out[: max(0, pcm.size + s)] = pcm[-s:]
    return out


def band_energies(pcm: np.ndarray, frames: int | None = None) -> np.ndarray:
    """(frames, 7) log energies of the speech bands in an 80 ms Hann window per video frame.

    Window i is centred on the middle of frame i, (i + 0.5) / 25 s, like the frame it describes.
    """
    n = frames if frames is not None else int(math.ceil(pcm.size / HOP))
    win = 2 * HOP
    padded = np.zeros(n * HOP + 2 * win, dtype=np.float32)
    usable = min(pcm.size, n * HOP)
    padded[win : win + usable] = pcm[:usable]
    # Frame i's window starts at i*HOP + HOP/2 - HOP (original samples) = win + i*HOP - HOP/2.
    starts = win + np.arange(n) * HOP - HOP // 2
    segments = padded[starts[:, None] + np.arange(win)[None, :]]
    spectrum = np.abs(np.fft.rfft(segments * np.hanning(win).astype(np.float32), axis=1)) ** 2
    freqs = np.fft.rfftfreq(win, 1.0 / SAMPLE_RATE)
    bands = np.stack(
        [spectrum[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)
         for lo, hi in zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:], strict=True)],
        axis=1,
    )  # fmt: skip
    # A floor relative to the loudest frame: digital silence must not become -inf.
    floor = max(float(bands.max()) * 1e-8, 1e-12)
    return np.log(bands + floor)


# --------------------------------------------------------------------------------------------
# The statistics


def bandpass(x: np.ndarray, band: tuple[float, float] = SIGNAL_BAND_HZ) -> np.ndarray:
    """Zero-phase band-pass along axis 0 (no lag introduced), after removing the mean."""
    x = np.asarray(x, dtype=np.float64)
    sos = sps.butter(2, band, btype="bandpass", fs=FPS, output="sos")
    centred = x - x.mean(axis=0)
    if x.shape[0] <= 3 * (2 * len(sos) + 1):  # too short for filtfilt's edge padding
        return centred
    return sps.sosfiltfilt(sos, centred, axis=0)


def _orthonormal(x: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis of the centred columns of x (None when they are all constant)."""
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    if not s.size or s[0] <= 1e-9:
        return None
    return u[:, s > s[0] * 1e-6]


def canonical_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """The first canonical correlation between the columns of x and of y (same rows)."""
    qx, qy = _orthonormal(x), _orthonormal(y)
    if qx is None or qy is None:
        return 0.0
    return float(np.linalg.svd(qx.T @ qy, compute_uv=False)[0])


def _fill_gaps(x: np.ndarray, valid: np.ndarray, max_gap: int = MAX_GAP_FRAMES) -> np.ndarray:
    """Linear interpolation over short runs of invalid frames; long runs stay NaN."""
    out = x.astype(np.float64).copy()
    out[~valid] = np.nan
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return out
    filled = np.interp(np.arange(x.size), idx, out[idx])
    gaps = np.flatnonzero(~valid)
    if gaps.size:
        # Length of each invalid run; runs touching an end are extrapolated flat (np.interp).
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (~valid).astype(np.int8), [0]])))
        for a, b in zip(edges[0::2], edges[1::2], strict=True):
            if b - a > max_gap:
                filled[a:b] = np.nan
    return filled


@dataclass
class SyncCurve:
    offsets: np.ndarray
    curve: np.ndarray  # mean over analysis windows of the canonical correlation per offset
    windows_used: int


def offset_curve(
    mouth: np.ndarray, audio: np.ndarray, ok: np.ndarray, start: int, stop: int,
    max_offset: int = MAX_OFFSET,
) -> SyncCurve | None:  # fmt: skip
    """Mean canonical correlation per offset over the analysis windows of frames [start, stop).

    `mouth` (n, p) and `audio` (m, q) are band-passed signals on the same frame grid; audio
    frame i + d is paired with video frame i at offset d (d > 0: audio late). At offsets where
    the audio runs out, only the overlapping frames count.
    """
    length = stop - start
    if length < MIN_FRAMES:
        return None
    size = min(WINDOW_FRAMES, length)
    starts = list(range(start, stop - size + 1, WINDOW_HOP)) or [start]
    if starts[-1] + size < stop and stop - size > starts[-1]:
        starts.append(stop - size)  # cover the tail too
    offsets = np.arange(-max_offset, max_offset + 1)
    curves = []
    for a in starts:
        b = a + size
        if ok[a:b].mean() < MIN_TRACKED_IN_WINDOW:
            continue
        row = np.zeros(offsets.size)
        for k, d in enumerate(offsets):
            lo, hi = max(a, -d, 0), min(b, audio.shape[0] - d)
            keep = ok[lo:hi] if hi > lo else np.zeros(0, bool)
            if hi - lo < MIN_FRAMES or keep.sum() < MIN_FRAMES:
                row[k] = np.nan
                continue
            row[k] = canonical_correlation(mouth[lo:hi][keep], audio[lo + d : hi + d][keep])
        curves.append(row)
    if not curves:
        return None
    stacked = np.array(curves)
    with np.errstate(invalid="ignore"):
        curve = np.nanmean(stacked, axis=0) if np.isfinite(stacked).any() else None
    if curve is None or not np.isfinite(curve).any():
        return None
    return SyncCurve(offsets=offsets, curve=curve, windows_used=len(curves))


def window_correlations(
    mouth: np.ndarray, audio: np.ndarray, ok: np.ndarray, start: int, stop: int, offset: int,
    window: int = int(REPORT_WINDOW_S * FPS),
) -> tuple[list[float], list[float | None]]:  # fmt: skip
    """Per `window`-frame piece: correlation of the canonical mouth and audio variates at `offset`.

    The canonical weights come from all the frames (at that offset), so each piece reports how
    well that one mouth-audio relation holds there: low values mark where sync breaks down.
    """
    lo, hi = max(start, -offset, 0), min(stop, audio.shape[0] - offset)
    frames = np.arange(lo, hi)
    frames = frames[ok[lo:hi]] if hi > lo else frames
    starts: list[float] = []
    values: list[float | None] = []
    if frames.size < MIN_FRAMES:
        return starts, values
    x, y = mouth[frames], audio[frames + offset]
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    # CCA weights by whitening: the top singular vectors of Qx' Qy map back to the columns.
    qx, qy = _orthonormal(x), _orthonormal(y)
    if qx is None or qy is None:
        return starts, values
    a, _, bt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    u_var, v_var = qx @ a[:, 0], qy @ bt[0, :]  # the first pair of canonical variates
    for w0 in range(start, stop, window):
        sel = (frames >= w0) & (frames < w0 + window)
        starts.append(w0 / FPS)
        if sel.sum() < window // 2:
            values.append(None)
            continue
        uu, vv = u_var[sel] - u_var[sel].mean(), v_var[sel] - v_var[sel].mean()
        denom = float(np.linalg.norm(uu) * np.linalg.norm(vv))
        values.append(float(uu @ vv / denom) if denom > 0 else 0.0)
    return starts, values


# --------------------------------------------------------------------------------------------
# The default scorer


class LandmarkSyncScorer:
    """Weight-free lip-sync scorer: mouth landmarks and mouth-patch darkness against speech bands.

    Construct once per worker and reuse (the face mesh graph is built once). `calibration`:
    None loads the stored default for this scorer (`qc/calibrations/landmark-v1.json`) on first
    use; pass a `qc.calibration.Calibration` to use another, or `False` for raw metrics only.
    """

    name = "landmark-v1"
    # near_confidence: the best correlation within NEAR_OFFSET frames of 0 minus the median over
    # all offsets; near_margin: that best minus the best further out. Smooth versions of
    # "confidence" and "|offset| small", which the logistic map handles better than the jumpy
    # integer offset (cross-validated AUCs in the stored calibration).
    calibration_features: tuple[str, ...] = ("near_confidence", "near_margin")

    def __init__(
        self,
        *,
        calibration: Any = None,
        calibration_path: Path | None = None,
        mesh_stride: int = MESH_STRIDE,
        mesh_refine: bool = True,
        signals: tuple[str, ...] = SIGNALS,
        short_side: int = DECODE_SHORT_SIDE,
        max_offset: int = MAX_OFFSET,
    ) -> None:
        self.mesh_stride = mesh_stride
        self.mesh_refine = mesh_refine
        self.signals = signals
        self.short_side = short_side
        self.max_offset = max_offset
        self._calibration = calibration
        self._calibration_path = calibration_path
        self._calibration_error: str | None = None
        self._tracker: MeshTracker | None = None
        self._lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        """What shapes the raw metrics: stored with a calibration as its provenance."""
        return {"mesh_stride": self.mesh_stride, "mesh_refine": self.mesh_refine,
                "signals": list(self.signals), "decode_short_side": self.short_side,
                "max_offset": self.max_offset, "window_frames": WINDOW_FRAMES,
                "window_hop": WINDOW_HOP, "signal_band_hz": list(SIGNAL_BAND_HZ),
                "audio_bands_hz": list(BAND_EDGES_HZ), "near_offset": NEAR_OFFSET}  # fmt: skip

    # -- the pieces, also used by calibration

    def _mesh(self) -> MeshTracker:
        with self._lock:
            if self._tracker is None:
                self._tracker = MeshTracker(refine=self.mesh_refine)
            return self._tracker

    def prepare(self, video: Path, *, soundtrack: bool = False) -> MouthTrack:
        return track_mouth(Path(video), self._mesh(), stride=self.mesh_stride,
                           short_side=self.short_side, soundtrack=soundtrack)  # fmt: skip

    def own_audio(self, video: Path) -> np.ndarray:
        return own_soundtrack(Path(video))

    def measure(
        self, prepared: MouthTrack, pcm: np.ndarray, start: int = 0, stop: int | None = None,
        *, video: str = "", audio: str | None = None,
    ) -> LipSyncResult:  # fmt: skip
        track = prepared
        t0 = time.perf_counter()
        n_audio = int(math.ceil(pcm.size / HOP))
        stop = track.frames if stop is None else min(stop, track.frames)
        ok_face = track.tracked
        raw = np.column_stack([track.signal(name) for name in self.signals])
        mouth = np.column_stack([_fill_gaps(col, np.isfinite(col)) for col in raw.T])
        ok = np.isfinite(mouth).all(axis=1)
        face_fraction = float(ok_face[start:stop].mean()) if stop > start else 0.0
        result = LipSyncResult(
            scorer=self.name, video=video or track.video, audio=audio, frames=max(0, stop - start),
            duration_s=max(0, stop - start) / FPS, face_fraction=face_fraction,
            confidence=None, correlation=None, distance=None, offset_frames=None,
        )  # fmt: skip
        if stop - start < MIN_FRAMES:
            result.score_reason = f"too short to score: {(stop - start) / FPS:.1f} s (need {MIN_FRAMES / FPS:.0f} s)"
            return result
        if ok[start:stop].sum() < MIN_FRAMES:
            result.score_reason = (f"a face was tracked in only {face_fraction:.0%} of the frames: "
                                   "no mouth to compare with the speech")  # fmt: skip
            return result
        if not np.any(pcm) or float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) < 1e-5:
            result.score_reason = "the soundtrack is silent: nothing to compare the mouth with"
            return result
        # Band-pass over the tracked stretches (NaN runs are bridged by the mean for the filter
        # and left out of every statistic through `ok`).
        mouth[~ok] = np.nanmean(mouth[ok], axis=0)
        mouth = bandpass(mouth)
        bands = bandpass(band_energies(pcm, max(n_audio, 1)))
        curve = offset_curve(mouth, bands, ok, start, stop, self.max_offset)
        if curve is None:
            result.score_reason = ("no 5 s stretch with a face in 80 % of its frames and "
                                   "overlapping audio: cannot measure")  # fmt: skip
            return result
        best = int(np.nanargmax(curve.curve))
        peak = float(curve.curve[best])
        offset = int(curve.offsets[best])
        result.offsets = [int(d) for d in curve.offsets]
        result.curve = [float(v) if np.isfinite(v) else 0.0 for v in curve.curve]
        result.correlation = peak
        result.confidence = peak - float(np.nanmedian(curve.curve))
        result.offset_frames = offset
        result.window_starts_s, result.window_values = window_correlations(
            mouth, bands, ok, start, stop, offset
        )
        if face_fraction < 0.9:
            result.notes.append(f"face tracked in {face_fraction:.0%} of frames only")
        result.timings_s["measure"] = time.perf_counter() - t0
        return result

    # -- calibration

    def _load_calibration(self) -> Any:
        if self._calibration is False:
            return None
        if self._calibration is None and self._calibration_error is None:
            from qc.calibration import CalibrationError, load_calibration

            try:
                self._calibration = load_calibration(self.name, self._calibration_path)
            except CalibrationError as exc:
                self._calibration_error = str(exc)
        return self._calibration

    def apply_calibration(self, result: LipSyncResult) -> LipSyncResult:
        """Fill in `score` (and its reason) from the calibration."""
        if not result.measured:
            return result  # score stays None; score_reason says why
        if self._calibration is False:
            result.score_reason = "calibration disabled"
            return result
        from qc.calibration import apply

        calibration = self._load_calibration()
        if calibration is None:
            result.score_reason = self._calibration_error or "calibration disabled"
            return result
        result.score = apply(calibration, result.features())
        result.calibration = calibration.label
        return result

    # -- the public entry point

    def score(self, video: Path, audio: Path | None = None) -> LipSyncResult:
        video = Path(video)
        t0 = time.perf_counter()
        if audio is None:
            track = self.prepare(video, soundtrack=True)
            pcm = track.soundtrack
            assert pcm is not None
        else:
            # A separate speech file decodes in a thread (ffmpeg does the work) meanwhile.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipsync-audio") as pool:
                sound = pool.submit(load_audio, Path(audio))
                track = self.prepare(video)
                pcm = sound.result()
        t1 = time.perf_counter()
        result = self.measure(track, pcm, video=str(video), audio=None if audio is None else str(audio))
        result.timings_s.update({"decode_track": t1 - t0, "total": time.perf_counter() - t0})
        return self.apply_calibration(result)

    def close(self) -> None:
        with self._lock:
            if self._tracker is not None:
                self._tracker.close()
                self._tracker = None


def default_scorer(calibration_path: Path | None = None) -> LipSyncScorer:
    """SyncNet when `AVATARFLOW_SYNCNET_WEIGHTS` is set, else the weight-free landmark scorer.

    A set but wrong setting (missing file, no torch) raises SyncNetUnavailable rather than
    quietly scoring with another scorer than the operator configured.
    """
    from qc.syncnet import SYNCNET_SETTING, SyncNetScorer

    weights = os.environ.get(SYNCNET_SETTING)
    if weights:
        return SyncNetScorer(Path(weights), calibration_path=calibration_path)
    return LandmarkSyncScorer(calibration_path=calibration_path)

