"""avatarflow's warm Live Avatar worker: load the model once, then generate video after video.

This program runs INSIDE the Live Avatar environment (its checkout, Python 3.10 and its pinned
packages), launched by `inference/warm_client.py` through torchrun. It imports nothing from
avatarflow or avatarflow's dependencies: only the standard library at module level, and Live
Avatar's own modules lazily inside `LiveAvatarBackend`.

Protocol: JSON lines. Requests on stdin, one per line:
    {"id": "...", "op": "generate", "args": {prompt, image, audio, save_file, size, num_clip,
        infer_frames, sample_steps, sample_solver, base_seed, enable_online_decode, ...}}
    {"id": "...", "op": "health"}
    {"id": "...", "op": "shutdown"}
Messages on stdout:
    {"event": "ready", "ok": true, "load_seconds": 93.2, "pid": 123, "backend": "liveavatar", ...}
    {"event": "load_failed", "ok": false, "error": {"kind": "...", "message": "..."}}
    {"id": "...", "event": "progress", "progress": {"clips_done": 1, "clips_planned": 5}}
    {"id": "...", "ok": true, "result": {"save_file": "...", "seconds": 41.0}}
    {"id": "...", "ok": false, "error": {"kind": "out_of_memory", "message": "..."}}
    {"id": "...", "ok": true, "health": {...}}
Logs (and anything Live Avatar prints) go to stderr; stdout carries only protocol messages.
A failed job is answered with an error and the worker keeps serving.

In the 5-GPU pipeline every rank runs this program; rank 0 reads each request and broadcasts it
so that all ranks enter each generation together (DESIGN.md: "all ranks must enter each
generation together"). Only rank 0 writes protocol messages.

`--backend fake` (or AVATARFLOW_WARM_BACKEND=fake) selects `FakeBackend`, a test double that
writes a real MP4 with ffmpeg and fails on request ("fake_fail" in the request, or
"[fake_fail=<mode>]" in the prompt): oom, no_audio, crash_worker, hang, size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

# Run as a script, Python puts this file's folder (avatarflow's inference/) first on sys.path,
# where inference/liveavatar.py would shadow Live Avatar's own `liveavatar` namespace package.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

PROTOCOL_VERSION = 1
ProgressFn = Callable[..., None]  # (clips_done, clips_planned, timing dict or None)

# Failure kinds, spelled as avatarflow's FailureKind values (this file cannot import it).
OUT_OF_MEMORY = "out_of_memory"
CONFIG_REJECTED = "config_rejected"
MISSING_WEIGHTS = "missing_weights"
NCCL_HANG = "nccl_hang"
CRASHED = "crashed"
BAD_REQUEST = "bad_request"


def str2bool(value: str) -> bool:
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected (True/False)")


def log(message: str) -> None:
    sys.stderr.write(f"[warm-worker {os.getpid()}] {message}\n")
    sys.stderr.flush()


def classify_exception(exc: BaseException) -> str:
    """The failure kind of an exception raised by a generation (the client refines 'crashed')."""
    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text:
        return OUT_OF_MEMORY
    if "The expanded size of the tensor" in text or "Unsupported solver" in text:
        return CONFIG_REJECTED
    if "NCCL" in text or "Watchdog caught collective operation timeout" in text:
        return NCCL_HANG
    if isinstance(exc, FileNotFoundError) and _names_weights(str(exc.filename or exc)):
        return MISSING_WEIGHTS
    return CRASHED


def _names_weights(path: str) -> bool:
    """Whether a missing file is part of the model (a missing ffprobe is not missing weights)."""
    needles = ("ckpt", "safetensors", "wan2.2", ".pth", ".pt", "lora", "wav2vec", "umt5", "quark-vision")
    return any(needle in path.lower() for needle in needles)


def ffprobe_seconds(path: str) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", path],
        capture_output=True, text=True, check=True,
    )
    return float(json.loads(out.stdout)["format"]["duration"])


# ----------------------------------------------------------------------------------------------
# Backends


class FakeBackend:
    """TEST DOUBLE, not Live Avatar: a colour video with the request's audio, or a requested failure."""

    name = "fake"

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.rank = int(os.environ.get("RANK", "0"))

    def load(self) -> None:
        time.sleep(self.options.fake_load_seconds)

    def generate(self, job: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        args = job["args"]
        mode = job.get("fake_fail") or _prompt_marker(str(args.get("prompt", "")))
        if args.get("sample_solver", "euler") != "euler":
            raise NotImplementedError("Unsupported solver.")
        width, height = (int(v) for v in str(args["size"]).split("*"))
        if width * height > 720 * 400 or mode == "size":
            raise RuntimeError("The expanded size of the tensor (2800) must match the existing size (3136) "
                               "at non-singleton dimension 1.  Target sizes: [1, 2800, 40, 128].")
        # The fake runs only in avatarflow's own test environment: it makes what Live Avatar
        # makes by avatarflow's statement of its rules (checked against the real source there).
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from avatarflow.media import wav_samples
        from inference.output_rules import image_size, output_size, planned_clips, video_seconds

        samples = wav_samples(args["audio"]) or round(ffprobe_seconds(args["audio"]) * 16000)
        infer_frames = int(args.get("infer_frames", 48))
        clips = planned_clips(samples, int(args["num_clip"]) if args.get("num_clip") else None, infer_frames)
        seconds = video_seconds(samples, clips, infer_frames)
        width, height = output_size(*(image_size(args["image"]) or (width, height)), str(args["size"]))
        for clip in range(clips):
            time.sleep(self.options.fake_step_seconds * 16)  # 4 blocks × 4 steps per clip
            progress(clip + 1, clips)
            if mode == "oom":
                raise OutOfMemoryError("CUDA out of memory. Tried to allocate 10.40 GiB (fake)")
            if mode == "crash_worker":
                log("fake: the worker dies mid-job")
                os._exit(17)
            if mode == "hang":
                log("fake: hanging mid-job")
                time.sleep(3600)
        if self.rank != 0:  # in a (fake) pipeline one rank writes the file, as in the real one
            return {"save_file": args["save_file"], "clips": clips}
        cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
               f"color=c=0x604080:s={width}x{height}:r=25:d={seconds:.3f}"]
        if mode != "no_audio":
            cmd += ["-i", args["audio"], "-map", "0:v", "-map", "1:a", "-c:a", "aac"]
        cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-t", f"{seconds:.3f}",
                args["save_file"]]
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        return {"save_file": args["save_file"], "clips": clips}

    def recover(self) -> None:
        pass


