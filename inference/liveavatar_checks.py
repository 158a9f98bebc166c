"""Everything refused before a Live Avatar job is launched: the request, the installation, the
weights and the environment, each with the reason and the setting to fix.

The generation settings are checked by `inference.validation` (the same rules and words as
`avatarflow plan` and every other caller); this module adds what only a launch has: the gang, the
input files, the checkout, the weights on disk and Live Avatar's own interpreter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from inference.engine import Failure, FailureKind, GenerationRequest, GpuGang
from inference.liveavatar_command import build_env
from inference.liveavatar_config import (
    SETTING_CKPT_DIR,
    SETTING_DIR,
    SETTING_LORA,
    SETTING_TORCHRUN,
    LiveAvatarConfig,
)
from inference.liveavatar_environment import environment_problems
from inference.liveavatar_facts import (
    DIT_CONFIG,
    DIT_INDEX,
    DIT_SINGLE_FILE,
    ENTRY_SCRIPT,
    T5_CHECKPOINT,
    T5_TOKENIZER_DIR,
    VAE_CHECKPOINT,
    WAV2VEC_DIR,
)
from inference.presets import Preset, get_preset
from inference.validation import (
    IGNORED_BY_ENGINE,
    JOB_SETTINGS,
    check_audio_path,
    check_gpu_count,
    validate,
)


def check_request(
    request: GenerationRequest, gang: GpuGang, preset: Preset, config: LiveAvatarConfig
) -> list[str]:
    """Every reason Live Avatar would crash on or silently mishandle this job; empty when it may run."""
    count = len(gang.devices)
    reasons = [f"gang {gang.name} has {count or 'no'} GPUs: {p.reason}" for p in check_gpu_count(count)]
    problems = validate(preset, None, request.overrides, settable=JOB_SETTINGS)
    problems += check_audio_path(request.audio)
    # An engine has no one to show a warning to: a setting Live Avatar would ignore is refused
    # rather than dropped in silence. Other warnings (an infer_frames other than 48) may run.
    reasons += [str(p) for p in problems if p.severity == "error" or p.setting in IGNORED_BY_ENGINE]
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
    """Every weight file Live Avatar's loaders will open that is missing, naming it and the setting.

    In the order the loaders open them, so a partial download is refused before any GPU time is
    spent, naming what is missing (the loaders' own errors name hub ids, not files).
    """
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


def preflight(
    request: GenerationRequest, gang: GpuGang, config: LiveAvatarConfig, *, installation: bool = True
) -> tuple[Preset | None, Failure | None]:
    """The preset, or the failure that refuses the job before anything is launched.

    `installation=False` skips the checkout, launcher and environment checks (a warm worker
    started by a fixed test launcher has none).
    """
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
        problems = environment_problems(config, build_env(gang, config))
        if problems:
            return preset, Failure(FailureKind.ENVIRONMENT, "; ".join(problems))
    return preset, None
