"""FAKE Live Avatar entry point for tests. It is NOT the real model: nothing here is learned.

It stands in for ``minimal_inference/s2v_streaming_interact.py`` of Alibaba-Quark/LiveAvatar at
commit 9c2c38d so that CI (no GPU, no weights, no torch) can drive the engines across the same
process boundary. Everything observable was checked against that commit's source (this file
contains none of it; rules are re-implemented, messages and line numbers are quoted):

* argparse: every option with the real name, type, default and choices (``build_parser``),
  then ``_validate_args``: ``--ckpt_dir`` is required (AssertionError), only ``s2v-14B`` passes
  (the parser's default ``t2v-A14B`` fails the EXAMPLE_PROMPT assertion), missing prompt, image
  and audio silently become the built-in example (``examples/boy.jpg``, ``examples/boy.wav``,
  relative to the cwd), ``sample_steps`` None becomes the config's 40, ``base_seed`` -1 random.
* launch rules: RANK/WORLD_SIZE/LOCAL_RANK from the environment, ``dist.init_process_group``
  needs MASTER_ADDR/MASTER_PORT (env:// rendezvous, even on one GPU), WORLD_SIZE > 1 asserts
  >= 5 processes, ``--num_gpus_dit 4`` and ``--enable_vae_parallel``; the real progress prints
  (``world_size: N``, ``Using ...``, ``complete prepare conditional inputs``, ``denoising video
  done``, ``rank: R``, ``Finished.`` through logging on rank 0 only, stdout).
* loading in the order the real loaders open files, with their exception types and messages:
  T5 ``.pth`` (torch.load), tokenizer folder (transformers), VAE ``.pth``, the DiT (diffusers:
  config.json, the safetensors index and every shard it names), the wav2vec folder, then the
  LoRA under ``liveavatar/utils/load_weight_utils.py``'s path rules (absolute or "./" paths are
  local; a relative path containing "/" is first tried as a Hub repo id, offline that fails and
  it is then read as a local path). A file only has to exist: placeholders are enough
  (``tests/fakes/liveavatar/fake_layout.py`` makes them).
* generation: the output size comes from the IMAGE (ffprobe) through ``get_size_less_than_area``
  with ``MAX_AREA_CONFIGS[--size]``; the clip count from the audio's samples at 16 kHz (wav2vec
  frames -> 30 fps features -> clips of ``infer_frames * 1.2`` features, float arithmetic as in
  ``get_audio_embed_bucket_fps``), capped by ``--num_clip``; blocks per clip
  ``((infer_frames + 76) // 4 - 19) // 3``; one tqdm bar (tqdm's exact format, ``mininterval``
  repaint rule, close repaint + newline, also when an exception leaves the loop) per block over
  the ``sample_steps`` timesteps, on stderr. The denoising failures: a solver other than euler
  raises after "complete prepare conditional inputs"; more than 4 steps on one GPU raise
  ``KeyError: '5'`` in ``_move_kv_cache_to_working_gpu``; a condition sequence longer than the
  fixed cache (2800 tokens on one GPU, 3000 in the pipeline) raises the real "expanded size"
  RuntimeError at the first forward. Fewer than 4 steps run on one GPU.
* the 5-process pipeline (TPP): every rank loads everything and prints a bar per block; DiT rank
  k works only on timestep k, the VAE rank 4 finishes each bar at once and then waits for rank 3;
  rank 4 writes the video (``save_rank = num_gpus_dit``). Steps other than 4 deadlock there.
* saving: ``save_video`` (errors are logged at INFO and swallowed) writes 25 fps H.264, then
  ``merge_video_audio`` runs the real ffmpeg command (``-c:v copy -c:a aac -b:a 192k -shortest``)
  into ``<base>_temp<ext>`` and moves it over the file; a missing video raises FileNotFoundError
  outside its try (exit 1), an ffmpeg failure is logged and swallowed (silent file, exit 0).
  Without ``--save_file`` the real name under ``./output/`` is used (and without
  ``--lora_path_dmd`` the real AttributeError).

For speed the picture is a flat ``lavfi color`` source encoded with ``-preset ultrafast``.

FAKE_LIVEAVATAR_MODE picks an injected failure (all after a successful "load" unless said):

  oom                 torch.OutOfMemoryError when the second clip starts (or, with one clip, in
                      the final VAE decode): exit 1 (in the pipeline on rank 0).
  crash               RuntimeError "fake crash in the decoder" from the VAE decode (after the
                      first clip with --enable_online_decode, else after all bars; in the pipeline
                      on the VAE rank): exit 1. The old fake exited 3; an uncaught Python
                      exception exits 1, and so does torchrun.
  hang                rank 0 blocks for good right after loading and spawns a sleeping child;
                      FAKE_LIVEAVATAR_PIDFILE receives {"main": pid, "child": pid}. In the
                      pipeline the other ranks block in NCCL; their watchdog fires after
                      FAKE_LIVEAVATAR_NCCL_TIMEOUT_SECONDS (default 600, as torch's).
  nccl_hang           a pipeline rank (3; on one GPU rank 0 itself) wedges in its first step; the
                      ranks waiting on it print the ProcessGroupNCCL watchdog lines after
                      FAKE_LIVEAVATAR_NCCL_TIMEOUT_SECONDS (default 1 s in this mode: the real 10
                      minutes, compressed) and abort (SIGABRT, exit -6); torchrun then reports it.
  exit0_no_file       kept for old tests, but the real program cannot exit 0 without a file:
                      ``save_video`` fails (logged at INFO, swallowed), then ``merge_video_audio``
                      raises FileNotFoundError "video file ... does not exist": exit 1.
  mux_fails           the merge cannot run ffmpeg ("[Errno 2] No such file or directory:
                      'ffmpeg'", as where only imageio-ffmpeg's bundled binary exists); logged and
                      swallowed: a file without audio, exit 0.
  silent_file         alias of mux_fails (that is how the real program leaves a silent file).
  wrong_duration      the merge reads only the first half of the audio (stands for an audio
                      stream that ffmpeg decodes shorter than librosa did): exit 0.
  flash_attn_missing  no flash_attn / flash_attn_interface: the real bare AssertionError of
                      attention.py ``flash_attention`` at the first DiT forward (the prefill's
                      cross-attention), before any bar. The fake ``python`` beside the fake
                      torchrun then also hides its flash_attn stub, so probes agree.
  compile_unbound     with torch.compile on (ENABLE_COMPILE unset or "true": the real default),
                      the failure seen on Python 3.12 / torch 2.11: the first denoising step
                      compiles for FAKE_LIVEAVATAR_COMPILE_SECONDS (default 1 s), then raises
                      ``UnboundLocalError: cannot access local variable 'v' ...`` through
                      torch/_dynamo and a resume function of attention.py ``flash_attention``.
                      With TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS=1 that is avoided and inductor
                      fails instead, as measured on an H200: ``BackendCompilerFailed`` with
                      ``GuardOnDataDependentSymNode`` at causal_model_s2v.py's repeat_interleave.
                      With ENABLE_COMPILE=false nothing fails.

Other knobs: FAKE_LIVEAVATAR_STEP_SECONDS (seconds per sampling step of a DiT rank),
FAKE_LIVEAVATAR_LOAD_SECONDS (extra loading time), FAKE_LIVEAVATAR_COMPILE_SECONDS (extra time
of the first compiled forward when compiling), FAKE_LIVEAVATAR_NCCL_TIMEOUT_SECONDS.

The fake checkout around this file: ``torchrun`` (the fake launcher), ``python`` (the fake
environment's interpreter: python3 with a flash_attn stub from ``fake_env/``),
``liveavatar/configs/s2v_causal_sft.yaml`` (the LoRA settings the engines pass with
--training_config) and ``fake_layout.py`` (placeholder checkpoints for tests).

Standard library only (plus ffmpeg/ffprobe subprocesses): it runs "in another environment" and
must never import avatarflow. Known simplifications are listed in ``SIMPLIFICATIONS``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime

SOURCE = "Alibaba-Quark/LiveAvatar@9c2c38d"

SIMPLIFICATIONS = (
    "weights are only checked for existence (placeholders load); the LoRA parameter count printed is invented",
    "the index json may omit 'metadata' (recent diffusers reads index['metadata'] and would raise KeyError)",
    "the wav2vec folder only needs config.json (the real processor also reads preprocessor_config.json)",
    "audio samples come from ffmpeg's decoder at the native rate, resampled by librosa's ceil rule",
    "the Hub is never reached: a hub-style LoRA path fails as offline unless it is in ckpt/LiveAvatar's cache",
    "TTS, prompt extension and '+'-joined (multi-speaker, SAM2) audio fail early with plausible errors",
    "pipeline ranks do not talk to each other: their pacing is simulated from FAKE_LIVEAVATAR_STEP_SECONDS",
    "the model config logged at start omits the long negative prompt",
    "third-party traceback frames (torch, transformers, diffusers, librosa, PIL) have representative line numbers",
)

# ---------------------------------------------------------------------------------------------
# Recorded from the real configs (liveavatar/models/wan/wan_2_2/configs/__init__.py and
# wan_s2v_14B_modified.py / shared_config.py at 9c2c38d)

WAN_CONFIG_KEYS = ["t2v-A14B", "i2v-A14B", "ti2v-5B", "s2v-14B"]
SIZE_CONFIGS = {
    "720*1280": (720, 1280), "1280*720": (1280, 720), "480*832": (480, 832), "832*480": (832, 480),
    "704*1280": (704, 1280), "1280*704": (1280, 704), "1024*704": (1024, 704), "704*1024": (704, 1024),
    "720*400": (720, 400), "704*384": (704, 384), "688*368": (688, 368), "384*256": (384, 256),
}
MAX_AREA_CONFIGS = {key: w * h for key, (w, h) in SIZE_CONFIGS.items()}
S2V = {
    "t5_checkpoint": "models_t5_umt5-xxl-enc-bf16.pth",
    "t5_tokenizer": "google/umt5-xxl",
    "vae_checkpoint": "Wan2.1_VAE.pth",
    "wav2vec": "wav2vec2-large-xlsr-53-english",
    "sample_steps": 40, "sample_shift": 3, "sample_guide_scale": 4.5, "frame_num": 81,
    "sample_fps": 25, "motion_frames": 73, "num_frames_per_block": 3, "sample_solver": "unipc",
    "num_layers": 40, "num_heads": 40,
}
EXAMPLE_PROMPT = {
    "s2v-14B": {
        "prompt": (
            "Summer beach vacation style, a white cat wearing sunglasses sits on a surfboard. The "
            "fluffy-furred feline gazes directly at the camera with a relaxed expression. Blurred beach "
            "scenery forms the background featuring crystal-clear waters, distant green hills, and a blue "
            "sky dotted with white clouds. The cat assumes a naturally relaxed posture, as if savoring the "
            "sea breeze and warm sunlight. A close-up shot highlights the feline's intricate details and "
            "the refreshing atmosphere of the seaside."
        ),
        "image": "examples/boy.jpg",
        "audio": "examples/boy.wav",
        "tts_prompt_audio": "examples/fashion_blogger.wav",
        "tts_prompt_text": "希望你以后能够做的比我还好呦。",
        "tts_text": "收到好友从远方寄来的生日礼物，那份意外的惊喜与深深的祝福让我心中充满了甜蜜的快乐，笑容如花儿般绽放。",
    },
}
COND_CACHE_TOKENS = {"single": 2800, "tpp": 3000}  # cond_k/cond_v: [1, N, 40, 128]
KV_CACHE_KEYS = ("1", "2", "3", "4")  # single GPU: one KV cache per (pipeline) sampling step
VIDEO_RATE = 30  # AudioEncoder.video_rate
WAV2VEC_FPS = 50

MODE = os.environ.get("FAKE_LIVEAVATAR_MODE", "").strip()
MODES = ("", "oom", "crash", "hang", "nccl_hang", "exit0_no_file", "mux_fails", "silent_file",
         "wrong_duration", "flash_attn_missing", "compile_unbound")


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


STEP_SECONDS = _env_float("FAKE_LIVEAVATAR_STEP_SECONDS", 0.0)
LOAD_SECONDS = _env_float("FAKE_LIVEAVATAR_LOAD_SECONDS", 0.0)
COMPILE_SECONDS = _env_float("FAKE_LIVEAVATAR_COMPILE_SECONDS", 1.0 if MODE == "compile_unbound" else 0.0)
NCCL_TIMEOUT_SECONDS = _env_float("FAKE_LIVEAVATAR_NCCL_TIMEOUT_SECONDS", 1.0 if MODE == "nccl_hang" else 600.0)

# The real inference_utils reads this at import time and prints it (every rank, before argparse).
COMPILE = os.getenv("ENABLE_COMPILE", "true").lower() == "true"


# ---------------------------------------------------------------------------------------------
# Tracebacks in the real files' names and line numbers. The frames in LiveAvatar's own files
# (the script, liveavatar/...) carry their real line numbers and source lines at 9c2c38d; the
# frames in torch, transformers, diffusers, librosa and PIL are representative (those packages
# are not installed here), Python 3.10 style (no ^^^ markers), as in Live Avatar's environment.

SCRIPT = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(SCRIPT))
SITE = os.path.join(sys.prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")


def _lav(rel: str) -> str:
    return os.path.join(ROOT, "liveavatar", rel)


def _site(rel: str) -> str:
    return os.path.join(SITE, rel)


class FakeCrash(Exception):
    """An uncaught exception of the real program: printed as its traceback, exit status 1."""

    def __init__(self, frames: list[tuple[str, int, str, str]], last_line: str) -> None:
        super().__init__(last_line)
        self.frames = frames
        self.last_line = last_line


def F(path: str, line: int, func: str, code: str) -> tuple[str, int, str, str]:
    return (path, line, func, code)


MAIN = F(SCRIPT, 600, "<module>", "generate(args, training_settings)")
MODULE_CALL = [
    F(_site("torch/nn/modules/module.py"), 1773, "_wrapped_call_impl", "return self._call_impl(*args, **kwargs)"),
    F(_site("torch/nn/modules/module.py"), 1784, "_call_impl", "return forward_call(*args, **kwargs)"),
]
TORCH_LOAD = [
    F(_site("torch/serialization.py"), 1484, "load", 'with _open_file_like(f, "rb") as opened_file:'),
    F(_site("torch/serialization.py"), 759, "_open_file_like", "return _open_file(name_or_buffer, mode)"),
    F(_site("torch/serialization.py"), 740, "__init__", "super().__init__(open(name, mode))"),
]
HUB_VALIDATORS = F(_site("huggingface_hub/utils/_validators.py"), 114, "_inner_fn", "return fn(*args, **kwargs)")


def _pipe_file(tpp: bool) -> str:
    return _lav("models/wan/causal_s2v_pipeline_tpp.py" if tpp else "models/wan/causal_s2v_pipeline.py")


# Line numbers in causal_s2v_pipeline.py / causal_s2v_pipeline_tpp.py at 9c2c38d.
PIPE_LINES = {
    False: {"t5": 119, "vae": 128, "dit": 156, "wav2vec": 176, "lora": 209, "size": 742, "tts": 761,
            "audio": 870, "sam2_run": 815, "sam2_raise": 818, "solver": 925, "prefill": 1038, "step": 1084, "move_kv": 1083,
            "online_decode": 1117, "final_decode": 1166, "cat": 1188},
    True: {"t5": 122, "vae": 131, "dit": 159, "wav2vec": 179, "lora": 213, "size": 750, "tts": 769,
           "audio": 877, "sam2_run": 822, "sam2_raise": 825, "solver": 925, "prefill": 1021, "step": 1074, "stream_decode": 1124, "cat": 1136},
}


def _gen_frames(tpp: bool, key: str, code: str) -> list[tuple[str, int, str, str]]:
    """<module> -> generate() -> WanS2V.generate() at the named line."""
    return [MAIN, F(SCRIPT, 502, "generate", "video,dataset_info = wan_s2v.generate("),
            F(_pipe_file(tpp), PIPE_LINES[tpp][key], "generate", code)]


def _init_frames(tpp: bool, key: str, code: str) -> list[tuple[str, int, str, str]]:
    """<module> -> generate() -> WanS2V.__init__() at the named line."""
    return [MAIN, F(SCRIPT, 455, "generate", "wan_s2v = WanS2V("), F(_pipe_file(tpp), PIPE_LINES[tpp][key], "__init__", code)]


def _forward_frames(tpp: bool, sink: bool) -> list[tuple[str, int, str, str]]:
    """From WanS2V.generate into CausalWanModel_S2V.forward (the prefill or a denoising step)."""
    if sink:
        first = _gen_frames(tpp, "prefill", "self.noise_model( #update clean kv cache")
        inner = F(_lav("models/wan/causal_model_s2v.py"), 1526, "forward", "return self._forward_sink(*args, **kwargs)")
    else:
        first = _gen_frames(tpp, "step", "noise_pred_cond = self.noise_model(")
        inner = F(_lav("models/wan/causal_model_s2v.py"), 1528, "forward", "return self._forward_inference(*args, **kwargs)")
    return first + MODULE_CALL + [inner]


def print_traceback(crash: FakeCrash) -> None:
    lines = ["Traceback (most recent call last):"]
    for path, line, func, code in crash.frames:
        lines.append(f'  File "{path}", line {line}, in {func}')
        if code:
            lines.append(f"    {code}")
    lines.append(crash.last_line)
    sys.stdout.flush()
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# argparse, as the real _parse_args (same order, names, types, defaults, choices)


def str2bool(v):
    """The real utils.str2bool."""
    if isinstance(v, bool):
        return v
    v_lower = v.lower()
    if v_lower in ("yes", "true", "t", "y", "1"):
        return True
    if v_lower in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected (True/False)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Generate a image or video from a text prompt or image using Wan")
    add = p.add_argument
    add("--task", type=str, default="t2v-A14B", choices=list(WAN_CONFIG_KEYS), help="The task to run.")
    add("--size", type=str, default="1280*720", choices=list(SIZE_CONFIGS.keys()),
        help="The area (width*height) of the generated video.")
    add("--frame_num", type=int, default=None, help="How many frames of video are generated.")
    add("--ckpt_dir", type=str, default=None, help="The path to the checkpoint directory.")
    add("--offload_model", type=str2bool, default=None, help="Offload the model to CPU after each forward.")
    add("--ulysses_size", type=int, default=1, help="The size of the ulysses parallelism in DiT.")
    add("--t5_fsdp", action="store_true", default=False, help="Whether to use FSDP for T5.")
    add("--t5_cpu", action="store_true", default=False, help="Whether to place T5 model on CPU.")
    add("--dit_fsdp", action="store_true", default=False, help="Whether to use FSDP for DiT.")
    add("--save_file", type=str, default=None, help="The file to save the generated video to.")
    add("--save_dir", type=str, default=None, help="The directory to save the generated video to.")
    add("--prompt", type=str, default=None, help="The prompt to generate the video from.")
    add("--use_prompt_extend", action="store_true", default=False, help="Whether to use prompt extend.")
    add("--prompt_extend_method", type=str, default="local_qwen", choices=["dashscope", "local_qwen"],
        help="The prompt extend method to use.")
    add("--prompt_extend_model", type=str, default=None, help="The prompt extend model to use.")
    add("--prompt_extend_target_lang", type=str, default="zh", choices=["zh", "en"],
        help="The target language of prompt extend.")
    add("--base_seed", type=int, default=-1, help="The seed to use for generating the video.")
    add("--image", type=str, default=None, help="The image to generate the video from.")
    add("--sample_solver", type=str, default="euler", choices=["euler", "unipc", "dpm++"],
        help="The solver used to sample.")
    add("--sample_steps", type=int, default=None, help="The sampling steps.")
    add("--sample_shift", type=float, default=None, help="Sampling shift factor for flow matching schedulers.")
    add("--sample_guide_scale", type=float, default=None, help="Classifier free guidance scale.")
    add("--convert_model_dtype", action="store_true", default=False, help="Whether to convert model paramerters dtype.")
    add("--num_clip", type=int, default=None, help="Number of video clips to generate.")
    add("--audio", type=str, default=None, help="Path to the audio file, e.g. wav, mp3")
    add("--enable_tts", action="store_true", default=False, help="Use CosyVoice to synthesis audio")
    add("--tts_prompt_audio", type=str, default=None, help="Path to the tts prompt audio file.")
    add("--tts_prompt_text", type=str, default=None, help="Content to the tts prompt audio.")
    add("--tts_text", type=str, default=None, help="Text wish to synthesize")
    add("--pose_video", type=str, default=None, help="Provide Dw-pose sequence to do Pose Driven")
    add("--start_from_ref", action="store_true", default=False,
        help="whether set the reference image as the starting point for generation")
    add("--infer_frames", type=int, default=80, help="Number of frames per clip.")
    add("--load_lora", action="store_true", default=False, help="Whether to load the LoRA weights.")
    add("--lora_path", type=str, default=None, help="The path to the LoRA weights.")
    add("--lora_path_dmd", type=str, default=None, help="The path to the LoRA weights for DMD.")
    add("--training_config", type=str, default=None, help="The path to the training config file.")
    add("--use_dataset", action="store_true", default=False, help="Whether to use the dataset for inference.")
    add("--dataset_sample_idx", type=int, default=0, help="The index of the sample to use for inference.")
    add("--drop_motion_noisy", action="store_true", default=False, help="Whether to drop the motion noisy.")
    add("--single_gpu", action="store_true", default=False, help="Whether to use a single GPU.")
    add("--using_merged_ckpt", action="store_true", default=False, help="Whether to use the merged ckpt.")
    add("--num_gpus_dit", type=int, default=4, help="The number of GPUs to use for DiT.")
    add("--enable_vae_parallel", action="store_true", default=False,
        help="Whether to enable VAE parallel decoding on a separate GPU.")
    add("--offload_kv_cache", action="store_true", default=False, help="Whether to offload the KV cache to CPU.")
    add("--enable_online_decode", action="store_true", default=False, help="Whether to enable online decode.")
    add("--fp8", action="store_true", default=False, help="Whether to enable fp8 quantization.")
    return p


def validate_args(args: argparse.Namespace) -> None:
    """The real _validate_args (the asserts raise through _parse_args at line 334)."""
    frames = [F(SCRIPT, 598, "<module>", "args = _parse_args()"), F(SCRIPT, 334, "_parse_args", "_validate_args(args)")]
    if args.ckpt_dir is None:
        raise FakeCrash(frames + [F(SCRIPT, 47, "_validate_args", 'assert args.ckpt_dir is not None, "Please specify the checkpoint directory."')],
                        "AssertionError: Please specify the checkpoint directory.")
    if args.task not in EXAMPLE_PROMPT:
        raise FakeCrash(frames + [F(SCRIPT, 49, "_validate_args", 'assert args.task in EXAMPLE_PROMPT, f"Unsupport task: {args.task}"')],
                        f"AssertionError: Unsupport task: {args.task}")
    example = EXAMPLE_PROMPT[args.task]
    if args.prompt is None:
        args.prompt = example["prompt"]
    if args.image is None:
        args.image = example["image"]
    if args.audio is None and args.enable_tts is False:
        args.audio = example["audio"]
    if (args.tts_prompt_audio is None or args.tts_text is None) and args.enable_tts is True:
        args.tts_prompt_audio = example["tts_prompt_audio"]
        args.tts_prompt_text = example["tts_prompt_text"]
        args.tts_text = example["tts_text"]
    if args.sample_steps is None:
        args.sample_steps = S2V["sample_steps"]
    if args.sample_shift is None:
        args.sample_shift = S2V["sample_shift"]
    if args.sample_guide_scale is None:
        args.sample_guide_scale = S2V["sample_guide_scale"]
    if args.frame_num is None:
        args.frame_num = S2V["frame_num"]
    args.base_seed = args.base_seed if args.base_seed >= 0 else random.randint(0, sys.maxsize)


def read_training_config(path: str | None) -> dict:
    """args_config.parse_args_for_training_config: top-level keys of the YAML (a tiny reader)."""
    if not path:
        return {}
    try:
        handle = open(path)  # noqa: SIM115
    except OSError as exc:
        raise FakeCrash(
            [F(SCRIPT, 599, "<module>", "training_settings = training_config_parser(args.training_config)"),
             F(_lav("utils/args_config.py"), 42, "parse_args_for_training_config", 'with open(training_config_path, "r") as f:')],
            f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror}: {path!r}") from None
    settings: dict = {}
    with handle:
        for raw in handle:
            if not raw.strip() or raw[0] in " \t#-" or ":" not in raw:
                continue
            key, _, value = raw.partition(":")
            value = value.split(" #", 1)[0].strip()
            settings[key.strip()] = _yaml_scalar(value)
    return settings


def _yaml_scalar(value: str):
    if value == "" or value in ("~", "null"):
        return None
    if value[0] in "'\"" and value[-1] == value[0]:
        return value[1:-1]
    if value in ("true", "True"):
        return True
    if value in ("false", "False"):
        return False
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


# ---------------------------------------------------------------------------------------------
# The generation rules, as functions tests can call


def size_less_than_area(height: int, width: int, target_area: int, divisor: int = 64) -> tuple[int, int]:
    """WanS2V.get_size_less_than_area: (HEIGHT, WIDTH) padded to multiples of 64, area <= target."""
    if height * width <= target_area:
        max_upper_area, min_scale, max_scale = target_area, 0.1, 1.0
    else:
        max_upper_area = target_area
        d = divisor - 1
        b = d * (height + width)
        a = height * width
        c = d ** 2 - max_upper_area
        min_scale = (-b + math.sqrt(b ** 2 - 2 * a * c)) / (2 * a)
        max_scale = math.sqrt(max_upper_area / (height * width))
    for i in range(100):
        scale = max_scale - (max_scale - min_scale) * i / 100
        new_height, new_width = int(height * scale), int(width * scale)
        padded_height = new_height + (64 - new_height % 64) % 64
        padded_width = new_width + (64 - new_width % 64) % 64
        if padded_height * padded_width <= max_upper_area:
            return padded_height, padded_width
    aspect_ratio = width / height
    target_width = int((target_area * aspect_ratio) ** 0.5 // divisor * divisor)
    target_height = int((target_area / aspect_ratio) ** 0.5 // divisor * divisor)
    if target_width >= width or target_height >= height:
        target_width = int(width // divisor * divisor)
        target_height = int(height // divisor * divisor)
    return target_height, target_width


def output_size(image_width: int, image_height: int, size: str) -> tuple[int, int]:
    """(width, height) of the video for an image of that size and a --size key."""
    height, width = size_less_than_area(image_height, image_width, MAX_AREA_CONFIGS[size])
    return width, height


def cond_tokens(height: int, width: int) -> int:
    """Tokens the prefill writes into the condition cache: the reference frame plus FramePack's
    motion tokens (1 latent frame at 1x, 2 at 2x, 16 at 4x compression) over an H/8 x W/8 latent."""
    lh, lw = height // 8, width // 8
    ref = (lh // 2) * (lw // 2)
    return 2 * ref + (lh // 4) * (lw // 4) + 4 * ((lh // 8) * (lw // 8))


def wav2vec_frames(samples_16k: int) -> int:
    """wav2vec2's conv feature extractor: 400-sample receptive field, 320-sample stride."""
    return (samples_16k - 400) // 320 + 1 if samples_16k >= 400 else 0


