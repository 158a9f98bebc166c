"""Refuse, before any GPU is touched, every generation setting Live Avatar would crash on or
silently mishandle, and say why with the published fact.

Pure functions over a preset, expert overrides and (optionally) the GPUs of the gang: no GPU is
probed here. The facts are those of DESIGN.md, "The real generator: facts the code must respect";
several refuse advice that is widely shared and wrong (3 steps, a DPM-Solver++ default,
`--infer_frames 32`, 4 × 24 GB cards).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from avatarflow.errors import ConfigurationError
from inference.engine import GenerationRequest
from inference.gpus import FP8_MIN_COMPUTE_CAPABILITY, MIB, GpuInfo
from inference.presets import FRAMES_PER_CLIP, Preset, get_preset

# --- the published facts ---------------------------------------------------------------------
REQUIRED_STEPS = 4  # the DMD LoRA's fixed schedule: timesteps 1000, 857.7, 602.2, 8.9
REQUIRED_SOLVER = "euler"
FRAME_MULTIPLE = 12  # --infer_frames must be a multiple of 12
TRAINED_FRAMES = FRAMES_PER_CLIP  # 48
VALID_SIZES = ("720*400", "704*384", "688*368", "384*256")
MAX_AREA = 720 * 400  # larger areas crash on a fixed cache
SUPPORTED_GPU_COUNTS = (1, 5)  # one GPU with offload, or 4 denoising + 1 decoding
# "One GPU with ≥ 80 GB". An 80 GB card reports about 80 GiB (H100: 81559 MiB, A100: 81920 MiB);
# 80 000 MiB leaves room for what the driver keeps back and still refuses 40/48 GB cards.
MIN_SINGLE_GPU_MB = 80_000
# "With fp8 a pipeline rank needs ≈ 45 GB": no rank card below that can run the pipeline, in any
# precision (bf16 needs more; see inference.planner for the model).
MIN_PIPELINE_RANK_GB = 45.0
# Consumer 24 GB cards (RTX 3090/4090, A10, L4 report 23–24 GiB): named on their own because the
# "4 × 24 GB" advice is common. 26 000 MiB catches them and nothing of 32 GB or more.
CONSUMER_24GB_MAX_MB = 26_000

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One refused (error) or suspicious (warning) setting, with the reason in plain words."""

    setting: str
    value: Any
    reason: str
    severity: Severity = "error"

    def __str__(self) -> str:
        label = "" if self.severity == "error" else "warning: "
        return f"{label}{self.setting}={self.value!r}: {self.reason}"


