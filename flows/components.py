"""The composition root: the swappable components a deployment runs with, from its typed settings.

| component | setting | real | other |
|---|---|---|---|
| engine | `AVATARFLOW_ENGINE` | `liveavatar`, `liveavatar-warm` (GPUs) | `cpu` (no GPU), `instant` (benchmarks); tests: `ScriptedEngine` |
| GPU gang lock | `AVATARFLOW_GANG_LOCK` | `prefect` (global concurrency limits) | `process` (this process only); tests: the same |
| lip-sync scorer | `AVATARFLOW_SCORER` | `auto`, `landmark`, `syncnet` (qc builds one per thread) | tests: `FixedScorer` |
| face detector | `AVATARFLOW_FACE_BACKEND` | MediaPipe, face-alignment (tasks) | tests: any `FaceDetector` |

Stages take them from `StageContext.components`; nothing else chooses an implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from avatarflow.settings import Settings
from db.stage import Components, GangLock, process_gang_lock
from inference.engine import GpuGang
from inference.factory import engine_for
from inference.gangs import gang_slot


def gang_lock_for(settings: Settings) -> GangLock:
    return process_gang_lock if settings.gang_lock == "process" else gang_slot


def components_for(settings: Settings, *, gang: GpuGang | None = None,
                   progress: Callable[[int, Any], None] | None = None) -> Components:
    """The components of this deployment; the scorer and the detector are built by their stages
    from the same settings (one per thread: they keep per-video state)."""
    return Components(engine_for=lambda g: engine_for(settings, g), gang=gang,
                      gang_lock=gang_lock_for(settings), progress=progress)
