"""The CPU engine: animate a portrait crop's mouth from the speech by warping the image.

For machines with no GPU and no Live Avatar weights, so the whole pipeline runs and demos
anywhere. It is not a generative model: it finds the face's landmarks once (MediaPipe, through
`tasks.face`), reads a mouth opening per video frame from the speech's articulation (how open a
vocal tract its spectrum implies: open-vowel energy up, nasal and closed-vowel energy down, the
mouth a little ahead of its sound, as real mouths are), and renders every frame by remapping the
portrait: the lower lip and jaw drop, a mouth interior (dark cavity, tongue, upper teeth where
the portrait shows none) fills the gap, the head sways a little and the eyes blink every few
seconds. Frames stream into ffmpeg, which encodes H.264 (yuv420p) at 25 fps and muxes the speech
as AAC. The result is verified (`inference.verify.verify_output`, plus the frame count and the
audio stream's own length) before it is moved to `request.output`.

Deterministic for a given seed: the sway and blink schedule come from it, the mouth from the
audio.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import scipy.fft

from avatarflow.storage import atomic_path
from inference.engine import (
    Failure,
    FailureKind,
    GenerationMetrics,
    GenerationRequest,
    GenerationResult,
    GpuGang,
    Progress,
    ProgressCallback,
)
from inference.liveavatar_facts import FPS, FRAMES_PER_CLIP, SAMPLE_RATE
from inference.output_rules import planned_clips, video_frames
from inference.presets import get_preset
from inference.verify import VideoInfo, verify_output
from tasks.audio import AudioError, load_pcm
from tasks.face_detectors import default_detector
from tasks.face_types import FaceError
from tasks.images import load_portrait

NAME = "cpu-mouthwarp"
# Progress is counted in clips of Live Avatar's size, so the two engines compare.
CLIP_FRAMES = FRAMES_PER_CLIP
DEFAULT_TIMEOUT_S = 1800.0

# Audio → articulation. A real mouth's opening is not the loudness of its sound: the jaw is low
# for open vowels (/a/: the first formant, F1, high, at 600-1000 Hz) and high for closed vowels and
# nasals (/i/, /u/, /m/, /n/: F1 and the nasal murmur at 300-600 Hz); the upper formants (F2, F3:
# 1.6-4 kHz) radiate strongly only through parted lips; fricatives (/s/, /f/: above 4 kHz, little
# in the formant bands) bring the teeth together, and plosives (/p/, /b/) shut the lips in the
# near-silence before their burst. The articulation index is log band powers combined so:
#     open band + FORMANT_WEIGHT * (each formant band) - LOW_WEIGHT * low band,
# which is, in one number, "voiced and loud, with the energy high in F1 and in the formants".
# And the mouth moves first: it shapes a sound some 40 ms before the sound is heard (anticipatory
# coarticulation), so frame i's opening is read from the speech just after the frame.
ANALYSIS_WINDOW_S = 0.080  # Hann windows: about a syllable nucleus's steady part
ANALYSIS_HOP_S = 0.010
SPECTRUM_CHUNK = 2048  # hops per FFT batch
LOW_BAND_HZ = (300.0, 600.0)
OPEN_BAND_HZ = (600.0, 1000.0)
FORMANT_BANDS_HZ = ((1600.0, 2500.0), (2500.0, 4000.0))
FORMANT_WEIGHT = 0.5
LOW_WEIGHT = 0.8
BAND_FLOOR = 1e-6  # of the clip's strongest band power: silence is a floor, not log(0)
LEAD_S = 0.040
SMOOTH_S = 0.070  # the jaw's inertia: a Hann kernel about this wide
# Per-clip normalisation of the index (natural log units: 1 is 4.3 dB): its top (95th percentile)
# opens the mouth fully, its 15th percentile is shut (pauses, bilabial closures), that floor kept
# between MIN_RANGE and MAX_RANGE under the top, so digital silence does not stretch the scale and
# a clip without pauses still closes between syllables.
TOP_PERCENTILE = 95.0
FLOOR_PERCENTILE = 15.0
MIN_RANGE = 2.5
MAX_RANGE = 12.0
# Speech-band power below this (dBFS) is silence whatever the clip: an all-quiet clip must not be
# normalised up into "speech". Prepared audio sits at -23 LUFS, so speech is 30+ dB above it.
SPEECH_BAND_HZ = (250.0, 3500.0)
SILENCE_DB = -70.0

# Geometry, relative to the distance between the eye centres ("iod").
JAW_DROP_IOD = 0.20  # full opening at the mouth centre: about 18 px on a 512 crop
UPPER_LIP_SHARE = 0.2  # share of the opening taken by the upper lip moving up
SWAY_ROTATION_DEG = 0.9
SWAY_SHIFT_IOD = (0.025, 0.012)  # x, y amplitude of the head's drift
NOD_IOD = 0.02  # the head dips a little while speaking
BLINK_INTERVAL_S = (3.0, 5.0)
BLINK_PROFILE = (0.45, 0.9, 1.0, 0.75, 0.4, 0.12)  # eyelid closure per frame: fast down, slower up
EYE_HEIGHT = 0.36  # eye opening over corner-to-corner width (no lid landmarks: a typical value)

# Mouth interior colours come from the portrait's own lips and skin, so a painting or a warm
# photo does not get a cold, saturated hole: the cavity is the lip colour darkened, lighter near
# the lips (their wet inner side catches the light); the tongue, seen low in a wide-open mouth,
# is the lip colour at under half its brightness; teeth are an ivory tinted by the skin, in the mouth's shade.
CAVITY_SHADE = 0.2
CAVITY_EDGE_SHADE = 0.5
CAVITY_MAX_LUMA = 40.0
TONGUE_SHADE = 0.42
TONGUE_TOP = 0.4  # of the gap's height, from the lower lip
TONGUE_OPEN_IOD = (0.06, 0.14)  # gap height (over iod) over which the tongue comes into view
TEETH_RGB = np.array([225.0, 218.0, 202.0], np.float32)
TEETH_LUMA = (90.0, 195.0)
TEETH_SKIN_LUMA = 0.85  # teeth inside the mouth are a little darker than the lit skin
TEETH_IOD = 0.05  # the upper incisors show at most this far below the upper lip ...
TEETH_GAP_SHARE = 0.3  # ... and over at most this share of the gap
TEETH_SPAN = 0.7  # of the mouth's half width: past the canines the teeth are in shadow
# Where one tooth meets the next, in units of the mouth's half width from the middle (central
# incisors about a third, laterals a quarter of it): a faint darker line.
TOOTH_EDGES = (0.0, 0.34, 0.6)
CLOSED_MOUTH_RATIO = 0.05  # inner-lip gap / mouth width below which the portrait shows no teeth


# --------------------------------------------------------------------------------------------
# Audio → mouth opening


def _band_powers(
    samples: np.ndarray, sample_rate: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hop centre times in s, (hops, bands) power per band, speech-band power) on a 10 ms grid.

    Bands: LOW_BAND_HZ, OPEN_BAND_HZ, then FORMANT_BANDS_HZ, from Hann-windowed spectra (the
    mean square of the windowed signal in each band).
    """
    window = max(16, round(ANALYSIS_WINDOW_S * sample_rate))
    hop = max(1, round(ANALYSIS_HOP_S * sample_rate))
    n_hops = max(1, math.ceil(samples.size / hop))
    # Hop k's window is centred on sample k * hop + hop / 2 (zero beyond the ends).
    padded = np.zeros(n_hops * hop + window, np.float32)
    start = window // 2 - hop // 2
    padded[start:start + samples.size] = samples
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_hops, window), strides=(hop * padded.strides[0], padded.strides[0]),
        writeable=False)
    taper = np.hanning(window)
    scale = 2.0 / (window * float(np.sum(taper * taper)))  # Parseval, one-sided spectrum
    taper = taper.astype(np.float32)
    freqs = np.fft.rfftfreq(window, 1.0 / sample_rate)
    edges = [LOW_BAND_HZ, OPEN_BAND_HZ, *FORMANT_BANDS_HZ, SPEECH_BAND_HZ]
    masks = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in edges], axis=1).astype(np.float32)
    out = np.empty((n_hops, len(edges)), np.float64)
    for k in range(0, n_hops, SPECTRUM_CHUNK):  # bounded memory for an hour of speech
        spectrum = scipy.fft.rfft(frames[k:k + SPECTRUM_CHUNK] * taper, axis=1)
        out[k:k + SPECTRUM_CHUNK] = (spectrum.real ** 2 + spectrum.imag ** 2) @ masks
    out *= scale
    times = (np.arange(n_hops) * hop + hop / 2) / sample_rate
    return times, out[:, :-1], out[:, -1]