def audio_clips(samples_16k: int, infer_frames: int, fps: int = S2V["sample_fps"]) -> int:
    """AudioEncoder.get_audio_embed_bucket_fps's min_batch_num, with its float arithmetic."""
    seq_len = wav2vec_frames(samples_16k) / float(WAV2VEC_FPS)
    audio_frame_num = int(seq_len * VIDEO_RATE)  # linear_interpolation's output_len
    scale = VIDEO_RATE / fps
    return int(audio_frame_num / (infer_frames * scale)) + 1


def blocks_per_clip(infer_frames: int) -> int:
    lat_motion_frames = (S2V["motion_frames"] + 3) // 4
    lat_target_frames = (infer_frames + 3 + S2V["motion_frames"]) // 4 - lat_motion_frames
    return lat_target_frames // S2V["num_frames_per_block"]


def video_frames(clips: int, infer_frames: int, *, tpp: bool) -> int:
    """Frames of the decoded video: the first clip drops 3. On one GPU each clip decodes
    infer_frames frames; the pipeline's VAE rank keeps at most 12 per block (3 latent frames)."""
    if clips <= 0:
        return 0
    if not tpp:
        return clips * infer_frames - 3
    nb = blocks_per_clip(infer_frames)
    per_block = min(4 * S2V["num_frames_per_block"], -((-infer_frames) // nb)) if nb else 0
    return clips * nb * per_block - 3


def video_seconds(clips: int, infer_frames: int, *, tpp: bool = False) -> float:
    return video_frames(clips, infer_frames, tpp=tpp) / S2V["sample_fps"]


# ---------------------------------------------------------------------------------------------
# tqdm, as it prints without a description on a non-tty stream


def _format_interval(t: float) -> str:
    mins, s = divmod(int(t), 60)
    h, m = divmod(mins, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_bar(n: int, total: int, elapsed: float, desc: str = "", unicode: bool = True) -> str:
    """tqdm.format_meter's default layout, bar of 10 characters."""
    rate = n / elapsed if elapsed and n else None
    if rate is None:
        rate_fmt = "?it/s"
    elif rate < 1:
        rate_fmt = f"{1 / rate:5.2f}s/it"
    else:
        rate_fmt = f"{rate:5.2f}it/s"
    prefix = f"{desc}: " if desc else ""
    if not total:
        return f"{prefix}{n}it [{_format_interval(elapsed)}, {rate_fmt}]"
    frac = n / total
    remaining = _format_interval((total - n) / rate) if rate else "?"
    if unicode:
        charset, nsyms = " " + "".join(chr(c) for c in range(0x258F, 0x2587, -1)), 8
    else:
        charset, nsyms = " 123456789#", 10
    full, part = divmod(int(frac * 10 * nsyms), nsyms)
    bar = charset[-1] * full
    if full < 10:
        bar += charset[part] + charset[0] * (10 - full - 1)
    return f"{prefix}{frac * 100:3.0f}%|{bar}| {n}/{total} [{_format_interval(elapsed)}<{remaining}, {rate_fmt}]"


class Bar:
    """One tqdm progress bar over `total` iterations: the initial paint, a repaint after an
    iteration only when 0.1 s (mininterval) passed since the last one, and on close a final
    repaint and a newline (tqdm closes on a finished loop and on an exception leaving it)."""

    def __init__(self, total: int, desc: str = "", stream=None) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self.stream = stream or sys.stderr
        encoding = (getattr(self.stream, "encoding", "") or "").lower().replace("-", "")
        self.unicode = encoding in ("utf8", "utf", "ucs2", "ucs4")
        self.start = self.last_print = time.monotonic()
        self.last_len = 0
        self.closed = False
        self._paint()

    def _paint(self) -> None:
        text = format_bar(self.n, self.total, time.monotonic() - self.start, self.desc, self.unicode)
        self.stream.write("\r" + text + " " * max(self.last_len - len(text), 0))
        self.stream.flush()
        self.last_len = len(text)

    def update(self) -> None:
        self.n += 1
        now = time.monotonic()
        if now - self.last_print >= 0.1:
            self.last_print = now
            self._paint()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._paint()
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------------------------
# Media


def probe_image(path: str) -> tuple[int, int]:
    """(width, height) as PIL's Image.open sees it; the real errors when it cannot."""
    frames = [MAIN, F(SCRIPT, 426, "generate", 'img = Image.open(args.image).convert("RGB")')]
    if not os.path.exists(path):
        raise FakeCrash(frames + [F(_site("PIL/Image.py"), 3505, "open", 'fp = builtins.open(filename, "rb")')],
                        f"FileNotFoundError: [Errno 2] No such file or directory: {path!r}")
    if os.path.isdir(path):
        raise FakeCrash(frames + [F(_site("PIL/Image.py"), 3505, "open", 'fp = builtins.open(filename, "rb")')],
                        f"IsADirectoryError: [Errno 21] Is a directory: {path!r}")
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "json", path], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    streams = json.loads(done.stdout or "{}").get("streams") or [{}]
    if done.returncode != 0 or "width" not in streams[0]:
        raise FakeCrash(frames + [F(_site("PIL/Image.py"), 3536, "open", "raise UnidentifiedImageError(msg)")],
                        f"PIL.UnidentifiedImageError: cannot identify image file {path!r}")
    return int(streams[0]["width"]), int(streams[0]["height"])


def audio_samples_16k(path: str, tpp: bool) -> int:
    """Samples librosa.load(path, sr=16000) returns: the decoded samples at the native rate,
    resampled to ceil(n * 16000 / sr) (librosa.resample's length rule)."""
    frames = _gen_frames(tpp, "audio", "audio_emb, nr = self.encode_audio(audio_path, infer_frames=infer_frames)") + [
        F(_pipe_file(tpp), 449 if tpp else 445, "encode_audio", "z = self.audio_encoder.extract_audio_feat("),
        F(_lav("models/wan/wan_2_2/modules/s2v/audio_encoder.py"), 70, "extract_audio_feat",
          "audio_input, sample_rate = librosa.load(audio_path, sr=16000)"),
        F(_site("librosa/core/audio.py"), 184, "load", "y, sr_native = __audioread_load(path, offset, duration, dtype)"),
    ]
    if not os.path.exists(path):
        raise FakeCrash(frames + [F(_site("audioread/rawread.py"), 64, "__init__", "self._fh = open(filename, 'rb')")],
                        f"FileNotFoundError: [Errno 2] No such file or directory: {path!r}")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
         "-of", "json", path], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    streams = json.loads(probe.stdout or "{}").get("streams") or [{}]
    if probe.returncode != 0 or not streams[0].get("sample_rate"):
        raise FakeCrash(frames + [F(_site("audioread/__init__.py"), 132, "audio_open", "raise NoBackendError()")],
                        "audioread.exceptions.NoBackendError")
    rate = int(streams[0]["sample_rate"])
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-map", "0:a:0", "-ac", "1",
                          "-f", "s16le", "-acodec", "pcm_s16le", "-"], capture_output=True, stdin=subprocess.DEVNULL)
    native = len(pcm.stdout) // 2
    return native if rate == 16000 else int(math.ceil(native * (16000.0 / rate)))


