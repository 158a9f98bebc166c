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

Speed: where Live Avatar has been measured with the same settings (inference.measured_speed, from
avatarflow's real runs on an H200), the estimate is that measurement, or on another known GPU that
measurement scaled by datasheet TFLOPS; otherwise the published 5-GPU figure with the scaling
assumptions below. Every estimate says which it is.

The FSDP sharded mode is modelled only for comparison: it is not a topology avatarflow launches,
but it is what people try with 5 × 24 GB cards, and the model shows why it cannot work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from inference import measured_speed
from inference.gpus import KNOWN_GPUS, GpuInfo, known_model
from inference.liveavatar_facts import (
    CACHES_ONE_GPU,
    CACHES_PIPELINE_RANK,
    CONDITION_CACHE_GB,
    DIT_BF16_GB,
    DIT_FP8_GB,
    FP8_CONVERSION_GB,
    FPS,
    FRAMES_PER_CLIP,
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
from inference.output_rules import output_size, parse_size, video_frames
from inference.presets import PRESETS, Preset
from inference.validation import CONSUMER_24GB_MAX_MB, MIN_SINGLE_GPU_MB, check_gpus, errors_in

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
# measured: avatarflow's own run with these settings on this GPU model (inference.measured_speed);
# scaled: such a run on another GPU, scaled by datasheet TFLOPS; published / derived / assumption:
# the published 5-GPU figure, as is, scaled, or turned into a one-GPU rate by assumption.
Basis = Literal["measured", "scaled", "published", "derived", "assumption"]


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
    fps: float  # frames of video per second of wall time
    basis: Basis
    note: str  # where the figure comes from, in full
    label: str = ""  # the same in a few words: "measured on H200 (bf16, 688*368, compile off, warm)"
    # Minutes per minute of video of a per-job run (the model loads for every video), where a
    # per-job run with these settings was measured; None otherwise.
    per_job_minutes: float | None = None
    # What the figure stands in for without having been measured: "fp8 not measured, assumed …".
    caveats: tuple[str, ...] = ()
    source: str = ""  # the measurement: its video, date and results file(s)

    @property
    def minutes_per_video_minute(self) -> float:
        return 60 * FPS / self.fps / 60

    @property
    def short(self) -> str:
        """The label with its caveats, or the basis where there is no label."""
        return "; ".join((self.label or self.basis, *self.caveats))


def _tflops(gpu: GpuInfo) -> float | None:
    model = known_model(gpu.name)
    return model.bf16_dense_tflops if model else None


def measured_estimate(gpu: GpuInfo, size: str, precision: Precision = "bf16",
                      online_decode: bool | None = None) -> SpeedEstimate | None:
    """One GPU: avatarflow's measurement with these settings (compile off), on this GPU model or
    scaled by TFLOPS from another; None where nothing was measured.

    Warm-worker runs are preferred (the model stays loaded, as the plan's times assume), then
    per-job runs. Where fp8 was not measured, the bf16 figure stands in (fp8 is assumed to give no
    speed-up, as everywhere in the planner); where only the other decode mode was measured at this
    size, that figure stands in (the decoding work is the same, done at the end or between clips).
    Both stand-ins are said in the label.
    """
    model = known_model(gpu.name)
    if model is None or model.bf16_dense_tflops is None:
        return None
    precisions: list[str] = [precision] + (["bf16"] if precision == "fp8" else [])
    decodes = [False, True] if online_decode is None else [online_decode, not online_decode]
    for measured_precision in precisions:
        for decode in decodes:
            for same_gpu in (True, False):
                for mode in ("warm", "per-job"):
                    for entry in measured_speed.MEASURED:
                        reference = KNOWN_GPUS.get(entry.gpu)
                        if ((entry.size, entry.precision, entry.online_decode, entry.mode, entry.compile)
                                != (size, measured_precision, decode, mode, False)
                                or (entry.gpu == model.key) != same_gpu
                                or reference is None or reference.bf16_dense_tflops is None):
                            continue
                        return _from_measurement(entry, model.key, model.bf16_dense_tflops,
                                                 reference.bf16_dense_tflops, precision, online_decode)
    return None


def _from_measurement(entry: measured_speed.MeasuredSpeed, gpu: str, tflops: float,
                      reference_tflops: float, precision: str,
                      online_decode: bool | None) -> SpeedEstimate:
    scale = reference_tflops / tflops  # more TFLOPS, less time
    seconds_per_second = entry.load_excluded * scale
    per_job = measured_speed.find(entry.gpu, entry.size, entry.precision, entry.online_decode,
                                  "per-job", entry.compile)
    per_job_minutes = per_job.load_included * scale if per_job and per_job.load_included else None
    basis: Basis
    if entry.gpu == gpu:
        label, basis = f"measured on {entry.gpu} ({entry.settings})", "measured"
    else:
        label = (f"scaled from {entry.gpu} measurement ({entry.settings}) by TFLOPS "
                 f"({gpu} {tflops:g} vs {entry.gpu} {reference_tflops:g})")
        basis = "scaled"
    caveats = []
    if entry.precision != precision:
        caveats.append(f"{precision} not measured, assumed no faster than {entry.precision}")
    if online_decode is not None and entry.online_decode != online_decode:
        caveats.append("online decode not measured at this size: the figure decodes at the end"
                       if online_decode else
                       "decoding at the end not measured at this size: the figure decodes online")
    source = (f"{entry.video_seconds:g} s video, {entry.runs} run{'s' if entry.runs > 1 else ''}, "
              f"{entry.date}, {_paths(entry.sources)}")
    if entry.mode == "per-job":
        source += "; timed from the first denoising step (load excluded)"
    note = "; ".join((label, *caveats)) + f" ({source})"
    return SpeedEstimate(FPS / seconds_per_second, basis, note, label, per_job_minutes,
                         tuple(caveats), source)


def _paths(paths: Sequence[str]) -> str:
    """"a/x/f, a/y/f" as "a/{x,y}/f" (the results files of several sessions)."""
    if len(paths) == 1:
        return paths[0]
    parts = [p.split("/") for p in paths]
    if len({len(p) for p in parts}) == 1 and len({tuple(p[:-2] + p[-1:]) for p in parts}) == 1:
        head, tail = "/".join(parts[0][:-2]), parts[0][-1]
        return f"{head}/{{{','.join(p[-2] for p in parts)}}}/{tail}"
    return ", ".join(paths)


def estimate_speed(topology: Topology, gpus: Sequence[GpuInfo], size: str,
                   precision: Precision = "bf16", online_decode: bool | None = None
                   ) -> SpeedEstimate | None:
    """Frames per second for a topology, or None where nothing measured, published or assumed
    applies. One GPU: the measurement where there is one (`measured_estimate`)."""
    if topology == "fsdp" or not gpus:
        return None
    if topology == "single":
        measured = measured_estimate(gpus[0], size, precision, online_decode)
        if measured is not None:
            return measured
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
    scaling = THROUGHPUT_SOURCES[2].source
    if topology == "pipeline" and is_reference_gpu and area_ratio == 1:
        return SpeedEstimate(fps, "published", PUBLISHED_PIPELINE.source, "published, not measured",
                             source=PUBLISHED_PIPELINE.source)
    if topology == "pipeline":
        return SpeedEstimate(fps, "derived",
                             "published 20 FPS on 5×H800, scaled by TFLOPS and area (assumption)",
                             "published 5×H800 figure scaled (assumption, not measured)",
                             source=f"{PUBLISHED_PIPELINE.source}; {scaling}")
    return SpeedEstimate(fps, "assumption", "¼ of the published pipeline rate, scaled by TFLOPS "
                                            "and area; offload makes it slower (upper bound)",
                         "assumption, not measured: ¼ of the published 5×H800 rate, scaled",
                         source=f"{THROUGHPUT_SOURCES[1].source}; {PUBLISHED_PIPELINE.source}; "
                                f"{scaling}. Where avatarflow measured one GPU (H200), the real time "
                                "was about twice this")


def preset_video_seconds(preset: Preset) -> float | None:
    """The longest video a preset makes (its clip cap), or None when it makes the whole audio."""
    if preset.num_clip is None:
        return None
    return video_frames(preset.num_clip, preset.infer_frames or FRAMES_PER_CLIP) / FPS


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
    reason: str  # the problems' texts joined, or "fits: …"
    remedies: list[str] = field(default_factory=list)
    speed: SpeedEstimate | None = None
    # Why it does not fit, each as (kind, text); kinds: "fsdp", "count", "memory", "fp8",
    # "single-80GB", "24GB", "rank-45GB". Empty when it fits.
    problems: list[tuple[str, str]] = field(default_factory=list)
    online_decode: bool = False

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

    problems: list[tuple[str, str]] = []
    if topology == "fsdp":
        problems.append(("fsdp", "not a topology Live Avatar runs (one ≥ 80 GB GPU or the 5-GPU "
                                 "pipeline); shown to compare"))
    elif not enough:
        problems.append(("count", f"needs {needed} GPU(s); {len(gpus)} given"))
    if capacity is not None and not memory_fits:
        where = "on the GPU" if topology == "single" else f"per {memory[0].role}"
        problems.append(("memory", f"needs {_gb(peak)} {where}, more than the {_gb(capacity)} a GPU has"))
    if topology != "fsdp" and enough:
        refusals = errors_in(check_gpus(used, fp8=precision == "fp8"))
        # When memory already rules the row out, only the fp8 rule adds anything; otherwise the
        # published rules (≥ 80 GB for one GPU, ≈ 45 GB per rank) are the reason.
        for refusal in refusals:
            if refusal.setting == "fp8":
                problems.append(("fp8", refusal.reason))
            elif memory_fits:
                problems.append(_rule_problem(topology, used, peak, refusal.reason))
    if precision == "fp8" and fp8_ok is None and used:
        problems.append(("fp8", "fp8 needs compute capability ≥ 8.9, unknown for these GPUs"))
    fits = enough and memory_fits and not problems

    if fits:
        reason = f"fits: {_gb(peak)} of {_gb(capacity or 0)} ({peak / (capacity or 1):.0%})"
        free = min((g.memory_free_gb for g in used if g.memory_free_gb is not None), default=None)
        if free is not None and free < peak:
            reason += f"; but only {_gb(free)} free now (other processes hold the rest)"
    else:
        reason = "; ".join(text for _, text in problems) or "does not fit"
    row = PlanRow(preset=preset.name, size=preset.size, topology=topology, precision=precision,
                  gpus=used, fits=fits, peak_gb=peak, capacity_gb=capacity, memory=memory,
                  reason=reason, problems=[] if fits else problems,
                  online_decode=preset.online_decode)
    if not fits and with_remedies:
        row.remedies = _remedies(row, gpus)
    if fits:
        row.speed = estimate_speed(topology, used, preset.size, precision, preset.online_decode)
    return row


def single_gpu_rule_reason(estimate: str, card_gb: float) -> str:
    """Why one GPU of less than 80 GB is refused even where the memory model says it would do."""
    return (f"the single-GPU mode needs an 80 GB card: Live Avatar publishes its one-GPU (offload) "
            f"mode for a single GPU of ≥ {SINGLE_GPU_MIN_GB} GB (it holds the {DIT_BF16_GB:g} GB bf16 "
            f"DiT, loaded in bf16 even for fp8, and {CACHES_ONE_GPU} KV caches), and avatarflow's "
            f"launch check refuses smaller cards (< {MIN_SINGLE_GPU_MB} MiB); the {estimate} "
            f"estimate is below this {card_gb:.1f} GB card, but that set-up is neither supported "
            f"nor measured")


def _rule_problem(topology: Topology, used: Sequence[GpuInfo], peak: float,
                  reason: str) -> tuple[str, str]:
    """A published topology rule that refuses GPUs the memory model says would hold the peak."""
    if any(g.memory_total_mb <= CONSUMER_24GB_MAX_MB for g in used):
        return "24GB", reason
    if topology == "single" and min(g.memory_total_mb for g in used) < MIN_SINGLE_GPU_MB:
        return "single-80GB", single_gpu_rule_reason(_gb(peak), min(g.memory_total_gb for g in used))
    return "rank-45GB", reason


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


def best_row(rows: Sequence[PlanRow]) -> PlanRow | None:
    """The row to lead with: of the fitting rows, the largest video size, then the shortest time
    (rows without an estimate last), bf16 before fp8 (no quantisation), fewer GPUs, and the
    presets' order. None when nothing fits."""
    fitting = [(i, r) for i, r in enumerate(rows) if r.fits]
    if not fitting:
        return None

    def key(item: tuple[int, PlanRow]) -> tuple:
        index, row = item
        minutes = row.speed.minutes_per_video_minute if row.speed else math.inf
        return (-tokens_per_frame(row.size), minutes, row.precision != "bf16", len(row.gpus), index)

    return min(fitting, key=key)[1]


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