def articulation(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hop times, articulation index, speech-band level in dBFS) on a 10 ms grid.

    The index (natural log units): open band + FORMANT_WEIGHT x formant bands - LOW_WEIGHT x
    low band, each the log of its power, smoothed by the jaw's inertia. Higher: a wider mouth.
    """
    times, bands, speech = _band_powers(samples, sample_rate)
    logs = np.log(bands + max(float(bands.max()) * BAND_FLOOR, 1e-20))
    index = logs[:, 1] - LOW_WEIGHT * logs[:, 0] + FORMANT_WEIGHT * logs[:, 2:].sum(axis=1)
    taps = max(3, round(SMOOTH_S / ANALYSIS_HOP_S) | 1)
    kernel = np.hanning(taps + 2)[1:-1]
    kernel /= kernel.sum()
    index = np.convolve(np.pad(index, taps // 2, mode="edge"), kernel, mode="valid")
    level = 10.0 * np.log10(speech + 1e-12)
    return times, index, level


def mouth_openings(
    samples: np.ndarray, sample_rate: int, n_frames: int, fps: int = FPS
) -> np.ndarray:
    """Mouth opening in [0, 1] for each video frame, from the articulation of the speech.

    Frame i covers [i/fps, (i+1)/fps); its opening is the articulation index LEAD_S after the
    frame's middle (the mouth leads the sound). The index is normalised per clip (percentiles),
    so a quiet and a loud recording of the same speech animate the same way; where the speech
    band is below SILENCE_DB the mouth is shut.
    """
    x = np.asarray(samples, dtype=np.float32)
    if n_frames <= 0:
        return np.zeros(0, np.float32)
    if x.size < 64:
        return np.zeros(n_frames, np.float32)
    times, index, level = articulation(x, sample_rate)
    sound = level > SILENCE_DB
    if not sound.any():
        return np.zeros(n_frames, np.float32)
    top = float(np.percentile(index[sound], TOP_PERCENTILE))
    floor = float(np.percentile(index[sound], FLOOR_PERCENTILE))
    floor = min(max(floor, top - MAX_RANGE), top - MIN_RANGE)
    opening = np.clip((index - floor) / (top - floor), 0.0, 1.0)
    # Below the silence level the mouth closes, over a few hops rather than at once.
    opening *= np.clip((level - SILENCE_DB) / 6.0, 0.0, 1.0)
    at = (np.arange(n_frames) + 0.5) / fps + LEAD_S
    per_frame = np.interp(at, times, opening, left=0.0, right=0.0)
    return np.clip(per_frame, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Face geometry


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (float(np.linalg.norm(v)) + 1e-9)


@dataclass(frozen=True)
class FaceGeometry:
    """The landmarks the warp needs, in crop pixels; `source` says how they were obtained."""

    right_eye: np.ndarray  # eye centres (the iris when the mesh found one)
    left_eye: np.ndarray
    right_eye_corners: tuple[np.ndarray, np.ndarray]  # outer, inner
    left_eye_corners: tuple[np.ndarray, np.ndarray]
    nose_tip: np.ndarray
    mouth_right: np.ndarray
    mouth_left: np.ndarray
    upper_lip: np.ndarray  # inner edges, centre
    lower_lip: np.ndarray
    chin: np.ndarray
    forehead: np.ndarray
    face_half_width: float
    source: str  # the landmark backend, "+estimated" when points had to be guessed

    @property
    def iod(self) -> float:
        return float(np.linalg.norm(self.left_eye - self.right_eye))

    @property
    def across(self) -> np.ndarray:
        """Unit vector along the eye line, from the image's left to its right on a frontal face."""
        return _unit(self.left_eye - self.right_eye)

    @property
    def down(self) -> np.ndarray:
        """Unit vector from the eyes towards the chin, perpendicular to `across`."""
        a = self.across
        return np.array([-a[1], a[0]])

    @property
    def mouth_open_ratio(self) -> float:
        """Inner-lip gap over mouth width in the still portrait (teeth or an open mouth show)."""
        width = float(np.linalg.norm(self.mouth_left - self.mouth_right))
        return float(np.linalg.norm(self.lower_lip - self.upper_lip)) / max(width, 1e-6)


