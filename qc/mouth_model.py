"""What the mouth should be doing, from the speech: a linear map fitted on real talking clips.

The landmark scorer compares a video's mouth with the mouth its soundtrack predicts. The
prediction is a ridge regression from the speech-band energies (`qc.speech.band_energies`,
band-passed to the syllable rhythm and standardised per video) of the frames within `lags` of a
frame to that frame's mouth signals (lip opening, inner lip opening, mouth darkness; each
band-passed and standardised per video). One fixed map, fitted once on real clips, replaces the
per-window canonical correlation of landmark-v1, whose weights were fitted to every 5 s window
anew and so found chance correlations in foreign speech; a fixed map cannot, and its lags learn
how far the mouth leads the sound. It is shipped inside the calibration file (`mouth_model`)
and is small: 7 bands x (2 lags + 1) x 3 signals numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qc.sync_search import bandpass, fill_gaps

SIGNALS = ("outer", "inner", "darkness")
LAGS = 8  # frames each side: 0.32 s of speech around a frame
ALPHA = 30.0  # ridge penalty per 1000 frames


def standardise(x: np.ndarray, ok: np.ndarray | None = None) -> np.ndarray:
    """Columns to zero mean and unit variance over the rows in `ok` (constant columns stay 0)."""
    rows = x if ok is None else x[ok]
    if not rows.size:
        return np.zeros_like(x)
    scale = rows.std(axis=0)
    scale[scale < 1e-9] = 1.0
    return (x - rows.mean(axis=0)) / scale


def mouth_signals(track: Any, signals: Sequence[str] = SIGNALS) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) band-passed, standardised mouth signals of a `qc.facetrack.MouthTrack`, and the
    frames where all were measured (short gaps bridged; long ones left out)."""
    raw = np.column_stack([track.signal(name) for name in signals])
    filled = np.column_stack([fill_gaps(col, np.isfinite(col)) for col in raw.T])
    ok = np.isfinite(filled).all(axis=1)
    if ok.any():
        filled[~ok] = np.nanmean(filled[ok], axis=0)
    else:
        filled[:] = 0.0
    return standardise(bandpass(filled), ok), ok


def design(bands: np.ndarray, lags: int) -> np.ndarray:
    """(n, q * (2 lags + 1)): each frame's standardised, band-passed speech bands and its neighbours'."""
    b = standardise(bandpass(bands))
    n = b.shape[0]
    padded = np.pad(b, ((lags, lags), (0, 0)))
    return np.hstack([padded[lags + lag : lags + lag + n] for lag in range(-lags, lags + 1)])


@dataclass
class MouthModel:
    """Ridge weights from a frame's speech context to its mouth signals, and what they were fitted on."""

    signals: list[str]
    lags: int
    alpha: float
    weights: list[list[float]]  # (bands x (2 lags + 1), signals)
    clips: list[str] = field(default_factory=list)
    frames: int = 0

    def predict(self, bands: np.ndarray) -> np.ndarray:
        """(n, k) predicted mouth signals for (n, q) raw log speech-band energies."""
        return design(bands, self.lags) @ np.asarray(self.weights)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MouthModel:
        return cls(signals=list(data["signals"]), lags=int(data["lags"]), alpha=float(data["alpha"]),
                   weights=[list(map(float, row)) for row in data["weights"]],
                   clips=list(data.get("clips") or []), frames=int(data.get("frames") or 0))  # fmt: skip


def fit_mouth_model(
    examples: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    *, signals: Sequence[str] = SIGNALS, lags: int = LAGS, alpha: float = ALPHA,
) -> MouthModel:  # fmt: skip
    """Fit on in-sync (name, mouth (n, k), ok (n,), bands (n, q)) examples: `mouth_signals` of a
    clip's track and the raw `band_energies` of its own soundtrack on the same frames."""
    xs, ys = [], []
    for _, mouth, ok, bands in examples:
        n = min(mouth.shape[0], bands.shape[0])
        x = design(bands[:n], lags)
        xs.append(x[ok[:n]])
        ys.append(mouth[:n][ok[:n]])
    x, y = np.vstack(xs), np.vstack(ys)
    penalty = alpha * x.shape[0] / 1000.0
    weights = np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ y)
    return MouthModel(signals=list(signals), lags=lags, alpha=alpha, weights=weights.tolist(),
                      clips=[name for name, *_ in examples], frames=int(x.shape[0]))  # fmt: skip
