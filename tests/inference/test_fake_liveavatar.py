"""The FAKE Live Avatar (tests/fakes/liveavatar) against the real program it stands in for.

The fake replaces LiveAvatar@9c2c38d's ``minimal_inference/s2v_streaming_interact.py`` and
``torchrun`` in CI. These tests pin its behaviour to facts of the real source and of the real
launcher, never to what the engine expects: the recorded argparse spec, the clip-count and
output-size rules (checked against values worked out by hand), the built-in examples, the real
error messages and exit statuses, the 5-process pipeline's progress bars, and torchrun's process
count, environment, ``--tee`` prefixes, failure summary and signal handling (compared with the
real torchrun of the test venv when it is installed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "liveavatar"
SCRIPT = FAKE / "minimal_inference" / "s2v_streaming_interact.py"
TORCHRUN = FAKE / "torchrun"
TRAINING_CONFIG = "liveavatar/configs/s2v_causal_sft.yaml"
PROMPT = "A man in a dark suit is speaking calmly to the camera in an office."
REAL_TORCHRUN = next((p for p in (Path(sys.executable).parent / "torchrun", shutil.which("torchrun"))
                      if p and Path(p).is_file() and Path(p).resolve() != TORCHRUN.resolve()), None)

sys.path.insert(0, str(FAKE.parents[1]))
from fakes.liveavatar.fake_layout import (
    INDEX,
    T5,
    TOKENIZER,
    VAE,
    WAV2VEC,
    make_checkpoint,
    make_lora,
    shard_name,
)


def _load_fake():
    spec = importlib.util.spec_from_file_location("fake_s2v_streaming_interact", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fake = _load_fake()

# Recorded from LiveAvatar@9c2c38d minimal_inference/s2v_streaming_interact.py, _parse_args():
# (option, action, type, default, choices), in the order of the add_argument calls. The choices
# of --task and --size are list(WAN_CONFIGS.keys()) and list(SIZE_CONFIGS.keys()) of
# liveavatar/models/wan/wan_2_2/configs/__init__.py at the same commit.
SIZES = ["720*1280", "1280*720", "480*832", "832*480", "704*1280", "1280*704", "1024*704", "704*1024",
         "720*400", "704*384", "688*368", "384*256"]
REAL_ARGPARSE_SPEC = [
    ("--task", None, "str", "t2v-A14B", ["t2v-A14B", "i2v-A14B", "ti2v-5B", "s2v-14B"]),
    ("--size", None, "str", "1280*720", SIZES),
    ("--frame_num", None, "int", None, None),
    ("--ckpt_dir", None, "str", None, None),
    ("--offload_model", None, "str2bool", None, None),
    ("--ulysses_size", None, "int", 1, None),
    ("--t5_fsdp", "store_true", None, False, None),
    ("--t5_cpu", "store_true", None, False, None),
    ("--dit_fsdp", "store_true", None, False, None),
    ("--save_file", None, "str", None, None),
    ("--save_dir", None, "str", None, None),
    ("--prompt", None, "str", None, None),
    ("--use_prompt_extend", "store_true", None, False, None),
    ("--prompt_extend_method", None, "str", "local_qwen", ["dashscope", "local_qwen"]),
    ("--prompt_extend_model", None, "str", None, None),
    ("--prompt_extend_target_lang", None, "str", "zh", ["zh", "en"]),
    ("--base_seed", None, "int", -1, None),
    ("--image", None, "str", None, None),
    ("--sample_solver", None, "str", "euler", ["euler", "unipc", "dpm++"]),
    ("--sample_steps", None, "int", None, None),
    ("--sample_shift", None, "float", None, None),
    ("--sample_guide_scale", None, "float", None, None),
    ("--convert_model_dtype", "store_true", None, False, None),
    ("--num_clip", None, "int", None, None),
    ("--audio", None, "str", None, None),
    ("--enable_tts", "store_true", None, False, None),
    ("--tts_prompt_audio", None, "str", None, None),
    ("--tts_prompt_text", None, "str", None, None),
    ("--tts_text", None, "str", None, None),
    ("--pose_video", None, "str", None, None),
    ("--start_from_ref", "store_true", None, False, None),
    ("--infer_frames", None, "int", 80, None),
    ("--load_lora", "store_true", None, False, None),
    ("--lora_path", None, "str", None, None),
    ("--lora_path_dmd", None, "str", None, None),
    ("--training_config", None, "str", None, None),
    ("--use_dataset", "store_true", None, False, None),
    ("--dataset_sample_idx", None, "int", 0, None),
    ("--drop_motion_noisy", "store_true", None, False, None),
    ("--single_gpu", "store_true", None, False, None),
    ("--using_merged_ckpt", "store_true", None, False, None),
    ("--num_gpus_dit", None, "int", 4, None),
    ("--enable_vae_parallel", "store_true", None, False, None),
    ("--offload_kv_cache", "store_true", None, False, None),
    ("--enable_online_decode", "store_true", None, False, None),
    ("--fp8", "store_true", None, False, None),
]


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def clips_dir(media, tmp_path_factory) -> Path:
    """Short real speech (16 kHz mono), a 25 s cut, a 16:9 and a square picture."""
    out = tmp_path_factory.mktemp("fake-la-media")
    ffmpeg("-i", str(media / "audio/latentsync_demo1_audio.wav"), "-t", "3", "-ac", "1", "-ar", "16000", str(out / "speech3s.wav"))
    ffmpeg("-i", str(media / "audio/pyannote_sample.wav"), "-t", "25", "-c:a", "pcm_s16le", str(out / "speech25s.wav"))
    ffmpeg("-i", str(media / "image/liveavatar_man.png"), "-vf", "scale=1280:720", str(out / "wide1280x720.png"))
    return out


@pytest.fixture(scope="module")
def speech(clips_dir) -> Path:
    return clips_dir / "speech3s.wav"


@pytest.fixture(scope="module")
def wide(clips_dir) -> Path:
    return clips_dir / "wide1280x720.png"


@pytest.fixture(scope="module")
def square(media) -> Path:
    return media / "image/skimage_astronaut.png"  # 512x512


@pytest.fixture
def ckpt(tmp_path) -> Path:
    return make_checkpoint(tmp_path / "Wan2.2-S2V-14B")


@pytest.fixture
def lora(tmp_path) -> Path:
    return make_lora(tmp_path / "LiveAvatar" / "liveavatar.safetensors")


def cli(values: dict) -> list[str]:
    argv: list[str] = []
    for key, value in values.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not None and value is not False:
            argv += [f"--{key}", str(value)]
    return argv


def job(ckpt: Path, lora: Path | None, image: Path, audio: Path, out: Path | None, **over) -> list[str]:
    """The arguments the engine passes on one GPU (preview-like: small size, one clip)."""
    values = {
        "task": "s2v-14B", "ulysses_size": 1, "ckpt_dir": ckpt, "training_config": TRAINING_CONFIG, "load_lora": True,
        "lora_path_dmd": lora, "offload_model": "True", "convert_model_dtype": True, "num_gpus_dit": 1,
        "single_gpu": True, "prompt": PROMPT, "image": image, "audio": audio, "save_file": out, "size": "384*256",
        "num_clip": 1, "infer_frames": 48, "sample_steps": 4, "sample_solver": "euler", "sample_guide_scale": 0,
        "base_seed": 42,
    }
    values.update(over)
    return cli(values)


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_", "PET_", "TORCHELASTIC")) and k not in (
        "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS",
        "ENABLE_COMPILE", "CUDA_VISIBLE_DEVICES")}
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def run(cmd: list[str], *, cwd: Path, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run and decode the output WITHOUT newline translation: tqdm's \r must stay a \r."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    done.stdout = done.stdout.decode("utf-8", "replace")
    done.stderr = done.stderr.decode("utf-8", "replace")
    return done


def run_fake(argv: list[str], *, cwd: Path = FAKE, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """The script as one torchrun child of a 1-process launch (MASTER_* set), without the launcher."""
    env = clean_env(**{"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1", **env})
    return run([sys.executable, str(SCRIPT), *argv], cwd=cwd, env=env, timeout=timeout)


def launch(launcher: Path | str, nproc: int, script: Path | str, argv: list[str], *, cwd: Path = FAKE,
           launcher_flags: tuple[str, ...] = (), timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    cmd = [str(launcher), "--nproc_per_node", str(nproc), "--master_port", str(free_port()), *launcher_flags, str(script), *argv]
    return run(cmd, cwd=cwd, env=clean_env(**env), timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
                         capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    streams = {s["codec_type"]: s for s in data["streams"]}
    return {"duration": float(data["format"]["duration"]), "video": streams.get("video"), "audio": streams.get("audio")}


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def complete_bars(stderr: str, steps: int = 4) -> int:
    """Denoising bars (no description) that finished: '100%|...| n/n [...' ended by a newline."""
    return len(re.findall(rf"(?:^|\r)100%\|[^|\r\n]*\| {steps}/{steps} \[[^\r\n]*\n", stderr))


# ---------------------------------------------------------------------------------------------
# argparse and _validate_args


def test_parser_matches_the_recorded_real_spec():
    parser = fake.build_parser()
    actions = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    got = []
    for action in actions:
        kind = "store_true" if isinstance(action, argparse._StoreTrueAction) else None
        typ = None if action.type is None else action.type.__name__
        got.append((action.option_strings[0], kind, typ, action.default, action.choices))
    assert got == REAL_ARGPARSE_SPEC
    assert "--init_on_cpu" not in parser._option_string_actions


@pytest.mark.parametrize(("argv", "error"), [
    (["--size", "640*360"], "argument --size: invalid choice: '640*360'"),
    (["--sample_solver", "fewstep_fm"], "argument --sample_solver: invalid choice: 'fewstep_fm'"),
    (["--task", "s2v-1.3B"], "argument --task: invalid choice: 's2v-1.3B'"),
    (["--offload_model", "maybe"], "argument --offload_model: Boolean value expected (True/False)"),
    (["--init_on_cpu", "True"], "unrecognized arguments: --init_on_cpu True"),
])
def test_argparse_rejections_exit_2(argv, error):
    done = run_fake(["--ckpt_dir", "/nowhere", *argv])
    assert done.returncode == 2 and error in done.stderr
    assert done.stdout == "COMPILE: True\n"  # printed at import time, before argparse


def test_validate_args_asserts():
    missing = run_fake(["--task", "s2v-14B"])
    assert missing.returncode == 1 and last_line(missing.stderr) == "AssertionError: Please specify the checkpoint directory."
    default_task = run_fake(["--ckpt_dir", "/nowhere"])
    assert default_task.returncode == 1 and last_line(default_task.stderr) == "AssertionError: Unsupport task: t2v-A14B"
    assert "world_size" not in default_task.stdout  # before generate()


def test_validate_args_defaults():
    args = fake.build_parser().parse_args(["--task", "s2v-14B", "--ckpt_dir", "/c"])
    fake.validate_args(args)
    assert args.sample_steps == 40 and args.sample_shift == 3 and args.sample_guide_scale == 4.5 and args.frame_num == 81
    assert args.prompt.startswith("Summer beach vacation style, a white cat wearing sunglasses sits on a surfboard.")
    assert (args.image, args.audio) == ("examples/boy.jpg", "examples/boy.wav")
    assert 0 <= args.base_seed <= sys.maxsize and args.offload_model is None and args.infer_frames == 80


# ---------------------------------------------------------------------------------------------
# Generation rules


@pytest.mark.parametrize(("seconds", "clips"), [
    # (samples - 400) // 320 + 1 wav2vec frames -> int(T / 50 * 30) -> int(frames / 57.6) + 1, by hand:
    (1.0, 1),     # T 49, 29 frames
    (1.9, 1),     # T 94, 56 frames
    (1.92, 1),    # T 95, 57 frames: one clip fewer than floor(1.92 * 25 / 48) + 1 = 2
    (1.95, 2),    # T 97, 58 frames
    (3.0, 2),     # T 149, 89 frames
    (3.84, 2),    # T 191, 114 frames (the naive rule says 3)
    (3.9, 3),     # T 194, 116 frames
    (6.0, 4),     # T 299, 179 frames
    (19.2, 10),   # T 959, 575 frames (the naive rule says 11)
    (19.25, 11),  # T 962, 577 frames
    (25.0, 14),   # T 1249, 749 frames
])
def test_clip_count_at_and_near_the_boundaries(seconds, clips):
    assert fake.audio_clips(round(seconds * 16000), 48) == clips


def test_clip_count_differs_from_the_naive_rule_for_774_lengths():
    """floor(s * 25 / 48) + 1 in floats, as one computes it from seconds (exact integer arithmetic
    would count 775: at 36.48 s the float product is 18.999...)."""
    fewer = other = 0
    for ms in range(1000, 60001):
        naive = math.floor(ms / 1000 * 25 / 48) + 1
        real = fake.audio_clips(ms * 16, 48)
        fewer += real == naive - 1
        other += real not in (naive, naive - 1)
    assert (fewer, other) == (774, 0)


def test_blocks_and_frames():
    assert fake.blocks_per_clip(48) == 4 and fake.blocks_per_clip(80) == 6
    assert fake.video_frames(10, 48, tpp=False) == fake.video_frames(10, 48, tpp=True) == 477
    # 80 frames: one GPU decodes 80 per clip; the pipeline's VAE rank keeps 12 per block of 6.
    assert fake.video_frames(2, 80, tpp=False) == 157 and fake.video_frames(2, 80, tpp=True) == 141


@pytest.mark.parametrize(("image", "size", "expected"), [
    ((512, 512), "720*400", (512, 512)), ((512, 512), "704*384", (512, 512)),
    ((512, 512), "688*368", (448, 448)), ((512, 512), "384*256", (256, 256)),
    ((512, 512), "1280*720", (512, 512)),  # smaller images are padded, never enlarged
    ((1280, 720), "720*400", (704, 384)), ((1280, 720), "704*384", (704, 384)),
    ((1280, 720), "688*368", (640, 384)), ((1280, 720), "384*256", (384, 256)),
    ((1280, 720), "1280*720", (1280, 704)), ((720, 1280), "688*368", (384, 640)),
    ((256, 256), "384*256", (256, 256)),
])
def test_output_size_follows_the_image(image, size, expected):
    assert fake.output_size(*image, size) == expected


def test_condition_cache_limits():
    assert fake.cond_tokens(384, 704) == 2640  # 720*400 with a 16:9 image (the source's comment says 2640)
    assert fake.cond_tokens(256, 384) == 960
    assert fake.cond_tokens(704, 1280) == 8800
    assert fake.cond_tokens(512, 512) == 2560  # a square 512 image fits even at --size 1280*720
    assert fake.cond_tokens(448, 832) == 3640  # 832*480: too big for both caches


def test_tqdm_format():
    assert fake.format_bar(0, 4, 0) == "  0%|          | 0/4 [00:00<?, ?it/s]"
    assert fake.format_bar(1, 4, 1.02) == " 25%|██▌       | 1/4 [00:01<00:03,  1.02s/it]"
    assert fake.format_bar(2, 4, 2.02) == " 50%|█████     | 2/4 [00:02<00:02,  1.01s/it]"
    assert fake.format_bar(3, 4, 3.01) == " 75%|███████▌  | 3/4 [00:03<00:01,  1.00s/it]"
    assert fake.format_bar(4, 4, 4.01) == "100%|██████████| 4/4 [00:04<00:00,  1.00s/it]"
    assert fake.format_bar(4, 4, 4.0) == "100%|██████████| 4/4 [00:04<00:00,  1.00it/s]"  # s/it only above 1 s
    assert fake.format_bar(4, 4, 0.5) == "100%|██████████| 4/4 [00:00<00:00,  8.00it/s]"
    assert fake.format_bar(2, 4, 1, desc="Loading checkpoint shards").startswith("Loading checkpoint shards:  50%|")


# ---------------------------------------------------------------------------------------------
# Whole runs on one GPU


def test_one_gpu_run(tmp_path, ckpt, lora, wide, speech):
    out = tmp_path / "out.mp4"
    done = run_fake(job(ckpt, lora, wide, speech, out, size="688*368", num_clip=2))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for expected in ("COMPILE: True", "world_size: 1", "Using single GPU inference with offload mode: True",
                     "complete prepare conditional inputs", "denoising video done", "rank: 0"):
        assert expected in lines
    assert lines.index("complete prepare conditional inputs") < lines.index("denoising video done")
    assert re.search(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\] INFO: Finished\.$", done.stdout, re.MULTILINE)
    assert f"INFO: Saving generated video to {out}" in done.stdout
    assert complete_bars(done.stderr) == 8  # 2 clips x 4 blocks, one 4-step bar each
    assert done.stderr.count("\r  0%|          | 0/4 [00:00<?, ?it/s]") == 8
    assert "Loading checkpoint shards: 100%|██████████| 4/4" in done.stderr
    info = probe(out)
    assert (info["video"]["width"], info["video"]["height"]) == (640, 384)
    assert info["video"]["codec_name"] == "h264" and info["audio"]["codec_name"] == "aac"
    assert info["video"]["avg_frame_rate"] == "25/1" and abs(info["duration"] - 3.0) < 0.05
    assert not (tmp_path / "out_temp.mp4").exists()


def test_num_clip_caps_a_long_audio(tmp_path, ckpt, lora, square, clips_dir):
    out = tmp_path / "capped.mp4"
    done = run_fake(job(ckpt, lora, square, clips_dir / "speech25s.wav", out, num_clip=10))
    assert done.returncode == 0, done.stderr
    assert complete_bars(done.stderr) == 40
    info = probe(out)
    assert (info["video"]["width"], info["video"]["height"]) == (256, 256)
    assert int(info["video"]["nb_frames"]) == 10 * 48 - 3
    assert abs(float(info["video"]["duration"]) - (10 * 48 - 3) / 25) < 0.01  # 19.08 s: the video ends first
    # The real merge command (-c:v copy ... -shortest) lets the AAC stream run on past the video:
    # with ffmpeg 5.1 the file lasts 19.33 s, not 19.08 s.
    assert 0 <= float(info["audio"]["duration"]) - (10 * 48 - 3) / 25 < 0.35
    assert info["duration"] == max(float(info["video"]["duration"]), float(info["audio"]["duration"]))


def test_built_in_examples(tmp_path, ckpt, lora, media, speech):
    """Without --prompt/--image/--audio the script uses examples/boy.* from the cwd, and without
    --save_file it names the file itself under ./output/ (and needs --lora_path_dmd for that)."""
    bare = job(ckpt, lora, None, None, None, prompt=None, training_config=str(FAKE / TRAINING_CONFIG))
    missing = run_fake(bare, cwd=tmp_path)
    assert missing.returncode == 1
    assert last_line(missing.stderr) == "FileNotFoundError: [Errno 2] No such file or directory: 'examples/boy.jpg'"
    assert "Creating WanS2V pipeline" not in missing.stdout  # the image is opened before loading

    (tmp_path / "examples").mkdir()
    shutil.copy(media / "image/liveavatar_boy.jpg", tmp_path / "examples/boy.jpg")
    no_audio = run_fake(bare, cwd=tmp_path)
    assert no_audio.returncode == 1 and "LoRA merged successfully." in no_audio.stdout  # after loading
    assert last_line(no_audio.stderr) == "FileNotFoundError: [Errno 2] No such file or directory: 'examples/boy.wav'"
    assert "librosa.load(audio_path, sr=16000)" in no_audio.stderr

    shutil.copy(speech, tmp_path / "examples/boy.wav")
    done = run_fake(bare, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "INFO: Input prompt: Summer beach vacation style, a white cat wearing sunglasses" in done.stdout
    (made,) = (tmp_path / "output").iterdir()
    assert re.fullmatch(r"\d{8}_\d{6}_4step_Summer_beach_vacation_style,_a_white_cat_wearing_s\.mp4", made.name)
    assert probe(made)["audio"] is not None

    no_lora = run_fake(job(ckpt, None, None, None, None, prompt=None, load_lora=False,
                           training_config=str(FAKE / TRAINING_CONFIG)), cwd=tmp_path)
    assert no_lora.returncode == 1 and "denoising video done" in no_lora.stdout
    assert last_line(no_lora.stderr) == "AttributeError: 'NoneType' object has no attribute 'split'"


# ---------------------------------------------------------------------------------------------
# Real failures (no injected mode)


@pytest.mark.parametrize(("skip", "message"), [
    (T5, "FileNotFoundError: [Errno 2] No such file or directory: '{ckpt}/models_t5_umt5-xxl-enc-bf16.pth'"),
    (TOKENIZER, "OSError: Incorrect path_or_model_id: '{ckpt}/google/umt5-xxl'. Please provide either the path to a "
                "local folder or the repo_id of a model on the Hub."),
    (VAE, "FileNotFoundError: [Errno 2] No such file or directory: '{ckpt}/Wan2.1_VAE.pth'"),
    ("config.json", "OSError: Error no file named config.json found in directory {ckpt}."),
    (shard_name(3, 4), "FileNotFoundError: {ckpt}/ does not appear to have a file named "
                       "{ckpt}/diffusion_pytorch_model-00003-of-00004.safetensors which is required according to the checkpoint index."),
    (INDEX, "OSError: Error no file named diffusion_pytorch_model.bin found in directory {ckpt}."),
    (WAV2VEC, "OSError: Incorrect path_or_model_id: '{ckpt}/wav2vec2-large-xlsr-53-english'. Please provide either "
              "the path to a local folder or the repo_id of a model on the Hub."),
    (f"{TOKENIZER}/tokenizer_config.json", "OSError: {ckpt}/google/umt5-xxl does not appear to have a file named "
                                           "config.json. Checkout 'https://huggingface.co/{ckpt}/google/umt5-xxl/tree/None' for available files."),
    (f"{WAV2VEC}/config.json", "OSError: {ckpt}/wav2vec2-large-xlsr-53-english does not appear to have a file named "
                               "config.json. Checkout 'https://huggingface.co/{ckpt}/wav2vec2-large-xlsr-53-english/tree/None' "
                               "for available files."),
])
def test_missing_checkpoint_parts(tmp_path, lora, square, speech, skip, message):
    ckpt = make_checkpoint(tmp_path / "partial", skip=(skip, *((shard_name(i, 4) for i in range(1, 5)) if skip == INDEX else ())))
    done = run_fake(job(ckpt, lora, square, speech, tmp_path / "x.mp4"))
    assert done.returncode == 1
    assert last_line(done.stderr) == message.format(ckpt=ckpt)
    assert "Creating WanS2V pipeline." in done.stdout and "complete prepare" not in done.stdout


def test_lora_path_rules(tmp_path, ckpt, square, speech):
    absent = tmp_path / "nowhere/liveavatar.safetensors"
    done = run_fake(job(ckpt, absent, square, speech, tmp_path / "x.mp4"))
    assert done.returncode == 1 and last_line(done.stderr) == f'FileNotFoundError: No such file or directory: "{absent}"'
    assert "Downloading from HF Hub" not in done.stdout

    relative = run_fake(job(ckpt, "ckpt/liveavatar.safetensors", square, speech, tmp_path / "x.mp4"))
    assert relative.returncode == 1
    assert "Downloading from HF Hub: ckpt/liveavatar.safetensors" in relative.stdout
    assert ("Failed to download from HF Hub: Cannot find the requested files in the disk cache and outgoing traffic "
            "has been disabled.") in relative.stdout
    assert last_line(relative.stderr) == 'FileNotFoundError: No such file or directory: "ckpt/liveavatar.safetensors"'

    hub = run_fake(job(ckpt, "Quark-Vision/Live-Avatar", square, speech, tmp_path / "x.mp4"))
    assert hub.returncode == 1 and "Downloading from HF Hub: Quark-Vision/Live-Avatar" in hub.stdout
    assert last_line(hub.stderr) == "FileNotFoundError: [Errno 2] No such file or directory: 'Quark-Vision/Live-Avatar'"

    no_config = run_fake(job(ckpt, absent, square, speech, tmp_path / "x.mp4", training_config=None))
    assert no_config.returncode == 1 and last_line(no_config.stderr) == "KeyError: 'lora_rank'"


def test_launch_rules(ckpt, lora, square, speech, tmp_path):
    argv = job(ckpt, lora, square, speech, tmp_path / "x.mp4")
    no_master = subprocess.run([sys.executable, str(SCRIPT), *argv], cwd=FAKE, env=clean_env(), capture_output=True, text=True)
    assert no_master.returncode == 1 and last_line(no_master.stderr) == (
        "ValueError: Error initializing torch.distributed using env:// rendezvous: environment variable MASTER_ADDR "
        "expected, but not set")
    two = run_fake(argv, WORLD_SIZE="2")
    assert "world_size: 2" in two.stdout
    assert last_line(two.stderr) == "AssertionError: At least 5 GPUs are supported for distributed inference."
    five = run_fake(argv, WORLD_SIZE="5")
    assert last_line(five.stderr) == "AssertionError: Only 4 GPUs are supported for distributed inference."
    no_vae = run_fake([*argv, "--num_gpus_dit", "4"], WORLD_SIZE="5")
    assert last_line(no_vae.stderr) == "AssertionError: VAE parallel is required for distributed inference."
    missing_config = run_fake(job(ckpt, lora, square, speech, tmp_path / "x.mp4", training_config="nope.yaml"))
    assert last_line(missing_config.stderr) == "FileNotFoundError: [Errno 2] No such file or directory: 'nope.yaml'"
    assert "world_size" not in missing_config.stdout


def test_denoising_rejections(tmp_path, ckpt, lora, wide, square, speech):
    solver = run_fake(job(ckpt, lora, square, speech, tmp_path / "x.mp4", sample_solver="unipc"))
    assert solver.returncode == 1 and last_line(solver.stderr) == "NotImplementedError: Unsupported solver."
    assert solver.stdout.index("Creating WanModel") < solver.stdout.index("complete prepare conditional inputs")

    five = run_fake(job(ckpt, lora, square, speech, tmp_path / "x.mp4", sample_steps=5))
    assert five.returncode == 1 and last_line(five.stderr) == "KeyError: '5'"
    assert "    kv_cache1 = self.kv_cache1[str(moved_id)]\n" in five.stderr
    assert "    self._move_kv_cache_to_working_gpu(i+1)# i+1 gpu -> 0\n" in five.stderr
    assert re.search(r"\r 80%\|████████  \| 4/5 \[[^\]]*\]\nTraceback", five.stderr)  # tqdm closes first

    big = run_fake(job(ckpt, lora, wide, speech, tmp_path / "x.mp4", size="1280*720"))
    assert big.returncode == 1 and last_line(big.stderr) == (
        "RuntimeError: The expanded size of the tensor (2800) must match the existing size (8800) at non-singleton "
        "dimension 1.  Target sizes: [1, 2800, 40, 128].  Tensor sizes: [8800, 40, 128]")
    assert "complete prepare conditional inputs" in big.stdout and "\r  0%|" not in big.stderr  # the first forward
    tpp = fake.expanded_size_error(True, 3640).last_line
    assert tpp.startswith("RuntimeError: The expanded size of the tensor (3000) must match the existing size (3640)")

    three = run_fake(job(ckpt, lora, square, speech, tmp_path / "three.mp4", sample_steps=3))
    assert three.returncode == 0 and complete_bars(three.stderr, steps=3) == 4  # fewer steps run on one GPU

    no_clip = run_fake(job(ckpt, lora, square, speech, tmp_path / "x.mp4", num_clip=0))
    assert no_clip.returncode == 1 and "complete full-sequence generation" in no_clip.stdout
    assert last_line(no_clip.stderr) == "RuntimeError: torch.cat(): expected a non-empty list of Tensors"


def test_save_into_a_missing_folder(tmp_path, ckpt, lora, square, speech):
    out = tmp_path / "no/such/dir/x.mp4"
    done = run_fake(job(ckpt, lora, square, speech, out))
    assert done.returncode == 1
    assert f"INFO: save_video failed, error: The directory '{out.parent}' does not exist" in done.stdout
    assert last_line(done.stderr) == f"FileNotFoundError: video file {out} does not exist"


# ---------------------------------------------------------------------------------------------
# Injected failure modes


def test_mode_oom_and_crash(tmp_path, ckpt, lora, square, speech):
    oom = run_fake(job(ckpt, lora, square, speech, tmp_path / "x.mp4", num_clip=2), FAKE_LIVEAVATAR_MODE="oom")
    assert oom.returncode == 1 and complete_bars(oom.stderr) == 4  # after the first clip
    assert last_line(oom.stderr).startswith("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 10.40 GiB.")
    crash = run_fake(job(ckpt, lora, square, speech, tmp_path / "x.mp4"), FAKE_LIVEAVATAR_MODE="crash")
    assert crash.returncode == 1 and last_line(crash.stderr) == "RuntimeError: fake crash in the decoder"
    assert "image = torch.stack(self.vae.decode(decode_latents))" in crash.stderr
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("mode", ["exit0_no_file", "mux_fails", "silent_file", "wrong_duration"])
def test_modes_around_saving(tmp_path, ckpt, lora, square, speech, mode):
    out = tmp_path / "x.mp4"
    done = run_fake(job(ckpt, lora, square, speech, out, num_clip=2), FAKE_LIVEAVATAR_MODE=mode)
    if mode == "exit0_no_file":  # impossible for the real script: the merge raises
        assert done.returncode == 1 and not out.exists()
        assert "INFO: save_video failed, error: [Errno 28] No space left on device" in done.stdout
        assert last_line(done.stderr) == f"FileNotFoundError: video file {out} does not exist"
        return
    assert done.returncode == 0, done.stderr
    info = probe(out)
    if mode == "wrong_duration":
        assert info["audio"] is not None and abs(float(info["audio"]["duration"]) - 1.5) < 0.1
    else:
        assert info["audio"] is None and abs(info["duration"] - (2 * 48 - 3) / 25) < 0.05
        assert "ERROR: merge_video_audio failed with error: [Errno 2] No such file or directory: 'ffmpeg'" in done.stdout
        assert "INFO: Finished." in done.stdout


def test_mode_flash_attn_missing(tmp_path, ckpt, lora, square, speech):
    done = run_fake(job(ckpt, lora, square, speech, tmp_path / "x.mp4"), FAKE_LIVEAVATAR_MODE="flash_attn_missing")
    assert done.returncode == 1 and last_line(done.stderr) == "AssertionError"
    assert done.stderr.rstrip().endswith(
        "liveavatar/models/wan/wan_2_2/modules/attention.py\", line 143, in flash_attention\n"
        "    assert FLASH_ATTN_2_AVAILABLE\nAssertionError")
    assert "complete prepare conditional inputs" in done.stdout and "\r  0%|" not in done.stderr


def test_mode_compile_unbound(tmp_path, ckpt, lora, square, speech):
    started = time.monotonic()
    done = run_fake(job(ckpt, lora, square, speech, tmp_path / "x.mp4"), FAKE_LIVEAVATAR_MODE="compile_unbound",
                    FAKE_LIVEAVATAR_COMPILE_SECONDS="0.4")
    assert done.returncode == 1 and time.monotonic() - started >= 0.4
    assert last_line(done.stderr) == "UnboundLocalError: cannot access local variable 'v' where it is not associated with a value"
    assert "torch/_dynamo/eval_frame.py" in done.stderr
    assert ("attention.py\", line 111, in torch_dynamo_resume_in_flash_attention_at_110\n"
            "    v = half(torch.cat([u[:v] for u, v in zip(v, k_lens)]))") in done.stderr
    assert "\r  0%|          | 0/4 [00:00<?, ?it/s]\r  0%|          | 0/4 [00:00<?, ?it/s]\n" in done.stderr
    off = run_fake(job(ckpt, lora, square, speech, tmp_path / "y.mp4"), FAKE_LIVEAVATAR_MODE="compile_unbound",
                   ENABLE_COMPILE="false")
    assert off.returncode == 0 and off.stdout.startswith("COMPILE: False\n")


def test_mode_hang_writes_pids_and_blocks(tmp_path, ckpt, lora, square, speech):
    pidfile = tmp_path / "pids.json"
    env = clean_env(MASTER_ADDR="127.0.0.1", MASTER_PORT="29500", FAKE_LIVEAVATAR_MODE="hang",
                    FAKE_LIVEAVATAR_PIDFILE=str(pidfile))
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *job(ckpt, lora, square, speech, tmp_path / "x.mp4")],
                            cwd=FAKE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = json.loads(pidfile.read_text())
        assert pids["main"] == proc.pid and proc.poll() is None
        os.kill(pids["child"], 0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_mode_nccl_hang_aborts_after_the_watchdog(tmp_path, ckpt, lora, square, speech):
    done = run_fake(job(ckpt, lora, square, speech, tmp_path / "x.mp4"), FAKE_LIVEAVATAR_MODE="nccl_hang",
                    FAKE_LIVEAVATAR_NCCL_TIMEOUT_SECONDS="0.2")
    assert done.returncode == -signal.SIGABRT
    assert "Watchdog caught collective operation timeout: WorkNCCL(SeqNum=57" in done.stderr
    assert "terminate called after throwing an instance of 'c10::DistBackendError'" in done.stderr


# ---------------------------------------------------------------------------------------------
# The 5-process pipeline through the fake torchrun


def pipeline_args(ckpt, lora, image, audio, out, **over) -> list[str]:
    return job(ckpt, lora, image, audio, out, offload_model="False", num_gpus_dit=4, single_gpu=False,
               enable_vae_parallel=True, **over)


def test_pipeline_prints_five_bars_per_block_and_rank_4_saves(tmp_path, ckpt, lora, square, speech):
    out = tmp_path / "p.mp4"
    done = launch(TORCHRUN, 5, "minimal_inference/s2v_streaming_interact.py",
                  pipeline_args(ckpt, lora, square, speech, out, num_clip=2))
    assert done.returncode == 0, done.stderr
    # Five processes write to one pipe: print()'s text and its newline are two writes under -u,
    # so lines of different ranks interleave (as they do for the real script).
    assert done.stdout.count("world_size: 5") == 5 and done.stdout.count("Using TPP distributed inference.") == 5
    assert sorted(re.findall(r"(?<!lora )rank: (\d)", done.stdout)) == list("01234")
    assert done.stdout.count("INFO: Finished.") == 1 and "Saving generated video" not in done.stdout  # rank 4 logs at ERROR
    # Every rank closes one bar per block (with no step time there are no intermediate repaints):
    # counting progress once means dividing by 5, or reading one rank's bars.
    assert len(re.findall(r"\r100%\|██████████\| 4/4 \[", done.stderr)) == 5 * 2 * 4
    assert probe(out)["audio"] is not None and abs(probe(out)["duration"] - 3.0) < 0.05


def test_pipeline_bars_per_rank_under_tee(tmp_path, ckpt, lora, square, speech):
    """With --tee 3 every line carries its rank (and every tqdm repaint becomes a line of its own):
    each rank paints one bar per block, the VAE rank runs through its bars without working, and
    --local-ranks-filter 0 leaves one rank on the console."""
    argv = pipeline_args(ckpt, lora, square, speech, tmp_path / "p.mp4")
    done = launch(TORCHRUN, 5, "minimal_inference/s2v_streaming_interact.py", argv, launcher_flags=("--tee", "3"),
                  FAKE_LIVEAVATAR_STEP_SECONDS="0.25")
    assert done.returncode == 0, done.stderr
    states: dict[str, list[int]] = {str(r): [] for r in range(5)}
    for rank, n in re.findall(r"\[default(\d)\]:\s*\d+%\|[^|]*\|\s*(\d)/4 \[", done.stderr):
        states[rank].append(int(n))
    # DiT rank k repaints once after its own (slow) step k, then tqdm's close repaint; the VAE
    # rank has no step: its bar goes from 0/4 straight to the close.
    assert states["4"] == [0, 4] * 4
    for rank in range(4):
        assert states[str(rank)] == [0, rank + 1, 4] * 4, (rank, states[str(rank)])
    assert all(line.startswith("[default") for line in done.stdout.splitlines())
    only0 = launch(TORCHRUN, 5, "minimal_inference/s2v_streaming_interact.py", argv,
                   launcher_flags=("--tee", "3", "--local-ranks-filter", "0"))
    assert only0.returncode == 0, only0.stderr
    assert set(re.findall(r"^\[default(\d)\]:", only0.stderr + only0.stdout, re.MULTILINE)) == {"0"}
    assert len(re.findall(r"^\[default0\]:  0%\|", only0.stderr, re.MULTILINE)) == 4


def test_pipeline_mode_nccl_hang(tmp_path, ckpt, lora, square, speech):
    done = launch(TORCHRUN, 5, "minimal_inference/s2v_streaming_interact.py",
                  pipeline_args(ckpt, lora, square, speech, tmp_path / "p.mp4"),
                  FAKE_LIVEAVATAR_MODE="nccl_hang", FAKE_LIVEAVATAR_NCCL_TIMEOUT_SECONDS="0.3")
    assert done.returncode == 1
    assert "Watchdog caught collective operation timeout" in done.stderr
    assert "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:" in done.stderr
    assert "  exitcode  : -6 (pid: " in done.stderr and "(SIGABRT)" in done.stderr


# ---------------------------------------------------------------------------------------------
# The fake torchrun itself, and against the real one

PROBE_CHILD = """
import os, sys, time
rank = int(os.environ["RANK"])
keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME",
        "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR", "TORCHELASTIC_RESTART_COUNT",
        "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RUN_ID", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "OMP_NUM_THREADS"]