def face_geometry(
    landmarks: dict[str, tuple[float, float]], landmark_source: str
) -> FaceGeometry:
    """Geometry from `tasks.face` landmarks, estimating what the backend did not give.

    The MediaPipe mesh gives every point used here; a 68-point backend lacks eye corners and
    forehead; a bare detector gives only eyes, nose and a mouth centre. Missing points are placed
    with average proportions of a frontal face, and `source` says so ("fan+estimated").
    """
    p = {k: np.asarray(v, dtype=np.float64) for k, v in landmarks.items()}
    right, left = p["right_eye"], p["left_eye"]
    iod = float(np.linalg.norm(left - right))
    across = _unit(left - right)
    down = np.array([-across[1], across[0]])
    eyes_mid = (right + left) / 2
    half_eye = 0.24 * iod * across
    if "mouth_center" in p:
        mouth = p["mouth_center"]
    elif "upper_lip" in p and "lower_lip" in p:
        mouth = (p["upper_lip"] + p["lower_lip"]) / 2
    else:
        mouth = eyes_mid + 1.1 * iod * down
    estimates = {
        "right_eye_outer": right - half_eye, "right_eye_inner": right + half_eye,
        "left_eye_inner": left - half_eye, "left_eye_outer": left + half_eye,
        "nose_tip": eyes_mid + 0.65 * iod * down,
        "mouth_right": mouth - 0.42 * iod * across, "mouth_left": mouth + 0.42 * iod * across,
        "upper_lip": mouth, "lower_lip": mouth,
        "chin": mouth + 0.75 * iod * down, "forehead": eyes_mid - 0.9 * iod * down,
    }
    missing = [k for k in estimates if k not in p]
    pt = {k: p.get(k, v) for k, v in estimates.items()}
    if "face_left" in p and "face_right" in p:
        face_half_width = float(np.linalg.norm(p["face_left"] - p["face_right"])) / 2
    else:
        face_half_width = 1.05 * iod
    return FaceGeometry(
        right_eye=right, left_eye=left,
        right_eye_corners=(pt["right_eye_outer"], pt["right_eye_inner"]),
        left_eye_corners=(pt["left_eye_outer"], pt["left_eye_inner"]),
        nose_tip=pt["nose_tip"], mouth_right=pt["mouth_right"], mouth_left=pt["mouth_left"],
        upper_lip=pt["upper_lip"], lower_lip=pt["lower_lip"], chin=pt["chin"],
        forehead=pt["forehead"], face_half_width=face_half_width,
        source=landmark_source + ("+estimated" if missing else ""),
    )


# --------------------------------------------------------------------------------------------
# Motion plan


@dataclass(frozen=True)
class MotionPlan:
    """Per-frame head pose and eyelid closure, drawn from the seed."""

    rotation_deg: np.ndarray
    shift: np.ndarray  # (n, 2) pixels
    blink: np.ndarray  # eyelid closure in [0, 1]


def motion_plan(seed: int, openings: np.ndarray, iod: float, fps: int = FPS) -> MotionPlan:
    """Low-frequency sway (two sines per axis, random phases) and a blink every 3–5 s."""
    rng = np.random.default_rng(seed)
    n = len(openings)
    t = np.arange(n) / fps

    def sway() -> np.ndarray:
        f1, f2 = rng.uniform(0.12, 0.22), rng.uniform(0.3, 0.5)
        p1, p2 = rng.uniform(0, 2 * math.pi, 2)
        return 0.7 * np.sin(2 * math.pi * f1 * t + p1) + 0.3 * np.sin(2 * math.pi * f2 * t + p2)

    rotation = SWAY_ROTATION_DEG * sway()
    shift = np.stack([SWAY_SHIFT_IOD[0] * iod * sway(), SWAY_SHIFT_IOD[1] * iod * sway()], axis=1)
    if n:
        # A slow dip while speaking (a one-second average of the opening), never a jitter.
        kernel = np.hanning(fps + 2)[1:-1]
        kernel /= kernel.sum()
        pad = (len(kernel) // 2, (len(kernel) - 1) // 2)
        padded = np.pad(np.asarray(openings, np.float64), pad, mode="edge")
        shift[:, 1] += NOD_IOD * iod * np.convolve(padded, kernel, mode="valid")

    blink = np.zeros(n)
    start = rng.uniform(0.8, 2.5)
    while (first := round(start * fps)) < n:
        for k, closure in enumerate(BLINK_PROFILE[: n - first]):
            blink[first + k] = closure
        start += rng.uniform(*BLINK_INTERVAL_S)
    return MotionPlan(rotation_deg=rotation, shift=shift, blink=blink)


# --------------------------------------------------------------------------------------------
# Renderer


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class _Roi:
    """A rectangle of pixels: rows y0:y1, columns x0:x1."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def union(self, other: _Roi) -> _Roi:
        return _Roi(min(self.y0, other.y0), max(self.y1, other.y1),
                    min(self.x0, other.x0), max(self.x1, other.x1))

    def inside(self, box: _Roi) -> _Roi:
        """This region in the coordinates of `box` (which contains it)."""
        return _Roi(self.y0 - box.y0, self.y1 - box.y0, self.x0 - box.x0, self.x1 - box.x0)

    def sub(self, inner: _Roi) -> _Roi:
        """`inner`, given relative to this region, in this region's own coordinates."""
        return _Roi(self.y0 + inner.y0, self.y0 + inner.y1, self.x0 + inner.x0, self.x0 + inner.x1)


def _roi(points: list[np.ndarray], margin: float, height: int, width: int) -> _Roi:
    pts = np.array(points)
    x0, y0 = np.floor(pts.min(axis=0) - margin).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0) + margin).astype(int)
    return _Roi(max(0, y0), min(height, y1 + 1), max(0, x0), min(width, x1 + 1))