class ConfigRejected(ConfigurationError):
    """A generation configuration Live Avatar would crash on or mishandle; never retried."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        lines = "; ".join(str(p) for p in errors)
        super().__init__(f"configuration refused ({len(errors)} problem(s)): {lines}")


# --- the settings that reach the engine ------------------------------------------------------
# Override names as presets spell them, plus the command-line spelling of Live Avatar.
ALIASES = {
    "sample_solver": "solver",
    "steps": "sample_steps",
    "frames": "infer_frames",
    "enable_online_decode": "online_decode",
}
SETTINGS = {f.name for f in fields(Preset)} - {"name", "description"} | {"fp8"}
# Accepted by Live Avatar's argparse and then ignored: a warning, since the user expects an effect.
IGNORED_BY_ENGINE = {
    "sample_shift": "the 4-step DMD schedule is fixed (flow matching, shift 3); "
                    "--sample_shift is ignored",
    "sample_guide_scale": "the distilled 4-step sampler ignores --sample_guide_scale",
}


def _canonical(key: str) -> str:
    key = key.strip().lstrip("-").replace("-", "_")
    return ALIASES.get(key, key)


def effective_settings(preset: Preset | str | Mapping[str, Any],
                       overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The preset's settings with overrides applied, under canonical names (unknown names kept,
    so that `validate` can refuse them)."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    if isinstance(preset, Preset):
        settings: dict[str, Any] = {name: getattr(preset, name) for name in SETTINGS - {"fp8"}}
        settings["preset"] = preset.name
    else:
        settings = {_canonical(k): v for k, v in preset.items()}
    settings.setdefault("fp8", False)
    for key, value in (overrides or {}).items():
        settings[_canonical(key)] = value
    return settings


def parse_size(size: str) -> tuple[int, int] | None:
    """ "704*384" → (704, 384); None when it is not WIDTH*HEIGHT."""
    parts = str(size).split("*")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(preset: Preset | str | Mapping[str, Any], gpus: Sequence[GpuInfo] | None = None,
             overrides: Mapping[str, Any] | None = None) -> list[Problem]:
    """Every problem with running `preset` + `overrides` on `gpus` (None: hardware not checked).

    Errors are refusals; warnings are accepted settings that probably do not do what was meant.
    """
    settings = effective_settings(preset, overrides)
    problems: list[Problem] = []
    problems += _check_steps(settings.get("sample_steps"))
    problems += _check_solver(settings.get("solver"))
    problems += _check_frames(settings.get("infer_frames"))
    problems += _check_size(settings.get("size"))
    problems += _check_num_clip(settings.get("num_clip"))
    for key, value in settings.items():
        if key in IGNORED_BY_ENGINE:
            problems.append(Problem(key, value, IGNORED_BY_ENGINE[key], "warning"))
        elif key not in SETTINGS and key != "preset":
            problems.append(Problem(key, value, "not a setting avatarflow passes to Live Avatar "
                                    f"(known: {', '.join(sorted(SETTINGS))}); refused rather than "
                                    "silently ignored"))
    if gpus is not None:
        problems += check_gpus(gpus, fp8=bool(settings.get("fp8")))
    return problems


def validate_request(request: GenerationRequest,
                     gpus: Sequence[GpuInfo] | None = None) -> list[Problem]:
    """`validate` for a request, plus the input-path rule: a `+` in the audio path switches Live
    Avatar to a multi-speaker mode."""
    problems = validate(request.preset, gpus, request.overrides)
    if "+" in str(request.audio):
        problems.append(Problem("audio", str(request.audio),
                                "a '+' in the audio path makes Live Avatar read it as several "
                                "speakers' tracks; rename the file"))
    return problems


def errors_in(problems: Sequence[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def raise_for(problems: Sequence[Problem]) -> None:
    """Raise ConfigRejected naming every refused setting at once; warnings alone pass."""
    if errors_in(problems):
        raise ConfigRejected(problems)


def check_or_raise(preset: Preset | str | Mapping[str, Any], gpus: Sequence[GpuInfo] | None = None,
                   overrides: Mapping[str, Any] | None = None) -> list[Problem]:
    """Validate and raise on errors; returns the warnings."""
    problems = validate(preset, gpus, overrides)
    raise_for(problems)
    return problems


# --- one check per fact ----------------------------------------------------------------------


def _check_steps(steps: Any) -> list[Problem]:
    if _is_int(steps) and steps == REQUIRED_STEPS:
        return []
    why = ("the DMD LoRA was distilled for exactly 4 Euler steps (timesteps 1000, 857.7, 602.2, "
           "8.9); more raises on one GPU, and anything but 4 deadlocks the 5-GPU pipeline (one "
           "rank per step)")
    if steps == 3:
        why += (". The widely shared '3 steps' advice is wrong for this checkpoint: Live Avatar's "
                "README lists a 3-step distillation only as planned work")
    return [Problem("sample_steps", steps, why)]


def _check_solver(solver: Any) -> list[Problem]:
    if isinstance(solver, str) and solver.strip().lower() == REQUIRED_SOLVER:
        return []
    why = "only 'euler' works: Live Avatar's argparse accepts 'unipc' and 'dpm++' and then raises"
    if isinstance(solver, str) and solver.strip().lower() in ("dpm++", "dpmpp", "dpm-solver++"):
        why += (" (a 'DPM-Solver++ default' seen in shared configs does not apply to this "
                "distilled model)")
    return [Problem("solver", solver, why)]


def _check_frames(frames: Any) -> list[Problem]:
    if not _is_int(frames) or frames <= 0:
        return [Problem("infer_frames", frames, "must be a positive whole number of frames; "
                        f"{TRAINED_FRAMES} is the trained value")]
    if frames % FRAME_MULTIPLE:
        why = f"must be a multiple of {FRAME_MULTIPLE}; {TRAINED_FRAMES} is the trained value"
        if frames == 80:
            why += ". 80 is Live Avatar's argparse default and leaves blank frames"
        elif frames == 32:
            why += ". The widely shared '--infer_frames 32' advice is wrong for this model"
        return [Problem("infer_frames", frames, why)]
    if frames != TRAINED_FRAMES:
        return [Problem("infer_frames", frames,
                        f"accepted, but {TRAINED_FRAMES} is the value the model was trained with; "
                        "other lengths degrade motion and break avatarflow's clip arithmetic "
                        f"(clips = floor(seconds × 25 / {TRAINED_FRAMES}) + 1)", "warning")]
    return []


def _check_size(size: Any) -> list[Problem]:
    parsed = parse_size(size) if isinstance(size, str) else None
    if parsed is None:
        return [Problem("size", size, "must be WIDTH*HEIGHT, one of " + ", ".join(VALID_SIZES))]
    area = parsed[0] * parsed[1]
    if area > MAX_AREA:
        return [Problem("size", size,
                        f"area {area} is above 720*400 = {MAX_AREA}: Live Avatar's cache has a "
                        "fixed size and the run crashes with 'RuntimeError: The expanded size of "
                        "the tensor (3000) must match ...'; valid sizes: "
                        + ", ".join(VALID_SIZES))]
    if size.replace(" ", "") not in VALID_SIZES:
        return [Problem("size", size, "not one of the sizes Live Avatar supports ("
                        + ", ".join(VALID_SIZES) + "); the size is a maximum pixel area and other "
                        "values are not tested with the model's latent grid")]
    return []


def _check_num_clip(num_clip: Any) -> list[Problem]:
    if num_clip is None or (_is_int(num_clip) and num_clip >= 1):
        return []
    return [Problem("num_clip", num_clip,
                    "must be a whole number ≥ 1, or unset for the whole audio")]


def check_gpus(gpus: Sequence[GpuInfo], fp8: bool = False) -> list[Problem]:
    """Topology, memory and fp8 rules for the GPUs of one gang."""
    count = len(gpus)
    problems: list[Problem] = []
    if count == 0:
        return [Problem("gpus", 0, "Live Avatar needs NVIDIA GPUs: one with ≥ 80 GB or exactly 5; "
                        "without them use the CPU engine")]
    if 2 <= count <= 4:
        problems.append(Problem("gpus", count,
                                f"{count} GPUs are not supported: Live Avatar runs on one GPU with "
                                "≥ 80 GB (offload on) or exactly 5 (4 run one denoising step each, "
                                "1 decodes); 4 × 24 GB cards in particular cannot run it"))
    elif count not in SUPPORTED_GPU_COUNTS:
        problems.append(Problem("gpus", count,
                                f"{count} GPUs: the pipeline uses exactly 5 (4 denoising steps + 1 "
                                "decoder); split the GPUs into gangs of 1 or 5"))

    consumer = [g for g in gpus if g.memory_total_mb <= CONSUMER_24GB_MAX_MB]
    if consumer:
        problems.append(Problem(
            "gpus", _describe(consumer),
            "24 GB cards cannot run Live Avatar in any topology: one GPU needs ≥ 80 GB (34 GB of "
            "bf16 DiT weights plus four ≈ 10.4 GB KV caches), a pipeline rank needs ≈ 45 GB even "
            "with fp8 (17 GB DiT + its own 11 GB T5 + caches), and FSDP sharding over 5 × 24 GB "
            "runs out of memory when it gathers the weights for inference"))
    elif count == 1 and gpus[0].memory_total_mb < MIN_SINGLE_GPU_MB:
        problems.append(Problem("gpus", _describe(gpus),
                                f"one GPU must have ≥ 80 GB (it holds the 34 GB bf16 DiT and four "
                                f"KV caches, ≈ 80 GB in all); this one has {_gb(gpus[0])}"))
    elif count == 5:
        small = [g for g in gpus if g.memory_total_mb * MIB / 1e9 < MIN_PIPELINE_RANK_GB]
        if small:
            problems.append(Problem("gpus", _describe(small),
                                    f"each pipeline GPU needs ≈ {MIN_PIPELINE_RANK_GB:g} GB even "
                                    "with fp8 (its own DiT copy, T5, a KV cache and the "
                                    "condition cache)"))

    if fp8:
        old = [g for g in gpus if g.supports_fp8 is False]
        unknown = [g for g in gpus if g.supports_fp8 is None]
        need = f"{FP8_MIN_COMPUTE_CAPABILITY[0]}.{FP8_MIN_COMPUTE_CAPABILITY[1]}"
        if old:
            problems.append(Problem("fp8", True,
                                    f"--fp8 needs compute capability ≥ {need} (Ada, Hopper: L40S, "
                                    f"RTX 4090, H100); {_describe(old)} has "
                                    f"{', '.join(sorted({g.cc_text for g in old}))}"))
        if unknown:
            problems.append(Problem("fp8", True,
                                    f"--fp8 needs compute capability ≥ {need}, and that of "
                                    f"{_describe(unknown)} is unknown", "warning"))
    return problems


def _gb(gpu: GpuInfo) -> str:
    return f"{gpu.memory_total_gb:.1f} GB"


def _describe(gpus: Sequence[GpuInfo]) -> str:
    names: dict[str, int] = {}
    for gpu in gpus:
        label = f"{gpu.name} ({_gb(gpu)})"
        names[label] = names.get(label, 0) + 1
    return ", ".join(f"{n} × {label}" if n > 1 else label for label, n in names.items())