# ---------------------------------------------------------------------------------------------
# Loading the checkpoint, in the real order


def _torch_load_missing(frames: list, path: str) -> FakeCrash:
    if os.path.isdir(path):
        return FakeCrash(frames + TORCH_LOAD, f"IsADirectoryError: [Errno 21] Is a directory: {path!r}")
    return FakeCrash(frames + TORCH_LOAD, f"FileNotFoundError: [Errno 2] No such file or directory: {path!r}")


def _hf_folder_error(frames: list, folder: str, needed: str, kind: str) -> FakeCrash | None:
    """transformers' answer for a local model folder that is missing or lacks `needed`."""
    hub = _site("transformers/utils/hub.py")
    if not os.path.isdir(folder):
        return FakeCrash(frames + [F(hub, 469, "cached_file", "raise EnvironmentError(")],
                         f"OSError: Incorrect path_or_model_id: '{folder}'. Please provide either the path to a "
                         "local folder or the repo_id of a model on the Hub.")
    if not os.path.isfile(os.path.join(folder, needed)):
        if kind == "tokenizer":
            return FakeCrash(frames + [F(hub, 403, "cached_file", "raise EnvironmentError(")],
                             f"OSError: {folder} does not appear to have a file named config.json. Checkout "
                             f"'https://huggingface.co/{folder}/tree/None' for available files.")
        return FakeCrash(frames + [F(hub, 403, "cached_file", "raise EnvironmentError(")],
                         f"OSError: {folder} does not appear to have a file named {needed}. Checkout "
                         f"'https://huggingface.co/{folder}/tree/None' for available files.")
    return None


