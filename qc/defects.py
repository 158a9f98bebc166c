"""Deliberately broken videos made from real clips: the corpus QC must catch, each for its reason.

`make_defect(clean, kind, out)` re-encodes a real talking clip with one defect of the kinds
generated talking heads show, over a known stretch, and says which check must catch it:

    mouth_flat     the mouth replaced by a flat dark fill for 2 s      -> mouth_region
    mouth_blur     the mouth region blurred for 2 s                    -> mouth_region
    mouth_frozen   the mouth region frozen (one frame's mouth) for 2 s -> mouth_motion
    second_face    another person's face blended in at 50 % for 3 s    -> identity or colour
    colour_drift   the colour drifting (redder, less blue) to the end  -> colour
    frozen_stretch the whole picture frozen for 1.5 s                  -> frozen_frames
    flicker        the brightness alternating frame to frame for 2 s   -> flicker
    audio_late     the soundtrack 200 ms late                          -> lip-sync
    audio_early    the soundtrack 200 ms early                         -> lip-sync

The picture is decoded once at the clip's shape scaled to 512 on the short side, 25 fps (what
QC sees from the generator), the face tracked with MediaPipe's face mesh on every frame, each
frame changed and streamed into libx264 with the clip's own soundtrack (16 kHz mono, shifted for
the audio kinds). Memory stays at a few frames whatever the clip's length. Used by the tests
and `benchmarks/qc_trust.py`; an operator can make the same corpus from their own footage to
check QC before trusting it (`make_defect` needs only ffmpeg and MediaPipe).
"""

from __future__ import annotations

import math
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avatarflow import media
from qc.decode import FPS, SAMPLE_RATE, load_audio
from qc.facetrack import POS, MeshTracker
from qc.speech import shift_audio


@dataclass(frozen=True)
class DefectKind:
    name: str
    catches: str  # the check whose failure is the right reason ("lipsync": the sync score)
    description: str
    # Further checks that are a right reason too: a blended face changes the face's colours as
    # well as its features, and the cheap identity proxy sees a 50 % blend less often.
    also: tuple[str, ...] = ()

    @property
    def checks(self) -> tuple[str, ...]:
        return (self.catches, *self.also)


KINDS: dict[str, DefectKind] = {k.name: k for k in (
    DefectKind("mouth_flat", "mouth_region", "the mouth replaced by a flat dark fill for 2 s"),
    DefectKind("mouth_blur", "mouth_region", "the mouth region blurred for 2 s"),
    DefectKind("mouth_frozen", "mouth_motion", "the mouth region frozen for 2 s while the speech goes on"),
    DefectKind("second_face", "identity", "another person's face blended in at 50 % for 3 s", ("colour",)),
    DefectKind("colour_drift", "colour", "the colour drifting redder and less blue towards the end"),
    DefectKind("frozen_stretch", "frozen_frames", "the whole picture frozen for 1.5 s"),
    DefectKind("flicker", "flicker", "the brightness alternating from frame to frame for 2 s"),
    DefectKind("audio_late", "lipsync", "the soundtrack 200 ms late"),
    DefectKind("audio_early", "lipsync", "the soundtrack 200 ms early"),
)}  # fmt: skip

_LENGTH_S = {"second_face": 3.0, "frozen_stretch": 1.5}
SHORT_SIDE = 512


@dataclass(frozen=True)
class DefectVideo:
    path: Path
    kind: DefectKind
    span_s: tuple[float, float]  # where the defect is (the whole clip for audio and colour kinds)
    reference: Path  # the clean clip's first frame: the portrait QC compares identity with
    seconds: float


def _size(info: media.MediaInfo) -> tuple[int, int]:
    assert info.video is not None and info.video.display_size is not None
    w, h = info.video.display_size
    k = SHORT_SIDE / min(w, h)
    return int(round(w * k / 2) * 2), int(round(h * k / 2) * 2)


