"""The Live Avatar engine, per-job mode: check, build the `torchrun` command, run, classify, verify.

Live Avatar runs from its own checkout and environment (Python 3.10, pinned packages), so it is
driven across a process boundary and never imported here. Every rule in DESIGN.md, "The real
generator", is enforced before a GPU is touched (`check_request`, `check_weights`) or in the
command line itself (`build_command`). The warm mode (`inference/warm_client.py`) shares the
argument values (`job_arguments`, `load_arguments`), the failure classification
(`classify_text`) and the output verification (`finalize_output`) defined here.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from avatarflow.errors import ConfigurationError
from inference.engine import (
    Failure,
    FailureKind,
    GenerationMetrics,
    GenerationRequest,
    GenerationResult,
    GpuGang,
    Progress,
    ProgressCallback,
)
from inference.output_rules import (
    blocks_per_clip,
    image_size,
    output_size,
    parse_size,
    planned_clips,
    video_seconds,
)
from inference.presets import Preset, get_preset
from inference.verify import VideoInfo, verify_output

ENTRY_SCRIPT = "minimal_inference/s2v_streaming_interact.py"
TASK = "s2v-14B"
TRAINING_CONFIG = "liveavatar/configs/s2v_causal_sft.yaml"  # relative to the checkout
# The online-decode switch of s2v_streaming_interact.py, as named by the argparse of public copies
# of the checkout. Some versions of the script do not have it: check it against the checkout you
# deploy (`grep -n online_decode minimal_inference/s2v_streaming_interact.py`) on every update.
ONLINE_DECODE_FLAG = "--enable_online_decode"

SOLVER = "euler"  # unipc and dpm++ pass argparse and then raise
SAMPLE_STEPS = 4  # the DMD LoRA's fixed schedule; more raise (1 GPU), other values deadlock (5 GPUs)
FRAMES_MULTIPLE = 12  # infer_frames / 4 latent frames, in causal blocks of 3
MAX_AREA = 720 * 400  # larger areas overflow a fixed-size condition cache and crash
VALID_SIZES = ("720*400", "704*384", "688*368", "384*256")
SINGLE_GPU, PIPELINE_GPUS, PIPELINE_DIT_GPUS = 1, 5, 4

# Preset fields a request's `overrides` may change; each is validated like the preset itself.
OVERRIDABLE = frozenset({"size", "num_clip", "online_decode", "solver", "sample_steps", "infer_frames"})

# Names of the settings an operator fixes when a check fails (see the report to the settings owner).
SETTING_DIR = "AVATARFLOW_LIVEAVATAR_DIR"
SETTING_TORCHRUN = "AVATARFLOW_LIVEAVATAR_TORCHRUN"
SETTING_CKPT_DIR = "AVATARFLOW_LIVEAVATAR_CKPT_DIR"
SETTING_LORA = "AVATARFLOW_LIVEAVATAR_LORA"
SETTING_PYTHON = "AVATARFLOW_LIVEAVATAR_PYTHON"
SETTING_COMPILE = "AVATARFLOW_LIVEAVATAR_COMPILE"

# The files Live Avatar's loaders open inside the Wan2.2-S2V-14B folder, in the order it opens
# them (T5, tokenizer, VAE, DiT, wav2vec2), so a partial download is refused before any GPU
# time is spent, naming what is missing (the loaders' own errors name hub ids, not files).
T5_CHECKPOINT = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER_DIR = "google/umt5-xxl"
VAE_CHECKPOINT = "Wan2.1_VAE.pth"
DIT_CONFIG = "config.json"
DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIT_SINGLE_FILE = "diffusion_pytorch_model.safetensors"
WAV2VEC_DIR = "wav2vec2-large-xlsr-53-english"

ENGINE_NAME = "liveavatar"


# --------------------------------------------------------------------------------------------
# Configuration


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


@dataclass(frozen=True)
class JobSettings:
    """The preset's generation values after the request's overrides."""

    size: str
    num_clip: int | None
    online_decode: bool
    solver: str
    sample_steps: int
    infer_frames: int

    @property
    def bars_per_clip(self) -> int:
        return blocks_per_clip(self.infer_frames)


def resolve_settings(preset: Preset, overrides: Mapping[str, Any]) -> tuple[JobSettings, list[str]]:
    """The effective settings, and a reason for each override that cannot be applied."""
    reasons: list[str] = []
    values: dict[str, Any] = {
        "size": preset.size, "num_clip": preset.num_clip, "online_decode": preset.online_decode,
        "solver": preset.solver, "sample_steps": preset.sample_steps, "infer_frames": preset.infer_frames,
    }
    types: dict[str, tuple[type, ...]] = {
        "size": (str,), "num_clip": (int, type(None)), "online_decode": (bool,), "solver": (str,),
        "sample_steps": (int,), "infer_frames": (int,),
    }
    for key, value in overrides.items():
        if key not in OVERRIDABLE:
            reasons.append(f"unknown override {key!r}; allowed: {', '.join(sorted(OVERRIDABLE))}")
        elif not isinstance(value, types[key]) or (isinstance(value, bool) and key != "online_decode"):
            reasons.append(f"override {key}={value!r} has the wrong type")
        else:
            values[key] = value
    return JobSettings(**values), reasons


@dataclass(frozen=True)
class JobPlan:
    """What one job will run and make: settings, clips, the video's length and size, its time limit."""

    settings: JobSettings
    clips: int
    video_seconds: float  # shorter than the speech when num_clip caps the clips (previews)
    size: tuple[int, int] | None  # (width, height) from the portrait's aspect ratio; None: unknown
    timeout_s: float


def plan_job(request: GenerationRequest, preset: Preset, config: LiveAvatarConfig) -> JobPlan:
    settings, _ = resolve_settings(preset, request.overrides)
    clips = planned_clips(request.samples, settings.num_clip, settings.infer_frames)
    seconds = video_seconds(request.samples, clips, settings.infer_frames)
    image = image_size(request.image)
    size = output_size(*image, settings.size) if image and parse_size(settings.size) else None
    return JobPlan(settings, clips, seconds, size, config.timeout_for(seconds))


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


# --------------------------------------------------------------------------------------------
# Checks made before anything is launched


