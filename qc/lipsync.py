"""Lip-sync scoring: does the mouth in a video move with its speech? The scorers and which one runs.

Two scorers share one interface (`LipSyncScorer.score(video, audio=None) -> LipSyncResult`):

- `qc.landmark.LandmarkSyncScorer` (default, no model weights): mouth landmarks and mouth-patch
  darkness against speech-band energies, over audio-video offsets of up to +-15 frames;
- `qc.syncnet.SyncNetScorer`: SyncNet (LSE-C, LSE-D, offset) when its weights are configured.

Both report raw metrics (confidence, correlation or distance, best offset, per-window values,
the fraction of frames with a tracked face) and a `score` in [0, 1]: the probability that the
video is in sync, from the scorer's stored calibration (`qc.calibration`), for the whole video
and for each 5 s window. `score` is None, with `score_reason` saying why, when there is no
calibration or nothing could be measured. The offset sign is in `qc.result`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

from avatarflow.errors import ConfigurationError
from avatarflow.settings import Settings, get_settings
from qc.landmark import LandmarkSyncScorer
from qc.result import CalibratableScorer, LipSyncError, LipSyncResult, LipSyncScorer, SyncWindow
from qc.syncnet import SyncNetScorer


def default_scorer(settings: Settings | None = None, *, kind: str | None = None,
                   calibration_path: Path | None = None,
                   calibration: Literal[False] | None = None) -> LipSyncScorer:
    """The scorer the settings choose (`AVATARFLOW_SCORER`, default auto: SyncNet when
    `AVATARFLOW_SYNCNET_WEIGHTS` is set, else the weight-free landmark scorer).

    `kind` and `calibration_path` override the settings' scorer and calibration; `calibration=False`
    gives a scorer that measures raw metrics only (for calibrating). A set but wrong
    SyncNet setting (missing file, no torch) raises SyncNetUnavailable rather than quietly scoring
    with another scorer than the operator configured.
    """
    settings = settings if settings is not None else get_settings()
    kind = kind or settings.scorer
    calibration_path = calibration_path if calibration_path is not None else settings.lipsync_calibration
    if kind not in ("auto", "landmark", "syncnet"):
        raise ConfigurationError(f"unknown scorer '{kind}': use auto, landmark or syncnet")
    if kind == "syncnet" or (kind == "auto" and settings.syncnet_weights):
        return SyncNetScorer(settings.syncnet_weights, calibration=calibration, calibration_path=calibration_path)
    return LandmarkSyncScorer(calibration=calibration, calibration_path=calibration_path)


_scorers: dict[tuple[Any, ...], LipSyncScorer] = {}
_scorers_lock = threading.Lock()


def thread_scorer(settings: Settings | None = None) -> LipSyncScorer:
    """The settings' scorer for the calling thread, built on first use: its face tracker holds
    one video's state at a time, and building the face mesh graph costs more than scoring 1 s."""
    settings = settings if settings is not None else get_settings()
    key = (threading.get_ident(), settings.scorer, settings.syncnet_weights, settings.lipsync_calibration)
    with _scorers_lock:
        if key not in _scorers:
            _scorers[key] = default_scorer(settings)
        return _scorers[key]


__all__ = [
    "CalibratableScorer", "LandmarkSyncScorer", "LipSyncError", "LipSyncResult", "LipSyncScorer",
    "SyncWindow", "default_scorer", "thread_scorer",
]  # fmt: skip
