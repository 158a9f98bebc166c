"""Live Avatar's command line and environment, shared by the per-job launch and the warm worker."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inference.engine import GenerationRequest, GpuGang
from inference.liveavatar_config import LiveAvatarConfig
from inference.liveavatar_facts import (
    ENTRY_SCRIPT,
    ONLINE_DECODE_FLAG,
    PIPELINE_DIT_GPUS,
    PIPELINE_GPUS,
    SUPPORTED_GPU_COUNTS,
    TASK,
    TOPOLOGY_RULE,
    TRAINING_CONFIG,
)
from inference.liveavatar_job import JobPlan, partial_output_path, plan_job
from inference.presets import Preset


def load_arguments(gang: GpuGang, config: LiveAvatarConfig) -> dict[str, Any]:
    """Arguments fixed for the life of a loaded model: weights, topology, precision."""
    gpus = len(gang.devices)
    if gpus not in SUPPORTED_GPU_COUNTS:
        raise ValueError(f"gang {gang.name} has {gpus} GPUs: {TOPOLOGY_RULE} (check_request refuses this)")
    pipeline = gpus == PIPELINE_GPUS
    return {
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


def progress_rank(gang: GpuGang) -> int | None:
    """The rank whose bars are counted: None on one GPU, the last denoising rank in the pipeline."""
    return PIPELINE_DIT_GPUS - 1 if len(gang.devices) == PIPELINE_GPUS else None


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
