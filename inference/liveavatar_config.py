"""Where Live Avatar lives on this host and how its jobs are launched (AVATARFLOW_LIVEAVATAR_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatarflow.errors import ConfigurationError

# Names of the settings an operator fixes when a check fails (see the report to the settings owner).
SETTING_DIR = "AVATARFLOW_LIVEAVATAR_DIR"
SETTING_TORCHRUN = "AVATARFLOW_LIVEAVATAR_TORCHRUN"
SETTING_CKPT_DIR = "AVATARFLOW_LIVEAVATAR_CKPT_DIR"
SETTING_LORA = "AVATARFLOW_LIVEAVATAR_LORA"
SETTING_PYTHON = "AVATARFLOW_LIVEAVATAR_PYTHON"
SETTING_COMPILE = "AVATARFLOW_LIVEAVATAR_COMPILE"
# Where to look when a weight file is missing or cannot be loaded.
CHECK_WEIGHT_SETTINGS = f"check {SETTING_CKPT_DIR} and {SETTING_LORA}"


@dataclass(frozen=True)
class LiveAvatarConfig:
    """Where Live Avatar lives on this host and how its jobs are launched."""

    checkout: Path  # the Live Avatar git checkout (cwd of every launch)
    ckpt_dir: Path  # Wan2.2-S2V-14B
    lora_path: Path  # liveavatar.safetensors; must be absolute, or the script downloads it
    torchrun: Path | None = None  # default: <checkout>/.venv/bin/torchrun
    python: Path | None = None  # Live Avatar's interpreter; default: the python beside torchrun
    fp8: bool = False  # needs compute capability >= 8.9 (checked by the GPU planner)
    offload: bool = True  # single-GPU mode only; the pipeline keeps its weights resident
    # ENABLE_COMPILE, always passed explicitly (Live Avatar compiles when it is unset): compiling
    # happens again in every new process, so it pays off only for a long-lived warm worker.
    enable_compile: bool = False
    # Refuse compiling where it is known to fail (Live Avatar's environment on Python >= 3.12);
    # the GPU acceptance run turns this off to watch the real program fail.
    refuse_broken_compile: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()  # appended verbatim, for flags a new checkout needs
    timeout_floor_s: float = 1800.0  # covers loading 14 B parameters (and compiling)
    timeout_per_video_second_s: float = 60.0  # generation budget per second of planned video
    kill_grace_s: float = 20.0  # between SIGTERM and SIGKILL of the process group
    master_port_range: tuple[int, int] = (29500, 29899)
    port_lock_dir: Path | None = None  # default: <tmp>/avatarflow-ports (shared by all workers)

    @property
    def torchrun_path(self) -> Path:
        return self.torchrun if self.torchrun is not None else self.checkout / ".venv" / "bin" / "torchrun"

    @property
    def python_path(self) -> Path:
        if self.python is not None:
            return self.python
        beside = self.torchrun_path.parent
        return next((beside / name for name in ("python", "python3") if (beside / name).exists()),
                    beside / "python")

    def timeout_for(self, video_seconds: float) -> float:
        """Wall-clock limit for one job making `video_seconds` of video."""
        return max(self.timeout_floor_s, video_seconds * self.timeout_per_video_second_s)


def config_from_settings(settings: Any) -> LiveAvatarConfig:
    """The engine configuration from avatarflow settings (`liveavatar_*` fields, AVATARFLOW_LIVEAVATAR_*)."""
    def value(name: str, default: Any = None) -> Any:
        return getattr(settings, name, default)

    required = ("liveavatar_dir", "liveavatar_ckpt_dir", "liveavatar_lora")
    missing = [f"AVATARFLOW_{name.upper()}" for name in required if not value(name)]
    if missing:
        raise ConfigurationError(f"the Live Avatar engine needs {', '.join(missing)} to be set")
    torchrun, python = value("liveavatar_torchrun"), value("liveavatar_python")
    # Absolute (not resolved: a venv's python is a symlink that must stay one), since every
    # launch runs with the checkout as its working directory.
    return LiveAvatarConfig(
        checkout=Path(value("liveavatar_dir")).expanduser().absolute(),
        ckpt_dir=Path(value("liveavatar_ckpt_dir")).expanduser().absolute(),
        lora_path=Path(value("liveavatar_lora")).expanduser(),
        torchrun=Path(torchrun).expanduser().absolute() if torchrun else None,
        python=Path(python).expanduser().absolute() if python else None,
        fp8=bool(value("liveavatar_fp8", False)),
        offload=bool(value("liveavatar_offload", True)),
        enable_compile=bool(value("liveavatar_compile", False)),
        timeout_floor_s=float(value("liveavatar_timeout_floor_s", 1800.0)),
        timeout_per_video_second_s=float(value("liveavatar_timeout_per_video_second_s", 60.0)),
        master_port_range=(int(value("liveavatar_master_port_first", 29500)),
                           int(value("liveavatar_master_port_last", 29899))),
    )
