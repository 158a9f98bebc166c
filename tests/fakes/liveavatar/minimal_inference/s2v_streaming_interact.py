"""FAKE Live Avatar entry point for tests. It is NOT the real model and generates nothing learned.

It accepts the arguments of the real `minimal_inference/s2v_streaming_interact.py` (as far as
DESIGN.md and public copies of the script list them), fails the way the real one fails on bad
configurations, prints tqdm-style bars on stderr (one 4-step bar per 12-frame block, 4 per clip
at 48 frames), and writes a real MP4 with ffmpeg (25 fps, libx264 + AAC, cut to the audio).

FAKE_LIVEAVATAR_MODE picks a failure: oom, nccl_hang, hang, exit0_no_file, silent_file,
wrong_duration, crash. FAKE_LIVEAVATAR_PIDFILE (hang) receives the pids of the process and of
the child it spawns. FAKE_LIVEAVATAR_STEP_SECONDS slows each sampling step down.
Standard library only, like a script that runs in another environment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

MODE = os.environ.get("FAKE_LIVEAVATAR_MODE", "")
STEP_SECONDS = float(os.environ.get("FAKE_LIVEAVATAR_STEP_SECONDS", "0"))
COND_CACHE_TOKENS = 2800  # the real shared condition cache: [1, 2800, 40, 128]


def str2bool(value: str) -> bool:
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected (True/False)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="FAKE Live Avatar s2v_streaming_interact")
    p.add_argument("--task", default="t2v-A14B", choices=["s2v-14B", "s2v-1.3B", "t2v-A14B"])
    p.add_argument("--size", default="1280*720")
    p.add_argument("--frame_num", type=int, default=None)
    p.add_argument("--ckpt_dir", default=None)
    p.add_argument("--offload_model", type=str2bool, default=None)
    p.add_argument("--init_on_cpu", type=str2bool, default=None)
    p.add_argument("--ulysses_size", type=int, default=1)
    p.add_argument("--t5_fsdp", action="store_true")
    p.add_argument("--t5_cpu", action="store_true")
    p.add_argument("--dit_fsdp", action="store_true")
    p.add_argument("--save_file", default=None)
    p.add_argument("--save_dir", default=None)
    p.add_argument("--prompt", default=None)
    p.add_argument("--base_seed", type=int, default=-1)
    p.add_argument("--image", default=None)
    p.add_argument("--sample_solver", default="euler", choices=["euler", "unipc", "dpm++", "fewstep_fm"])
    p.add_argument("--sample_steps", type=int, default=None)
    p.add_argument("--sample_shift", type=float, default=None)
    p.add_argument("--sample_guide_scale", type=float, default=None)
    p.add_argument("--convert_model_dtype", action="store_true")
    p.add_argument("--num_clip", type=int, default=None)
    p.add_argument("--audio", default=None)
    p.add_argument("--enable_tts", action="store_true")
    p.add_argument("--pose_video", default=None)
    p.add_argument("--start_from_ref", action="store_true")
    p.add_argument("--infer_frames", type=int, default=80)
    p.add_argument("--load_lora", action="store_true")
    p.add_argument("--lora_path", default=None)
    p.add_argument("--lora_path_dmd", default=None)
    p.add_argument("--training_config", default=None)
    p.add_argument("--single_gpu", action="store_true")
    p.add_argument("--using_merged_ckpt", action="store_true")
    p.add_argument("--num_gpus_dit", type=int, default=4)
    p.add_argument("--enable_vae_parallel", action="store_true")
    p.add_argument("--offload_kv_cache", action="store_true")
    p.add_argument("--enable_online_decode", action="store_true")
    p.add_argument("--fp8", action="store_true")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(f"[fake-liveavatar] INFO: {message}", flush=True)


def audio_seconds(path: str) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", path],
        capture_output=True, text=True, check=True,
    )
    return float(json.loads(out.stdout)["format"]["duration"])


def bar(n: int, total: int, elapsed: float) -> str:
    """One tqdm-style bar, as tqdm prints it without a description."""
    filled = int(10 * n / total)
    return f"\r{int(100 * n / total):3d}%|{'█' * filled}{' ' * (10 - filled)}| {n}/{total} [00:{int(elapsed):02d}<00:00,  1.00it/s]"


def run_block(steps: int) -> None:
    started = time.monotonic()
    sys.stderr.write(bar(0, steps, 0))
    sys.stderr.flush()
    kv_cache1 = {str(gpu + 1): "cache" for gpu in range(4)}  # the real pipeline: one cache per step
    for i in range(steps):
        kv_cache1[str(i+1)]  # noqa: B018 - raises KeyError('5') on a fifth step, like the real one
        if STEP_SECONDS:
            time.sleep(STEP_SECONDS)
        sys.stderr.write(bar(i + 1, steps, time.monotonic() - started))
        sys.stderr.flush()
    sys.stderr.write(bar(steps, steps, time.monotonic() - started) + "\n")  # tqdm's close repaint
    sys.stderr.flush()


def encode(args: argparse.Namespace, seconds: float, *, with_audio: bool = True, extra_s: float = 0.0) -> None:
    width, height = (int(v) for v in args.size.split("*"))
    video_s = seconds + extra_s
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
           f"color=c=0x406080:s={width}x{height}:r=25:d={video_s:.3f}"]
    if with_audio:
        cmd += ["-i", args.audio]
    cmd += ["-map", "0:v"] + (["-map", "1:a", "-c:a", "aac"] if with_audio else [])
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-r", "25"]
    if not extra_s:
        cmd += ["-t", f"{seconds:.3f}"]  # cut to the audio length, like the real muxer
    cmd.append(args.save_file)
    subprocess.run(cmd, check=True)


def main() -> None:
    args = parse_args(sys.argv[1:])
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    log(f"Generation job args: {args}")
    if args.save_file is None or args.prompt is None or args.audio is None or args.image is None:
        log("missing inputs: the real script would use its built-in examples here")
        sys.exit(2)

    # "Loading": the real script opens T5, the VAE and the DiT from ckpt_dir, then the LoRA.
    t5 = os.path.join(args.ckpt_dir or "", "models_t5_umt5-xxl-enc-bf16.pth")
    if not args.ckpt_dir or not os.path.isdir(args.ckpt_dir):
        raise FileNotFoundError(2, "No such file or directory", t5)
    if args.load_lora and args.lora_path_dmd and not os.path.exists(args.lora_path_dmd):
        raise FileNotFoundError(2, "No such file or directory", args.lora_path_dmd)
    log("Creating WanS2V pipeline.")
    if args.sample_solver != "euler":
        raise NotImplementedError("Unsupported solver.")
    width, height = (int(v) for v in args.size.split("*"))
    if width * height > 720 * 400:
        # The real failure: the fixed condition cache is smaller than the larger size's tokens.
        raise RuntimeError(
            f"The expanded size of the tensor (3000) must match the existing size ({COND_CACHE_TOKENS}) at "
            "non-singleton dimension 1.  Target sizes: [1, 3000, 40, 128].  "
            f"Tensor sizes: [1, {COND_CACHE_TOKENS}, 40, 128]"
        )
    if world_size == 1 and args.sample_steps is not None and args.sample_steps < 4:
        raise RuntimeError(f"fake: sample_steps={args.sample_steps} on one GPU (the real engine fails too)")

    # Hangs come early (right after "loading") so tests can use short timeouts safely.
    if MODE == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        pidfile = os.environ.get("FAKE_LIVEAVATAR_PIDFILE")
        if pidfile:
            with open(pidfile, "w") as handle:
                json.dump({"main": os.getpid(), "child": child.pid}, handle)
        log("hanging (fake)")
        time.sleep(3600)
    if MODE == "nccl_hang":
        # What a surviving pipeline rank prints while its peer is gone; then it stays blocked.
        sys.stderr.write(
            "[rank2]:[E ProcessGroupNCCL.cpp:616] [Rank 2] Watchdog caught collective operation "
            "timeout: WorkNCCL(SeqNum=57, OpType=BROADCAST, NumelIn=1, NumelOut=1, Timeout(ms)=600000) "
            "ran for 600011 milliseconds before timing out.\n"
        )
        sys.stderr.flush()
        time.sleep(3600)

    seconds = audio_seconds(args.audio)
    clips = math.floor(seconds * 25 / args.infer_frames) + 1
    if args.num_clip is not None:
        clips = min(clips, args.num_clip)
    blocks = max(1, args.infer_frames // 12)
    steps = args.sample_steps or 4
    log(f"complete prepare conditional inputs: {clips} clips of {args.infer_frames} frames")

    for clip in range(clips):
        for _ in range(blocks):
            run_block(steps)
        if MODE == "oom" and clip == 0:
            sys.stderr.write(
                "Traceback (most recent call last):\n"
                '  File "minimal_inference/s2v_streaming_interact.py", line 512, in <module>\n'
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 10.40 GiB. GPU 0 has a "
                "total capacity of 79.19 GiB of which 3.12 GiB is free.\n"
            )
            sys.exit(1)
        if MODE == "crash" and clip == 0:
            sys.stderr.write("Traceback (most recent call last):\nRuntimeError: fake crash in the decoder\n")
            sys.exit(3)

    print("denoising video done", flush=True)
    if MODE == "exit0_no_file":
        log("merge failed silently (fake)")
        return
    if MODE == "silent_file":
        encode(args, seconds, with_audio=False)
    elif MODE == "wrong_duration":
        encode(args, seconds, extra_s=2.0)
    else:
        encode(args, seconds)
    log(f"Saving generated video to {args.save_file}")
    log("Finished.")


if __name__ == "__main__":
    main()