def _shard_files(ckpt: str, frames: list) -> list[str]:
    """diffusers ModelMixin.from_pretrained: config.json, then the weights (sharded or not)."""
    modeling = _site("diffusers/models/modeling_utils.py")
    if not os.path.isfile(os.path.join(ckpt, "config.json")):
        raise FakeCrash(frames + [HUB_VALIDATORS, F(modeling, 1030, "from_pretrained", "config, unused_kwargs, commit_hash = cls.load_config("),
                                  HUB_VALIDATORS, F(_site("diffusers/configuration_utils.py"), 409, "load_config", "raise EnvironmentError(")],
                        f"OSError: Error no file named config.json found in directory {ckpt}.")
    index = os.path.join(ckpt, "diffusion_pytorch_model.safetensors.index.json")
    hub_utils = _site("diffusers/utils/hub_utils.py")
    if os.path.isfile(index):
        where = frames + [HUB_VALIDATORS, F(modeling, 1121, "from_pretrained", "resolved_model_file, sharded_metadata = _get_checkpoint_shard_files(")]
        try:
            with open(index) as handle:
                data = json.load(handle)
        except ValueError as exc:
            raise FakeCrash(where + [F(hub_utils, 512, "_get_checkpoint_shard_files", "index = json.loads(f.read())")],
                            f"json.decoder.JSONDecodeError: {exc}") from None
        if not isinstance(data, dict) or "weight_map" not in data:
            raise FakeCrash(where + [F(hub_utils, 514, "_get_checkpoint_shard_files",
                                       'original_shard_filenames = sorted(set(index["weight_map"].values()))')],
                            "KeyError: 'weight_map'")
        shards_path = os.path.join(ckpt, "")
        names = sorted(set(data["weight_map"].values()))
        for name in names:
            shard = os.path.join(shards_path, name)
            if not os.path.exists(shard):
                raise FakeCrash(where + [F(hub_utils, 526, "_get_checkpoint_shard_files", "raise FileNotFoundError(")],
                                f"FileNotFoundError: {shards_path} does not appear to have a file named {shard} "
                                "which is required according to the checkpoint index.")
        return [os.path.join(shards_path, name) for name in names]
    single = os.path.join(ckpt, "diffusion_pytorch_model.safetensors")
    if os.path.isfile(single):
        return [single]
    raise FakeCrash(frames + [HUB_VALIDATORS, F(modeling, 1145, "from_pretrained", "model_file = _get_model_file("),
                              HUB_VALIDATORS, F(hub_utils, 281, "_get_model_file", "raise EnvironmentError(")],
                    f"OSError: Error no file named diffusion_pytorch_model.bin found in directory {ckpt}.")