class OutOfMemoryError(RuntimeError):
    """The fake's stand-in for torch.OutOfMemoryError (same name, same message shape)."""


def _prompt_marker(prompt: str) -> str | None:
    start = prompt.find("[fake_fail=")
    if start < 0:
        return None
    end = prompt.find("]", start)
    return prompt[start + len("[fake_fail="):end] if end > 0 else None


def blocks_per_clip(infer_frames: int) -> int:
    """Causal blocks per clip, one tqdm bar each (Live Avatar's rule; see inference/output_rules.py)."""
    return max(1, ((infer_frames + 3 + 73) // 4 - (73 + 3) // 4) // 3)


class LiveAvatarBackend:
    """Live Avatar's model held in memory.

    It does what minimal_inference/s2v_streaming_interact.py does (read against Live Avatar @
    9c2c38d): start a process group (also on one GPU), build WanS2V from the checkpoint with the
    script's keyword arguments, merge the DMD LoRA, swap in fp8 linears, then per request call
    `generate` and, on the saving rank, `save_video` and `merge_video_audio`, with the script's
    arguments. Keyword arguments the installed version does not accept are dropped with a warning.
    """

    name = "liveavatar"
    needs_process_group = True  # like the script, even on one GPU

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.model: Any = None
        self.cfg: Any = None
        self._bars_done = 0
        self._on_bar: Callable[[float], None] | None = None
        self._on_bar_start: Callable[[], None] | None = None

    def load(self) -> None:
        checkout = os.path.abspath(self.options.checkout)
        sys.path.insert(0, checkout)
        os.chdir(checkout)  # the script resolves its config paths relative to the checkout
        import torch
        from liveavatar.models.wan.wan_2_2.configs import MAX_AREA_CONFIGS, WAN_CONFIGS
        from liveavatar.models.wan.wan_2_2.utils.utils import merge_video_audio, save_video
        from liveavatar.utils.args_config import parse_args_for_training_config

        self.torch = torch
        self.max_area_configs = MAX_AREA_CONFIGS
        self.save_video = save_video
        self.merge_video_audio = merge_video_audio
        torch.cuda.set_device(self.local_rank)
        if self.world_size > 1:
            from liveavatar.models.wan import causal_s2v_pipeline_tpp as pipeline_module
        else:
            from liveavatar.models.wan import causal_s2v_pipeline as pipeline_module
        # The config object as the script passes it (its own sample_solver entry only picks the
        # scheduler built in __init__, which generate() does not use).
        cfg = WAN_CONFIGS[self.options.task]
        self.cfg = cfg
        training = parse_args_for_training_config(self.options.training_config)
        self.offload = bool(self.options.offload_model) if self.world_size == 1 else False
        # The keyword arguments the script passes, and no others: init_on_cpu keeps its default
        # (True), which moves T5, the VAE and wav2vec off the GPU while the DiT denoises, even
        # with offload_model off; passing offload_model there kept 11+ GB of them on the GPU.
        model = pipeline_module.WanS2V(**_supported(pipeline_module.WanS2V.__init__, dict(
            config=cfg, checkpoint_dir=self.options.ckpt_dir, device_id=self.local_rank, rank=self.rank,
            t5_fsdp=False, dit_fsdp=False, use_sp=False, sp_size=1, t5_cpu=False,
            convert_model_dtype=self.options.convert_model_dtype,
            single_gpu=self.world_size == 1, offload_kv_cache=False,
        )))
        if self.options.load_lora and self.options.lora_path_dmd:
            merged = model.add_lora_to_model(
                model.noise_model, lora_rank=training["lora_rank"], lora_alpha=training["lora_alpha"],
                lora_target_modules=training["lora_target_modules"],
                init_lora_weights=training["init_lora_weights"],
                pretrained_lora_path=self.options.lora_path_dmd, load_lora_weight_only=False,
            )
            if merged is not None:  # some versions merge in place, some return the merged model
                model.noise_model = merged
        if self.options.fp8:
            if hasattr(torch, "_scaled_mm"):
                from liveavatar.utils.fp8_linear import replace_linear_with_scaled_fp8

                replace_linear_with_scaled_fp8(model.noise_model, ignore_keys=[
                    "text_embedding", "time_embedding", "time_projection", "head.head",
                    "casual_audio_encoder.encoder.final_linear",
                ])
            else:
                log("fp8 requested but this torch has no _scaled_mm; running in bf16")
        self.model = model
        self._patch_tqdm(pipeline_module)

    def _patch_tqdm(self, module: Any) -> None:
        """Count and time the pipeline's denoising bars (one per block, 4 per clip) as they close."""
        original = getattr(module, "tqdm", None)
        if original is None:
            return
        backend = self

        class CountingTqdm(original):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                if backend._on_bar_start is not None:
                    backend._on_bar_start()

            def close(self) -> None:
                finished = not getattr(self, "_af_closed", False) and self.total and self.n >= self.total
                elapsed = self.format_dict.get("elapsed") if finished else None
                self._af_closed = True
                super().close()
                if finished and backend._on_bar is not None:
                    backend._on_bar(float(elapsed or 0.0) / max(1, int(self.total)))

        module.tqdm = CountingTqdm

    def generate(self, job: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
        args = job["args"]
        torch = self.torch
        planned = int(args["num_clip"])
        bars_per_clip = blocks_per_clip(int(args["infer_frames"]))
        started = time.monotonic()
        self._bars_done = 0
        timing: dict[str, Any] = {"first_step_s": None, "step_seconds": []}

        def on_bar_start() -> None:
            if timing["first_step_s"] is None:
                timing["first_step_s"] = round(time.monotonic() - started, 3)

        def on_bar(step_seconds: float) -> None:
            self._bars_done += 1
            timing["step_seconds"].append(step_seconds)
            if self._bars_done % bars_per_clip == 0:
                progress(min(self._bars_done // bars_per_clip, planned), planned,
                         {"first_step_s": timing["first_step_s"], "step_s": round(step_seconds, 4)})

        self._on_bar, self._on_bar_start = on_bar, on_bar_start
        torch.cuda.reset_peak_memory_stats()
        width, height = (int(v) for v in str(args["size"]).split("*"))
        try:
            video, _info = self.model.generate(**_supported(self.model.generate, dict(
                input_prompt=args["prompt"], ref_image_path=args["image"], audio_path=args["audio"],
                enable_tts=False, tts_prompt_audio=None, tts_prompt_text=None, tts_text=None,
                num_repeat=planned, pose_video=None, generate_size=args["size"],
                max_area=self.max_area_configs.get(args["size"], width * height),
                infer_frames=int(args["infer_frames"]), shift=getattr(self.cfg, "sample_shift", None),
                sample_solver=args["sample_solver"], sampling_steps=int(args["sample_steps"]),
                guide_scale=args.get("sample_guide_scale", 0), seed=int(args["base_seed"]),
                offload_model=self.offload, init_first_frame=False, use_dataset=False,
                dataset_sample_idx=0, drop_motion_noisy=False,
                num_gpus_dit=self.options.num_gpus_dit, enable_vae_parallel=self.options.enable_vae_parallel,
                input_video_for_sam2=None, enable_online_decode=bool(args.get("enable_online_decode")),
            )))
        finally:
            self._on_bar = self._on_bar_start = None
        if self.options.enable_vae_parallel:
            save_rank = self.options.num_gpus_dit
        else:
            save_rank = 0 if self.world_size == 1 else self.options.num_gpus_dit - 1
        if self.rank == save_rank and video is not None:
            self.save_video(tensor=video[None], save_file=args["save_file"], fps=self.cfg.sample_fps,
                            nrow=1, normalize=True, value_range=(-1, 1))
            self.merge_video_audio(video_path=args["save_file"], audio_path=args["audio"])
        del video
        torch.cuda.synchronize()
        steps = sorted(timing["step_seconds"])
        return {"save_file": args["save_file"], "clips": planned, "first_step_s": timing["first_step_s"],
                "step_s": steps[len(steps) // 2] if steps else None,
                "peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "peak_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1)}

    def recover(self) -> None:
        """Free what a failed generation left on the GPU so the next job starts clean."""
        torch = getattr(self, "torch", None)
        if self.model is not None:
            # generate() resets these at its end; a failure mid-way leaves them set.
            for name in ("kv_cache1", "shared_cond_cache", "crossattn_cache", "_sampler_timesteps",
                         "_sampler_sigmas"):
                if hasattr(self.model, name):
                    setattr(self.model, name, None)
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def _supported(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `fn` accepts; warn about the ones this Live Avatar version lacks."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    dropped = [k for k in kwargs if k not in params]
    if dropped:
        log(f"this Live Avatar version does not accept {', '.join(dropped)}; ignoring them")
    return {k: v for k, v in kwargs.items() if k in params}


# ----------------------------------------------------------------------------------------------
# Serving


class Channel:
    """The protocol stream: the process's original stdout, reserved for JSON messages."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(message) + "\n")
            self._out.flush()

    _requests: Any = None

    @classmethod
    def reserve_stdin(cls) -> None:
        """Keep the requests to ourselves: children (Live Avatar's ffmpeg mux runs without
        -nostdin) get /dev/null as stdin, so they cannot read a request meant for the worker."""
        cls._requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)

    @classmethod
    def read(cls) -> dict[str, Any] | None:
        """The next request; None at end of input (the client is gone: shut down)."""
        stream = cls._requests or sys.stdin
        while True:
            line = stream.readline()
            if not line:
                return None
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError as exc:
                return {"id": None, "op": "invalid", "error": f"not JSON: {exc}"}
            if not isinstance(message, dict):
                return {"id": None, "op": "invalid", "error": "a request must be a JSON object"}
            return message


def _redirect_stdout_to_stderr() -> None:
    """Live Avatar prints freely; only protocol messages may reach the real stdout."""
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr


class Worker:
    def __init__(self, backend: Any, channel: Channel | None, rank: int, world_size: int) -> None:
        self.backend = backend
        self.channel = channel
        self.rank = rank
        self.world_size = world_size
        self.started = time.time()
        self.load_seconds: float | None = None
        self.jobs_served = 0
        self.jobs_failed = 0
        self.last_error: dict[str, str] | None = None
        self._control_group: Any = None

    def send(self, message: dict[str, Any]) -> None:
        if self.channel is not None and self.rank == 0:
            self.channel.send(message)

    def load(self) -> bool:
        started = time.monotonic()
        try:
            if self.world_size > 1 or getattr(self.backend, "needs_process_group", False):
                self._init_distributed()
            self.backend.load()
        except Exception as exc:  # noqa: BLE001 - reported to the client, then exit
            log("load failed:\n" + traceback.format_exc())
            self.send({"event": "load_failed", "ok": False,
                       "error": {"kind": classify_exception(exc), "message": f"{type(exc).__name__}: {exc}"}})
            return False
        self.load_seconds = time.monotonic() - started
        if self.world_size > 1:
            self._barrier()
        self.send({"event": "ready", "ok": True, "load_seconds": round(self.load_seconds, 3),
                   "pid": os.getpid(), "backend": self.backend.name, "world_size": self.world_size,
                   "protocol": PROTOCOL_VERSION})
        return True

    def _init_distributed(self) -> None:
        """NCCL for the model, a gloo group for passing requests.

        Requests go over gloo with a long timeout because the ranks wait in that broadcast while
        the worker is idle; an NCCL collective would trip its watchdog after minutes of idling.
        AVATARFLOW_WARM_DIST_BACKEND=gloo (tests of the fake pipeline) needs no GPU at all.
        """
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        backend = os.environ.get("AVATARFLOW_WARM_DIST_BACKEND", "nccl")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            # Even on one GPU: Live Avatar's single-GPU pipeline calls dist.get_rank() in every
            # block, and its script always starts a process group (torchrun sets the env://).
            dist.init_process_group(backend=backend, init_method="env://",
                                    rank=self.rank, world_size=self.world_size)
        if self.world_size > 1:
            self._control_group = dist.new_group(backend="gloo", timeout=timedelta(days=365))

    def _barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self._control_group)

    def next_request(self) -> dict[str, Any] | None:
        """Rank 0 reads the next request; in the pipeline every rank receives the same one."""
        message = Channel.read() if self.rank == 0 else None
        if self.world_size > 1:
            import torch.distributed as dist

            box = [message]
            dist.broadcast_object_list(box, src=0, group=self._control_group)
            message = box[0]
        return message

    def serve(self) -> None:
        while True:
            message = self.next_request()
            if message is None:
                log("end of input; shutting down")
                return
            op = message.get("op")
            job_id = message.get("id")
            if op == "shutdown":
                self.send({"id": job_id, "ok": True, "event": "bye", "jobs_served": self.jobs_served})
                return
            if op == "health":
                self.send({"id": job_id, "ok": True, "health": self.health()})
            elif op == "generate":
                self.generate(message)
            else:
                self.send({"id": job_id, "ok": False, "error": {
                    "kind": BAD_REQUEST, "message": message.get("error") or f"unknown op {op!r}"}})

    def health(self) -> dict[str, Any]:
        return {"backend": self.backend.name, "pid": os.getpid(), "world_size": self.world_size,
                "load_seconds": self.load_seconds, "jobs_served": self.jobs_served,
                "jobs_failed": self.jobs_failed, "uptime_s": round(time.time() - self.started, 3),
                "last_error": self.last_error}

    def generate(self, message: dict[str, Any]) -> None:
        job_id = message.get("id")
        if not isinstance(message.get("args"), dict):
            self.send({"id": job_id, "ok": False, "error": {"kind": BAD_REQUEST, "message": "missing args"}})
            return
        started = time.monotonic()

        def progress(done: int, planned: int, timing: dict[str, Any] | None = None) -> None:
            self.send({"id": job_id, "event": "progress",
                       "progress": {"clips_done": done, "clips_planned": planned, **(timing or {})}})

        log(f"job {job_id}: generating {message['args'].get('save_file')}")
        try:
            result = self.backend.generate(message, progress)
        except Exception as exc:  # noqa: BLE001 - a failed job must not end the worker
            trace = traceback.format_exc()
            log(f"job {job_id} failed:\n{trace}")
            self.jobs_failed += 1
            self.last_error = {"kind": classify_exception(exc), "message": f"{type(exc).__name__}: {exc}"}
            self.send({"id": job_id, "ok": False, "error": dict(self.last_error, traceback=trace[-4000:])})
            self.backend.recover()
            return
        if self.world_size > 1:
            # Rank 0 answers only once every rank, the saving one included, is done. (After a
            # failure rank 0 answers at once; the client then restarts all ranks.)
            self._barrier()
        self.jobs_served += 1
        result["seconds"] = round(time.monotonic() - started, 3)
        log(f"job {job_id}: done in {result['seconds']} s")
        self.send({"id": job_id, "ok": True, "result": result})


def parse_args(argv: list | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="avatarflow warm Live Avatar worker (JSON lines on stdin/stdout)")
    p.add_argument("--backend", choices=["liveavatar", "fake"],
                   default=os.environ.get("AVATARFLOW_WARM_BACKEND", "liveavatar"))
    p.add_argument("--checkout", default=os.getcwd(), help="the Live Avatar checkout")
    # Load-time arguments, named as in s2v_streaming_interact.py so the client builds them once.
    p.add_argument("--task", default="s2v-14B")
    p.add_argument("--ulysses_size", type=int, default=1)
    p.add_argument("--ckpt_dir", default=None)
    p.add_argument("--training_config", default="liveavatar/configs/s2v_causal_sft.yaml")
    p.add_argument("--load_lora", action="store_true")
    p.add_argument("--lora_path_dmd", default=None)
    p.add_argument("--offload_model", type=str2bool, default=True)
    p.add_argument("--convert_model_dtype", action="store_true")
    p.add_argument("--num_gpus_dit", type=int, default=1)
    p.add_argument("--enable_vae_parallel", action="store_true")
    p.add_argument("--single_gpu", action="store_true")
    p.add_argument("--fp8", action="store_true")
    p.add_argument("--fake-load-seconds", dest="fake_load_seconds", type=float, default=0.1)
    p.add_argument("--fake-step-seconds", dest="fake_step_seconds", type=float, default=0.0)
    p.add_argument("--fake-distributed", dest="fake_distributed", action="store_true",
                   help="let the fake backend join torch.distributed like the pipeline (needs torch)")
    return p.parse_args(argv)


def main(argv: list | None = None) -> int:
    options = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    channel = Channel() if rank == 0 else None  # keep the real stdout before redirecting it
    if rank == 0:
        Channel.reserve_stdin()
    _redirect_stdout_to_stderr()
    if options.backend == "fake":
        backend: Any = FakeBackend(options)
        if not options.fake_distributed:
            world_size = 1  # the fake joins no process group unless asked to
    else:
        backend = LiveAvatarBackend(options)
    worker = Worker(backend, channel, rank, world_size)
    log(f"starting ({backend.name} backend, rank {rank} of {world_size})")
    if not worker.load():
        return 1
    worker.serve()
    if world_size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
