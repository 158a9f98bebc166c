"""GPU memory planner: will a preset run on these GPUs, in which topology, and how fast?

The memory model adds up what each GPU holds at its peak, from the parameter counts and the
KV-cache formula in DESIGN.md ("The real generator"), as `inference.liveavatar_facts` holds them
with the measured terms. Every other term is a named constant below labelled "assumption". It is
calibrated at 704*384 (the size of DESIGN.md's KV-cache figure) against the two published figures:

    one GPU, bf16, offload on ........ ≈ 80 GB      (DESIGN.md; "needs a single 80 GB GPU")
    5-GPU pipeline rank, fp8 ......... ≈ 45 GB      (DESIGN.md)

Units: GB = 10⁹ bytes, as in those figures (the KV formula gives 10.38·10⁹ bytes = "≈ 10.4 GB").
Card capacities are converted from the MiB that NVML/nvidia-smi report (an "80 GB" H100 reports
81559 MiB = 85.5 GB).

The FSDP sharded mode is modelled only for comparison: it is not a topology avatarflow launches,
but it is what people try with 5 × 24 GB cards, and the model shows why it cannot work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from inference.gpus import GpuInfo, known_model
from inference.liveavatar_facts import (
    CACHES_ONE_GPU,
    CACHES_PIPELINE_RANK,
    CONDITION_CACHE_GB,
    DIT_BF16_GB,
    DIT_FP8_GB,
    FP8_CONVERSION_GB,
    FPS,
    FSDP_UNSHARD_GB,
    KV_BYTES,
    KV_HEAD_DIM,
    KV_HEADS,
    KV_LATENT_FRAMES,
    KV_LAYERS,
    KV_REFERENCE_SIZE,
    LATENT_PATCH_PX,
    LORA_GB,
    MAX_AREA,
    PIPELINE_DIT_GPUS,
    PIPELINE_GPUS,
    PUBLISHED_PIPELINE_FPS,
    PUBLISHED_PIPELINE_RANK_FP8_GB,
    PUBLISHED_PIPELINE_SOURCE,
    SINGLE_GPU_MIN_GB,
    T5_GB,
)
from inference.output_rules import output_size, parse_size
from inference.presets import PRESETS, Preset
from inference.validation import CONSUMER_24GB_MAX_MB, check_gpus, errors_in

Precision = Literal["bf16", "fp8"]
Image = tuple[int, int] | None  # (width, height) of the portrait; None: a frame of the size itself
# avatarflow's face crop: every portrait reaches the engine as 512×512 (tasks/face.py).
PORTRAIT: tuple[int, int] = (512, 512)
Topology = Literal["single", "pipeline", "fsdp"]

# The published and measured terms (parameter counts, the KV-cache formula, the LoRA, the fp8
# conversion, FSDP's unshard peak) are in inference.liveavatar_facts. The size of the published
# KV figure is the calibration point.
REFERENCE_SIZE = KV_REFERENCE_SIZE

# --- other terms: assumptions ----------------------------------------------------------------
# The Wan2.1 VAE checkpoint (Wan2.1_VAE.pth, used by Wan2.2-S2V) is ≈ 0.5 GB; assumption: it
# stays on every GPU that loaded the pipeline.
VAE_WEIGHTS_GB = 0.5
# Assumption: CUDA context, cuBLAS and attention workspaces as nvidia-smi sees them, typically
# 0.5–1 GB per process on Ampere/Hopper.
CUDA_CONTEXT_GB = 0.6
# Assumption: the live activations of one DiT block over the 12·N tokens of a clip at 704*384
# (hidden 5120, FFN 13824: a few tensors of 0.13–0.35 GB each), scaled with N for other sizes.
ACTIVATIONS_GB_AT_REFERENCE = 1.5
# Assumption: NCCL buffers for a pipeline rank's peer connections.
NCCL_BUFFERS_GB = 0.5
# Assumption (order of magnitude only): the VAE rank's decode workspace at 704*384, scaled
# with N. It never sets the pipeline's peak; the DiT ranks do.
VAE_DECODE_WORKSPACE_GB_AT_REFERENCE = 4.0

GB = 1e9


def tokens_per_frame(size: str, image: Image = None) -> int:
    """N = (H/16)(W/16): latent tokens per latent frame (VAE ÷8 spatially, patch 2×2).

    H and W are those of the video Live Avatar makes: from the portrait's aspect ratio within the
    size's area (`image`, e.g. avatarflow's 512×512 crop), or the size itself when `image` is None.
    """
    parsed = parse_size(size)
    if parsed is None:
        raise ValueError(f"size must be WIDTH*HEIGHT, got {size!r}")
    width, height = output_size(*image, size) if image is not None else parsed
    return (height // LATENT_PATCH_PX) * (width // LATENT_PATCH_PX)


def kv_cache_bytes(size: str, image: Image = None) -> int:
    """One KV cache: 40 layers × 2 (K and V) × 12·N tokens × 40 heads × 128 × 2 bytes."""
    n = tokens_per_frame(size, image)
    return KV_LAYERS * 2 * KV_LATENT_FRAMES * n * KV_HEADS * KV_HEAD_DIM * KV_BYTES


def kv_cache_gb(size: str, image: Image = None) -> float:
    return kv_cache_bytes(size, image) / GB


def _scaled(at_reference: float, size: str, image: Image = None) -> float:
    return at_reference * tokens_per_frame(size, image) / tokens_per_frame(REFERENCE_SIZE)


def dit_gb(precision: Precision) -> float:
    return DIT_FP8_GB if precision == "fp8" else DIT_BF16_GB


@dataclass(frozen=True)
class MemoryEstimate:
    """What one GPU holds at its peak (GB): the denoising phase term by term, and the totals of
    other phases that can set the peak instead (loading the bf16 DiT before fp8 conversion)."""

    role: str  # "one GPU", "DiT rank", "VAE rank", "FSDP rank"
    parts: dict[str, float]
    phases: dict[str, float] = field(default_factory=dict)  # other phase → its total

    @property
    def denoising_gb(self) -> float:
        return sum(self.parts.values())

    @property
    def total_gb(self) -> float:
        return max(self.denoising_gb, *self.phases.values()) if self.phases else self.denoising_gb

    @property
    def peak_phase(self) -> str:
        """Which phase sets the peak: "denoising" or the name of another phase."""
        if not self.phases or self.denoising_gb >= max(self.phases.values()):
            return "denoising"
        return max(self.phases, key=lambda name: self.phases[name])


def loading_gb(precision: Precision) -> float:
    """The GPU while the model loads: the DiT arrives in bf16 (from_pretrained onto the GPU), the
    DMD LoRA is merged into it, and only then are its linears converted to fp8."""
    return (DIT_BF16_GB + LORA_GB + CUDA_CONTEXT_GB
            + (FP8_CONVERSION_GB if precision == "fp8" else 0.0))


def single_gpu_memory(size: str, precision: Precision = "bf16", image: Image = None) -> MemoryEstimate:
    """One GPU, offload on: the T5 runs on the CPU; the DiT and all four caches stay on the GPU.

    Assumption: the decode phase does not raise the peak (with offload the DiT leaves the GPU
    before the final decode; online decode works between blocks when activations are free).
    """
    return MemoryEstimate("one GPU", {
        f"DiT weights ({precision})": dit_gb(precision),
        f"KV caches ({CACHES_ONE_GPU} × {kv_cache_gb(size, image):.1f})":
            CACHES_ONE_GPU * kv_cache_gb(size, image),
        "condition cache": CONDITION_CACHE_GB,
        "VAE weights": VAE_WEIGHTS_GB,
        "activations": _scaled(ACTIVATIONS_GB_AT_REFERENCE, size, image),
        "CUDA context": CUDA_CONTEXT_GB,
    }, {"loading (bf16 DiT + LoRA merge" + (", fp8 conversion)" if precision == "fp8" else ")"):
        loading_gb(precision)})


def pipeline_rank_memory(size: str, precision: Precision = "fp8", image: Image = None) -> MemoryEstimate:
    """A DiT rank of the 5-GPU pipeline: its own DiT and T5, one KV cache, the condition cache."""
    return MemoryEstimate("DiT rank", {
        f"DiT weights ({precision})": dit_gb(precision),
        "KV cache (1)": CACHES_PIPELINE_RANK * kv_cache_gb(size, image),
        "condition cache": CONDITION_CACHE_GB,
        "T5 encoder": T5_GB,
        "VAE weights": VAE_WEIGHTS_GB,
        "activations": _scaled(ACTIVATIONS_GB_AT_REFERENCE, size, image),
        "CUDA context": CUDA_CONTEXT_GB,
        "NCCL buffers": NCCL_BUFFERS_GB,
    }, {"loading (bf16 DiT + LoRA merge" + (", fp8 conversion)" if precision == "fp8" else ")"):
        loading_gb(precision) + NCCL_BUFFERS_GB})


def vae_rank_memory(size: str, image: Image = None) -> MemoryEstimate:
    """The decoding rank: VAE and (assumption: same start-up as every rank) its own T5."""
    return MemoryEstimate("VAE rank", {
        "T5 encoder": T5_GB,
        "VAE weights": VAE_WEIGHTS_GB,
        "decode workspace": _scaled(VAE_DECODE_WORKSPACE_GB_AT_REFERENCE, size, image),
        "CUDA context": CUDA_CONTEXT_GB,
        "NCCL buffers": NCCL_BUFFERS_GB,
    })


def fsdp_rank_memory(size: str, n_gpus: int, precision: Precision = "bf16",
                     image: Image = None) -> MemoryEstimate:
    """For comparison: the DiT sharded over n GPUs, plus the unshard peak of a forward pass.

    Favourable assumptions, so that "does not fit" is a safe conclusion: the caches are split
    over the GPUs as with sequence parallelism; only the T5 is replicated (as the third-party
    ≈ 21.48 GB loaded per 4090 implies: 34/5 + 11 + overheads ≈ 19.4 here).
    """
    caches = CACHES_ONE_GPU * kv_cache_gb(size, image) + CONDITION_CACHE_GB
    return MemoryEstimate("FSDP rank", {
        f"DiT shard ({precision}, 1/{n_gpus})": dit_gb(precision) / n_gpus,
        "unshard peak": FSDP_UNSHARD_GB,
        "T5 encoder": T5_GB,
        f"KV + condition caches (1/{n_gpus})": caches / n_gpus,
        "VAE weights": VAE_WEIGHTS_GB,
        "activations": _scaled(ACTIVATIONS_GB_AT_REFERENCE, size, image),
        "CUDA context": CUDA_CONTEXT_GB,
        "NCCL buffers": NCCL_BUFFERS_GB,
    })


def topology_memory(topology: Topology, size: str, precision: Precision,
                    n_gpus: int = PIPELINE_GPUS, image: Image = None) -> list[MemoryEstimate]:
    """The estimates of every distinct role in a topology, the largest first."""
    if topology == "single":
        estimates = [single_gpu_memory(size, precision, image)]
    elif topology == "pipeline":
        estimates = [pipeline_rank_memory(size, precision, image), vae_rank_memory(size, image)]
    else:
        estimates = [fsdp_rank_memory(size, n_gpus, precision, image)]
    return sorted(estimates, key=lambda e: e.total_gb, reverse=True)


# --- throughput ------------------------------------------------------------------------------
Basis = Literal["published", "derived", "assumption"]


@dataclass(frozen=True)
class ThroughputSource:
    key: str
    fps: float | None  # None for a rule rather than a rate
    basis: Basis
    source: str


# The only published speed (PUBLISHED_PIPELINE_FPS). Assumption: its resolution is the largest
# supported size, 720*400.
PUBLISHED_PIPELINE = ThroughputSource("pipeline-H800", PUBLISHED_PIPELINE_FPS, "published",
                                      PUBLISHED_PIPELINE_SOURCE)
# No published single-GPU figure exists. Assumption: one GPU runs in sequence the 4 steps the
# pipeline runs on 4 GPUs and decodes as well, so at best a quarter of the pipeline's rate;
# offload transfers make it slower still, so this is an upper bound.
SINGLE_GPU_FRACTION = 1 / PIPELINE_DIT_GPUS
# Other GPUs: assumption that speed scales with datasheet dense BF16 tensor TFLOPS relative to the
# H800 (989, the same SMs as the H100), and with pixel area relative to 720*400. fp8 is assumed
# to give no speed-up (conservative).
REFERENCE_TFLOPS = 989.0
REFERENCE_AREA = MAX_AREA
THROUGHPUT_SOURCES = (
    PUBLISHED_PIPELINE,
    ThroughputSource("single-GPU", PUBLISHED_PIPELINE_FPS * SINGLE_GPU_FRACTION, "assumption",
                     "assumption: ¼ of the published pipeline rate on the same GPU (4 steps in "
                     "sequence on one GPU); an upper bound"),
    ThroughputSource("scaling", None, "assumption",
                     "assumption: other GPUs scale by datasheet dense BF16 TFLOPS (H800 = 989) and "
                     "smaller sizes by pixel area (720*400 = 1)"),
)


@dataclass(frozen=True)
class SpeedEstimate:
    fps: float
    basis: Basis
    note: str

    @property
    def minutes_per_video_minute(self) -> float:
        return 60 * FPS / self.fps / 60


def _tflops(gpu: GpuInfo) -> float | None:
    model = known_model(gpu.name)
    return model.bf16_dense_tflops if model else None


def estimate_speed(topology: Topology, gpus: Sequence[GpuInfo], size: str) -> SpeedEstimate | None:
    """Frames per second for a topology, or None where nothing published or assumed applies."""
    if topology == "fsdp" or not gpus:
        return None
    rates = [_tflops(g) for g in gpus]
    if any(r is None for r in rates):
        return None
    ratio = min(r for r in rates if r is not None) / REFERENCE_TFLOPS
    parsed = parse_size(size)
    assert parsed is not None
    area_ratio = REFERENCE_AREA / (parsed[0] * parsed[1])
    base = PUBLISHED_PIPELINE.fps
    if topology == "single":
        base *= SINGLE_GPU_FRACTION
    fps = base * ratio * area_ratio
    is_reference_gpu = all("H800" in g.name.upper() for g in gpus)
    if topology == "pipeline" and is_reference_gpu and area_ratio == 1:
        return SpeedEstimate(fps, "published", PUBLISHED_PIPELINE.source)
    if topology == "pipeline":
        return SpeedEstimate(fps, "derived",
                             "published 20 FPS on 5×H800, scaled by TFLOPS and area (assumption)")
    return SpeedEstimate(fps, "assumption", "¼ of the published pipeline rate, scaled by TFLOPS "
                                            "and area; offload makes it slower (upper bound)")


# --- the plan --------------------------------------------------------------------------------

TOPOLOGY_LABELS = {
    "single": "1 GPU, offload",
    "pipeline": "5 GPUs: 4 DiT + 1 VAE",
    "fsdp": "FSDP (comparison only)",
}


@dataclass
class PlanRow:
    preset: str
    size: str
    topology: Topology
    precision: Precision
    gpus: list[GpuInfo]  # the GPUs this row would use
    fits: bool
    peak_gb: float  # predicted peak of the fullest GPU
    capacity_gb: float | None  # the smallest used GPU's total memory; None if too few GPUs
    memory: list[MemoryEstimate]
    reason: str
    remedies: list[str] = field(default_factory=list)
    speed: SpeedEstimate | None = None

    @property
    def topology_label(self) -> str:
        if self.topology == "fsdp":
            return f"FSDP over {len(self.gpus)} (comparison only)"
        return TOPOLOGY_LABELS[self.topology]


def _gb(value: float) -> str:
    return f"{value:.1f} GB"


def _largest(gpus: Sequence[GpuInfo], count: int) -> list[GpuInfo]:
    return sorted(gpus, key=lambda g: (-g.memory_total_mb, g.index))[:count]


def _all_support_fp8(gpus: Sequence[GpuInfo]) -> bool | None:
    flags = [g.supports_fp8 for g in gpus]
    if any(f is False for f in flags):
        return False
    if any(f is None for f in flags):
        return None
    return True


def plan_row(preset: Preset, topology: Topology, precision: Precision,
             gpus: Sequence[GpuInfo], with_remedies: bool = True, image: Image = PORTRAIT) -> PlanRow:
    """Whether `preset` fits `topology` in `precision` on (a selection of) `gpus`, and why.

    `image` is the portrait's size (avatarflow's face crop by default): it sets the video's size.
    """
    needed = {"single": 1, "pipeline": PIPELINE_GPUS, "fsdp": len(gpus)}[topology]
    used = _largest(gpus, needed)
    enough = len(used) == needed and needed > 0
    memory = topology_memory(topology, preset.size, precision, n_gpus=max(len(used), 1), image=image)
    peak = memory[0].total_gb
    capacity = min(g.memory_total_gb for g in used) if used and enough else None
    memory_fits = capacity is not None and peak <= capacity
    fp8_ok = _all_support_fp8(used) if used else None

    problems: list[str] = []
    if topology == "fsdp":
        problems.append("not a topology Live Avatar runs (one ≥ 80 GB GPU or the 5-GPU pipeline); "
                        "shown to compare")
    elif not enough:
        problems.append(f"needs {needed} GPU(s); {len(gpus)} given")
    if capacity is not None and not memory_fits:
        where = "on the GPU" if topology == "single" else f"per {memory[0].role}"
        problems.append(f"needs {_gb(peak)} {where}, more than the {_gb(capacity)} a GPU has")
    if topology != "fsdp" and enough:
        refusals = errors_in(check_gpus(used, fp8=precision == "fp8"))
        # When memory already rules the row out, only the fp8 rule adds anything; otherwise the
        # published rules (≥ 80 GB for one GPU, ≈ 45 GB per rank) are the reason.
        problems += [p.reason for p in refusals if memory_fits or p.setting == "fp8"]
    if precision == "fp8" and fp8_ok is None and used:
        problems.append("fp8 needs compute capability ≥ 8.9, unknown for these GPUs")
    fits = enough and memory_fits and not problems

    if fits:
        reason = f"fits: {_gb(peak)} of {_gb(capacity or 0)} ({peak / (capacity or 1):.0%})"
        free = min((g.memory_free_gb for g in used if g.memory_free_gb is not None), default=None)
        if free is not None and free < peak:
            reason += f"; but only {_gb(free)} free now (other processes hold the rest)"
    else:
        reason = "; ".join(problems) or "does not fit"
    row = PlanRow(preset=preset.name, size=preset.size, topology=topology, precision=precision,
                  gpus=used, fits=fits, peak_gb=peak, capacity_gb=capacity, memory=memory,
                  reason=reason)
    if not fits and with_remedies:
        row.remedies = _remedies(row, gpus)
    if fits:
        row.speed = estimate_speed(topology, used, preset.size)
    return row


def _remedies(row: PlanRow, gpus: Sequence[GpuInfo]) -> list[str]:
    """What would make this row fit: fp8, bf16, a smaller preset, 80 GB cards, 5 GPUs.

    A change is offered only if the planner says the changed row fits on the same GPUs.
    """
    if row.topology == "fsdp":
        return []  # not a topology to make fit: the reason says what to run instead
    preset = PRESETS.get(row.preset) or Preset(row.preset, row.size, None, False, "")
    remedies: list[str] = []
    other: Precision = "fp8" if row.precision == "bf16" else "bf16"
    switched = plan_row(preset, row.topology, other, gpus, with_remedies=False)
    if switched.fits:
        flag = "--fp8" if other == "fp8" else "drop --fp8"
        remedies.append(f"{other} ({flag}): {_gb(switched.peak_gb)}")
    if row.precision == "fp8" and _all_support_fp8(row.gpus) is False:
        remedies.append("GPUs with cc ≥ 8.9 for fp8 (L40S, RTX 4090, H100, H200)")
    smaller = [p for p in PRESETS.values() if tokens_per_frame(p.size) < tokens_per_frame(row.size)]
    for candidate in sorted(smaller, key=lambda p: -tokens_per_frame(p.size)):
        probe = plan_row(candidate, row.topology, row.precision, gpus, with_remedies=False)
        if probe.fits:
            remedies.append(f"a smaller preset: {candidate.name} ({candidate.size}): "
                            f"{_gb(probe.peak_gb)}")
            break
    if row.topology == "single":
        if row.capacity_gb is None or row.capacity_gb < SINGLE_GPU_MIN_GB:
            remedies.append("one 80 GB card (H100, H200, A100 80GB)")
    else:
        if len(gpus) < PIPELINE_GPUS:
            remedies.append(f"5 GPUs (have {len(gpus)})")
        need = max(math.ceil(row.peak_gb), PUBLISHED_PIPELINE_RANK_FP8_GB if row.precision == "fp8" else 0)
        if row.capacity_gb is None or row.capacity_gb < need:
            kind = "cc ≥ 8.9, e.g. 5 × L40S 48 GB" if row.precision == "fp8" else "e.g. 5 × 80 GB"
            remedies.append(f"5 cards of ≥ {need:.0f} GB ({kind})")
    return remedies


PRECISIONS: tuple[Precision, ...] = ("bf16", "fp8")


def plan(gpus: Sequence[GpuInfo], presets: Sequence[Preset] | None = None) -> list[PlanRow]:
    """Per preset: one GPU and the pipeline, each in bf16 and fp8, and FSDP for comparison."""
    if not gpus:
        return []
    rows = []
    for preset in presets if presets is not None else PRESETS.values():
        for topology in ("single", "pipeline"):
            for precision in PRECISIONS:
                rows.append(plan_row(preset, topology, precision, gpus))
        if len(gpus) >= 2:
            rows.append(plan_row(preset, "fsdp", "bf16", gpus))
    return rows


def nothing_fits_explanation(rows: Sequence[PlanRow], gpus: Sequence[GpuInfo]) -> str | None:
    """One line for an operator when no preset fits in any topology; None when something fits."""
    if any(r.fits for r in rows) or not gpus:
        return None if gpus else "no GPUs to plan for"
    single = single_gpu_memory(REFERENCE_SIZE, "bf16").total_gb
    rank_fp8 = pipeline_rank_memory(REFERENCE_SIZE, "fp8").total_gb
    rank_bf16 = pipeline_rank_memory(REFERENCE_SIZE, "bf16").total_gb
    if all(g.memory_total_mb <= CONSUMER_24GB_MAX_MB for g in gpus):
        smallest = min(PRESETS.values(), key=lambda p: tokens_per_frame(p.size))
        floor = pipeline_rank_memory(smallest.size, "fp8").total_gb
        return (f"Nothing fits: 24 GB cards cannot run Live Avatar in any topology. One GPU needs "
                f"≈ {single:.0f} GB (bf16 DiT {DIT_BF16_GB:g} GB + {CACHES_ONE_GPU} × "
                f"{kv_cache_gb(REFERENCE_SIZE):.1f} GB KV caches); a pipeline rank needs "
                f"≈ {rank_fp8:.0f} GB even with fp8 (published: ≈ {PUBLISHED_PIPELINE_RANK_FP8_GB:g} GB), and "
                f"≈ {floor:.0f} GB at the smallest size, since its fp8 DiT ({DIT_FP8_GB:g} GB) and T5 "
                f"({T5_GB:g} GB) alone exceed 24 GB; FSDP adds an unshard peak on top of its shard.")
    return (f"Nothing fits on these GPUs: Live Avatar needs one GPU of ≥ {SINGLE_GPU_MIN_GB} GB "
            f"(≈ {single:.0f} GB "
            f"in bf16), or 5 GPUs of ≥ {max(rank_fp8, PUBLISHED_PIPELINE_RANK_FP8_GB):.0f} GB with fp8 "
            f"(cc ≥ 8.9) / ≥ {rank_bf16:.0f} GB in bf16.")
