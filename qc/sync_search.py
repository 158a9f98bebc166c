"""The audio-video offset search: the correlation of the mouth with the mouth the speech predicts
(`qc.mouth_model`), per offset, over 5 s analysis windows, and the per-window values that show
where sync breaks down."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal as sps

from qc.decode import FPS
from qc.result import REPORT_WINDOW_S

MAX_OFFSET = 15  # frames searched each way (0.6 s): more than the 480 ms shifts QC must catch
WINDOW_FRAMES = 125  # 5 s analysis windows (the calibration is fitted on 5 s) ...
WINDOW_HOP = 62  # ... every 2.5 s
MIN_FRAMES = 50  # 2 s: less cannot hold enough syllables to find a correlation peak
SIGNAL_BAND_HZ = (0.3, 6.0)  # the syllable rhythm, where lip motion and speech move together
MIN_TRACKED_IN_WINDOW = 0.8  # analysis windows with fewer tracked frames are left out
MAX_GAP_FRAMES = 12  # face lost longer than this (0.5 s) is not interpolated over


def bandpass(x: np.ndarray, band: tuple[float, float] = SIGNAL_BAND_HZ) -> np.ndarray:
    """Zero-phase band-pass along axis 0 (no lag introduced), after removing the mean."""
    x = np.asarray(x, dtype=np.float64)
    sos = sps.butter(2, band, btype="bandpass", fs=FPS, output="sos")
    centred = x - x.mean(axis=0)
    if x.shape[0] <= 3 * (2 * len(sos) + 1):  # too short for filtfilt's edge padding
        return centred
    return sps.sosfiltfilt(sos, centred, axis=0)


def mean_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """The Pearson correlation of each column of x with the same column of y, averaged."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    den = np.sqrt((x * x).sum(axis=0) * (y * y).sum(axis=0))
    return float(np.mean(np.where(den > 1e-12, (x * y).sum(axis=0) / np.maximum(den, 1e-12), 0.0)))


def fill_gaps(x: np.ndarray, valid: np.ndarray, max_gap: int = MAX_GAP_FRAMES) -> np.ndarray:
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


def analysis_windows(start: int, stop: int, size: int = WINDOW_FRAMES, hop: int = WINDOW_HOP) -> list[tuple[int, int]]:
    """[a, b) frame windows of `size` (or the whole span when shorter) every `hop`, tail covered."""
    size = min(size, stop - start)
    starts = list(range(start, stop - size + 1, hop)) or [start]
    if starts[-1] + size < stop and stop - size > starts[-1]:
        starts.append(stop - size)  # cover the tail too
    return [(a, a + size) for a in starts]


@dataclass
class SyncCurve:
    offsets: np.ndarray
    curve: np.ndarray  # mean over analysis windows of the correlation per offset
    windows_used: int
    # Every analysis window [a, b) and its own curve (None: too few tracked frames to measure).
    rows: list[tuple[int, int, np.ndarray | None]]


def offset_curve(
    mouth: np.ndarray, predicted: np.ndarray, ok: np.ndarray, start: int, stop: int,
    max_offset: int = MAX_OFFSET,
) -> SyncCurve | None:  # fmt: skip
    """Mean correlation of the mouth with the predicted mouth per offset, over the analysis
    windows of frames [start, stop).

    `mouth` (n, k) and `predicted` (m, k) are on the same frame grid; predicted frame i + d is
    paired with video frame i at offset d (d > 0: audio late). At offsets where the audio runs
    out, only the overlapping frames count.
    """
    if stop - start < MIN_FRAMES:
        return None
    offsets = np.arange(-max_offset, max_offset + 1)
    rows: list[tuple[int, int, np.ndarray | None]] = []
    for a, b in analysis_windows(start, stop):
        if ok[a:b].mean() < MIN_TRACKED_IN_WINDOW:
            rows.append((a, b, None))
            continue
        row = np.zeros(offsets.size)
        for k, d in enumerate(offsets):
            lo, hi = max(a, -d, 0), min(b, predicted.shape[0] - d)
            keep = ok[lo:hi] if hi > lo else np.zeros(0, bool)
            if hi - lo < MIN_FRAMES or keep.sum() < MIN_FRAMES:
                row[k] = np.nan
                continue
            row[k] = mean_correlation(mouth[lo:hi][keep], predicted[lo + d : hi + d][keep])
        rows.append((a, b, row))
    measured = [row for _, _, row in rows if row is not None]
    if not measured:
        return None
    stacked = np.array(measured)
    with np.errstate(invalid="ignore"):
        curve = np.nanmean(stacked, axis=0) if np.isfinite(stacked).any() else None
    if curve is None or not np.isfinite(curve).any():
        return None
    return SyncCurve(offsets=offsets, curve=curve, windows_used=len(measured), rows=rows)


def window_correlations(
    mouth: np.ndarray, predicted: np.ndarray, ok: np.ndarray, start: int, stop: int, offset: int,
    window: int = int(REPORT_WINDOW_S * FPS),
) -> tuple[list[float], list[float | None]]:  # fmt: skip
    """Per `window`-frame piece: the mouth's correlation with the predicted mouth at `offset`.

    Low values mark where the mouth stops doing what the speech says it should.
    """
    starts: list[float] = []
    values: list[float | None] = []
    for w0 in range(start, stop, window):
        lo, hi = max(w0, -offset, 0), min(w0 + window, stop, predicted.shape[0] - offset)
        starts.append(w0 / FPS)
        keep = ok[lo:hi] if hi > lo else np.zeros(0, bool)
        if keep.sum() < window // 2:
            values.append(None)
            continue
        values.append(mean_correlation(mouth[lo:hi][keep], predicted[lo + offset : hi + offset][keep]))
    return starts, values