def _frames(path: Path, size: tuple[int, int], seconds: float | None = None) -> Iterator[np.ndarray]:
    """RGB frames of `path` on the 25 fps grid at `size`, one at a time."""
    w, h = size
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", media.ff_input(path), "-map", "0:v:0",
           "-vf", f"fps={FPS},scale={w}:{h}:flags=area,setsar=1", "-pix_fmt", "rgb24", "-f", "rawvideo"]
    if seconds is not None:
        cmd += ["-t", f"{seconds:.3f}"]
    proc = subprocess.Popen([*cmd, "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        while chunk := proc.stdout.read(w * h * 3):
            if len(chunk) < w * h * 3:
                break
            yield np.frombuffer(chunk, np.uint8).reshape(h, w, 3).copy()
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


def _mouth_ellipse(marks: np.ndarray, grow: float = 1.0) -> tuple[tuple[int, int], tuple[int, int], float]:
    right, left = marks[POS["mouth_right"]], marks[POS["mouth_left"]]
    top, bottom = marks[POS["upper_lip_top"]], marks[POS["lower_lip_bottom"]]
    centre = (right + left + top + bottom) / 4
    width = float(np.linalg.norm(left - right))
    height = float(np.linalg.norm(bottom - top))
    angle = math.degrees(math.atan2(float(left[1] - right[1]), float(left[0] - right[0])))
    axes = (int(0.62 * width * grow), int(max(0.6 * height, 0.22 * width) * grow))
    return (int(centre[0]), int(centre[1])), axes, angle


def _mask(shape: tuple[int, ...], marks: np.ndarray, grow: float = 1.0) -> np.ndarray:
    """A soft-edged float mask of the mouth region."""
    mask = np.zeros(shape[:2], np.float32)
    centre, axes, angle = _mouth_ellipse(marks, grow)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 1.0, -1)
    edge = max(1, axes[1] // 4) * 2 + 1
    return cv2.GaussianBlur(mask, (edge, edge), 0)[..., None]


def _face_points(marks: np.ndarray) -> np.ndarray:
    mouth = (marks[POS["upper_lip"]] + marks[POS["lower_lip"]]) / 2
    return np.array([marks[POS["right_eye"]], marks[POS["left_eye"]], mouth], np.float32)


class _Defect:
    """Changes the frames of one clip; `apply` gets each frame with its landmarks (None: no face)."""

    def __init__(self, kind: str, span: tuple[int, int], frames: int, other: tuple[np.ndarray, np.ndarray] | None):
        self.kind, self.span, self.frames, self.other = kind, span, frames, other
        self.held: tuple[np.ndarray, np.ndarray] | None = None  # frozen kinds: the first frame's

    def apply(self, i: int, rgb: np.ndarray, marks: np.ndarray | None) -> np.ndarray:
        a, b = self.span
        k = self.kind
        if k == "colour_drift":
            gain = 0.3 * i / max(self.frames - 1, 1)
            out = rgb.astype(np.float32) * np.array([1 + gain, 1.0, 1 - gain], np.float32)
            return np.clip(out, 0, 255).astype(np.uint8)
        if not a <= i < b:
            return rgb
        if k == "frozen_stretch":
            if self.held is None:
                self.held = (rgb.copy(), rgb)
            return self.held[0].copy()
        if k == "flicker":
            return np.clip(rgb.astype(np.int16) + (18 if i % 2 else -18), 0, 255).astype(np.uint8)
        if marks is None:
            return rgb
        if k == "mouth_flat":
            fill = np.full_like(rgb, (34, 14, 16))
            m = _mask(rgb.shape, marks, 1.1)
            return (rgb * (1 - m) + fill * m).astype(np.uint8)
        if k == "mouth_blur":
            blurred = cv2.GaussianBlur(rgb, (0, 0), 5.0)
            m = _mask(rgb.shape, marks, 1.3)
            return (rgb * (1 - m) + blurred * m).astype(np.uint8)
        if k == "mouth_frozen":
            if self.held is None:
                self.held = (rgb.copy(), marks.copy())
            held, held_marks = self.held
            # The held frame's mouth moved onto where the mouth is now (a similarity on its points).
            src = np.array([held_marks[POS[n]] for n in ("mouth_right", "mouth_left", "upper_lip_top")], np.float32)
            dst = np.array([marks[POS[n]] for n in ("mouth_right", "mouth_left", "upper_lip_top")], np.float32)
            matrix, _ = cv2.estimateAffinePartial2D(src, dst)
            if matrix is None:
                return rgb
            moved = cv2.warpAffine(held, matrix, (rgb.shape[1], rgb.shape[0]), borderMode=cv2.BORDER_REPLICATE)
            m = _mask(rgb.shape, marks, 1.35)
            return (rgb * (1 - m) + moved * m).astype(np.uint8)
        if k == "second_face" and self.other is not None:
            other, other_points = self.other
            matrix, _ = cv2.estimateAffinePartial2D(other_points, _face_points(marks))
            if matrix is None:
                return rgb
            moved = cv2.warpAffine(other, matrix, (rgb.shape[1], rgb.shape[0]), borderMode=cv2.BORDER_REPLICATE)
            mask = np.zeros(rgb.shape[:2], np.float32)
            hull = cv2.convexHull(np.array([marks[POS[n]] for n in ("forehead", "chin", "face_left", "face_right",
                                            "right_eye_outer", "left_eye_outer")], np.float32).astype(np.int32))
            cv2.fillConvexPoly(mask, hull, 0.5)
            mask = cv2.GaussianBlur(mask, (0, 0), 6)[..., None]
            return (rgb * (1 - mask) + moved * mask).astype(np.uint8)
        return rgb


def _first_face(path: Path, tracker: MeshTracker) -> tuple[np.ndarray, np.ndarray]:
    """The first frame with a face of `path` (at 512 short side) and its eye and mouth points."""
    info = media.probe(path)
    with tracker.lock:
        tracker.reset()
        for rgb in _frames(path, _size(info), seconds=3.0):
            marks = tracker.landmarks(rgb)
            if marks is not None:
                return rgb, _face_points(marks)
    raise ValueError(f"no face in the first 3 s of {path.name}")


def make_defect(
    clean: Path, kind: str, out: Path, *, tracker: MeshTracker, other: Path | None = None,
    start_s: float | None = None,
) -> DefectVideo:  # fmt: skip
    """`clean` re-encoded into `out` (H.264 + AAC, 25 fps, 512 short side) with one `kind` of defect.

    The stretch starts at `start_s` (default a third into the clip, so it has clean video on
    both sides); `other` is the clip whose face `second_face` blends in. The clean clip's first
    frame is written beside `out` as the reference portrait.
    """
    spec = KINDS[kind]
    info = media.probe(clean)
    seconds = float(info.duration_s or 0.0)
    frames_total = int(seconds * FPS)
    length = _LENGTH_S.get(kind, 2.0)
    start = start_s if start_s is not None else max(0.0, min(seconds / 3, seconds - length - 0.5))
    if kind in ("colour_drift", "audio_late", "audio_early"):
        span = (0, frames_total)
    else:
        span = (int(round(start * FPS)), int(round((start + length) * FPS)))
    other_face = _first_face(other, tracker) if kind == "second_face" and other is not None else None
    if kind == "second_face" and other_face is None:
        raise ValueError("second_face needs `other`: the clip whose face is blended in")
    size = _size(info)
    out = Path(out)
    reference = out.with_suffix(".reference.png")
    pcm = load_audio(clean)
    if kind in ("audio_late", "audio_early"):
        pcm = shift_audio(pcm, (1 if kind == "audio_late" else -1) * 0.2 * FPS)
    defect = _Defect(kind, span, frames_total, other_face)
    with tempfile.TemporaryDirectory(prefix="defect-") as tmp:
        wav = Path(tmp) / "audio.wav"
        _write_wav(wav, pcm)
        partial = out.with_name(f".{out.name}.partial.mp4")
        encoder = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}",
             "-r", str(FPS), "-i", "-", "-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
             "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
             "-shortest", str(partial)],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert encoder.stdin is not None
        with tracker.lock:
            tracker.reset()
            for i, rgb in enumerate(_frames(clean, size)):
                if i == 0:
                    cv2.imwrite(str(reference), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                needs_face = kind not in ("colour_drift", "frozen_stretch", "flicker", "audio_late", "audio_early")
                marks = tracker.landmarks(rgb) if needs_face and span[0] - 2 <= i < span[1] else None
                encoder.stdin.write(np.ascontiguousarray(defect.apply(i, rgb, marks)).tobytes())
        encoder.stdin.close()
        err = encoder.stderr.read().decode(errors="replace") if encoder.stderr else ""
        if encoder.wait(timeout=600) != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"encoding the {kind} copy of {clean.name} failed: {err[-400:]}")
        partial.replace(out)
    return DefectVideo(out, spec, (span[0] / FPS, span[1] / FPS), reference, seconds)
