"""The generation interface every engine implements, and the values that cross it.

An engine takes a `GenerationRequest` and a `GpuGang` and returns a `GenerationResult`: either a
verified video or a classified failure that says whether a retry can help. Engines never raise
for a failed generation; they raise only for programming errors.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


class FailureKind(StrEnum):
    OUT_OF_MEMORY = "out_of_memory"  # torch.OutOfMemoryError: CUDA out of memory
    CONFIG_REJECTED = "config_rejected"  # refused by our validation or by the engine itself
    NCCL_HANG = "nccl_hang"  # a pipeline rank died and the others blocked in NCCL
    MISSING_WEIGHTS = "missing_weights"  # checkpoint dir or LoRA file absent
    TIMEOUT = "timeout"  # our own wall-clock limit; the process group was killed
    NO_OUTPUT = "no_output"  # exited 0 without writing the file
    NO_AUDIO_STREAM = "no_audio_stream"  # the file has no audio (muxing swallowed an error)
    NO_VIDEO_STREAM = "no_video_stream"
    WRONG_DURATION = "wrong_duration"  # video length does not match the speech
    CRASHED = "crashed"  # any other non-zero exit
    WORKER_DIED = "worker_died"  # a warm worker vanished mid-job
    # The engine's installation cannot run the job (flash-attn missing, torch.compile broken on
    # this Python): the same job fails the same way until the environment or a setting changes.
    ENVIRONMENT = "environment"

    @property
    def retryable(self) -> bool:
        return self in RETRYABLE


# A retry helps when the cause is transient (memory pressure from a neighbour, a hung rank, a
# dead worker, a slow disk); it cannot help when the request or the installation is wrong.
RETRYABLE = frozenset({
    FailureKind.OUT_OF_MEMORY, FailureKind.NCCL_HANG, FailureKind.TIMEOUT, FailureKind.NO_OUTPUT,
    FailureKind.NO_AUDIO_STREAM, FailureKind.NO_VIDEO_STREAM, FailureKind.WRONG_DURATION,
    FailureKind.CRASHED, FailureKind.WORKER_DIED,
})


@dataclass(frozen=True)
class GpuGang:
    """GPUs that run one job together: one ≥ 80 GB GPU, or exactly 5 for the pipeline."""

    name: str  # e.g. "gang0" or "gang1-5"; "gang0.1", "gang0.2" for two workers packed on GPU 0
    devices: tuple[int, ...] = ()  # CUDA indices; empty for the CPU engine
    host: str = field(default_factory=socket.gethostname)  # part of the gang's identity (its slot)
    shares: int = 1  # how many workers share these GPUs ("0x2": two on GPU 0), each its own slot

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(str(d) for d in self.devices)


@dataclass(frozen=True)
class GenerationRequest:
    asset_key: str
    image: Path  # the 512×512 face crop
    audio: Path  # 16 kHz mono s16 WAV
    prompt: str
    preset: str
    seed: int
    output: Path  # where the verified MP4 must end up
    log_path: Path
    audio_seconds: float
    overrides: dict[str, Any] = field(default_factory=dict)  # expert settings, validated like presets
    # The speech's sample count at 16 kHz, which sets Live Avatar's clip count; None: from seconds.
    audio_samples: int | None = None

    @property
    def samples(self) -> int:
        return self.audio_samples if self.audio_samples is not None else round(self.audio_seconds * 16_000)


@dataclass(frozen=True)
class Progress:
    clips_done: int
    clips_planned: int
    message: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass
class Failure:
    kind: FailureKind
    message: str

    @property
    def retryable(self) -> bool:
        return self.kind.retryable


@dataclass
class GenerationMetrics:
    load_seconds: float | None = None  # model load (warm worker start) charged to this job
    first_clip_seconds: float | None = None
    total_seconds: float | None = None
    peak_memory_mb: dict[str, float] = field(default_factory=dict)  # by GPU index
    mean_utilisation: float | None = None
    exit_status: int | None = None
    clips_done: int = 0
    clips_planned: int = 0
    # Timings read off the engine's progress (None where the engine does not report them):
    first_step_seconds: float | None = None  # job start → first denoising step (load, prefill, compile)
    seconds_per_step: float | None = None  # median of one denoising step = one DiT forward
    seconds_per_clip: float | None = None  # mean time between clips finishing denoising
    tail_seconds: float | None = None  # last denoising step → verified file (deferred decode, mux)


@dataclass
class GenerationResult:
    engine: str
    config: dict[str, Any]  # the exact configuration that ran (command line, preset values)
    output: Path | None = None
    failure: Failure | None = None
    metrics: GenerationMetrics = field(default_factory=GenerationMetrics)

    @property
    def ok(self) -> bool:
        return self.failure is None and self.output is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output"] = str(self.output) if self.output else None
        if self.failure:
            data["failure"] = {"kind": self.failure.kind.value, "message": self.failure.message,
                               "retryable": self.failure.retryable}
        return data


class Engine(Protocol):
    """A video generator. An engine whose every job loads the model anew says so with a class
    attribute `loads_per_job = True` (read with getattr: most engines keep theirs loaded)."""

    name: str

    def generate(
        self, request: GenerationRequest, gang: GpuGang, progress: ProgressCallback | None = None
    ) -> GenerationResult: ...

    def close(self) -> None:
        """Release long-lived resources (a warm worker); a no-op for per-job engines."""


SEED_LIMIT = 2**31  # seeds are handed to torch / argparse ints: keep them in int32 range


def next_seed(asset_key: str, attempt: int) -> int:
    """The seed for generation `attempt` (1 = first) of an asset: stable, spread, int32-safe.

    Derived from a hash, so a re-run of the pipeline asks for exactly the same seeds, and two
    attempts (or two assets) never share one by construction of a counter.
    """
    if attempt < 1:
        raise ValueError(f"attempts are numbered from 1, not {attempt}")
    digest = hashlib.sha256(f"avatarflow-seed\x00{asset_key}\x00{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_LIMIT
