"""The hook through which an engine samples its gang's GPUs while a job runs (peak memory, utilisation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from inference.engine import GpuGang
from inference.gpus import NvmlSampler


class SampleSummaryLike(Protocol):
    peak_memory_mb: dict[str, float]  # by GPU index
    mean_utilisation: float | None  # percent


class GpuSampler(Protocol):
    """Samples the gang's GPUs while a job runs (inference.gpus.NvmlSampler implements it)."""

    def start(self) -> object: ...

    def stop(self) -> SampleSummaryLike: ...


@dataclass
class NoSamples:
    peak_memory_mb: dict[str, float] = field(default_factory=dict)
    mean_utilisation: float | None = None


class NullSampler:
    """Records nothing (tests, hosts without GPUs)."""

    def start(self) -> NullSampler:
        return self

    def stop(self) -> NoSamples:
        return NoSamples()


SamplerFactory = Callable[[GpuGang], GpuSampler]


def null_sampler_factory(gang: GpuGang) -> GpuSampler:
    return NullSampler()


def nvml_sampler_factory(gang: GpuGang) -> GpuSampler:
    """The NVML sampler for the gang's GPUs; it records nothing where NVML is unavailable."""
    return NvmlSampler(gang.devices)