def check_request(
    request: GenerationRequest, gang: GpuGang, preset: Preset, config: LiveAvatarConfig
) -> list[str]:
    """Every reason Live Avatar would crash on or silently mishandle this job; empty when it may run."""
    settings, reasons = resolve_settings(preset, request.overrides)
    gpus = len(gang.devices)
    if gpus == 0:
        reasons.append(f"gang {gang.name} has no GPUs; Live Avatar needs one >= 80 GB GPU or exactly 5")
    elif gpus not in (SINGLE_GPU, PIPELINE_GPUS):
        reasons.append(
            f"gang {gang.name} has {gpus} GPUs; Live Avatar runs on exactly 1 GPU (with offload) or "
            f"exactly 5 (4 denoising + 1 decoding); 2-4 GPUs are not supported"
        )
    if settings.sample_steps != SAMPLE_STEPS:
        reasons.append(
            f"sample_steps={settings.sample_steps}: the DMD LoRA samples in exactly {SAMPLE_STEPS} steps "
            "(more raise on one GPU; anything else deadlocks the 5-GPU pipeline)"
        )
    if settings.solver != SOLVER:
        reasons.append(
            f"sample_solver={settings.solver!r}: only 'euler' works; "
            "unipc and dpm++ pass argparse and then raise"
        )
    if settings.infer_frames <= 0 or settings.infer_frames % FRAMES_MULTIPLE:
        reasons.append(
            f"infer_frames={settings.infer_frames} is not a multiple of {FRAMES_MULTIPLE} "
            "(48 is the trained value)"
        )
    if settings.num_clip is not None and settings.num_clip < 1:
        reasons.append(f"num_clip={settings.num_clip} must be at least 1")
    dims = parse_size(settings.size)
    if dims is None:
        reasons.append(f"size {settings.size!r} is not of the form W*H")
    elif dims[0] * dims[1] > MAX_AREA:
        reasons.append(
            f"size {settings.size} is above 720*400 pixels of area; larger areas crash on Live Avatar's "
            "fixed-size cache ('The expanded size of the tensor (3000) must match ...')"
        )
    elif settings.size.replace(" ", "") not in VALID_SIZES:
        reasons.append(f"size {settings.size} is not one of the valid sizes {', '.join(VALID_SIZES)}")
    if "+" in str(request.audio):
        reasons.append(
            f"the audio path {request.audio} contains '+', which Live Avatar reads as several speakers"
        )
    if not request.audio.is_file():
        reasons.append(f"audio file not found: {request.audio}")
    if not request.image.is_file():
        reasons.append(f"image file not found: {request.image}")
    if request.audio_seconds <= 0:
        reasons.append(f"audio_seconds={request.audio_seconds} must be positive")
    if not request.prompt.strip():
        reasons.append("empty prompt (without one the script silently uses its built-in example)")
    if not config.lora_path.is_absolute():
        reasons.append(
            f"LoRA path {config.lora_path} is relative; Live Avatar treats a non-absolute "
            f"--lora_path_dmd as a hub name and downloads it. Set {SETTING_LORA} to an absolute path"
        )
    return reasons


def _missing(path: Path, what: str, setting: str) -> str | None:
    if path.is_file() and path.stat().st_size > 0:
        return None
    state = "is empty" if path.is_file() else "not found"
    return f"{what} {state}: {path} (set {setting})"


def _dit_shards(ckpt: Path) -> tuple[list[Path], str | None]:
    """The DiT's weight files as diffusers will open them, or why they cannot be listed."""
    index = ckpt / DIT_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text()).get("weight_map") or {}
        except (OSError, ValueError) as exc:
            return [], f"the DiT shard index {index} cannot be read ({exc}); re-download it"
        return [ckpt / name for name in sorted(set(weight_map.values()))], None
    return [ckpt / DIT_SINGLE_FILE], None


