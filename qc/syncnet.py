"""SyncNet lip-sync scorer (LSE-C, LSE-D, offset), used when SyncNet weights are configured.

The architecture and the measurement follow the public syncnet_python (Chung & Zisserman, "Out
of time", 2016): a 5-frame face-crop stream (224x224 BGR, 3D convolutions) and an MFCC stream
(13 coefficients x 20 steps = 0.2 s) map to 1024-d embeddings; for every 25 fps frame the
distance between the video embedding and the audio embeddings at offsets -15..+15 is taken, the
distances are averaged over the frames, and

- LSE-D = the smallest mean distance (lower is better),
- LSE-C = median over offsets - LSE-D (higher is better; ~7-9 on real footage),
- the offset is where the minimum is.

Weights are never downloaded: they are read from the file named by `AVATARFLOW_SYNCNET_WEIGHTS`
(syncnet_python's `syncnet_v2.model` state dict, with or without its `__S__.` prefix). Torch is
an optional dependency (`pip install torch`, CPU or CUDA build).

Differences from syncnet_python, on purpose: faces are tracked with MediaPipe's bundled face mesh
instead of S3FD (no extra weights), and the crop box is built from the mesh's face outline with
the same geometry (box side from the larger of width and height, 40 % margin, more room below
the face than above, median-smoothed over 13 frames). Offsets use avatarflow's sign (positive:
audio late), the opposite of what syncnet_python prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import scipy.signal as sps

from avatarflow import media
from avatarflow.errors import AvatarflowError
from qc.calibration import Calibration, Calibrator
from qc.decode import (
    DECODE_TIMEOUT_S,
    FPS,
    SAMPLE_RATE,
    Decoding,
    decode_size,
    load_audio,
    own_soundtrack,
    probe_video,
)  # fmt: skip
from qc.facetrack import POS, MeshTracker, OwnedTracker, StridedTrack
from qc.result import LipSyncResult, SyncWindow, curve_features
from qc.speech import mfcc
from qc.sync_search import analysis_windows

SYNCNET_SETTING = "AVATARFLOW_SYNCNET_WEIGHTS"
VSHIFT = 15  # offsets searched each way, frames (syncnet_python's default)
CROP = 224
CROP_SCALE = 0.40  # syncnet_python's --crop_scale
SMOOTH_FRAMES = 13  # median filter over the box track, as syncnet_python
PAD_VALUE = 110
FRAMES_PER_SAMPLE = 5  # video frames per embedding (0.2 s)
MFCC_PER_FRAME = 4  # 100 Hz MFCC steps per 25 fps frame
MFCC_PER_SAMPLE = 20
DECODE_SHORT_SIDE = 480  # the 224 px crop of a face needs more pixels than the mouth patch


class SyncNetUnavailable(AvatarflowError):
    """SyncNet cannot run here: no weights file, or torch is not installed."""


# --------------------------------------------------------------------------------------------
# The network


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise SyncNetUnavailable(
            "the SyncNet scorer needs PyTorch, which is not installed: install the optional "
            f"extra (pip install torch), or unset {SYNCNET_SETTING} to use the weight-free "
            "landmark scorer"
        ) from exc
    return torch


def build_model() -> Any:
    """SyncNet's network with syncnet_python's layer names (so its state dict loads as is)."""
    torch = _torch()
    nn = torch.nn

    class SyncNet(nn.Module):
        def __init__(self, embedding: int = 1024) -> None:
            super().__init__()
            self.netcnnaud = nn.Sequential(
                nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
                nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
                nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
                nn.BatchNorm2d(192), nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
                nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)),
                nn.BatchNorm2d(384), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)),
                nn.BatchNorm2d(256), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)),
                nn.BatchNorm2d(256), nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
                nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)),
                nn.BatchNorm2d(512), nn.ReLU(),
            )  # fmt: skip
            self.netfcaud = nn.Sequential(
                nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding)
            )
            self.netfclip = nn.Sequential(
                nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding)
            )
            self.netcnnlip = nn.Sequential(
                nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
                nn.BatchNorm3d(96), nn.ReLU(inplace=True),
                nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
                nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
                nn.BatchNorm3d(256), nn.ReLU(inplace=True),
                nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
                nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
                nn.BatchNorm3d(256), nn.ReLU(inplace=True),
                nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
                nn.BatchNorm3d(256), nn.ReLU(inplace=True),
                nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
                nn.BatchNorm3d(256), nn.ReLU(inplace=True),
                nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
                nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),
                nn.BatchNorm3d(512), nn.ReLU(inplace=True),
            )  # fmt: skip

        def forward_aud(self, x: Any) -> Any:  # (B, 1, 13, 20) -> (B, 1024)
            mid = self.netcnnaud(x)
            return self.netfcaud(mid.view(mid.size(0), -1))

        def forward_lip(self, x: Any) -> Any:  # (B, 3, 5, 224, 224) -> (B, 1024)
            mid = self.netcnnlip(x)
            return self.netfclip(mid.view(mid.size(0), -1))

    return SyncNet()


def load_weights(model: Any, path: Path) -> None:
    """Load a syncnet_python state dict (keys with or without `__S__.`) into `model`."""
    torch = _torch()
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SyncNetUnavailable(f"{path} cannot be read as SyncNet weights ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SyncNetUnavailable(f"{path} does not hold a state dict of SyncNet weights")
    state = {k.removeprefix("__S__.").removeprefix("module."): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SyncNetUnavailable(
            f"{path} is not a SyncNet (syncnet_python) state dict: missing "
            f"{list(result.missing_keys)[:4]}, unexpected {list(result.unexpected_keys)[:4]}"
        )


# --------------------------------------------------------------------------------------------
# Face crops


@dataclass
class FaceCrops:
    """224x224 BGR face crops on the 25 fps grid, and what the lip stream makes of them."""

    video: str
    source: media.MediaInfo
    crops: np.ndarray  # (n, 224, 224, 3) uint8 BGR
    tracked: np.ndarray  # bool per frame
    lip: Any = None  # (n - 4, 1024) torch tensor of lip embeddings, once computed
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return int(self.crops.shape[0])


def _face_boxes(marks: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (cx, cy, half side) from the mesh outline, median-smoothed; and tracked flags."""
    rows = []
    for m in marks:
        if m is None:
            rows.append((np.nan, np.nan, np.nan))
            continue
        x0, x1 = m[POS["face_right"], 0], m[POS["face_left"], 0]
        y0, y1 = m[POS["forehead"], 1], m[POS["chin"], 1]
        x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
        rows.append(((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2))
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 3)
    tracked = np.isfinite(boxes[:, 0])
    if tracked.any():
        idx = np.flatnonzero(tracked)
        for c in range(3):
            boxes[:, c] = np.interp(np.arange(len(boxes)), idx, boxes[idx, c])
            if len(boxes) >= SMOOTH_FRAMES:
                boxes[:, c] = sps.medfilt(boxes[:, c], kernel_size=SMOOTH_FRAMES)
    return boxes, tracked


def _crop(bgr: np.ndarray, cx: float, cy: float, bs: float) -> np.ndarray:
    """syncnet_python's crop: rows cy-bs .. cy+bs(1+2cs), cols cx +- bs(1+cs), padded with 110."""
    cs = CROP_SCALE
    pad = int(bs * (1 + 2 * cs))
    framed = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))  # fmt: skip
    my, mx = cy + pad, cx + pad
    face = framed[int(my - bs) : int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)) : int(mx + bs * (1 + cs))]
    if face.size == 0:
        return np.full((CROP, CROP, 3), PAD_VALUE, np.uint8)
    return cv2.resize(face, (CROP, CROP), interpolation=cv2.INTER_AREA)


def face_crops(
    video: Path, tracker: MeshTracker, *, short_side: int = DECODE_SHORT_SIDE,
    max_frames: int | None = None, timeout_s: float = DECODE_TIMEOUT_S,
) -> FaceCrops:  # fmt: skip
    """Decode, track (mesh on every frame) and crop the face of every 25 fps frame.

    Two passes over the video: the first tracks, the boxes are smoothed over 13 frames (which
    needs frames ahead), the second crops. Decoding twice costs far less than SyncNet itself and
    keeps memory to the crops (150 kB a frame) instead of whole frames.
    """
    started = time.perf_counter()
    info = probe_video(video)
    size = decode_size(info, short_side)
    marks: list[np.ndarray | None] = []
    with Decoding(video, size, timeout_s=timeout_s) as decoding, tracker.lock:
        tracker.reset()
        track = StridedTrack(tracker, 1)
        for frame in decoding.frames():
            if max_frames is not None and frame.index >= max_frames:
                break
            marks += [m for _, m in track.feed(frame)]
    if max_frames is None:
        decoding.raise_for_failure()
    boxes, tracked = _face_boxes(marks)
    crops = np.full((len(marks), CROP, CROP, 3), PAD_VALUE, np.uint8)
    with Decoding(video, size, timeout_s=timeout_s) as decoding:
        for frame in decoding.frames():
            if frame.index >= len(marks):
                break
            if np.isfinite(boxes[frame.index, 0]):
                bgr = cv2.cvtColor(frame.yuv, cv2.COLOR_YUV2BGR_I420)  # syncnet_python reads with cv2: BGR
                crops[frame.index] = _crop(bgr, *boxes[frame.index])
    return FaceCrops(str(video), info, crops, tracked, seconds=time.perf_counter() - started)