def _bounds(mask: np.ndarray) -> _Roi | None:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return _Roi(int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)


@dataclass(frozen=True)
class _Eye:
    centre: np.ndarray  # midpoint of the corners
    axis: np.ndarray  # along the corner line, same direction as the face's `across`
    normal: np.ndarray  # towards the cheek
    half_width: float
    height: float  # estimated opening
    roi: _Roi


class MouthWarpAnimator:
    """Renders frame i of the talking portrait: `frame(i)` is an RGB uint8 array like the input.

    Every frame is one backward remap of the still portrait: output pixel p takes its colour
    from the portrait at src(p). The head's sway comes first (inside a feathered head mask, so
    the background stays put); the mouth and eyelid warps are defined in the still face's
    coordinates and applied to the head-stabilised point; the mouth interior is painted last.
    """

    def __init__(
        self, rgb: np.ndarray, geometry: FaceGeometry, openings: np.ndarray, seed: int
    ) -> None:
        self.rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        self.geometry = g = geometry
        self.openings = np.asarray(openings, dtype=np.float32)
        h, w = self.rgb.shape[:2]
        iod = g.iod
        self.plan = motion_plan(seed, self.openings, iod)
        self.across, self.down = g.across.astype(np.float32), g.down.astype(np.float32)
        self.jaw_drop_px = JAW_DROP_IOD * iod
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)

        # Head mask: 1 over the head, fading out over the neck and the background around it.
        top, chin = g.forehead, g.chin
        centre = (top + chin) / 2 - 0.1 * (chin - top)
        ry = 0.75 * float(np.linalg.norm(chin - top))
        rx = 1.25 * g.face_half_width
        a, d = self.across, self.down
        du = (xs - centre[0]) * a[0] + (ys - centre[1]) * a[1]
        dv = (xs - centre[0]) * d[0] + (ys - centre[1]) * d[1]
        head = (1.0 - _smoothstep((np.sqrt((du / rx) ** 2 + (dv / ry) ** 2) - 1.0) / 0.6))
        self._pivot = (chin + 0.35 * (chin - g.nose_tip)).astype(np.float32)  # the neck
        # The mouth and eye regions are evaluated at head-stabilised points: widen them by the
        # largest sway so they still cover every pixel that can land in them.
        margin = 3.0 + float(np.abs(self.plan.shift).max(initial=0.0)) + math.radians(
            SWAY_ROTATION_DEG) * max(h, w)

        # Mouth frame: origin at the seam between the lips, u across, v down. The seam is the
        # midpoint of the inner lips, so a smile's teeth split into upper and lower rows.
        m = (g.upper_lip + g.lower_lip) / 2
        self._mouth_origin = m.astype(np.float32)
        # float32 scalars keep the per-frame arithmetic in float32.
        self._half_left = np.float32(max(float((g.mouth_left - m) @ g.across), 0.2 * iod))
        self._half_right = np.float32(max(-float((g.mouth_right - m) @ g.across), 0.2 * iod))
        self._corner_v = (np.float32((g.mouth_left - m) @ g.down),
                          np.float32((g.mouth_right - m) @ g.down))
        self._chin_v = max(float((g.chin - m) @ g.down), 0.4 * iod)
        self._jaw_half = max(0.72 * g.face_half_width,
                             1.25 * max(self._half_left, self._half_right))
        self._lift_span = max(0.6 * float((m - g.nose_tip) @ g.down),
                              3 * UPPER_LIP_SHARE * self.jaw_drop_px)
        self._below_chin = max(0.6 * self._chin_v, 3.0 * self.jaw_drop_px)
        # Teeth only where the portrait shows none: a closed mouth opens onto upper teeth.
        self._synthetic_teeth = g.mouth_open_ratio < CLOSED_MOUTH_RATIO
        self._cavity, self._cavity_edge, self._tongue, self._teeth = _mouth_colours(self.rgb, g)
        v_top = -self._lift_span - self.jaw_drop_px
        v_bottom = self._chin_v + self._below_chin + self.jaw_drop_px
        corners = [m + u * g.across + v * g.down
                   for u in (-self._jaw_half, self._jaw_half) for v in (v_top, v_bottom)]
        mouth_roi = _roi(corners, margin, h, w)

        eyes = []
        for outer, inner in (g.right_eye_corners, g.left_eye_corners):
            half = float(np.linalg.norm(inner - outer)) / 2
            axis = _unit(inner - outer)
            axis = axis if axis @ g.across > 0 else -axis
            normal = np.array([-axis[1], axis[0]])
            height = EYE_HEIGHT * 2 * half
            centre_e = (outer + inner) / 2
            pts = [centre_e + su * 1.1 * half * axis + sv * normal
                   for su in (-1, 1) for sv in (-2.0 * height, height)]
            eyes.append((centre_e, axis, normal, half, height, _roi(pts, margin, h, w)))

        # Only the head moves: the per-frame arrays cover the box around it, and the rest of the
        # frame is copied from the portrait.
        box = _bounds(head > 1e-3) or _Roi(0, h, 0, w)
        for region in [mouth_roi] + [eye[-1] for eye in eyes]:
            box = box.union(region)
        self._box = box
        sl = box.slices
        self._xs, self._ys, self._head = xs[sl].copy(), ys[sl].copy(), head[sl].astype(np.float32)
        self._xc, self._yc = self._xs - self._pivot[0], self._ys - self._pivot[1]
        self._mouth_roi = mouth_roi.inside(box)
        self._eyes = [
            _Eye(c.astype(np.float32), ax.astype(np.float32), nm.astype(np.float32), hw, ht,
                 roi.inside(box))
            for c, ax, nm, hw, ht, roi in eyes
        ]

    def __len__(self) -> int:
        return len(self.openings)

    def frames(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.frame(i)

    def frame(self, i: int) -> np.ndarray:
        plan = self.plan
        theta = math.radians(float(plan.rotation_deg[i]))
        c, s = math.cos(theta), math.sin(theta)
        tx, ty = (float(v) for v in plan.shift[i])
        # Inverse of "rotate about the neck by theta, then shift", weighted by the head mask.
        qx = self._xs + self._head * ((c - 1) * self._xc + s * self._yc - (c * tx + s * ty))
        qy = self._ys + self._head * (-s * self._xc + (c - 1) * self._yc + (s * tx - c * ty))
        map_x, map_y = qx.copy(), qy.copy()

        opening = float(self.openings[i]) * self.jaw_drop_px
        gap = self._warp_mouth(qx, qy, map_x, map_y, opening) if opening > 0.05 else None
        blink = float(plan.blink[i])
        lashes = [self._warp_eye(qx, qy, map_x, map_y, eye, blink) for eye in self._eyes
                  if blink > 0.0]
        patch = cv2.remap(self.rgb, map_x, map_y, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)
        if gap is not None:
            self._paint_mouth(patch, *gap)
        for roi, shade in lashes:
            region = patch[roi.slices].astype(np.float32)
            patch[roi.slices] = np.clip(region * shade[:, :, None], 0, 255).astype(np.uint8)
        out = self.rgb.copy()
        out[self._box.slices] = patch
        return out

    def _warp_mouth(
        self, qx: np.ndarray, qy: np.ndarray, map_x: np.ndarray, map_y: np.ndarray,
        opening: float,
    ) -> tuple[_Roi, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Drop the lower lip and jaw, lift the upper lip a little; returns the gap to paint.

        Along the face's vertical (v, measured from the lip seam r = v - seam), output pixels
        above the gap sample the upper lip lifted by `up`, pixels in the gap are painted, and
        pixels below sample the lower face dropped by `low` at the lip, by the jaw's profile at
        the chin, fading to nothing over the neck. Every piece meets the next without a jump.
        """
        roi = self._mouth_roi
        sl = roi.slices
        ox, oy = self._mouth_origin
        a, d = self.across, self.down
        px, py = qx[sl] - ox, qy[sl] - oy
        u = px * a[0] + py * a[1]
        v = px * d[0] + py * d[1]
        left = u >= 0
        un = np.clip(np.abs(u) / np.where(left, self._half_left, self._half_right), 0.0, 1.0)
        seam = np.where(left, self._corner_v[0], self._corner_v[1]) * un * un  # through corners
        lens = np.power(np.clip(1.0 - un * un, 0.0, 1.0), 0.7)  # the gap closes at the corners
        jaw = np.clip(1.0 - (u / self._jaw_half) ** 2, 0.0, 1.0)
        gap = opening * lens
        up, low = UPPER_LIP_SHARE * gap, (1.0 - UPPER_LIP_SHARE) * gap
        r = v - seam

        lift = up * (1.0 - _smoothstep((-r - up) / self._lift_span))
        below = r - low
        shape = lens + (jaw - lens) * _smoothstep(below / self._chin_v)
        fade = 1.0 - _smoothstep((below - self._chin_v) / self._below_chin)
        drop = (1.0 - UPPER_LIP_SHARE) * opening * shape * fade
        shift = np.where(r < -up, lift, np.where(r < low, -r, -drop)).astype(np.float32)
        map_x[sl] += shift * d[0]
        map_y[sl] += shift * d[1]
        return roi, r, up, low, un

    def _paint_mouth(
        self, out: np.ndarray, roi: _Roi, r: np.ndarray, up: np.ndarray, low: np.ndarray,
        un: np.ndarray,
    ) -> None:
        """Fill the gap between the lips: a dark cavity, the tongue low in a wide-open mouth, and
        upper teeth under the lip if the portrait showed none.

        The dark opening is what makes the mouth read as open, to people and to a landmark
        detector alike; the teeth stay a narrow band so the mouth darkens as it opens.
        """
        inside_top, inside_bottom = r + up, low - r  # distances to the upper and lower lip
        depth = np.minimum(inside_top, inside_bottom)
        alpha = np.clip(depth + 0.5, 0.0, 1.0)
        height = up + low
        alpha *= np.clip(height - 0.5, 0.0, 1.0)  # sub-pixel gaps would only flicker
        tight = _bounds(alpha > 0)
        if tight is None:
            return
        # Colour only the gap's own bounding box: it is a small part of the mouth region.
        ts = tight.slices
        alpha, inside_top, inside_bottom = alpha[ts], inside_top[ts], inside_bottom[ts]
        depth, height, un = depth[ts].clip(0), height[ts], un[ts]
        target = roi.sub(tight).slices
        iod = self.geometry.iod
        # Lit near the lips, darkest deep inside and towards the corners.
        edge = np.exp(-depth / np.maximum(1.5, 0.12 * height)) * (1 - un)
        colour = self._cavity + (self._cavity_edge - self._cavity) * edge[:, :, None]
        # The tongue: the lower part of a wide-open mouth, its top edge soft and in shadow.
        seen = np.clip((height / iod - TONGUE_OPEN_IOD[0])
                       / (TONGUE_OPEN_IOD[1] - TONGUE_OPEN_IOD[0]), 0.0, 1.0)
        if seen.max() > 0:
            # Domed: highest in the middle, falling towards the corners; lit on its crown.
            top = TONGUE_TOP * height * (1.0 - 0.6 * un * un)
            below_top = top - inside_bottom
            tongue = (_smoothstep(below_top / np.maximum(0.3 * height, 1.5))
                      * _smoothstep((0.8 - un) / 0.4) * seen)
            lit = 0.75 + 0.25 * np.exp(-np.abs(below_top - 0.25 * top) / np.maximum(0.2 * top, 1.0))
            colour = colour + (self._tongue * lit[:, :, None] - colour) * tongue[:, :, None]
        if self._synthetic_teeth:
            # Upper incisors under the upper lip: narrower than the mouth, a fraction of the gap,
            # in the lip's shadow at the top and darker towards the corners, a faint line where
            # one tooth meets the next.
            teeth_h = np.minimum(TEETH_GAP_SHARE * height, TEETH_IOD * iod) * np.sqrt(
                np.clip(1 - (un / TEETH_SPAN) ** 2, 0, 1))
            teeth = np.clip(teeth_h - inside_top + 0.5, 0.0, 1.0) * (inside_top >= -0.5)
            shade = 0.72 + 0.28 * np.clip(inside_top / np.maximum(0.5 * teeth_h, 1e-3), 0, 1)
            half_px = 0.5 * float(self._half_left + self._half_right)
            for b in TOOTH_EDGES:
                shade = shade * (1.0 - 0.22 * np.exp(-(((un - b) * half_px) ** 2) / 0.8))
            teeth_colour = self._teeth * (shade * (1.0 - 0.45 * un / TEETH_SPAN))[:, :, None]
            colour = colour + (teeth_colour - colour) * teeth[:, :, None]
        region = out[target].astype(np.float32)
        a3 = alpha[:, :, None]
        out[target] = np.clip(region * (1 - a3) + colour * a3 + 0.5, 0, 255).astype(np.uint8)

    def _warp_eye(
        self, qx: np.ndarray, qy: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, eye: _Eye,
        blink: float,
    ) -> tuple[_Roi, np.ndarray]:
        """Slide the upper eyelid down like a curtain: the skin above stretches over the eye.

        Output pixels between the brow line and the lid's new edge (`cut`) sample the skin
        between the brow line and the lid's rest position; below the cut nothing moves, so
        the iris is covered rather than squashed. Returns the lash shading to apply.
        """
        sl = eye.roi.slices
        px, py = qx[sl] - eye.centre[0], qy[sl] - eye.centre[1]
        u = px * eye.axis[0] + py * eye.axis[1]
        v = px * eye.normal[0] + py * eye.normal[1]
        arc = np.sqrt(np.clip(1.0 - (u / eye.half_width) ** 2, 0.0, 1.0))
        lid = -0.62 * eye.height * arc  # the upper lid arches higher than the lower lid drops
        lower = 0.38 * eye.height * arc
        brow = lid - 1.3 * eye.height
        cut = lid + blink * (lower - lid)
        covered = (v >= brow) & (v < cut)
        src_v = brow + (v - brow) * (lid - brow) / np.maximum(cut - brow, 1e-3)
        shift = np.where(covered, src_v - v, 0.0).astype(np.float32)
        map_x[sl] += shift * eye.normal[0]
        map_y[sl] += shift * eye.normal[1]
        # Lashes: a soft dark line along the lid's edge, stronger as the eye closes.
        lash = (np.exp(-((v - cut + 1.0) ** 2) / 3.0) * np.clip(arc * 3.0, 0.0, 1.0)
                * (v < cut + 1.5))
        return eye.roi, (1.0 - 0.3 * blink * lash).astype(np.float32)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _median_colour(rgb: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    r = max(1, round(radius))
    x, y = int(np.clip(round(centre[0]), 0, w - 1)), int(np.clip(round(centre[1]), 0, h - 1))
    patch = rgb[max(0, y - r): y + r + 1, max(0, x - r): x + r + 1].reshape(-1, 3)
    return np.median(patch, axis=0).astype(np.float32)


def _mouth_colours(
    rgb: np.ndarray, g: FaceGeometry
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cavity, cavity edge, tongue and teeth colours matched to the portrait's lips and skin."""
    iod = g.iod
    lip = _median_colour(rgb, g.lower_lip + 0.07 * iod * g.down, 0.03 * iod)
    cheeks = [g.nose_tip + side * 0.45 * iod * g.across + 0.05 * iod * g.down for side in (-1, 1)]
    skin = np.median([_median_colour(rgb, c, 0.05 * iod) for c in cheeks], axis=0)
    cavity = lip * CAVITY_SHADE
    cavity *= min(1.0, CAVITY_MAX_LUMA / max(_luma(cavity), 1.0))
    edge = lip * CAVITY_EDGE_SHADE
    tongue = lip * TONGUE_SHADE
    teeth = 0.7 * TEETH_RGB + 0.3 * skin
    teeth *= float(np.clip(TEETH_SKIN_LUMA * _luma(skin), *TEETH_LUMA)) / _luma(teeth)
    return (cavity.astype(np.float32), edge.astype(np.float32), tongue.astype(np.float32),
            np.clip(teeth, 0, 255).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Engine


class _Abort(Exception):
    """Carries a classified failure out of the atomic-write block, so the temp file is removed."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class MouthWarpCpuEngine:
    """Engine "cpu-mouthwarp": landmark-driven mouth warping on the CPU, H.264 + AAC via ffmpeg.

    `timeout_s` bounds the whole generation (landmarks, rendering, encoding, verification); on
    expiry ffmpeg's process group is killed and the result is a TIMEOUT failure. `detector` is
    any `tasks.face_types.FaceDetector`; by default the process-wide MediaPipe detector. The gang is
    only logged: this engine uses no GPU.
    """

    name = NAME

    def __init__(
        self,
        *,
        detector: Any | None = None,
        ffmpeg: str = "ffmpeg",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        crf: int = 20,
        x264_preset: str = "veryfast",
    ) -> None:
        self._detector = detector
        self.ffmpeg = ffmpeg
        self.timeout_s = timeout_s
        self.crf = crf
        self.x264_preset = x264_preset

    def close(self) -> None:
        """Nothing long-lived to release: the default detector is shared by the process."""

    def generate(
        self, request: GenerationRequest, gang: GpuGang, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        started = time.monotonic()
        metrics = GenerationMetrics()
        config: dict[str, Any] = {
            "engine": NAME, "fps": FPS, "seed": request.seed, "preset": request.preset,
            "crf": self.crf, "x264_preset": self.x264_preset, "timeout_s": self.timeout_s,
            "clip_frames": CLIP_FRAMES,
        }
        result = GenerationResult(engine=NAME, config=config, metrics=metrics)
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(request.log_path, "a", encoding="utf-8") as log:

            def note(text: str) -> None:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{NAME}] {text}\n")
                log.flush()

            note(f"asset {request.asset_key}: image {request.image}, audio {request.audio} "
                 f"({request.audio_seconds:.2f} s), seed {request.seed}, gang {gang.name}")
            try:
                self._generate(request, progress, started, config, metrics, note)
            except _Abort as abort:
                result.failure = abort.failure
                note(f"failed ({abort.failure.kind.value}): {abort.failure.message}")
            else:
                result.output = request.output
            metrics.total_seconds = time.monotonic() - started
            if result.ok:
                note(f"wrote {request.output} in {metrics.total_seconds:.1f} s")
        return result

    def _generate(
        self, request: GenerationRequest, progress: ProgressCallback | None, started: float,
        config: dict[str, Any], metrics: GenerationMetrics, note: Callable[[str], None],
    ) -> None:
        """The generation itself; every failure leaves as an _Abort."""
        deadline = started + self.timeout_s
        try:
            rgb, _ = load_portrait(request.image)
        except FaceError as exc:
            raise _Abort(Failure(FailureKind.CONFIG_REJECTED, exc.message)) from exc
        # yuv420p needs even sides; the crop is 512x512, so this only trims odd inputs.
        h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
        rgb = np.ascontiguousarray(rgb[:h, :w])
        try:
            samples = load_pcm(request.audio, SAMPLE_RATE,
                               timeout_s=max(1.0, deadline - time.monotonic()))
        except AudioError as exc:
            raise _Abort(Failure(FailureKind.CONFIG_REJECTED, exc.message)) from exc
        audio_s = samples.size / SAMPLE_RATE
        if audio_s <= 0:
            raise _Abort(Failure(FailureKind.CONFIG_REJECTED,
                                 f"{request.audio.name} holds no audio samples"))

        detector = self._detector if self._detector is not None else default_detector()
        try:
            faces = detector.detect(rgb)
        except Exception as exc:
            raise _Abort(Failure(FailureKind.CRASHED,
                                 f"face landmarks failed on {request.image.name}: {exc}")) from exc
        if not faces:
            raise _Abort(Failure(
                FailureKind.CONFIG_REJECTED,
                f"No face found in {request.image.name}: the CPU engine animates a human face and "
                "needs a portrait crop with the eyes and mouth visible (run the face preprocessing "
                "step on a frontal photo of one person).",
            ))
        geometry = face_geometry(faces[0].landmarks, faces[0].landmark_source)
        n_frames = max(1, round(audio_s * FPS))
        try:
            cap = get_preset(request.preset).num_clip
        except KeyError as exc:
            raise _Abort(Failure(FailureKind.CONFIG_REJECTED, str(exc.args[0]))) from exc
        # A preview is what Live Avatar makes of it: num_clip clips, then the video (and the
        # speech with it) stops — both engines agree on what a preview is.
        clips = planned_clips(samples.size, cap)
        n_frames = min(n_frames, video_frames(clips))
        video_s = min(audio_s, n_frames / FPS)
        metrics.clips_planned = math.ceil(n_frames / CLIP_FRAMES)
        animator = MouthWarpAnimator(rgb, geometry, mouth_openings(samples, SAMPLE_RATE, n_frames),
                                     request.seed)
        config.update(size=[w, h], frames=n_frames, clips=metrics.clips_planned,
                      audio_seconds=audio_s, landmarks=geometry.source,
                      jaw_drop_px=round(animator.jaw_drop_px, 1))
        note(f"{w}x{h}, {n_frames} frames ({metrics.clips_planned} clips of {CLIP_FRAMES}), "
             f"landmarks {geometry.source}, face width {2 * geometry.face_half_width:.0f} px, "
             f"{int((animator.plan.blink == 1.0).sum())} blinks")
        if geometry.source != "mesh":
            note(f"warning: no dense landmarks ({geometry.source}); mouth and eyes are placed from "
                 "average proportions and may be off")
        if progress:
            progress(Progress(0, metrics.clips_planned, "rendering"))

        # The MP4 is written beside its destination and moved there only once verified; any
        # _Abort inside this block removes it.
        with atomic_path(request.output) as tmp, tempfile.TemporaryFile() as stderr:
            cmd = self._command(w, h, request.audio, tmp, video_s if video_s < audio_s else None)
            config["command"] = cmd
            note("ffmpeg: " + " ".join(cmd))
            status = self._encode(cmd, animator, deadline, started, progress, metrics, stderr)
            metrics.exit_status = status
            if status != 0:
                stderr.seek(0)
                tail = stderr.read().decode("utf-8", "replace").strip()[-600:]
                raise _Abort(Failure(FailureKind.CRASHED,
                                     f"ffmpeg exited with status {status}: {tail}"))
            info = verify_output(tmp, video_s, expected="the speech" if video_s >= audio_s
                                 else f"{clips} clip(s), capped by the {request.preset} preset")
            if isinstance(info, Failure):
                raise _Abort(info)
            problem = _check_stream(info, w, h, n_frames) or _check_audio(info, video_s)
            if problem:
                raise _Abort(problem)
            config["verified"] = {"duration_s": info.duration_s, "frames": info.frames,
                                  "video_codec": info.video_codec,
                                  "audio_codec": info.audio_codec}

    def _command(self, w: int, h: int, audio: Path, out: Path, cut_s: float | None = None) -> list[str]:
        # No -frames:v: it makes ffmpeg end the file when the video ends and cut the audio
        # short. The frame count is exact because exactly round(audio_s * 25) frames are sent;
        # a preview (`cut_s`) stops both streams where its last clip ends.
        cut = ["-t", f"{cut_s:.6f}"] if cut_s is not None else []
        return [
            self.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(FPS),
            "-i", "pipe:0", "-i", str(audio),
            "-map", "0:v:0", "-map", "1:a:0",
            "-c:v", "libx264", "-preset", self.x264_preset, "-crf", str(self.crf),
            "-pix_fmt", "yuv420p", "-r", str(FPS),
            "-c:a", "aac", "-b:a", "128k", *cut,
            "-movflags", "+faststart", "-f", "mp4", str(out),
        ]

    def _encode(
        self, cmd: list[str], animator: MouthWarpAnimator, deadline: float, started: float,
        progress: ProgressCallback | None, metrics: GenerationMetrics, stderr: IO[bytes],
    ) -> int:
        """Render every frame into ffmpeg's stdin; returns its exit status or raises _Abort."""
        if time.monotonic() >= deadline:
            raise _Abort(_timeout(self.timeout_s, "before encoding started"))
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=stderr, start_new_session=True)
        except OSError as exc:
            raise _Abort(Failure(FailureKind.CRASHED,
                                 f"cannot start ffmpeg ({cmd[0]}): {exc}")) from exc
        # A writer blocked on a full pipe cannot look at the clock: a watchdog kills ffmpeg's
        # process group instead, which turns the blocked write into a BrokenPipeError.
        fired = threading.Event()

        def watchdog() -> None:
            fired.set()
            _kill_group(proc)

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), watchdog)
        timer.daemon = True
        timer.start()
        total, planned = len(animator), metrics.clips_planned
        try:
            assert proc.stdin is not None
            try:
                for i in range(total):
                    if fired.is_set() or time.monotonic() >= deadline:
                        break
                    proc.stdin.write(animator.frame(i).tobytes())
                    if (i + 1) % CLIP_FRAMES == 0 or i + 1 == total:
                        metrics.clips_done = math.ceil((i + 1) / CLIP_FRAMES)
                        if metrics.first_clip_seconds is None:
                            metrics.first_clip_seconds = time.monotonic() - started
                        if progress:
                            progress(Progress(metrics.clips_done, planned,
                                              f"frame {i + 1}/{total}"))
                proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass  # ffmpeg died or was killed: its exit status or the watchdog says which
            try:
                status = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                fired.set()
                _kill_group(proc)
                status = proc.wait()
            if fired.is_set() or time.monotonic() >= deadline:
                raise _Abort(_timeout(self.timeout_s,
                                      f"after {metrics.clips_done}/{planned} clips"))
            if metrics.clips_done < planned and status == 0:
                status = -1  # ffmpeg stopped reading and exited 0: not a complete video
            return status
        finally:
            timer.cancel()
            if proc.poll() is None:  # an exception (a progress callback's, say) left it running
                _kill_group(proc)
                proc.wait()
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass


def _timeout(limit_s: float, when: str) -> Failure:
    return Failure(FailureKind.TIMEOUT,
                   f"the CPU engine ran past its {limit_s:g} s limit {when}; ffmpeg was killed")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _check_stream(info: VideoInfo, w: int, h: int, n_frames: int) -> Failure | None:
    """What verify_output does not check but this engine promises: size, codec, frame count."""
    if (info.width, info.height) != (w, h) or info.video_codec != "h264":
        return Failure(FailureKind.CRASHED, f"ffmpeg wrote {info.video_codec} "
                                            f"{info.width}x{info.height}, expected h264 {w}x{h}")
    if info.frames is not None and abs(info.frames - n_frames) > 1:
        return Failure(FailureKind.WRONG_DURATION,
                       f"the video has {info.frames} frames, expected {n_frames}")
    return None


def _check_audio(info: VideoInfo, audio_s: float) -> Failure | None:
    """The audio stream itself must last as long as the video should (the speech, or a preview's clips).

    The container's duration is the longer of the two streams: a file whose audio stops early
    (ffmpeg does that with -frames:v) would pass a check of it alone.
    """
    if info.audio_duration_s is None:
        return Failure(FailureKind.NO_AUDIO_STREAM, "ffprobe gives the audio stream no duration")
    if abs(info.audio_duration_s - audio_s) > 1.0 / FPS:
        return Failure(FailureKind.WRONG_DURATION,
                       f"the audio stream lasts {info.audio_duration_s:.3f} s but the speech lasts "
                       f"{audio_s:.3f} s")
    return None