def load_weights(args: argparse.Namespace, tpp: bool) -> None:
    """WanS2V.__init__: T5 (.pth, tokenizer), VAE, the DiT, wav2vec."""
    ckpt = args.ckpt_dir
    if LOAD_SECONDS:
        time.sleep(LOAD_SECONDS)
    t5 = os.path.join(ckpt, S2V["t5_checkpoint"])
    t5_frames = _init_frames(tpp, "t5", "self.text_encoder = T5EncoderModel(")
    logging.info(f"loading {t5}")
    if not os.path.isfile(t5):
        raise _torch_load_missing(t5_frames + [F(_lav("models/wan/wan_2_2/modules/t5.py"), 496, "__init__",
                                                 "model.load_state_dict(torch.load(checkpoint_path, map_location='cpu'))")], t5)
    tokenizer = os.path.join(ckpt, S2V["t5_tokenizer"])
    crash = _hf_folder_error(
        t5_frames + [F(_lav("models/wan/wan_2_2/modules/t5.py"), 503, "__init__", "self.tokenizer = HuggingfaceTokenizer("),
                     F(_lav("models/wan/wan_2_2/modules/tokenizers.py"), 46, "__init__",
                       "self.tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)"),
                     F(_site("transformers/models/auto/tokenization_auto.py"), 946, "from_pretrained",
                       "tokenizer_config = get_tokenizer_config(pretrained_model_name_or_path, **kwargs)"),
                     F(_site("transformers/models/auto/tokenization_auto.py"), 778, "get_tokenizer_config",
                       "resolved_config_file = cached_file(")],
        tokenizer, "tokenizer_config.json", "tokenizer")
    if crash:
        raise crash
    vae = os.path.join(ckpt, S2V["vae_checkpoint"])
    vae_module = "vae_streaming.py" if tpp else "vae2_1.py"
    logging.info(f"loading {vae}")
    if not os.path.isfile(vae):
        raise _torch_load_missing(
            _init_frames(tpp, "vae", "self.vae = Wan2_1_VAE(") + [
                F(_lav(f"models/wan/wan_2_2/modules/{vae_module}"), 735 if tpp else 642, "__init__", "self.model = _video_vae("),
                F(_lav(f"models/wan/wan_2_2/modules/{vae_module}"), 707 if tpp else 614, "_video_vae",
                  "torch.load(pretrained_path, map_location=device), assign=True)")], vae)
    logging.info(f"Creating WanModel from {ckpt}")
    shards = _shard_files(ckpt, _init_frames(tpp, "dit", "self.noise_model = CausalWanModel_S2V.from_pretrained("))
    if len(shards) > 1:
        bar = Bar(len(shards), desc="Loading checkpoint shards")
        for _ in shards:
            bar.update()
        bar.close()
    wav2vec = os.path.join(ckpt, S2V["wav2vec"])
    crash = _hf_folder_error(
        _init_frames(tpp, "wav2vec", "self.audio_encoder = AudioEncoder(") + [
            F(_lav("models/wan/wan_2_2/modules/s2v/audio_encoder.py"), 59, "__init__",
              "self.processor = Wav2Vec2Processor.from_pretrained(model_id)")],
        wav2vec, "config.json", "wav2vec")
    if crash:
        raise crash


_REPO_ID = re.compile(r"^(\b[\w\-.]+\b/)?\b[\w\-.]{1,96}\b$")


def _hub_download_error(repo_id: str) -> str | None:
    """What hf_hub_download(repo_id, "liveavatar.safetensors", cache_dir="ckpt/LiveAvatar") says here:
    None when the file is in that cache, else the message of the error (the Hub is never reached)."""
    if repo_id.count("/") > 1:
        return (f"Repo id must be in the form 'repo_name' or 'namespace/repo_name': '{repo_id}'. "
                "Use `repo_type` argument if needed.")
    if not _REPO_ID.match(repo_id):
        return ("Repo id must use alphanumeric chars or '-', '_', '.', '--' and '..' are forbidden, '-' and '.' "
                f"cannot start or end the name, max length is 96: '{repo_id}'.")
    if "--" in repo_id or ".." in repo_id:
        return f"Cannot have -- or .. in repo_id: '{repo_id}'."
    snapshots = os.path.join("ckpt/LiveAvatar", f"models--{repo_id.replace('/', '--')}", "snapshots")
    if os.path.isdir(snapshots):
        for snap in sorted(os.listdir(snapshots)):
            if os.path.isfile(os.path.join(snapshots, snap, "liveavatar.safetensors")):
                return None
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return ("Cannot find the requested files in the disk cache and outgoing traffic has been disabled. To "
                "enable hf.co look-ups and downloads online, set 'local_files_only' to False.")
    return ("An error happened while trying to locate the file on the Hub and we cannot find the requested files "
            "in the local cache. Please check your connection and try again or make sure your Internet "
            "connection is on.")


def load_lora(args: argparse.Namespace, settings: dict, tpp: bool) -> None:
    """The script's LoRA block and add_lora_to_model -> load_weight_utils.load_state_dict."""
    if not (args.load_lora and args.lora_path_dmd is not None):
        return
    lora_line = F(SCRIPT, 470, "generate", "print(f'Use LoRA: lora path: {args.lora_path_dmd}, lora rank:', "
                  "training_settings['lora_rank'] ,\", lora alpha: \",training_settings['lora_alpha'])")
    for key in ("lora_rank", "lora_alpha"):
        if key not in settings:
            raise FakeCrash([MAIN, lora_line], f"KeyError: '{key}'")
    print(f"Use LoRA: lora path: {args.lora_path_dmd}, lora rank:", settings["lora_rank"], ", lora alpha: ",
          settings["lora_alpha"])
    for key in ("lora_target_modules", "init_lora_weights"):
        if key not in settings:
            raise FakeCrash([MAIN, F(SCRIPT, 474, "generate", "wan_s2v.noise_model = wan_s2v.add_lora_to_model(")], f"KeyError: '{key}'")
    path = args.lora_path_dmd
    utils = _lav("utils/load_weight_utils.py")
    frames = [MAIN, F(SCRIPT, 474, "generate", "wan_s2v.noise_model = wan_s2v.add_lora_to_model("),
              F(_pipe_file(tpp), PIPE_LINES[tpp]["lora"], "add_lora_to_model", "state_dict = load_state_dict(pretrained_lora_path)")]
    actual = path
    if "/" in path and not path.startswith("/") and not path.startswith("."):
        if not os.path.exists(path):
            print(f"Downloading from HF Hub: {path}")
            error = _hub_download_error(path)
            if error is None:
                actual = None  # found in the hub cache: loads
            else:
                print(f"Failed to download from HF Hub: {error}, treating as local path")
    if actual is not None:
        if actual.endswith(".safetensors"):
            if not os.path.isfile(actual):
                raise FakeCrash(frames + [F(utils, 89, "load_state_dict", "return load_state_dict_from_safetensors(actual_path, torch_dtype=torch_dtype)"),
                                          F(utils, 96, "load_state_dict_from_safetensors", 'with safe_open(file_path, framework="pt", device="cpu") as f:')],
                                f'FileNotFoundError: No such file or directory: "{actual}"')
        elif not os.path.isfile(actual):
            raise _torch_load_missing(frames + [F(utils, 91, "load_state_dict", "return load_state_dict_from_bin(actual_path, torch_dtype=torch_dtype)"),
                                                F(utils, 105, "load_state_dict_from_bin", 'state_dict = torch.load(file_path, map_location="cpu", weights_only=True)')], actual)
    print(f"800 parameters are loaded from {path}. 0 parameters are unexpected.")  # count invented
    print(f"Merging LoRA weights from {path}...")
    print("LoRA merged successfully.")


# ---------------------------------------------------------------------------------------------
# Failures raised inside the model


def expanded_size_error(tpp: bool, tokens: int) -> FakeCrash:
    cap = COND_CACHE_TOKENS["tpp" if tpp else "single"]
    model = _lav("models/wan/causal_model_s2v.py")
    frames = _forward_frames(tpp, sink=True) + [
        F(model, 1039, "_forward_sink", "x = block(x, **kwargs)"), *MODULE_CALL,
        F(model, 415, "forward", "y = self.self_attn(norm_x.type_as(bf_dtype_tensor), seq_lens, grid_sizes, freqs, block_mask, "
          "kv_cache, current_start, current_end, sp_size,seg_idx,freqs_cond) # [b,l,dim]"), *MODULE_CALL,
        F(model, 328, "forward", 'kv_cache["cond_k"][:, :int(kv_cache["cond_end"])] = k[:,seg_idx[1]:seg_idx[2]]'),
    ]
    return FakeCrash(frames, f"RuntimeError: The expanded size of the tensor ({cap}) must match the existing size ({tokens}) "
                             f"at non-singleton dimension 1.  Target sizes: [1, {cap}, 40, 128].  Tensor sizes: [{tokens}, 40, 128]")


def flash_attn_error(tpp: bool) -> FakeCrash:
    model = _lav("models/wan/causal_model_s2v.py")
    frames = _forward_frames(tpp, sink=True) + [
        F(model, 1039, "_forward_sink", "x = block(x, **kwargs)"), *MODULE_CALL,
        F(model, 434, "forward", "x = cross_attn_ffn(x, context, context_lens, e).type_as(bf_dtype_tensor)"),
        F(model, 423, "cross_attn_ffn", "x = x + self.cross_attn(self.norm3(x.to(torch.bfloat16)).type_as(bf_dtype_tensor), context, context_lens)"),
        *MODULE_CALL,
        F(_lav("models/wan/wan_2_2/modules/model.py"), 175, "forward", "x = flash_attention(q, k, v, k_lens=context_lens)"),
        F(_lav("models/wan/wan_2_2/modules/attention.py"), 143, "flash_attention", "assert FLASH_ATTN_2_AVAILABLE"),
    ]
    return FakeCrash(frames, "AssertionError")