def _windows(dists: Any, start: int, usable: int) -> list[SyncWindow]:
    """LSE-C, LSE-D and offset of each 5 s analysis window, from its frames' distances alone."""
    out = []
    offsets = list(range(-VSHIFT, VSHIFT + 1))
    for a, b in analysis_windows(0, usable):
        mdist = dists[a:b].mean(dim=0)
        k = int(mdist.argmin())
        lse_d, lse_c = float(mdist[k]), float(mdist.median() - mdist[k])
        out.append(SyncWindow(
            start_s=(start + a) / FPS, end_s=(start + b) / FPS, offset_frames=k - VSHIFT,
            features=curve_features(confidence=lse_c, correlation=None, distance=lse_d,
                                    offset_frames=k - VSHIFT, offsets=offsets,
                                    curve=[float(v) for v in mdist], curve_kind="distance"),
        ))  # fmt: skip
    return out


def offset_distances(lip: Any, aud: Any, vshift: int = VSHIFT) -> Any:
    """(frames, 2 * vshift + 1) distances of video embedding i to audio embedding i + k - vshift.

    syncnet_python's calc_pdist: the audio embeddings are zero-padded at both ends, so column k
    is offset d = k - vshift in avatarflow's sign (audio late by d frames).
    """
    torch = _torch()
    padded = torch.nn.functional.pad(aud, (0, 0, vshift, vshift))
    win = 2 * vshift + 1
    return torch.stack([
        torch.nn.functional.pairwise_distance(lip[[i], :].repeat(win, 1), padded[i : i + win, :])
        for i in range(lip.shape[0])
    ])  # fmt: skip


# --------------------------------------------------------------------------------------------
# The scorer


class SyncNetScorer:
    """LSE-C / LSE-D / offset from SyncNet weights at `weights_path` (or AVATARFLOW_SYNCNET_WEIGHTS).

    Raises SyncNetUnavailable, naming the file and the setting, when the weights are missing or
    torch is not installed. `model` lets tests pass a network (for example randomly initialised)
    instead of a weights file.
    """

    name = "syncnet-v2"
    calibration_features: tuple[str, ...] = ("confidence", "distance", "abs_offset")

    def __init__(
        self,
        weights_path: Path | None = None,
        *,
        model: Any = None,
        device: str = "cpu",
        batch_size: int = 20,
        calibration: Calibration | Literal[False] | None = None,
        calibration_path: Path | None = None,
        short_side: int = DECODE_SHORT_SIDE,
    ) -> None:
        torch = _torch()
        if model is None:
            configured = weights_path
            if not configured:
                raise SyncNetUnavailable(
                    f"no SyncNet weights configured: set {SYNCNET_SETTING} to the path of "
                    "syncnet_v2.model (they are never downloaded), or use the landmark scorer"
                )
            path = Path(configured).expanduser()
            if not path.is_file():
                raise SyncNetUnavailable(
                    f"SyncNet weights file not found: {path} (from {SYNCNET_SETTING}). Copy syncnet_v2.model there, or point "
                    f"{SYNCNET_SETTING} at it; weights are never downloaded at run time."
                )
            model = build_model()
            load_weights(model, path)
            self.weights = str(path)
        else:
            self.weights = "(model given in code)"
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.short_side = short_side
        self._torch_mod = torch
        self.calibrator = Calibrator(self.name, calibration, calibration_path)
        self._mesh = OwnedTracker(refine=False)  # the face box needs no refined lips

    def settings(self) -> dict[str, Any]:
        """What shapes the raw metrics: stored with a calibration as its provenance."""
        return {"weights": self.weights, "vshift": VSHIFT, "crop": CROP, "crop_scale": CROP_SCALE,
                "decode_short_side": self.short_side, "face_tracker": "mediapipe face mesh"}

    # -- embeddings

    def _embed_lips(self, crops: FaceCrops) -> Any:
        torch = self._torch_mod
        if crops.lip is not None:
            return crops.lip
        n = crops.frames - FRAMES_PER_SAMPLE + 1
        out = []
        with torch.no_grad():
            for a in range(0, max(0, n), self.batch_size):
                b = min(n, a + self.batch_size)
                # (B, 5, H, W, C) -> (B, C, 5, H, W), raw 0-255 values as syncnet_python
                stack = np.stack([crops.crops[i : i + FRAMES_PER_SAMPLE] for i in range(a, b)])
                x = torch.from_numpy(stack).float().permute(0, 4, 1, 2, 3).to(self.device)
                out.append(self.model.forward_lip(x).cpu())
        crops.lip = torch.cat(out) if out else torch.zeros((0, 1024))
        return crops.lip

    def _embed_audio(self, cc: np.ndarray, count: int) -> Any:
        torch = self._torch_mod
        out = []
        with torch.no_grad():
            for a in range(0, count, self.batch_size):
                b = min(count, a + self.batch_size)
                stack = np.stack([cc[:, i * MFCC_PER_FRAME : i * MFCC_PER_FRAME + MFCC_PER_SAMPLE]
                                  for i in range(a, b)])[:, None]  # fmt: skip
                out.append(self.model.forward_aud(torch.from_numpy(stack).float().to(self.device)).cpu())
        return torch.cat(out) if out else torch.zeros((0, 1024))

    # -- the CalibratableScorer interface

    def prepare(self, video: Path, max_frames: int | None = None) -> FaceCrops:
        crops = face_crops(Path(video), self._mesh.get(), short_side=self.short_side, max_frames=max_frames)
        self._embed_lips(crops)
        return crops

    def own_audio(self, video: Path) -> np.ndarray:
        return own_soundtrack(Path(video))

    def measure(
        self, prepared: FaceCrops, pcm: np.ndarray, start: int = 0, stop: int | None = None,
        *, video: str = "", audio: str | None = None,
    ) -> LipSyncResult:  # fmt: skip
        """LSE-C, LSE-D and offset of frames [start, stop) against `pcm` (aligned to frame 0),
        computed as syncnet_python does on a clip of those frames."""
        torch = self._torch_mod
        t0 = time.perf_counter()
        stop = prepared.frames if stop is None else min(stop, prepared.frames)
        a0, a1 = start * SAMPLE_RATE // FPS, stop * SAMPLE_RATE // FPS
        segment = pcm[a0:a1]
        face_fraction = float(prepared.tracked[start:stop].mean()) if stop > start else 0.0
        result = LipSyncResult(
            scorer=self.name, video=video or prepared.video, audio=audio, frames=max(0, stop - start),
            duration_s=max(0, stop - start) / FPS, face_fraction=face_fraction, confidence=None,
            correlation=None, distance=None, offset_frames=None,
        )  # fmt: skip
        # syncnet_python: min(len(images), floor(len(audio) / 640)) - 5 embeddings.
        usable = min(stop - start, segment.size // (SAMPLE_RATE // FPS)) - FRAMES_PER_SAMPLE
        if usable < 2 * VSHIFT:
            result.score_reason = f"too short for SyncNet: {(stop - start) / FPS:.1f} s"
            return result
        if face_fraction < 0.5:
            result.score_reason = f"a face was tracked in only {face_fraction:.0%} of the frames"
            return result
        int16 = np.clip(np.round(segment * 32768.0), -32768, 32767)  # it reads int16 WAVs
        cc = mfcc(int16, SAMPLE_RATE).T  # (13, steps)
        lip = self._embed_lips(prepared)[start : start + usable]
        aud = self._embed_audio(cc, usable)
        dists = offset_distances(lip, aud)
        mdist = dists.mean(dim=0)
        minval, minidx = torch.min(mdist, 0)
        median = torch.median(mdist)
        k = int(minidx)
        result.offsets = list(range(-VSHIFT, VSHIFT + 1))
        result.curve = [float(v) for v in mdist]  # mean distance per offset (lower: better)
        result.curve_kind = "distance"
        result.distance = float(minval)
        result.confidence = float(median - minval)
        result.offset_frames = k - VSHIFT  # avatarflow sign; syncnet_python prints VSHIFT - k
        # Frame-wise confidence at the best offset, median-filtered over 9 frames (as
        # syncnet_python prints it), averaged per 2 s window.
        frame_conf = sps.medfilt((median - dists[:, k]).numpy().astype(np.float64), kernel_size=9)
        per = int(result.window_s * FPS)
        result.window_starts_s = [(start + w) / FPS for w in range(0, usable, per)]
        result.window_values = [float(frame_conf[w : w + per].mean()) for w in range(0, usable, per)]
        result.sync_windows = _windows(dists, start, usable)
        result.notes.append(f"syncnet_python prints the offset as {VSHIFT - k:+d} (opposite sign)")
        result.timings_s["measure"] = time.perf_counter() - t0
        return result

    # -- calibration and the public entry point

    def apply_calibration(self, result: LipSyncResult) -> LipSyncResult:
        """Fill in `score` (and its reason) from the calibration, for the clip and each window."""
        return self.calibrator.apply(result)

    def score(self, video: Path, audio: Path | None = None) -> LipSyncResult:
        t0 = time.perf_counter()
        crops = self.prepare(Path(video))
        t1 = time.perf_counter()
        pcm = own_soundtrack(Path(video), crops.source) if audio is None else load_audio(Path(audio))
        result = self.measure(crops, pcm, video=str(video), audio=None if audio is None else str(audio))
        result.timings_s.update({"track_embed": t1 - t0, "total": time.perf_counter() - t0})
        return self.apply_calibration(result)

    def close(self) -> None:
        self._mesh.close()


__all__ = [
    "SYNCNET_SETTING",
    "SyncNetScorer",
    "SyncNetUnavailable",
    "build_model",
    "face_crops",
    "load_weights",
    "offset_distances",
]  # fmt: skip