print("env " + " ".join(f"{k}={os.environ.get(k)}" for k in keys) + " port=" + str(bool(os.environ.get("MASTER_PORT"))))
print("pid", os.getpid(), os.getsid(0) == os.getpid())
sys.stderr.write("  0%|x| 0/4\\r 50%|x| 2/4\\r100%|x| 4/4\\n")
sys.stderr.flush()
if rank == 1:
    time.sleep(0.6)
    sys.stdout.write("no newline at the end")
    sys.stdout.flush()
    sys.exit(3)
time.sleep(30)
"""


def normalized(done: subprocess.CompletedProcess) -> dict:
    """What must be equal between the fake and the real launcher (pids, times, host aside)."""
    out = re.sub(r"pid \d+", "pid N", done.stdout)
    box = done.stderr[done.stderr.index("ChildFailedError:"):]
    box = re.sub(r"\(pid: \d+\)", "(pid: N)", box)
    box = re.sub(r"PID \d+", "PID N", box)
    box = re.sub(r"time      : \S+", "time      : T", box)
    box = re.sub(r"host      : \S+", "host      : H", box)
    stderr_lines = sorted(line for line in done.stderr.splitlines() if line.startswith("[default"))
    return {"rc": done.returncode, "stdout": sorted(out.splitlines()), "stderr": stderr_lines, "box": box,
            "omp": "Setting OMP_NUM_THREADS environment variable for each process to be 1" in done.stderr,
            "closing": len(re.findall(r"Sending process \d+ closing signal SIGTERM", done.stderr))}


def test_fake_torchrun_matches_the_real_one(tmp_path):
    child = tmp_path / "probe_child.py"
    child.write_text(PROBE_CHILD)
    got = launch(TORCHRUN, 3, child, [], cwd=tmp_path, launcher_flags=("--tee", "3"))
    mine = normalized(got)
    assert mine["rc"] == 1 and mine["closing"] == 2 and mine["omp"]
    assert "[default1]:no newline at the end" in got.stdout
    assert mine["stdout"].count("[default0]:pid N True") == 1  # each rank in its own session
    assert sorted(mine["stderr"]) == sorted(f"[default{r}]:{s}" for r in range(3) for s in ("  0%|x| 0/4", " 50%|x| 2/4", "100%|x| 4/4"))
    assert "  exitcode  : 3 (pid: N) \n" in mine["box"] and mine["box"].count("exitcode  : -15 (pid: N)  (SIGTERM)") == 2
    if REAL_TORCHRUN is None:
        pytest.skip("no real torchrun in this environment to compare with")
    real = normalized(launch(REAL_TORCHRUN, 3, child, [], cwd=tmp_path, launcher_flags=("--tee", "3")))
    assert mine == real


def test_fake_torchrun_records_and_forwards_sigterm(tmp_path):
    child = tmp_path / "sleeper.py"
    # One write per line: under -u, print() writes the text and the newline separately.
    child.write_text("import os, sys, time\nsys.stdout.write(f'{os.getpid()}\\n')\ntime.sleep(60)\n")
    record = tmp_path / "launches.jsonl"
    proc = subprocess.Popen([str(TORCHRUN), "--nproc-per-node=2", "--master_port", str(free_port()), "--redirects", "0",
                             str(child), "--flag", "x"], cwd=tmp_path, env=clean_env(FAKE_TORCHRUN_RECORD=str(record)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    pids = [int(proc.stdout.readline()) for _ in range(2)]
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "Received 15 death signal, shutting down workers" in stderr
    assert last_line(stderr) == f"torch.distributed.elastic.multiprocessing.api.SignalException: Process {proc.pid} got signal: 15"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    (run,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert run["launcher"]["nproc_per_node"] == "2" and run["launcher"]["redirects"] == "0"
    assert run["script"] == str(child) and run["script_args"] == ["--flag", "x"] and run["pid"] == proc.pid


def test_fake_environment_python_has_a_flash_attn_stub_unless_the_mode_removes_it():
    probe = "import importlib.util as u; print(u.find_spec('flash_attn') is not None)"
    assert run([str(FAKE / "python"), "-c", probe], cwd=FAKE, env=clean_env()).stdout == "True\n"
    missing = run([str(FAKE / "python"), "-c", probe], cwd=FAKE, env=clean_env(FAKE_LIVEAVATAR_MODE="flash_attn_missing"))
    assert missing.stdout == "False\n"


def test_fake_torchrun_tee_2_prefixes_stderr_only(tmp_path):
    """--tee 2 tees stderr (with the header) and leaves stdout to the children, unprefixed."""
    child = tmp_path / "child.py"
    child.write_text('import sys\nsys.stdout.write(\'{"event": "ready"}\\n\')\n'  # one write: ranks share stdout
                     'sys.stderr.write("\\r  0%|x| 0/4\\r100%|x| 4/4\\n")\n')
    done = launch(TORCHRUN, 2, child, [], cwd=tmp_path, launcher_flags=("--tee", "2"))
    assert done.returncode == 0
    assert done.stdout == '{"event": "ready"}\n' * 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("[default")]
    assert sorted(lines) == sorted(f"[default{r}]:{text}" for r in range(2) for text in ("", "  0%|x| 0/4", "100%|x| 4/4"))


def test_fake_torchrun_busy_master_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([str(TORCHRUN), "--nproc_per_node", "1", "--master_port", str(port), str(SCRIPT)],
                              env=clean_env(), capture_output=True, text=True, timeout=20)
    assert done.returncode == 1 and last_line(done.stderr).startswith(
        f"torch.distributed.DistNetworkError: The server socket has failed to listen on any local network address. port: {port},")