def check_weights(config: LiveAvatarConfig) -> list[str]:
    """Every weight file Live Avatar's loaders will open that is missing, naming it and the setting."""
    ckpt = config.ckpt_dir
    if not ckpt.is_dir():
        return [f"Wan2.2-S2V-14B checkpoint folder not found: {ckpt} (set {SETTING_CKPT_DIR})"]
    tokenizer, wav2vec = ckpt / T5_TOKENIZER_DIR, ckpt / WAV2VEC_DIR
    checks = [
        _missing(ckpt / T5_CHECKPOINT, "T5 text encoder", SETTING_CKPT_DIR),
        _missing(tokenizer / "tokenizer_config.json", "T5 tokenizer", SETTING_CKPT_DIR),
        _missing(ckpt / VAE_CHECKPOINT, "VAE", SETTING_CKPT_DIR),
        _missing(ckpt / DIT_CONFIG, "DiT config", SETTING_CKPT_DIR),
    ]
    if not any((tokenizer / name).is_file() for name in ("tokenizer.json", "spiece.model")):
        checks.append(f"T5 tokenizer vocabulary not found: {tokenizer}/tokenizer.json or spiece.model "
                      f"(set {SETTING_CKPT_DIR})")
    shards, problem = _dit_shards(ckpt)
    checks.append(problem)
    checks += [_missing(shard, "DiT weights", SETTING_CKPT_DIR) for shard in shards]
    checks += [_missing(wav2vec / name, "wav2vec2 audio encoder file", SETTING_CKPT_DIR)
               for name in ("config.json", "preprocessor_config.json")]
    if not any((wav2vec / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        checks.append(f"wav2vec2 audio encoder weights not found: {wav2vec}/model.safetensors or "
                      f"pytorch_model.bin (set {SETTING_CKPT_DIR})")
    if config.lora_path.is_absolute():
        checks.append(_missing(config.lora_path, "Live Avatar LoRA", SETTING_LORA))
    return [c for c in checks if c]


def check_installation(config: LiveAvatarConfig) -> list[str]:
    """Settings that point at no usable Live Avatar checkout or launcher."""
    problems = []
    if not (config.checkout / ENTRY_SCRIPT).is_file():
        problems.append(f"{ENTRY_SCRIPT} not found in the Live Avatar checkout {config.checkout} "
                        f"(set {SETTING_DIR})")
    if not os.access(config.torchrun_path, os.X_OK):
        problems.append(f"torchrun not found or not executable: {config.torchrun_path} "
                        f"(set {SETTING_TORCHRUN})")
    return problems


@dataclass(frozen=True)
class EnvironmentReport:
    """What Live Avatar's own interpreter has: probed once, in the environment jobs run with."""

    python_version: tuple[int, int] | None
    flash_attention: bool  # flash_attn (2) or flash_attn_interface (3) importable
    problem: str | None = None  # why the probe itself failed

    def problems(self, config: LiveAvatarConfig, env: Mapping[str, str] | None = None) -> list[str]:
        if self.problem:
            return [self.problem]
        found = [] if self.flash_attention else [
            "FlashAttention is not installed in Live Avatar's environment: its text and audio "
            "cross-attention assert flash-attn 2 or 3 at the first DiT forward. Install it there "
            f"(`{config.python_path} -m pip install flash-attn --no-build-isolation`)"]
        captures = (env or {}).get("TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS") == "1"
        if (config.enable_compile and config.refuse_broken_compile and not captures and self.python_version
                and self.python_version >= COMPILE_BROKEN_FROM_PYTHON):
            found.append(
                f"compiling is on ({SETTING_COMPILE}=true) but Live Avatar's environment runs Python "
                f"{self.python_version[0]}.{self.python_version[1]}: torch.compile fails there at the "
                "first DiT forward (UnboundLocalError in attention.py flash_attention, a dynamo bug "
                f"with inlined comprehensions). {COMPILE_REMEDY}")
        return found


# Measured with torch 2.11 on Python 3.12 (GPU acceptance run); Live Avatar documents Python 3.10.
COMPILE_BROKEN_FROM_PYTHON = (3, 12)
COMPILE_REMEDY = (
    f"Set {SETTING_COMPILE}=false, run Live Avatar on Python 3.10 as it documents, or add "
    "TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS=1 to its environment (that made the failing function "
    "compile and run in isolation on Python 3.12 / torch 2.11; a whole compiled job has not been "
    "measured)")
_PROBE = (
    "import importlib.util as u, json, sys\n"
    "print(json.dumps({'python': sys.version_info[:2], 'flash': any(u.find_spec(m) is not None "
    "for m in ('flash_attn_interface', 'flash_attn'))}))"
)
_probed: dict[tuple[str, str, int], EnvironmentReport] = {}
_probe_lock = threading.Lock()


def probe_environment(config: LiveAvatarConfig, env: Mapping[str, str]) -> EnvironmentReport:
    """Ask Live Avatar's interpreter (with the jobs' environment) what it has; healthy answers are cached."""
    key = (str(config.python_path), str(config.checkout), hash(frozenset(env.items())))
    with _probe_lock:
        if key in _probed:
            return _probed[key]
    python = config.python_path
    if not os.access(python, os.X_OK):
        return EnvironmentReport(None, False, f"Live Avatar's python not found or not executable: {python} "
                                              f"(set {SETTING_PYTHON})")
    try:
        done = subprocess.run([str(python), "-c", _PROBE], cwd=config.checkout, env=dict(env),
                              capture_output=True, text=True, timeout=60)
        data = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return EnvironmentReport(None, False, f"could not query Live Avatar's python {python}: {exc}")
    if data is None:
        return EnvironmentReport(None, False, f"Live Avatar's python {python} failed: "
                                              f"{(done.stderr or '').strip()[-300:]}")
    report = EnvironmentReport(tuple(data["python"]), bool(data["flash"]))  # type: ignore[arg-type]
    if report.flash_attention:
        with _probe_lock:
            _probed[key] = report
    return report


def preflight(
    request: GenerationRequest, gang: GpuGang, config: LiveAvatarConfig, *, installation: bool = True
) -> tuple[Preset | None, Failure | None]:
    """The preset, or the failure that refuses the job before anything is launched."""
    try:
        preset = get_preset(request.preset)
    except KeyError as exc:
        return None, Failure(FailureKind.CONFIG_REJECTED, str(exc.args[0]))
    reasons = check_request(request, gang, preset, config)
    if installation:
        reasons += check_installation(config)
    if reasons:
        return preset, Failure(FailureKind.CONFIG_REJECTED, "; ".join(reasons))
    missing = check_weights(config)
    if missing:
        return preset, Failure(FailureKind.MISSING_WEIGHTS, "; ".join(missing))
    if installation:
        env = build_env(gang, config)
        problems = probe_environment(config, env).problems(config, env)
        if shutil.which("ffmpeg", path=env.get("PATH")) is None:
            # merge_video_audio runs plain `ffmpeg`, and a failure there is swallowed: the job
            # would run to the end and leave a video without sound.
            problems.append("no `ffmpeg` on the PATH Live Avatar runs with: it muxes the soundtrack "
                            "with it (imageio-ffmpeg's bundled binary is not on PATH); install ffmpeg "
                            "or add its folder to PATH")
        if problems:
            return preset, Failure(FailureKind.ENVIRONMENT, "; ".join(problems))
    return preset, None


# --------------------------------------------------------------------------------------------
# Arguments and command line (shared with the warm worker)


def partial_output_path(output: Path) -> Path:
    """Where the engine writes before verification; never mistaken for a finished video."""
    return output.with_name(f".{output.stem}.partial{output.suffix or '.mp4'}")


def load_arguments(gang: GpuGang, config: LiveAvatarConfig) -> dict[str, Any]:
    """Arguments fixed for the life of a loaded model: weights, topology, precision."""
    gpus = len(gang.devices)
    if gpus not in (SINGLE_GPU, PIPELINE_GPUS):
        raise ValueError(f"Live Avatar runs on 1 or 5 GPUs, not {gpus} (check_request refuses this)")
    pipeline = gpus == PIPELINE_GPUS
    args: dict[str, Any] = {
        "task": TASK,
        "ulysses_size": 1,
        "ckpt_dir": str(config.ckpt_dir),
        "training_config": TRAINING_CONFIG,
        "load_lora": True,  # without it the script ignores --lora_path_dmd
        "lora_path_dmd": str(config.lora_path),
        "offload_model": "False" if pipeline else str(bool(config.offload)),
        "convert_model_dtype": True,
        "num_gpus_dit": PIPELINE_DIT_GPUS if pipeline else 1,
        "enable_vae_parallel": pipeline,
        "single_gpu": not pipeline,
        "fp8": config.fp8,
    }
    return args


def job_arguments(request: GenerationRequest, plan: JobPlan, save_file: Path) -> dict[str, Any]:
    """Arguments of one generation: always every input explicit (else built-in examples are used)."""
    settings = plan.settings
    return {
        "prompt": request.prompt,
        "image": str(request.image),
        "audio": str(request.audio),
        "save_file": str(save_file),
        "size": settings.size,
        "num_clip": plan.clips,
        "infer_frames": settings.infer_frames,
        "sample_steps": settings.sample_steps,
        "sample_solver": settings.solver,
        "sample_guide_scale": 0,
        "base_seed": request.seed,
        ONLINE_DECODE_FLAG.lstrip("-"): settings.online_decode,
    }


def to_cli(args: Mapping[str, Any]) -> list[str]:
    """`{"fp8": True, "size": "688*368", "x": False}` -> `["--fp8", "--size", "688*368"]`."""
    argv: list[str] = []
    for key, value in args.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is False or value is None:
            continue
        else:
            argv += [f"--{key}", str(value)]
    return argv


def torchrun_prefix(gang: GpuGang, config: LiveAvatarConfig, master_port: int) -> list[str]:
    argv = [
        str(config.torchrun_path),
        "--nproc_per_node", str(len(gang.devices)),
        "--master_port", str(master_port),
    ]
    if len(gang.devices) > 1:
        # Every pipeline rank prints the denoising bars; with --tee torchrun prefixes each rank's
        # stderr lines with "[default<rank>]:", so progress can be counted on one rank only.
        # stderr only (2): stdout stays unprefixed, as the warm worker's JSON messages must.
        argv += ["--tee", "2"]
    return argv


def build_env(gang: GpuGang, config: LiveAvatarConfig) -> dict[str, str]:
    """The child's environment: ours minus our Python's, plus the gang's GPUs and the config's extras."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # Let `python` inside Live Avatar resolve to its own environment, not avatarflow's.
    env["PATH"] = f"{config.torchrun_path.parent}{os.pathsep}{env.get('PATH', '')}"
    env["CUDA_VISIBLE_DEVICES"] = gang.cuda_visible_devices
    # Gangs use NVML (PCI bus) indices; CUDA numbers fastest-first unless told otherwise.
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["PYTHONUNBUFFERED"] = "1"  # stream progress and errors as they happen
    env.setdefault("NCCL_DEBUG", "WARN")
    # Live Avatar compiles when ENABLE_COMPILE is unset: say what we mean either way.
    env["ENABLE_COMPILE"] = "true" if config.enable_compile else "false"
    env.update(config.extra_env)
    return env


def build_command(
    request: GenerationRequest,
    gang: GpuGang,
    preset: Preset,
    config: LiveAvatarConfig,
    master_port: int,
    save_file: Path | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The torchrun argv (run with the checkout as cwd) and its environment."""
    plan = plan_job(request, preset, config)
    save_file = save_file if save_file is not None else partial_output_path(request.output)
    argv = [
        *torchrun_prefix(gang, config, master_port),
        ENTRY_SCRIPT,
        *to_cli(load_arguments(gang, config)),
        *to_cli(job_arguments(request, plan, save_file)),
        *config.extra_args,
    ]
    return argv, build_env(gang, config)


# --------------------------------------------------------------------------------------------
# Master ports


class PortLease:
    """A master port held for one job (or one warm worker); released on `release()` or exit."""

    def __init__(self, port: int, lock_file: IO[bytes]) -> None:
        self.port = port
        self._lock_file: IO[bytes] | None = lock_file

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    def __enter__(self) -> PortLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PortAllocator:
    """Hands out master ports from a range; two holders, in any process of this host, never share one.

    A port is held through an exclusive flock on a file per port (the kernel drops it when the
    holder dies), and it is only handed out when nothing is listening on it.
    """

    _next_offset = os.getpid() % 97  # spread processes over the range; rotate within one

    def __init__(self, first: int, last: int, lock_dir: Path | None = None) -> None:
        if not 1024 <= first <= last <= 65535:
            raise ValueError(f"bad master port range {first}-{last}")
        self.first, self.last = first, last
        self.lock_dir = lock_dir or Path(tempfile.gettempdir()) / "avatarflow-ports"
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, config: LiveAvatarConfig) -> PortAllocator:
        return cls(*config.master_port_range, lock_dir=config.port_lock_dir)

    def acquire(self) -> PortLease:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        count = self.last - self.first + 1
        with self._lock:
            start = PortAllocator._next_offset
            for i in range(count):
                port = self.first + (start + i) % count
                lease = self._try(port)
                if lease is not None:
                    # Next time start after this port: a just-released port may linger in TIME_WAIT.
                    PortAllocator._next_offset = (start + i + 1) % count
                    return lease
        raise RuntimeError(f"no free master port in {self.first}-{self.last}")

    def _try(self, port: int) -> PortLease | None:
        handle = open(self.lock_dir / f"{port}.lock", "a+b")  # noqa: SIM115 - held by the lease
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        if not port_is_free(port):
            handle.close()
            return None
        return PortLease(port, handle)


def port_is_free(port: int) -> bool:
    """True when a TCP socket can bind the port on all interfaces (torchrun's store will)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Progress


_BAR = re.compile(r"^\s*(\d{1,3})%\|[^|]*\|\s*(\d+)/(\d+)")
_RATE = re.compile(r"([\d.]+)\s*(s/it|it/s)\]")
# torchrun --tee's line header: "[default3]:" (role "default", local rank 3).
_RANK_HEADER = re.compile(r"\[[A-Za-z_]*(\d+)\]:")


class TqdmProgress:
    """Turns Live Avatar's denoising bars into clips done, and times them.

    Each clip runs `bars_per_clip` blocks (4 at 48 frames), each with one tqdm bar over the 4
    sampling steps. tqdm repaints a bar in place with \\r and ends it with \\n when it closes, so a
    bar is finished when it first shows n == total after showing less; repaints of the same state
    do not count twice. Bars with a description ("Loading checkpoint shards: 100%|...| 4/4") are
    not denoising bars and never match.

    In the 5-GPU pipeline every rank prints its own bars (the decoding rank races through its
    bars first). torchrun's --tee header ("[default3]:") says whose text follows; only the bars
    of `count_rank` are counted — the last denoising rank, whose bar closes when a block's last
    step is done. Text without a header belongs to the last header seen.
    """

    def __init__(self, clips_planned: int, *, bars_per_clip: int = 4, steps_per_bar: int = SAMPLE_STEPS,
                 count_rank: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.clips_planned = clips_planned
        self.bars_per_clip = bars_per_clip
        self.steps_per_bar = steps_per_bar
        self.count_rank = count_rank
        self.bars_done = 0
        self._clock = clock
        self._rank: int | None = None
        self._bar_open: dict[int | None, bool] = {}  # per rank: a bar is showing n < total
        self._rank_of_last_rate: int | None = None
        self.started = clock()
        self.first_step_at: float | None = None  # when the first denoising bar appeared
        self.clip_ends: list[float] = []
        self.last_bar_at: float | None = None
        self.step_rates: list[float] = []  # seconds per step, as tqdm printed it when a bar closed

    @property
    def clips_done(self) -> int:
        return min(self.bars_done // self.bars_per_clip, self.clips_planned)

    def feed(self, segment: str, ends_line: bool = True) -> Progress | None:
        """Read one stderr segment (ended by \\n when `ends_line`, else by \\r); a Progress per clip done."""
        pieces = _RANK_HEADER.split(segment)  # [text, rank, text, rank, text, ...]
        update = None
        for i in range(0, len(pieces), 2):
            if i:
                self._rank = int(pieces[i - 1])
            update = self._read(pieces[i]) or update
        return update

    def _read(self, text: str) -> Progress | None:
        if self.count_rank is not None and self._rank != self.count_rank:
            return None
        match = _BAR.match(text)
        if not match:
            return None
        n, total = int(match.group(2)), int(match.group(3))
        if total != self.steps_per_bar:
            return None
        now = self._clock()
        if self.first_step_at is None:
            self.first_step_at = now
        if n != total:
            self._bar_open[self._rank] = True
            return None
        # A bar is done when it reaches n == total after showing less. tqdm repaints the final
        # state (ended by \r, then again by \n on close), and torchrun's --tee turns every repaint into
        # a line of its own: only the first n == total after n < total counts.
        rate = _RATE.search(text)
        per_step = None
        if rate and float(rate.group(1)) > 0:
            value = float(rate.group(1))
            per_step = value if rate.group(2) == "s/it" else 1.0 / value
        if not self._bar_open.get(self._rank, False):
            if per_step is not None and self.step_rates and self._rank_of_last_rate == self._rank:
                self.step_rates[-1] = per_step  # tqdm's closing repaint has the bar's final rate
            return None
        self._bar_open[self._rank] = False
        self.bars_done += 1
        self.last_bar_at = now
        if per_step is not None:
            self.step_rates.append(per_step)
            self._rank_of_last_rate = self._rank
        if self.bars_done % self.bars_per_clip or self.bars_done // self.bars_per_clip > self.clips_planned:
            return None
        self.clip_ends.append(now)
        done, planned = self.clips_done, self.clips_planned
        return Progress(done, planned, f"clip {done}/{planned}")

    def timings(self) -> dict[str, float | None]:
        """first_step_seconds, seconds_per_step, seconds_per_clip, as GenerationMetrics names them."""
        first = self.first_step_at - self.started if self.first_step_at is not None else None
        per_step = sorted(self.step_rates)[len(self.step_rates) // 2] if self.step_rates else None
        per_clip = None
        if len(self.clip_ends) > 1:
            per_clip = (self.clip_ends[-1] - self.clip_ends[0]) / (len(self.clip_ends) - 1)
        elif self.clip_ends and self.first_step_at is not None:
            per_clip = self.clip_ends[0] - self.first_step_at
        return {"first_step_seconds": first, "seconds_per_step": per_step, "seconds_per_clip": per_clip}

    def feed_text(self, text: str) -> list[Progress]:
        """Feed a whole captured stderr text (as a recorded log); the Progress updates in order."""
        segments, rest = split_segments(text)
        if rest:
            segments.append((rest, True))
        return [p for seg, ends in segments if (p := self.feed(seg, ends)) is not None]


def split_segments(buffer: str) -> tuple[list[tuple[str, bool]], str]:
    """Split on \\r and \\n: (segment, ended by \\n) pairs, and the unterminated rest."""
    # A trailing "\\r" may be the first half of "\\r\\n": decide when the next chunk comes.
    hold = buffer.endswith("\r")
    body = buffer[:-1] if hold else buffer
    segments: list[tuple[str, bool]] = []
    start = 0
    for match in re.finditer(r"\r\n|\r|\n", body):
        piece = body[start:match.start()]
        if piece.strip():
            segments.append((piece, match.group() != "\r"))
        start = match.end()
    return segments, body[start:] + ("\r" if hold else "")


# --------------------------------------------------------------------------------------------
# Process control


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def _descendants(root: int) -> list[int]:
    """Live descendants of `root`, from /proc (in whatever session or group they now are)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _signal_all(pgid: int, pids: list[int], sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class ProcessTree:
    """Remembers a launcher's descendants while it runs (a thread looks every `interval_s`).

    When torchrun dies abnormally its ranks are re-parented and, being in sessions of their
    own, escape both the process group and the parent chain: only pids seen earlier can still
    be found. Each is remembered with its start time, so a reused pid is never signalled.
    """

    def __init__(self, root: int, interval_s: float = 2.0) -> None:
        self.root = root
        self._seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(interval_s,), daemon=True)
        self._thread.start()

    def _watch(self, interval_s: float) -> None:
        while True:
            self.refresh()
            if self._stop.wait(interval_s):
                return

    def refresh(self) -> None:
        for pid in _descendants(self.root):
            if pid not in self._seen and (started := _start_time(pid)):
                self._seen[pid] = started

    def survivors(self) -> list[int]:
        """Remembered descendants that are still alive (and still the same processes)."""
        return [pid for pid, started in list(self._seen.items())
                if pid_alive(pid) and _start_time(pid) == started]

    def stop(self) -> None:
        self._stop.set()


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def kill_survivors(tree: ProcessTree, grace_s: float) -> list[int]:
    """SIGTERM, then SIGKILL, the remembered descendants still alive; the pids that were."""
    tree.stop()
    left = tree.survivors()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < end and any(pid_alive(p) for p in left):
            time.sleep(0.05)
    return left


def kill_process_group(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM torchrun's group and every descendant, wait, then SIGKILL whatever is left.

    torchrun starts each rank in a session of its own, outside the launcher's process group, and
    waits 30 s for ranks that ignore SIGTERM: the descendants are listed before anything is
    signalled, so a rank never outlives the kill holding its GPU.
    """
    pgid = proc.pid  # start_new_session=True made the child its group's leader
    tree = _descendants(proc.pid)
    _signal_all(pgid, tree, signal.SIGTERM)

    def alive() -> bool:
        return proc.poll() is None or bool(_group_members(pgid)) or any(pid_alive(p) for p in tree)

    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and alive():
        time.sleep(0.05)
    tree += [p for p in _descendants(proc.pid) if p not in tree]
    _signal_all(pgid, tree, signal.SIGKILL)
    try:
        proc.wait(timeout=max(grace_s, 5.0))
    except subprocess.TimeoutExpired:
        pass
    # Processes reparented to init die from the SIGKILL; wait briefly until they are gone.
    end = time.monotonic() + 5.0
    while (_group_members(pgid) or any(pid_alive(p) for p in tree)) and time.monotonic() < end:
        time.sleep(0.05)


class LogSink:
    """Appends a process's output to a log file, keeps a tail in memory for classification."""

    def __init__(self, log_path: Path | None, tail_lines: int = 400) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)

    def write(self, line: str) -> None:
        with self._lock:
            self.tail.append(line)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def tail_text(self) -> str:
        with self._lock:
            return "\n".join(self.tail)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def pump(stream: IO[bytes], on_segment: Callable[[str, bool], None]) -> None:
    """Read a pipe to EOF, calling `on_segment(text, ends_line)` for every \\r- or \\n-terminated piece.

    Reads whatever is available rather than whole lines: tqdm repaints with \\r and only writes
    \\n when a bar closes, so line reads would hold progress back.
    """
    rest = ""
    fd = stream.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        segments, rest = split_segments(rest + decoder.decode(chunk))
        for segment, ends_line in segments:
            on_segment(segment, ends_line)
    rest += decoder.decode(b"", final=True)
    if rest.strip("\r\n ").strip():
        on_segment(rest.rstrip("\r"), True)


# --------------------------------------------------------------------------------------------
# Classification and verification (shared with the warm worker)


_OOM = re.compile(r"OutOfMemoryError|CUDA out of memory|CUBLAS_STATUS_ALLOC_FAILED")
_EXPANDED = re.compile(r"The expanded size of the tensor \((\d+)\)")
_NCCL = re.compile(
    r"Watchdog caught collective operation timeout|ProcessGroupNCCL.*(?:timeout|timed out|Timeout)"
    r"|NCCL (?:error|communicator was aborted|timeout)|ncclInternalError|ncclSystemError"
    r"|DistBackendError|ncclRemoteError"
)
_SOLVER = re.compile(r"Unsupported solver|NotImplementedError:.*solver")
# torchrun's ChildFailedError summary of a rank that died of a signal.
_RANK_KILLED = re.compile(r"Signal (\d+) \(SIG\w+\) received by PID")
# More than 4 steps index a per-step KV cache that does not exist: on one GPU the fifth step's
# _move_kv_cache_to_working_gpu reads self.kv_cache1[str(moved_id)] -> KeyError: '5'.
_STEPS = re.compile(r"(?:_move_kv_cache_to_working_gpu|kv_cache1\[str\()[\s\S]*KeyError: '\d+'")
# save_video swallowed its error and wrote nothing; merge_video_audio then raises outside its try.
_NO_VIDEO = re.compile(r"FileNotFoundError: video file (\S+) does not exist")
_MISSING_FILE = re.compile(
    r"(?:FileNotFoundError|No such file or directory|does not appear to have a file named"
    r"|Can't load|Repository Not Found|LocalEntryNotFoundError|no file named [\w.]+ found in directory"
    r"|is not a local folder and is not a valid model identifier|Incorrect path_or_model_id"
    r"|OfflineModeIsEnabled|couldn't connect to 'https://huggingface.co')[^\n]*"
)
_NO_MODULE = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")
# Text and audio cross-attention call flash_attention, which asserts FlashAttention 2 when 3 is absent.
_FLASH_MISSING = re.compile(r"assert FLASH_ATTN_2_AVAILABLE|FLASH_ATTN_2_AVAILABLE")
# torch.compile on Python >= 3.12 (torch 2.11): a dynamo resume function after a graph break in
# attention.py's `[u[:v] for u, v in zip(v, k_lens)]` reads the comprehension's `v` unbound.
_COMPILE_UNBOUND = re.compile(r"UnboundLocalError: cannot access local variable")
_COMPILE_FAILED = re.compile(
    r"torch\._dynamo\.exc\.\w+|BackendCompilerFailed|InductorError|torch\._inductor\.exc\.\w+")


def classify_text(text: str, config: LiveAvatarConfig | None = None) -> Failure | None:
    """The failure a log tail or error message shows, most specific cause first; None when unknown."""
    if _OOM.search(text):
        return Failure(FailureKind.OUT_OF_MEMORY, "CUDA out of memory: " + _last_line(text, _OOM))
    if match := _EXPANDED.search(text):
        return Failure(
            FailureKind.CONFIG_REJECTED,
            f"the engine rejected the size: 'The expanded size of the tensor ({match.group(1)})' means "
            f"the output area is larger than its fixed cache allows (at most 720*400; valid sizes: "
            f"{', '.join(VALID_SIZES)})",
        )
    if _NCCL.search(text):
        return Failure(
            FailureKind.NCCL_HANG,
            "a pipeline rank failed and the others blocked in NCCL: " + _last_line(text, _NCCL),
        )
    if match := _RANK_KILLED.search(text):
        return Failure(
            FailureKind.WORKER_DIED,
            f"a rank was killed by signal {match.group(1)} (the OOM killer, an operator, a crash of the "
            "host process): torchrun ended the job; the next job starts fresh ranks",
        )
    if _SOLVER.search(text):
        return Failure(
            FailureKind.CONFIG_REJECTED,
            f"the engine rejected the sampler: only sample_solver euler works ({_last_line(text, _SOLVER)})",
        )
    if _STEPS.search(text):
        return Failure(
            FailureKind.CONFIG_REJECTED,
            f"the engine has one KV cache per sampling step: sample_steps must be {SAMPLE_STEPS}",
        )
    if match := _NO_VIDEO.search(text):
        return Failure(FailureKind.NO_OUTPUT,
                       f"Live Avatar wrote no video file ({match.group(1)}): its save_video swallowed "
                       "the error (look for 'save_video failed' in the log); the mux then failed")
    if match := _NO_MODULE.search(text):
        return Failure(
            FailureKind.ENVIRONMENT,
            f"Live Avatar's environment lacks the Python module {match.group(1)!r} "
            f"({_last_line(text, _NO_MODULE)}); install Live Avatar's requirements there",
        )
    if _FLASH_MISSING.search(text) and "AssertionError" in text:
        return Failure(
            FailureKind.ENVIRONMENT,
            "FlashAttention is not installed in Live Avatar's environment: its text and audio "
            "cross-attention assert flash-attn 2 or 3 at the first DiT forward; install flash-attn "
            "there (pip install flash-attn --no-build-isolation)",
        )
    if _COMPILE_UNBOUND.search(text) and ("_dynamo" in text or "flash_attention" in text):
        return Failure(
            FailureKind.ENVIRONMENT,
            "torch.compile failed at the first DiT forward (" + _last_line(text, _COMPILE_UNBOUND)
            + "): a dynamo bug with Python >= 3.12's inlined comprehensions in Live Avatar's "
            f"attention.py. {COMPILE_REMEDY}",
        )
    if _COMPILE_FAILED.search(text):
        return Failure(
            FailureKind.ENVIRONMENT,
            f"torch.compile failed ({_last_line(text, _COMPILE_FAILED)}); set {SETTING_COMPILE}=false "
            "or fix the compiler toolchain of Live Avatar's environment",
        )
    for line in reversed(text.splitlines()):
        if _MISSING_FILE.search(line) and _names_weights(line, config):
            return Failure(FailureKind.MISSING_WEIGHTS,
                           f"{line.strip()} (check {SETTING_CKPT_DIR} and {SETTING_LORA})")
    return None


def _names_weights(line: str, config: LiveAvatarConfig | None) -> bool:
    needles = ["ckpt", "safetensors", "Wan2.2", ".pth", "lora", "wav2vec", "umt5", "Quark-Vision",
               "config.json", "huggingface.co", "model identifier"]
    if config is not None:
        needles += [str(config.ckpt_dir), str(config.lora_path)]
    return any(n.lower() in line.lower() for n in needles)


def _last_line(text: str, pattern: re.Pattern[str]) -> str:
    for line in reversed(text.splitlines()):
        if pattern.search(line):
            return line.strip()[:400]
    return ""


def classify_exit(
    exit_status: int | None, tail: str, *, timed_out: bool, timeout_s: float,
    config: LiveAvatarConfig | None = None,
) -> Failure | None:
    """The failure of a finished or killed run; None when it exited 0 (the output still needs verifying)."""
    if timed_out:
        if _NCCL.search(tail):
            return Failure(FailureKind.NCCL_HANG, f"killed after {timeout_s:.0f} s blocked in NCCL: "
                           + _last_line(tail, _NCCL))
        return Failure(FailureKind.TIMEOUT,
                       f"no result after {timeout_s:.0f} s; the process group was killed")
    if exit_status == 0:
        return None
    known = classify_text(tail, config)
    if known is not None:
        return known
    return Failure(FailureKind.CRASHED, f"exited with status {exit_status}: {last_error_line(tail)}")


# torchrun's own summary of a failed child, which buries the child's real error.
_LAUNCHER_NOISE = re.compile(r"ChildFailedError|SignalException|elastic\.multiprocessing")
_EXCEPTION_LINE = re.compile(r"^(?:\[[^\]]*\]:?\s*)?[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b:?.*")


def last_error_line(tail: str) -> str:
    """The last exception line of the run (`RuntimeError: ...`), else its last lines."""
    for line in reversed(tail.splitlines()):
        if _EXCEPTION_LINE.match(line.strip()) and not _LAUNCHER_NOISE.search(line):
            return line.strip()[:500]
    return " | ".join(tail.strip().splitlines()[-5:])[-800:]


def finalize_output(partial: Path, request: GenerationRequest, plan: JobPlan) -> VideoInfo | Failure:
    """Verify the engine's file against the plan; move it to `request.output` only when it is sound."""
    expected = ("the speech" if plan.video_seconds >= request.audio_seconds - 1e-6 else
                f"{plan.clips} clip(s) of {plan.settings.infer_frames} frames, capped by num_clip")
    checked = verify_output(partial, plan.video_seconds, expected=expected)
    if isinstance(checked, Failure):
        partial.unlink(missing_ok=True)
        return checked
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, request.output)
    try:
        fd = os.open(request.output.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return checked


def plan_record(plan: JobPlan) -> dict[str, Any]:
    """The plan as recorded on the attempt."""
    return {"settings": dataclasses.asdict(plan.settings), "num_clip": plan.clips,
            "video_seconds": round(plan.video_seconds, 3), "timeout_s": plan.timeout_s,
            "planned_size": list(plan.size) if plan.size else None}


def verified_record(info: VideoInfo, plan: JobPlan) -> dict[str, Any]:
    """What verification found, and whether the picture has the size Live Avatar's rule predicts."""
    size = [info.width, info.height]
    return {"size": size, "fps": round(info.fps, 3), "duration_s": round(info.duration_s, 3),
            "audio_duration_s": info.audio_duration_s, "frames": info.frames,
            "video_codec": info.video_codec, "audio_codec": info.audio_codec,
            "size_as_planned": plan.size is None or list(plan.size) == size}


def progress_rank(gang: GpuGang) -> int | None:
    """The rank whose bars are counted: None on one GPU, the last denoising rank in the pipeline."""
    return PIPELINE_DIT_GPUS - 1 if len(gang.devices) == PIPELINE_GPUS else None


# --------------------------------------------------------------------------------------------
# GPU sampling hook


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
    from inference.gpus import NvmlSampler

    return NvmlSampler(gang.devices)


# --------------------------------------------------------------------------------------------
# The per-job engine


@dataclass
class RunOutcome:
    exit_status: int | None
    timed_out: bool
    tail: str
    seconds: float
    clips_done: int
    first_clip_seconds: float | None


def run_job_process(
    argv: list[str], env: Mapping[str, str], cwd: Path, log_path: Path, timeout_s: float,
    grace_s: float, tracker: TqdmProgress, progress: ProgressCallback | None = None,
) -> RunOutcome:
    """Run one launch in its own process group, streaming to the log and parsing progress."""
    sink = LogSink(log_path)
    started = time.monotonic()
    first_clip: list[float] = []

    def on_stdout(segment: str, ends_line: bool) -> None:
        sink.write(segment)

    def on_stderr(segment: str, ends_line: bool) -> None:
        sink.write(segment)
        update = tracker.feed(segment, ends_line)
        if update is not None:
            if not first_clip:
                first_clip.append(time.monotonic() - started)
            if progress is not None:
                progress(update)

    sink.write(f"$ (cd {shlex.quote(str(cwd))} && {shlex.join(argv)})")
    tracker.started = started  # timings count from the launch
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )
    except OSError as exc:
        sink.write(f"could not start: {exc}")
        sink.close()
        return RunOutcome(None, False, f"could not start {argv[0]}: {exc}", 0.0, 0, None)
    assert proc.stdout is not None and proc.stderr is not None
    tree = ProcessTree(proc.pid)
    readers = [
        threading.Thread(target=pump, args=(proc.stdout, on_stdout), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, on_stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
        if _group_members(proc.pid):
            sink.write("avatarflow: processes of the job outlived it; killing the process group")
            kill_process_group(proc, grace_s)
        if left := kill_survivors(tree, grace_s):
            sink.write(f"avatarflow: ranks {left} outlived torchrun; killed them")
    except subprocess.TimeoutExpired:
        timed_out = True
        sink.write(f"avatarflow: no result after {timeout_s:.0f} s; killing the process group {proc.pid}")
        kill_process_group(proc, grace_s)
        kill_survivors(tree, grace_s)
    except BaseException:
        kill_process_group(proc, grace_s)  # never leave GPUs held by an orphan
        kill_survivors(tree, grace_s)
        raise
    finally:
        tree.stop()
        for reader in readers:
            reader.join(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    seconds = time.monotonic() - started
    sink.write(f"avatarflow: exit status {proc.returncode} after {seconds:.1f} s")
    tail = sink.tail_text()
    sink.close()
    return RunOutcome(proc.returncode, timed_out, tail, seconds, tracker.clips_done,
                      first_clip[0] if first_clip else None)


class LiveAvatarEngine:
    """Per-job mode: one `torchrun` launch per video (loads the model every time)."""

    name = ENGINE_NAME

    def __init__(self, config: LiveAvatarConfig, *, ports: PortAllocator | None = None,
                 sampler_factory: SamplerFactory = nvml_sampler_factory) -> None:
        self.config = config
        self.ports = ports or PortAllocator.for_config(config)
        self.sampler_factory = sampler_factory

    def generate(self, request: GenerationRequest, gang: GpuGang,
                 progress: ProgressCallback | None = None) -> GenerationResult:
        preset, refused = preflight(request, gang, self.config)
        if refused is not None or preset is None:
            return GenerationResult(self.name, {"preset": request.preset, "gang": gang.name}, failure=refused)
        plan = plan_job(request, preset, self.config)
        settings, clips, timeout_s = plan.settings, plan.clips, plan.timeout_s
        partial = partial_output_path(request.output)
        request.output.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)  # a previous attempt's leftovers must not pass as this one's
        tracker = TqdmProgress(clips, bars_per_clip=settings.bars_per_clip,
                               steps_per_bar=settings.sample_steps, count_rank=progress_rank(gang))
        sampler = self.sampler_factory(gang)
        with self.ports.acquire() as lease:
            argv, env = build_command(request, gang, preset, self.config, lease.port, partial)
            config_record = {
                "mode": "per_job", "argv": argv, "cwd": str(self.config.checkout),
                "cuda_visible_devices": env["CUDA_VISIBLE_DEVICES"], "master_port": lease.port,
                "enable_compile": env.get("ENABLE_COMPILE"), **plan_record(plan), "gang": gang.name,
            }
            sampler.start()
            try:
                outcome = run_job_process(argv, env, self.config.checkout, request.log_path, timeout_s,
                                          self.config.kill_grace_s, tracker, progress)
            finally:
                samples = sampler.stop()
        metrics = GenerationMetrics(
            first_clip_seconds=outcome.first_clip_seconds, total_seconds=outcome.seconds,
            peak_memory_mb=dict(samples.peak_memory_mb), mean_utilisation=samples.mean_utilisation,
            exit_status=outcome.exit_status, clips_done=outcome.clips_done, clips_planned=clips,
            **tracker.timings(),
        )
        failure = classify_exit(outcome.exit_status, outcome.tail, timed_out=outcome.timed_out,
                                timeout_s=timeout_s, config=self.config)
        if failure is None:
            checked = finalize_output(partial, request, plan)
            if isinstance(checked, Failure):
                failure = checked
            else:
                config_record["output"] = verified_record(checked, plan)
        else:
            partial.unlink(missing_ok=True)
        if tracker.last_bar_at is not None:
            metrics.tail_seconds = tracker.started + outcome.seconds - tracker.last_bar_at
        if failure is not None:
            return GenerationResult(self.name, config_record, failure=failure, metrics=metrics)
        return GenerationResult(self.name, config_record, output=request.output, metrics=metrics)

    def close(self) -> None:
        """Nothing is held between jobs."""