def compile_unbound_error(tpp: bool) -> FakeCrash:
    model = _lav("models/wan/causal_model_s2v.py")
    eval_frame = F(_site("torch/_dynamo/eval_frame.py"), 929, "_fn", "return fn(*args, **kwargs)")
    frames = _forward_frames(tpp, sink=False) + [
        eval_frame,
        F(model, 1252, "torch_dynamo_resume_in__forward_inference_at_1251", "x = self.after_transformer_block(idx, x, mask)"),
        F(model, 733, "after_transformer_block", "residual_out = self.audio_injector.injector[audio_attn_id]("), *MODULE_CALL,
        F(_lav("models/wan/wan_2_2/modules/model.py"), 175, "forward", "x = flash_attention(q, k, v, k_lens=context_lens)"),
        eval_frame,
        F(_lav("models/wan/wan_2_2/modules/attention.py"), 111, "torch_dynamo_resume_in_flash_attention_at_110",
          "v = half(torch.cat([u[:v] for u, v in zip(v, k_lens)]))"),
    ]
    return FakeCrash(frames, "UnboundLocalError: cannot access local variable 'v' where it is not associated with a value")


def compile_guard_error(tpp: bool) -> FakeCrash:
    """Inductor's failure once dynamo captures scalar outputs (the real lines, from the H200 run)."""
    inductor = _site("torch/fx/experimental/symbolic_shapes.py")
    frames = _forward_frames(tpp, sink=False) + [
        F(_site("torch/_dynamo/eval_frame.py"), 1024, "compile_wrapper", "return fn(*args, **kwargs)"),
        F(inductor, 7862, "_evaluate_expr", "raise self._make_data_dependent_error("),
    ]
    return FakeCrash(frames, (
        "torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised:\n"
        "GuardOnDataDependentSymNode: Could not guard on data-dependent expression u11 >= 0 "
        "(unhinted: u11 >= 0).  (Size-like symbols: none)\n"
        "While executing %element_noisy : [num_users=1] = call_method[target=repeat_interleave]"
        "(args = (%getitem_6, %item_1), kwargs = {dim: 1})"))


def oom_error(frames: list) -> FakeCrash:
    return FakeCrash(frames, (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 10.40 GiB. GPU 0 has a total capacity of "
        "79.19 GiB of which 3.12 GiB is free. Including non-PyTorch memory, this process has 76.06 GiB memory in "
        "use. Of the allocated memory 71.53 GiB is allocated by PyTorch, and 3.91 GiB is reserved by PyTorch but "
        "unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory "
        "Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"))


def nccl_watchdog_abort(rank: int) -> None:
    """ProcessGroupNCCL's watchdog after a collective timed out: its lines, then SIGABRT."""
    stamp = datetime.now().strftime("%m%d %H:%M:%S.%f")
    ms = int(NCCL_TIMEOUT_SECONDS * 1000)
    work = (f"WorkNCCL(SeqNum=57, OpType=BROADCAST, NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for "
            f"{max(ms, 1) + 11} milliseconds before timing out.")
    pid = os.getpid()
    lines = [
        f"[rank{rank}]:[E{stamp} {pid} ProcessGroupNCCL.cpp:632] [Rank {rank}] Watchdog caught collective operation timeout: {work}",
        f"[rank{rank}]:[E{stamp} {pid} ProcessGroupNCCL.cpp:2271] [PG ID 0 PG GUID 0(default_pg) Rank {rank}]  failure detected by watchdog at work sequence id: 57 PG status: last enqueued work: 57, last completed work: 56",
        f"[rank{rank}]:[E{stamp} {pid} ProcessGroupNCCL.cpp:670] Stack trace of the failed collective not found, potentially because FlightRecorder is disabled. You can enable it by setting TORCH_NCCL_TRACE_BUFFER_SIZE to a non-zero value.",
        f"[rank{rank}]:[E{stamp} {pid} ProcessGroupNCCL.cpp:684] [Rank {rank}] Some NCCL operations have failed or timed out. Due to the asynchronous nature of CUDA kernels, subsequent GPU operations might run on corrupted/incomplete data.",
        f"[rank{rank}]:[E{stamp} {pid} ProcessGroupNCCL.cpp:698] [Rank {rank}] To avoid data inconsistency, we are taking the entire process down.",
        f"[rank{rank}]:[E{stamp} {pid} ProcessGroupNCCL.cpp:1899] [PG ID 0 PG GUID 0(default_pg) Rank {rank}] Process group watchdog thread terminated with exception: [Rank {rank}] Watchdog caught collective operation timeout: {work}",
        "terminate called after throwing an instance of 'c10::DistBackendError'",
        f"  what():  [PG ID 0 PG GUID 0(default_pg) Rank {rank}] Process group watchdog thread terminated with exception: [Rank {rank}] Watchdog caught collective operation timeout: {work}",
    ]
    sys.stdout.flush()
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the cwd
    except (ImportError, ValueError, OSError):
        pass
    signal.signal(signal.SIGABRT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGABRT)
    time.sleep(5)
    os._exit(134)


def block_in_nccl(rank: int) -> None:
    """A rank waiting on a peer that never answers: the watchdog fires after the timeout."""
    time.sleep(NCCL_TIMEOUT_SECONDS)
    nccl_watchdog_abort(rank)


def hang_forever(rank: int) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], stdin=subprocess.DEVNULL)
    pidfile = os.environ.get("FAKE_LIVEAVATAR_PIDFILE")
    if pidfile and rank == 0:
        with open(pidfile, "w") as handle:
            json.dump({"main": os.getpid(), "child": child.pid}, handle)
    while True:
        time.sleep(3600)


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# ---------------------------------------------------------------------------------------------
# WanS2V.generate


class Job:
    """What one rank knows while generating."""

    def __init__(self, args: argparse.Namespace, rank: int, world_size: int, image_size: tuple[int, int]) -> None:
        self.args, self.rank, self.world_size = args, rank, world_size
        self.image_size = image_size
        self.tpp = world_size > 1
        self.steps = args.sample_steps
        self.infer_frames = args.infer_frames
        self.nb = blocks_per_clip(args.infer_frames)
        self.clips = 0
        self.width = self.height = 0
        self.compiled = False  # the first _forward_inference compiles

    def first_forward(self) -> None:
        """The prefill: self-attention writes the condition cache, then cross-attention."""
        tokens = cond_tokens(self.height, self.width)
        if tokens > COND_CACHE_TOKENS["tpp" if self.tpp else "single"]:
            raise expanded_size_error(self.tpp, tokens)
        if MODE == "flash_attn_missing":
            raise flash_attn_error(self.tpp)

    def denoise_forward(self) -> None:
        if not self.compiled:
            self.compiled = True
            if COMPILE and COMPILE_SECONDS:
                time.sleep(COMPILE_SECONDS)
            if COMPILE and MODE == "compile_unbound":
                if os.environ.get("TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS") == "1":
                    raise compile_guard_error(self.tpp)
                raise compile_unbound_error(self.tpp)
        if STEP_SECONDS:
            time.sleep(STEP_SECONDS)


def prepare(job: Job) -> None:
    """Step 1 of WanS2V.generate, up to "complete prepare conditional inputs" and the solver check."""
    args, tpp = job.args, job.tpp
    job.width, job.height = output_size(*job.image_size, args.size)
    if args.enable_tts:
        pipe = _pipe_file(tpp)
        frames = _gen_frames(tpp, "tts", "audio_path = self.tts(tts_prompt_audio, tts_prompt_text, tts_text)") + [
            F(pipe, 1207 if not tpp else 1152, "tts", "self.load_tts()")]
        if not os.path.exists("CosyVoice"):
            raise FakeCrash(frames + [F(pipe, 1223 if not tpp else 1168, "load_tts", "from wan.utils.utils import download_cosyvoice_repo")],
                            "ModuleNotFoundError: No module named 'wan'")
        if not os.path.exists("CosyVoice2-0.5B"):
            raise FakeCrash(frames + [F(pipe, 1226 if not tpp else 1171, "load_tts", "from wan.utils.utils import download_cosyvoice_model")],
                            "ModuleNotFoundError: No module named 'wan'")
        raise FakeCrash(frames + [F(pipe, 1230 if not tpp else 1175, "load_tts", "from cosyvoice.cli.cosyvoice import CosyVoice2")],
                        "ModuleNotFoundError: No module named 'cosyvoice'")
    audio = args.audio
    if "+" in audio:
        for part in audio.split("+"):
            audio_samples_16k(part, tpp)
        print(f"rank {job.rank} processing SAM2")
        print(f"Rank {job.rank}: video_path: {args.image}")
        if job.rank == 0:
            cmd = ["python", "liveavatar/utils/router/sam2_tools.py", "--video_folder", args.image,
                   "--output_path", os.path.dirname(args.image)]
            try:
                subprocess.run(cmd, check=True)
                failure = None
            except subprocess.CalledProcessError as exc:
                failure = exc
            except OSError as exc:
                raise FakeCrash(_gen_frames(tpp, "sam2_run", "subprocess.run(sam2_cmd, check=True)"),
                                f"{type(exc).__name__}: {exc}") from None
            if failure is not None:
                print(f"Rank {job.rank}: SAM2 processing failed: {failure}")
                raise FakeCrash(_gen_frames(tpp, "sam2_raise", "raise e"), f"subprocess.CalledProcessError: {failure}")
        block_in_nccl(job.rank)  # the real goes on to read SAM2's masks: not simulated
    clips = audio_clips(audio_samples_16k(audio, tpp), job.infer_frames)
    num_repeat = args.num_clip
    if num_repeat is None or num_repeat > clips:
        num_repeat = clips
    job.clips = num_repeat
    print("complete prepare conditional inputs")
    if args.sample_solver != "euler":
        raise FakeCrash(_gen_frames(tpp, "solver", 'raise NotImplementedError("Unsupported solver.")'),
                        "NotImplementedError: Unsupported solver.")


def generate_single(job: Job) -> None:
    """The single-GPU WanS2V.generate loop (causal_s2v_pipeline.py)."""
    args = job.args
    online = args.enable_online_decode
    clip_outputs = 0
    for r in range(job.clips):
        if r == 0 or (r == 1 and online):
            for _ in range(4):  # prefill of the 4 per-step KV caches
                job.first_forward()
        if MODE == "oom" and r == 1:
            raise mode_error(job, where="forward")
        for block in range(job.nb):
            bar = Bar(job.steps)
            try:
                for i in range(job.steps):
                    if str(i + 1) not in KV_CACHE_KEYS:
                        raise FakeCrash(
                            _gen_frames(False, "move_kv", "self._move_kv_cache_to_working_gpu(i+1)# i+1 gpu -> 0")
                            + [F(_pipe_file(False), 638, "_move_kv_cache_to_working_gpu",
                                 "kv_cache1 = self.kv_cache1[str(moved_id)]")],
                            f"KeyError: '{i + 1}'")
                    if MODE == "nccl_hang" and r == 0 and block == 0 and i == 0:
                        block_in_nccl(job.rank)
                    job.denoise_forward()
                    bar.update()
            finally:
                bar.close()
        if r == 0 and online:
            if args.offload_model:
                print("offloading model to cpu, please wait...")
            if MODE == "crash":
                raise mode_error(job, where="online_decode")
        else:
            clip_outputs += 1
    print("complete full-sequence generation")
    if clip_outputs and args.offload_model:
        print("loading VAE to cuda for final decode of remaining clips")
    if clip_outputs and (MODE == "crash" or (MODE == "oom" and job.clips == 1)):
        raise mode_error(job, where="final_decode")
    if job.clips <= 0:
        raise FakeCrash(_gen_frames(False, "cat", "videos = torch.cat(out, dim=2)"),
                        "RuntimeError: torch.cat(): expected a non-empty list of Tensors")


def mode_error(job: Job, where: str) -> FakeCrash:
    """The oom and crash modes: an OOM in a DiT forward or a VAE decode, a crash in a VAE decode."""
    tpp = job.tpp
    if where == "forward":
        return oom_error(_forward_frames(tpp, sink=False))
    if tpp:
        frames = _gen_frames(True, "stream_decode", "image = torch.stack(self.vae.stream_decode(decode_latents))") + [
            F(_lav("models/wan/wan_2_2/modules/vae_streaming.py"), 771, "stream_decode", "return [")]
    else:
        frames = _gen_frames(False, where, "image = torch.stack(self.vae.decode(decode_latents))") + [
            F(_lav("models/wan/wan_2_2/modules/vae2_1.py"), 659, "decode", "return [")]
    if MODE == "oom":
        return oom_error(frames)
    return FakeCrash(frames, "RuntimeError: fake crash in the decoder")


def pipeline_stops(job: Job) -> dict[int, int | None]:
    """For each DiT rank, how many blocks it hands on before it dies or wedges (None: all).

    The ranks do not talk to each other here, but every rank can work out the same failures,
    so a rank waiting on a dead or stuck upstream rank blocks where the real dist.recv would."""
    stops: dict[int, int | None] = {k: None for k in range(4)}
    if cond_tokens(job.height, job.width) > COND_CACHE_TOKENS["tpp"] or MODE == "flash_attn_missing":
        stops = {k: 0 for k in range(4)}  # all fail in the prefill
    elif MODE == "compile_unbound" and COMPILE:
        stops[0] = 0  # rank 0 fails in its first step; the others never get an input to compile
    elif MODE == "oom" and job.clips > 1:
        stops[0] = job.nb  # rank 0 fails when clip 2 starts
    elif MODE == "nccl_hang":
        stops = {0: 1, 1: 1, 2: 1, 3: 0}  # rank 3 wedges in its first step; its feeders stall behind it
    if job.steps < 4:
        for k in range(job.steps, 4):
            stops[k] = 0  # no timestep for rank k: it never receives, never sends
        if job.steps >= 1:
            stops[job.steps - 1] = 1  # the last working rank's send is never received
    return stops


def generate_tpp(job: Job) -> None:
    """The pipeline's loop (causal_s2v_pipeline_tpp.py): every rank iterates tqdm over all the
    timesteps of every block but works only on timestep == its rank; DiT rank k receives the
    block from rank k - 1 and sends it on; the VAE rank 4 has no timestep of its own (with 4
    steps): its bar finishes at once, then it waits for rank 3's latents and decodes them."""
    rank, steps, nb, clips = job.rank, job.steps, job.nb, job.clips
    vae_rank = job.args.num_gpus_dit - 1 + int(job.args.enable_vae_parallel)
    t0 = time.monotonic()
    s = STEP_SECONDS
    stops = pipeline_stops(job)
    upstream = [stops[k] for k in range(min(rank, 4)) if stops[k] is not None]
    receives = min(upstream) if upstream else None  # blocks this rank will ever receive
    for r in range(clips):
        if (r == 0 or r == 1) and rank != vae_rank:
            job.first_forward()
        if MODE == "oom" and r == 1 and rank == 0:
            raise mode_error(job, where="forward")
        if MODE == "crash" and r == 1 and rank == vae_rank:
            raise mode_error(job, where="stream_decode")
        if r == 1 and rank < 4 and rank >= steps:
            block_in_nccl(rank)  # an idle rank in the broadcast from the VAE rank, which is stuck
        for block in range(nb):
            g = r * nb + block
            bar = Bar(steps)
            try:
                for i in range(steps):
                    if i == rank and rank < 4:
                        if receives is not None and g >= receives:
                            block_in_nccl(rank)  # dist.recv from rank - 1 never completes
                        _sleep_until(t0 + (g + rank) * s)  # dist.recv from rank - 1
                        if MODE == "nccl_hang" and rank == 3:
                            hang_forever(rank)
                        job.denoise_forward()
                    bar.update()
            finally:
                bar.close()
            if rank < min(4, steps) and stops[rank] is not None and g + 1 >= stops[rank]:
                block_in_nccl(rank)  # dist.send to rank + 1 never completes
            if rank == vae_rank:
                if receives is not None and g >= receives:
                    block_in_nccl(rank)
                started = time.monotonic()
                _sleep_until(t0 + (g + 4) * s)  # dist.recv(block_latents, rank 3)
                if time.monotonic() - started < 0.01:
                    print("WARNING: VAE serves as a bottleneck!")
                if job.args.offload_model:
                    print("offloading model to cpu")
    if steps != 4:
        # > 4: rank 4 ran a DiT step on rank 3's latents and waits for one block too many; < 4: stuck peers.
        block_in_nccl(rank)
    _sleep_until(t0 + (clips * nb + 4) * s)  # dist.barrier() after the last decode
    if rank == vae_rank and (clips <= 0 or nb <= 0):
        raise FakeCrash(_gen_frames(True, "cat", "videos = torch.cat(out, dim=2)"),
                        "RuntimeError: torch.cat(): expected a non-empty list of Tensors")
    if rank == vae_rank and ((MODE == "oom" and clips == 1) or (MODE == "crash" and clips == 1)):
        raise mode_error(job, where="stream_decode")


# ---------------------------------------------------------------------------------------------
# Saving (save_video + merge_video_audio)


def default_save_file(args: argparse.Namespace) -> str:
    """The script's naming when --save_file is missing (creates the save dir)."""
    formatted_time = datetime.now().strftime("%Y%m%d_%H%M%S")
    formatted_prompt = args.prompt.replace(" ", "_").replace("/", "_")[:50]
    suffix = ".mp4"
    name = f"{formatted_time}_{args.sample_steps}step_{formatted_prompt}"
    if args.lora_path_dmd is None:
        raise FakeCrash([MAIN, F(SCRIPT, 562, "generate", 'path_parts = args.lora_path_dmd.split("/")')],
                        "AttributeError: 'NoneType' object has no attribute 'split'")
    path_parts = args.lora_path_dmd.split("/")
    if args.lora_path_dmd.endswith(".pt") and len(path_parts) >= 3:
        lora_suffix = path_parts[-3] + "_" + path_parts[-1].split(".")[0]
        name = name + "_" + lora_suffix
        if args.save_dir is None:
            args.save_dir = "./output/" + lora_suffix + "/"
    elif args.save_dir is None:
        args.save_dir = "./output/"
    os.makedirs(args.save_dir, exist_ok=True)
    return args.save_dir + name + suffix


def save_video(path: str, width: int, height: int, frames: int) -> None:
    """utils.save_video: imageio's libx264 writer at 25 fps; every error is logged and swallowed."""
    try:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"The directory {directory!r} does not exist")
        if MODE == "exit0_no_file":
            raise OSError(28, "No space left on device")
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
               f"color=c=0x406080:s={width}x{height}:r={S2V['sample_fps']}", "-frames:v", str(max(frames, 1)),
               "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-an", "-f", "mp4", path]
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise OSError(f"[Errno 32] Broken pipe\n\nFFMPEG COMMAND:\n{' '.join(cmd)}\n\nFFMPEG STDERR OUTPUT:\n{done.stderr}")
    except Exception as e:  # noqa: BLE001 - the real one swallows everything
        logging.info(f"save_video failed, error: {e}")


def merge_video_audio(video_path: str, audio_path: str) -> None:
    """utils.merge_video_audio: the checks raise (outside the try), ffmpeg failures are logged."""
    logging.basicConfig(level=logging.INFO)
    frames = [MAIN, F(SCRIPT, 582, "generate", "merge_video_audio(video_path=args.save_file, audio_path=args.audio)")]
    utils = _lav("models/wan/wan_2_2/utils/utils.py")
    if not os.path.exists(video_path):
        raise FakeCrash(frames + [F(utils, 40, "merge_video_audio", 'raise FileNotFoundError(f"video file {video_path} does not exist")')],
                        f"FileNotFoundError: video file {video_path} does not exist")
    if not os.path.exists(audio_path):
        raise FakeCrash(frames + [F(utils, 42, "merge_video_audio", 'raise FileNotFoundError(f"audio file {audio_path} does not exist")')],
                        f"FileNotFoundError: audio file {audio_path} does not exist")
    base, ext = os.path.splitext(video_path)
    temp_output = f"{base}_temp{ext}"
    try:
        audio_input = ["-i", audio_path]
        if MODE == "wrong_duration":  # the injected fault: only the first half of the audio is read
            audio_input = ["-t", f"{audio_seconds(audio_path) / 2:.3f}"] + audio_input
        command = ["ffmpeg", "-y", "-i", video_path, *audio_input, "-c:v", "copy", "-c:a", "aac", "-b:a", "192k",
                   "-map", "0:v:0", "-map", "1:a:0", "-shortest", temp_output]
        logging.info("Start merging video and audio...")
        if MODE in ("mux_fails", "silent_file"):
            raise FileNotFoundError(2, "No such file or directory", "ffmpeg")
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            error_msg = f"FFmpeg execute failed: {result.stderr}"
            logging.error(error_msg)
            raise RuntimeError(error_msg)
        shutil.move(temp_output, video_path)
        logging.info(f"Merge completed, saved to {video_path}")
    except Exception as e:  # noqa: BLE001 - the real one swallows everything here
        if os.path.exists(temp_output):
            os.remove(temp_output)
        logging.error(f"merge_video_audio failed with error: {e}")


def audio_seconds(path: str) -> float:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", path],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return float(json.loads(done.stdout or "{}").get("format", {}).get("duration") or 0.0)


# ---------------------------------------------------------------------------------------------
# generate() of the script


def init_logging(rank: int) -> None:
    if rank == 0:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s: %(message)s",
                            handlers=[logging.StreamHandler(stream=sys.stdout)])
    else:
        logging.basicConfig(level=logging.ERROR)


def init_process_group(world_size: int, local_rank: int) -> None:
    """torch.cuda.set_device(local_rank) and dist.init_process_group(init_method="env://")."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and local_rank >= len([d for d in visible.split(",") if d.strip()]):
        raise FakeCrash([MAIN, F(SCRIPT, 365, "generate", "torch.cuda.set_device(local_rank)"),
                         F(_site("torch/cuda/__init__.py"), 567, "set_device", "torch._C._cuda_setDevice(device)")],
                        # torch >= 2.8 raises AcceleratorError (a RuntimeError) for CUDA errors
                        "torch.AcceleratorError: CUDA error: invalid device ordinal\nCUDA kernel errors might be "
                        "asynchronously reported at some other API call, so the stacktrace below might be incorrect.\n"
                        "For debugging consider passing CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to "
                        "enable device-side assertions.\n")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise FakeCrash([MAIN, F(SCRIPT, 366, "generate", "dist.init_process_group("),
                             F(_site("torch/distributed/rendezvous.py"), 245, "_env_error", "return ValueError(")],
                            f"ValueError: Error initializing torch.distributed using env:// rendezvous: environment "
                            f"variable {name} expected, but not set")


def generate(args: argparse.Namespace, settings: dict) -> None:
    rank = int(os.getenv("RANK", 0))
    world_size = int(os.getenv("WORLD_SIZE", 1))
    print(f"world_size: {world_size}")
    if world_size == 1:
        rank = 0
    local_rank = int(os.getenv("LOCAL_RANK", 0))
    init_logging(rank)
    if args.offload_model is None:
        args.offload_model = False if world_size > 1 else True
        logging.info(f"offload_model is not specified, set to {args.offload_model}.")
    init_process_group(world_size, local_rank)
    if world_size > 1:
        checks = [
            (world_size >= 5, 372, 'assert world_size >= 5, "At least 5 GPUs are supported for distributed inference."',
             "At least 5 GPUs are supported for distributed inference."),
            (args.num_gpus_dit == 4, 373, 'assert args.num_gpus_dit == 4, "Only 4 GPUs are supported for distributed inference."',
             "Only 4 GPUs are supported for distributed inference."),
            (args.enable_vae_parallel is True, 374, 'assert args.enable_vae_parallel is True, "VAE parallel is required for distributed inference."',
             "VAE parallel is required for distributed inference."),
        ]
        for ok, line, code, message in checks:
            if not ok:
                raise FakeCrash([MAIN, F(SCRIPT, line, "generate", code)], f"AssertionError: {message}")
        args.single_gpu = False
        print("Using TPP distributed inference.")
    else:
        if args.t5_fsdp or args.dit_fsdp:
            raise FakeCrash([MAIN, F(SCRIPT, 379, "generate", "assert not (")],
                            "AssertionError: t5_fsdp and dit_fsdp are not supported in non-distributed environments.")
        if args.ulysses_size > 1:
            raise FakeCrash([MAIN, F(SCRIPT, 382, "generate", "assert not (")],
                            "AssertionError: sequence parallel are not supported in non-distributed environments.")
        args.enable_vae_parallel = False
        args.num_gpus_dit = 1
        args.single_gpu = True
        print(f"Using single GPU inference with offload mode: {args.offload_model}")
    if args.ulysses_size > 1:
        raise FakeCrash([MAIN, F(SCRIPT, 392, "generate", 'assert False, "Sequence parallel is not supported."')],
                        "AssertionError: Sequence parallel is not supported.")
    if args.use_prompt_extend:
        if args.prompt_extend_method == "dashscope" and not os.environ.get("DASH_API_KEY"):
            raise FakeCrash([MAIN, F(SCRIPT, 397, "generate", "prompt_expander = DashScopePromptExpander("),
                             F(_lav("models/wan/wan_2_2/utils/prompt_extend.py"), 146, "__init__", 'raise ValueError("DASH_API_KEY is not set")')],
                            "ValueError: DASH_API_KEY is not set")
        if args.prompt_extend_method == "local_qwen":
            raise FakeCrash([MAIN, F(SCRIPT, 402, "generate", "prompt_expander = QwenPromptExpander("),
                             F(_lav("models/wan/wan_2_2/utils/prompt_extend.py"), 314, "__init__", "self.processor = AutoProcessor.from_pretrained(")],
                            "OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
                            "them in the cached files.\nCheck your internet connection or see how to run the library in "
                            "offline mode at 'https://huggingface.co/docs/transformers/installation#offline-mode'.")
    logging.info(f"Generation job args: {args}")
    logging.info("Generation model config: " + repr({
        "__name__": "Config: Wan S2V 14B", "t5_model": "umt5_xxl", "text_len": 512, "num_train_timesteps": 1000,
        "sample_fps": S2V["sample_fps"], "frame_num": S2V["frame_num"], "t5_checkpoint": S2V["t5_checkpoint"],
        "t5_tokenizer": S2V["t5_tokenizer"], "vae_checkpoint": S2V["vae_checkpoint"], "vae_stride": [4, 8, 8],
        "wav2vec": S2V["wav2vec"], "num_heads": S2V["num_heads"], "sample_shift": S2V["sample_shift"],
        "sample_steps": S2V["sample_steps"], "sample_guide_scale": S2V["sample_guide_scale"],
        "sample_solver": S2V["sample_solver"], "num_frames_per_block": S2V["num_frames_per_block"],
        "num_frames_latent": 12}))
    logging.info(f"Input prompt: {args.prompt}")
    image_size = probe_image(args.image)
    logging.info(f"Input image: {args.image}")
    if args.use_prompt_extend:
        logging.info("Extending prompt ...")
        if rank == 0:
            logging.info("Extending prompt failed: Connection error.")
            logging.info("Falling back to original prompt.")
        logging.info(f"Extended prompt: {args.prompt}")

    tpp = world_size > 1
    logging.info("Creating WanS2V pipeline.")
    load_weights(args, tpp)
    load_lora(args, settings, tpp)
    if MODE == "hang":
        if rank == 0:
            hang_forever(rank)
        block_in_nccl(rank)
    logging.info("Generating video ...")

    job = Job(args, rank, world_size, image_size)
    prepare(job)
    if tpp:
        generate_tpp(job)
    else:
        generate_single(job)

    print("denoising video done")
    print(f"rank: {rank}")
    if args.enable_vae_parallel:
        save_rank = args.num_gpus_dit
    else:
        save_rank = 0 if world_size == 1 else args.num_gpus_dit - 1
    if rank == save_rank:
        if args.save_file is None:
            args.save_file = default_save_file(args)
        logging.info(f"Saving generated video to {args.save_file}")
        save_video(args.save_file, job.width, job.height, video_frames(job.clips, job.infer_frames, tpp=tpp))
        merge_video_audio(video_path=args.save_file, audio_path=args.audio)
    print(f"rank {rank} done, waiting for other ranks to finish...")
    print(f"rank {rank} start destroying process group...")
    logging.info("Finished.")


def main(argv: list[str] | None = None) -> int:
    print(f"COMPILE: {COMPILE}")
    if MODE not in MODES:
        sys.stderr.write(f"fake liveavatar: unknown FAKE_LIVEAVATAR_MODE {MODE!r}; known: {', '.join(m for m in MODES if m)}\n")
        return 2
    try:
        args = build_parser().parse_args(argv)
        validate_args(args)
        settings = read_training_config(args.training_config)
        generate(args, settings)
    except FakeCrash as crash:
        print_traceback(crash)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
