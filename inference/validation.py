"""Refuse, before any GPU is touched, every generation setting Live Avatar would crash on or
silently mishandle, and say why with the published fact.

Pure functions over a preset, expert overrides and (optionally) the GPUs of the gang: no GPU is
probed here. The facts are those of DESIGN.md, "The real generator: facts the code must respect",
as `inference.liveavatar_facts` holds them; the per-job and warm engines refuse a request through
these same checks (`inference.liveavatar_checks`). Several refuse advice that is widely shared and
wrong (3 steps, a DPM-Solver++ default, `--infer_frames 32`, 4 × 24 GB cards).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from avatarflow.errors import ConfigurationError
from inference.engine import GenerationRequest
from inference.gpus import MIB, GpuInfo
from inference.liveavatar_facts import (
    ARGPARSE_DEFAULT_FRAMES,
    CACHES_ONE_GPU,
    DIT_BF16_GB,
    DIT_FP8_GB,
    FP8_MIN_COMPUTE_CAPABILITY,
    FPS,
    FRAME_MULTIPLE,
    FRAMES_PER_CLIP,
    IGNORED_ARGUMENTS,
    MAX_AREA,
    MAX_SIZE,
    MULTI_SPEAKER_MARK,
    PIPELINE_GPUS,
    PUBLISHED_PIPELINE_RANK_FP8_GB,
    SAMPLE_STEPS,
    SINGLE_GPU_MIN_GB,
    SOLVER,
    SUPPORTED_GPU_COUNTS,
    T5_GB,
    TIMESTEPS,
    TOPOLOGY_RULE,
    VALID_SIZES,
)
from inference.output_rules import parse_size
from inference.presets import Preset, get_preset

# --- the published memory facts as checks of the MiB a card reports ------------------------------
# "One GPU with ≥ 80 GB". An 80 GB card reports about 80 GiB (H100: 81559 MiB, A100: 81920 MiB);
# 80 000 MiB leaves room for what the driver keeps back and still refuses 40/48 GB cards.
MIN_SINGLE_GPU_MB = 80_000
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
# What one generation applies (a request's overrides may change these) ...
JOB_SETTINGS = frozenset(f.name for f in fields(Preset)) - {"name", "description"}
# ... and, for a whole configuration, the precision too (a property of the loaded model).
SETTINGS = JOB_SETTINGS | {"fp8"}
# Accepted by Live Avatar's argparse and then ignored: a warning, since the user expects an effect.
IGNORED_BY_ENGINE = {name: f"{why}; --{name} is ignored" for name, why in IGNORED_ARGUMENTS.items()}


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
        settings: dict[str, Any] = {name: getattr(preset, name) for name in JOB_SETTINGS}
        settings["preset"] = preset.name
    else:
        settings = {_canonical(k): v for k, v in preset.items()}
    settings.setdefault("fp8", False)
    for key, value in (overrides or {}).items():
        settings[_canonical(key)] = value
    return settings


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(preset: Preset | str | Mapping[str, Any], gpus: Sequence[GpuInfo] | None = None,
             overrides: Mapping[str, Any] | None = None, *,
             settable: frozenset[str] = SETTINGS) -> list[Problem]:
    """Every problem with running `preset` + `overrides` on `gpus` (None: hardware not checked).

    Errors are refusals; warnings are accepted settings that probably do not do what was meant.
    `settable`: the setting names the caller applies; any other name is refused (the per-job
    engine passes JOB_SETTINGS: its precision comes from its configuration, not a request).
    """
    settings = effective_settings(preset, overrides)
    problems: list[Problem] = []
    problems += _check_steps(settings.get("sample_steps"))
    problems += _check_solver(settings.get("solver"))
    problems += _check_frames(settings.get("infer_frames"))
    problems += _check_size(settings.get("size"))
    problems += _check_num_clip(settings.get("num_clip"))
    problems += _check_online_decode(settings.get("online_decode"))
    # Only the names the caller gave: the defaults effective_settings fills in are not theirs.
    named = {_canonical(k) for k in overrides or {}}
    if isinstance(preset, Mapping):
        named |= {_canonical(k) for k in preset}
    for key, value in settings.items():
        if key not in named or key in settable or key == "preset":
            continue
        if key in IGNORED_BY_ENGINE:
            problems.append(Problem(key, value, IGNORED_BY_ENGINE[key], "warning"))
        else:
            problems.append(Problem(key, value, "not a setting avatarflow passes to Live Avatar here "
                                    f"(known: {', '.join(sorted(settable))}); refused rather than "
                                    "silently ignored"))
    if gpus is not None:
        problems += check_gpus(gpus, fp8=bool(settings.get("fp8")))
    return problems


def validate_request(request: GenerationRequest,
                     gpus: Sequence[GpuInfo] | None = None) -> list[Problem]:
    """`validate` for a request, plus the rule on its input paths."""
    return validate(request.preset, gpus, request.overrides) + check_audio_path(request.audio)


def check_audio_path(audio: Path) -> list[Problem]:
    """A `+` in the audio path switches Live Avatar to a multi-speaker mode."""
    if MULTI_SPEAKER_MARK not in str(audio):
        return []
    return [Problem("audio", str(audio), f"the audio path contains '{MULTI_SPEAKER_MARK}', which Live "
                                         "Avatar reads as several speakers' tracks; rename the file")]


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
    if _is_int(steps) and steps == SAMPLE_STEPS:
        return []
    schedule = ", ".join(f"{t:g}" for t in TIMESTEPS)
    why = (f"the DMD LoRA was distilled for exactly {SAMPLE_STEPS} Euler steps (timesteps {schedule}); "
           f"more raises on one GPU, and anything but {SAMPLE_STEPS} deadlocks the 5-GPU pipeline "
           "(one rank per step)")
    if steps == 3:
        why += (". The widely shared '3 steps' advice is wrong for this checkpoint: Live Avatar's "
                "README lists a 3-step distillation only as planned work")
    return [Problem("sample_steps", steps, why)]


def _check_solver(solver: Any) -> list[Problem]:
    # Exactly "euler": Live Avatar's argparse compares the string as given.
    if solver == SOLVER:
        return []
    why = f"only '{SOLVER}' works: Live Avatar's argparse accepts 'unipc' and 'dpm++' and then raises"
    if isinstance(solver, str) and solver.strip().lower() in ("dpm++", "dpmpp", "dpm-solver++"):
        why += (" (a 'DPM-Solver++ default' seen in shared configs does not apply to this "
                "distilled model)")
    return [Problem("solver", solver, why)]


def _check_frames(frames: Any) -> list[Problem]:
    if not _is_int(frames) or frames <= 0:
        return [Problem("infer_frames", frames, "must be a positive whole number of frames; "
                        f"{FRAMES_PER_CLIP} is the trained value")]
    if frames % FRAME_MULTIPLE:
        why = f"must be a multiple of {FRAME_MULTIPLE}; {FRAMES_PER_CLIP} is the trained value"
        if frames == ARGPARSE_DEFAULT_FRAMES:
            why += f". {ARGPARSE_DEFAULT_FRAMES} is Live Avatar's argparse default and leaves blank frames"
        elif frames == 32:
            why += ". The widely shared '--infer_frames 32' advice is wrong for this model"
        return [Problem("infer_frames", frames, why)]
    if frames != FRAMES_PER_CLIP:
        return [Problem("infer_frames", frames,
                        f"accepted, but {FRAMES_PER_CLIP} is the value the model was trained with; "
                        "other lengths degrade motion and break avatarflow's clip arithmetic "
                        f"(clips = floor(seconds × {FPS} / {FRAMES_PER_CLIP}) + 1)", "warning")]
    return []


def _check_size(size: Any) -> list[Problem]:
    valid = ", ".join(VALID_SIZES)
    parsed = parse_size(size) if isinstance(size, str) else None
    if parsed is None:
        return [Problem("size", size, f"not of the form W*H (one of {valid})")]
    area = parsed[0] * parsed[1]
    if area > MAX_AREA:
        return [Problem("size", size,
                        f"area {area} is above {MAX_SIZE} = {MAX_AREA}: Live Avatar's cache has a "
                        "fixed size and the run crashes with 'RuntimeError: The expanded size of "
                        f"the tensor (3000) must match ...'; valid sizes: {valid}")]
    if size.replace(" ", "") not in VALID_SIZES:
        return [Problem("size", size, f"not one of the valid sizes ({valid}); the size is a maximum "
                        "pixel area and other values are not tested with the model's latent grid")]
    return []


def _check_num_clip(num_clip: Any) -> list[Problem]:
    if num_clip is None or (_is_int(num_clip) and num_clip >= 1):
        return []
    return [Problem("num_clip", num_clip,
                    "must be a whole number ≥ 1, or unset for the whole audio")]


def _check_online_decode(online_decode: Any) -> list[Problem]:
    if online_decode is None or isinstance(online_decode, bool):  # None: not given, so off
        return []
    return [Problem("online_decode", online_decode, "must be true or false")]


def check_gpu_count(count: int) -> list[Problem]:
    """The topology rule alone: one GPU or exactly five."""
    if count in SUPPORTED_GPU_COUNTS:
        return []
    if count == 0:
        why = (f"Live Avatar needs NVIDIA GPUs (one with ≥ {SINGLE_GPU_MIN_GB} GB, or exactly "
               f"{PIPELINE_GPUS}); without them use the CPU engine")
    elif count < PIPELINE_GPUS:
        why = f"{TOPOLOGY_RULE}; 4 × 24 GB cards in particular cannot run it"
    else:
        why = f"{TOPOLOGY_RULE}; split the GPUs into gangs of 1 or {PIPELINE_GPUS}"
    return [Problem("gpus", count, why)]


def check_gpus(gpus: Sequence[GpuInfo], fp8: bool = False) -> list[Problem]:
    """Topology, memory and fp8 rules for the GPUs of one gang."""
    count = len(gpus)
    problems = check_gpu_count(count)
    if count == 0:
        return problems

    consumer = [g for g in gpus if g.memory_total_mb <= CONSUMER_24GB_MAX_MB]
    if consumer:
        problems.append(Problem(
            "gpus", _describe(consumer),
            f"24 GB cards cannot run Live Avatar in any topology: one GPU needs ≥ {SINGLE_GPU_MIN_GB} GB "
            f"({DIT_BF16_GB:g} GB of bf16 DiT weights plus {CACHES_ONE_GPU} ≈ 10.4 GB KV caches), a "
            f"pipeline rank needs ≈ {PUBLISHED_PIPELINE_RANK_FP8_GB:g} GB even with fp8 ({DIT_FP8_GB:g} GB "
            f"DiT + its own {T5_GB:g} GB T5 + caches), and FSDP sharding over 5 × 24 GB runs out of "
            "memory when it gathers the weights for inference"))
    elif count == 1 and gpus[0].memory_total_mb < MIN_SINGLE_GPU_MB:
        problems.append(Problem("gpus", _describe(gpus),
                                f"one GPU must have ≥ {SINGLE_GPU_MIN_GB} GB (it holds the "
                                f"{DIT_BF16_GB:g} GB bf16 DiT and {CACHES_ONE_GPU} KV caches, "
                                f"≈ {SINGLE_GPU_MIN_GB} GB in all); this one has {_gb(gpus[0])}"))
    elif count == PIPELINE_GPUS:
        small = [g for g in gpus if g.memory_total_mb * MIB / 1e9 < PUBLISHED_PIPELINE_RANK_FP8_GB]
        if small:
            problems.append(Problem("gpus", _describe(small),
                                    f"each pipeline GPU needs ≈ {PUBLISHED_PIPELINE_RANK_FP8_GB:g} GB "
                                    "even with fp8 (its own DiT copy, T5, a KV cache and the "
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
