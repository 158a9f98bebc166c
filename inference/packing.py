"""Packing a big GPU with several gang workers ("0x2"): which job each may start so that all fit.

A 141 GB H200 running one preview job is mostly idle (31 % mean utilisation: the T5 on the CPU,
the deferred decode), and one preview peaks at ≈ 48 GB; two warm workers on it made 1.46× the
previews per hour of one (measured, benchmarks/gpu/results/h200-2026-12-01-c).

The rule, checked by a worker each time it claims a job (`GpuAdmission`, under a lock of the
GPU on its host, so two workers of one GPU never decide at once): the planned peak of the job
(`inference.planner`, within 1–2 % of the measured H200 peaks) plus what each live sibling
holds — the planned peak of its own job, or its resident weights when idle — must stay within
`PACKED_USABLE` of the GPU's memory. So on an H200 in bf16 two workers run two previews or a
preview and a standard at once, never two standards; a worker whose job cannot fit even beside
idle siblings refuses to start.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from avatarflow.errors import ConfigurationError
from inference.engine import GpuGang
from inference.gpus import GpuInfo
from inference.planner import (
    CUDA_CONTEXT_GB,
    PORTRAIT,
    VAE_WEIGHTS_GB,
    Precision,
    dit_gb,
    single_gpu_memory,
)
from inference.presets import PRESETS, Preset

# The packed jobs' planned peaks must add up to at most this share of the GPU. Two preview jobs
# at once on one H200 peaked 1.1 % above twice one job's planned peak (97.1 against 2 × 48.0 GB,
# benchmarks/gpu/results/h200-2026-12-01-c), and 5.8 % above it in an earlier drill (101.6 GB);
# 10 % keeps room for that, the planner's 1–2 % on one job, and fragmentation.
PACKED_USABLE = 0.90


def resident_gb(precision: Precision) -> float:
    """What an idle warm worker keeps on its GPU: the DiT, the VAE, its CUDA context.

    Measured: two idle bf16 workers held 71.2 GB of an H200 (35.6 GB each; this gives 35.1)."""
    return dit_gb(precision) + VAE_WEIGHTS_GB + CUDA_CONTEXT_GB


@dataclass(frozen=True)
class PackedGpu:
    """One GPU shared by `gang.shares` workers: its memory and the planned peak of each preset."""

    gang: GpuGang
    gpu: GpuInfo
    usable_gb: float
    idle_gb: float  # one idle sibling's resident weights
    peaks_gb: dict[str, float]  # preset → planned peak of one job

    @property
    def presets(self) -> tuple[str, ...]:
        """The presets this worker can start at all: beside siblings that are idle."""
        others = (self.gang.shares - 1) * self.idle_gb
        return tuple(p for p, gb in self.peaks_gb.items() if gb + others <= self.usable_gb)

    def admissible(self, siblings_gb: Sequence[float]) -> tuple[str, ...]:
        """The presets that fit now, beside siblings holding `siblings_gb` (idle or busy)."""
        # A sibling not yet registered still counts as idle: it may be loading its weights.
        held = sum(siblings_gb) + max(0, self.gang.shares - 1 - len(siblings_gb)) * self.idle_gb
        return tuple(p for p, gb in self.peaks_gb.items() if gb + held <= self.usable_gb)

    def describe(self) -> str:
        taken = ", ".join(f"{p} ({self.peaks_gb[p]:.1f} GB)" for p in self.presets)
        left = ", ".join(f"{p} ({g:.1f} GB)" for p, g in self.peaks_gb.items() if p not in self.presets)
        return (f"{self.gang.name}: 1 of {self.gang.shares} workers on GPU {self.gpu.index} ({self.gpu.name}, "
                f"{self.gpu.memory_total_gb:.1f} GB, {self.usable_gb:.1f} GB usable); a job starts when its planned "
                f"peak and what the others hold (their jobs' peaks, {self.idle_gb:.1f} GB each when idle) fit; "
                f"takes {taken}" + (f"; never {left} (for an unpacked gang)" if left else ""))


def packed_gpu(gang: GpuGang, gpu: GpuInfo, precision: Precision,
               presets: Sequence[Preset] | None = None) -> PackedGpu:
    peaks = {p.name: single_gpu_memory(p.size, precision, PORTRAIT).total_gb
             for p in (presets if presets is not None else PRESETS.values())}
    return PackedGpu(gang, gpu, gpu.memory_total_gb * PACKED_USABLE, resident_gb(precision), peaks)


def check_packing(gang: GpuGang, gpus: Sequence[GpuInfo], precision: Precision) -> PackedGpu | None:
    """None for an unpacked gang; the packed GPU of this worker, or why it cannot start."""
    if gang.shares == 1:
        return None
    [device] = gang.devices
    gpu = next((g for g in gpus if g.index == device), None)
    if gpu is None:
        raise ConfigurationError(
            f"{gang.name}: cannot check that {gang.shares} workers fit GPU {device}: this host reports no "
            f"GPU {device} ({len(gpus)} GPU(s) found). Packing needs the GPU's memory; run on the GPU host")
    packed = packed_gpu(gang, gpu, precision)
    if not packed.presets:
        smallest = min(packed.peaks_gb.values())
        most = 1 + int((packed.usable_gb - smallest) // packed.idle_gb)
        fit = (f"At most {most} fit (AVATARFLOW_GANGS=\"{device}x{most}\")" if most > 1
               else f"One worker only: do not pack GPU {device} (AVATARFLOW_GANGS=\"{device}\")")
        raise ConfigurationError(
            f"{gang.name}: {gang.shares} workers do not fit GPU {device} ({gpu.name}, "
            f"{gpu.memory_total_gb:.1f} GB, {packed.usable_gb:.1f} GB usable): the smallest preset needs "
            f"{smallest:.1f} GB in {precision} beside {gang.shares - 1} idle worker(s) holding "
            f"{packed.idle_gb:.1f} GB each. {fit}")
    return packed


@contextmanager
def gpu_lock(gang: GpuGang, folder: Path | None = None) -> Iterator[None]:
    """Exclusive among the workers of one GPU of this host (they are all on it): an flock."""
    folder = folder or Path(tempfile.gettempdir())
    path = folder / f"avatarflow-gpu-{gang.host}-{'-'.join(map(str, gang.devices))}.lock"
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield
