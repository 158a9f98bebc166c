"""GPU acceptance run: avatarflow's own Live Avatar engines against the real Live Avatar program.

Runs on a host with one >= 80 GB GPU, a Live Avatar checkout and a checkpoint in the real layout
(`benchmarks/gpu/build_checkpoint.py` builds one with RANDOM weights: the picture is noise and
quality is not measured; streams, size, fps, duration, memory and timings are). Every job goes
through the engines production uses — `inference.liveavatar.LiveAvatarEngine` (a `torchrun` of
`minimal_inference/s2v_streaming_interact.py` per video) and `inference.warm_client.WarmWorkerEngine`
(one `inference/warm_worker.py` worker holding the real `WanS2V` pipeline) — and through their
verification. Results go to <work>/results.jsonl, one JSON object per run, appended as each run
ends, so a run killed half-way keeps what it measured and a second invocation resumes.

    python3 benchmarks/gpu/acceptance.py --liveavatar CHECKOUT --weights DIR --inputs DIR \\
        --work /tmp/acceptance --runs all --deadline-s 540

`--runs` takes names from RUNS (comma-separated) or "all"; a run already in results.jsonl is
skipped, and a run is not started when its estimate does not fit before the deadline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from avatarflow.media import wav_samples
from inference import liveavatar_checks, processes
from inference.engine import GenerationRequest, GenerationResult, GpuGang, Progress
from inference.gpus import NvmlSampler, parse_gangs
from inference.liveavatar import LiveAvatarEngine
from inference.liveavatar_config import LiveAvatarConfig
from inference.liveavatar_facts import VAE_CHECKPOINT
from inference.output_rules import image_size
from inference.planner import pipeline_rank_memory, single_gpu_memory
from inference.presets import get_preset
from inference.warm_client import WarmWorkerEngine

GANG = GpuGang("gang0", (0,))
PIPELINE = GpuGang("gang0-4", (0, 1, 2, 3, 4))  # 4 denoising ranks + 1 decoding rank
PROMPT = ("A person speaks to the camera in a bright studio, natural head motion, "
          "soft light, sharp focus.")


@dataclass(frozen=True)
class Job:
    preset: str
    speech: str  # file name in --inputs
    fp8: bool = False
    compile: bool = False
    size: str | None = None  # override of the preset's size


@dataclass(frozen=True)
class Run:
    """One named item of the acceptance run."""

    mode: str  # per_job, warm, warm_kill, rank_kill, mixed, packed, missing_weights, probe
    jobs: tuple[Job, ...]
    estimate_s: float  # wall time to budget for it (load included)
    note: str = ""
    gang: GpuGang = GANG


RUNS: dict[str, Run] = {
    "perjob-standard-6s-bf16": Run("per_job", (Job("standard", "speech_6s.wav"),), 170),
    "perjob-preview-25s-bf16": Run("per_job", (Job("preview", "speech_25s.wav"),), 150,
                                   "num_clip caps a 25 s speech at 10 clips: the preview rule end to end"),
    "perjob-preview-6s-fp8": Run("per_job", (Job("preview", "speech_6s.wav", fp8=True),), 200),
    "perjob-standard-25s-bf16": Run("per_job", (Job("standard", "speech_25s.wav"),), 330),
    "perjob-preview-6s-compile": Run("per_job", (Job("preview", "speech_6s.wav", compile=True),), 300,
                                     "ENABLE_COMPILE=true, with avatarflow's Python >= 3.12 refusal "
                                     "turned off to see what the real program does"),
    "perjob-preview-6s-fp8-compile": Run("per_job", (Job("preview", "speech_6s.wav", fp8=True,
                                                         compile=True),), 320),
    "warm-three-jobs": Run("warm", (Job("preview", "speech_6s.wav"), Job("standard", "speech_6s.wav"),
                                    Job("preview", "speech_25s.wav")), 280,
                           "one worker, three jobs of different presets and lengths, loaded once"),
    "warm-kill-then-fresh": Run("warm_kill", (Job("standard", "speech_25s.wav"),
                                              Job("preview", "speech_6s.wav")), 270,
                                "the worker is SIGKILLed after its first clip; the next job starts "
                                "a fresh worker"),
    # --- the 5-GPU pipeline (needs 5 GPUs; 8 for the mixed run) ---
    "pipeline-720x400-bf16": Run("per_job", (Job("standard", "speech_25s.wav", size="720*400"),), 300,
                                 gang=PIPELINE),
    "pipeline-720x400-fp8": Run("per_job", (Job("standard", "speech_25s.wav", fp8=True, size="720*400"),),
                                330, gang=PIPELINE),
    "pipeline-384x256-bf16": Run("per_job", (Job("preview", "speech_25s.wav"),), 280, gang=PIPELINE),
    "pipeline-384x256-fp8": Run("per_job", (Job("preview", "speech_25s.wav", fp8=True),), 300, gang=PIPELINE),
    "pipeline-720x400-fp8-compile": Run("per_job", (Job("standard", "speech_25s.wav", fp8=True, compile=True,
                                                        size="720*400"),), 480, gang=PIPELINE),
    "pipeline-warm-three-jobs": Run("warm", (Job("preview", "speech_6s.wav"), Job("standard", "speech_6s.wav"),
                                             Job("preview", "speech_25s.wav")), 420, gang=PIPELINE,
                                    note="one 5-rank worker, three jobs; every rank enters each job"),
    "pipeline-kill-a-denoising-rank": Run("rank_kill", (Job("standard", "speech_25s.wav"),), 300, gang=PIPELINE,
                                          note="rank 1 is SIGKILLed after the first clip"),
    "mixed-gangs-8-gpus": Run("mixed", (Job("standard", "speech_25s.wav"), Job("preview", "speech_6s.wav"),
                                        Job("preview", "speech_6s.wav"), Job("preview", "speech_6s.wav")), 420,
                              note="a 5-GPU gang (GPUs 0-4) and three 1-GPU gangs (5, 6, 7) at the same time"),
    "packed-two-previews": Run("packed", (Job("preview", "speech_6s.wav"),), 380,
                               "two warm workers on GPU 0 (AVATARFLOW_GANGS=\"0x2\"): both load and make a "
                               "preview at once, then one alone, then both at once again"),
    "missing-weights": Run("missing_weights", (Job("preview", "speech_6s.wav"),), 90,
                           "Wan2.1_VAE.pth renamed away: avatarflow refuses before launching; then "
                           "the real loader's own error, with avatarflow's weight check bypassed"),
    "probe-no-flash-attn": Run("probe", (Job("preview", "speech_6s.wav"),), 20,
                               "Live Avatar's environment without the flash-attn stand-in"),
}


# ------------------------------------------------------------------------------------------
# Environment


def versions() -> dict[str, Any]:
    """GPU, driver, torch and library versions of this host."""
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                            "python": sys.version.split()[0], "host": os.uname().nodename}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["gpu"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["gpu"] = f"nvidia-smi failed: {exc}"
    for module in ("torch", "transformers", "diffusers", "peft", "accelerate", "numpy", "safetensors"):
        try:
            info[module] = __import__(module).__version__
        except Exception as exc:  # noqa: BLE001 - a missing library is itself a finding
            info[module] = f"missing ({exc})"
    try:
        import torch

        info["cuda"] = torch.version.cuda
        info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    except Exception:  # noqa: BLE001
        pass
    return info


def make_config(args: argparse.Namespace, *, fp8: bool = False, compile: bool = False,
                with_flash: bool = True) -> LiveAvatarConfig:
    """The engine configuration, with the acceptance run's stand-ins on Live Avatar's path."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if not with_flash:
        paths = [p for p in paths if not (Path(p) / "flash_attn").exists()]
    torchrun = (args.torchrun.absolute() if args.torchrun else
                shutil.which("torchrun") or Path(sys.executable).with_name("torchrun"))
    return LiveAvatarConfig(
        checkout=args.liveavatar, ckpt_dir=args.weights / "Wan2.2-S2V-14B",
        lora_path=(args.weights / "liveavatar.safetensors").resolve(),
        torchrun=Path(torchrun) if torchrun else None, python=Path(sys.executable),
        fp8=fp8, enable_compile=compile, refuse_broken_compile=False,
        # Compiling through Live Avatar's flash_attention breaks the graph on Python >= 3.12 and
        # the resume function fails (benchmarks/gpu/compile_probe.py); capturing scalar outputs
        # avoids the break. Recorded with every run.
        extra_env={"PYTHONPATH": os.pathsep.join(paths),
                   **({"TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS": "1"} if compile else {})},
        timeout_floor_s=args.job_timeout_s,
    )


def make_request(args: argparse.Namespace, job: Job, name: str) -> GenerationRequest:
    speech = args.inputs / job.speech
    samples = wav_samples(speech)
    assert samples, f"{speech} must be a 16 kHz PCM WAV"
    folder = args.work / "jobs" / name
    folder.mkdir(parents=True, exist_ok=True)
    return GenerationRequest(
        asset_key=name, image=args.inputs / "portrait_512.png", audio=speech, prompt=PROMPT,
        preset=job.preset, seed=1234, output=folder / "generated.mp4", log_path=folder / "engine.log",
        audio_seconds=samples / 16000, audio_samples=samples,
        overrides={"size": job.size} if job.size else {},
    )


# ------------------------------------------------------------------------------------------
# Recording


def predicted_gb(job: Job, image: tuple[int, int] | None, gang: GpuGang = GANG) -> float:
    size = job.size or get_preset(job.preset).size
    precision = "fp8" if job.fp8 else "bf16"
    if len(gang.devices) == len(PIPELINE.devices):
        return pipeline_rank_memory(size, precision, image).total_gb
    return single_gpu_memory(size, precision, image).total_gb


def job_record(name: str, job: Job, request: GenerationRequest, result: GenerationResult,
               started: float, gang: GpuGang = GANG, **extra: Any) -> dict[str, Any]:
    metrics = dataclasses.asdict(result.metrics)
    peak_mib = max(result.metrics.peak_memory_mb.values(), default=None)
    peak_gb = peak_mib * 2**20 / 1e9 if peak_mib else None
    image = image_size(request.image)
    predicted = predicted_gb(job, image, gang)
    video_s = result.config.get("video_seconds")
    if result.ok and video_s and result.metrics.total_seconds:
        # Frames per second of generated video over the whole job (load included), and without
        # the time to the first denoising step (load, prefill, compile): the published figures'
        # sense (20 FPS bf16 / 45 FPS fp8 + compile on 5×H800) is closer to the second.
        frames = video_s * 25
        extra.setdefault("fps_total", round(frames / result.metrics.total_seconds, 2))
        if result.metrics.first_step_seconds:
            extra.setdefault("fps_after_load", round(
                frames / (result.metrics.total_seconds - result.metrics.first_step_seconds), 2))
    record = {
        "run": name, "job": dataclasses.asdict(job), "engine": result.engine, "gang": gang.name,
        "speech_seconds": round(request.audio_seconds, 3), "speech_samples": request.audio_samples,
        "ok": result.ok, "failure": ({"kind": result.failure.kind.value, "message": result.failure.message,
                                      "retryable": result.failure.retryable} if result.failure else None),
        "metrics": metrics, "peak_gb": round(peak_gb, 2) if peak_gb else None,
        "planner_gb": round(predicted, 2),
        "planner_error": round((predicted - peak_gb) / peak_gb, 4) if peak_gb else None,
        "config": {k: v for k, v in result.config.items() if k not in ("argv", "worker_argv")},
        "argv": result.config.get("argv") or result.config.get("worker_argv"),
        "log": str(request.log_path), "output": str(result.output) if result.output else None,
        "wall_s": round(time.monotonic() - started, 2),
    }
    record.update(extra)
    return record


def log_excerpt(path: Path, needles: tuple[str, ...], limit: int = 12) -> list[str]:
    """Lines of an engine log that show which program ran (the real script's and pipeline's own lines)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line[:300] for line in lines if any(n in line for n in needles)][:limit]


REAL_PROGRAM_LINES = ("Using single GPU inference", "Creating WanS2V pipeline", "complete prepare",
                      "Merging LoRA", "LoRA merged", "parameters are loaded from", "denoising video done",
                      "complete full-sequence generation", "Saving generated video", "Finished.",
                      "COMPILE:", "world_size:", "warm-worker", "Error", "error")


# ------------------------------------------------------------------------------------------
# The runs


Emit = Callable[[dict[str, Any]], None]


def run_per_job(args: argparse.Namespace, name: str, run: Run, emit: Emit) -> None:
    job = run.jobs[0]
    engine = LiveAvatarEngine(make_config(args, fp8=job.fp8, compile=job.compile))
    request = make_request(args, job, name)
    started = time.monotonic()
    result = engine.generate(request, run.gang)
    emit(job_record(name, job, request, result, started, run.gang,
                    program_lines=log_excerpt(request.log_path, REAL_PROGRAM_LINES)))


def run_warm(args: argparse.Namespace, name: str, run: Run, emit: Emit) -> None:
    config = make_config(args)
    engine = WarmWorkerEngine(config, run.gang, worker_log=args.work / "jobs" / f"{name}-worker.log",
                              load_timeout_s=args.job_timeout_s, backend=args.warm_backend)
    try:
        for i, job in enumerate(run.jobs):
            request = make_request(args, job, f"{name}-{i + 1}-{job.preset}-{Path(job.speech).stem}")
            started = time.monotonic()
            result = engine.generate(request, run.gang)
            health = engine.health()
            emit(job_record(name, job, request, result, started, run.gang, job_index=i + 1,
                            worker_pid=result.config.get("worker_pid"),
                            worker_starts=engine._starts, health=health))
    finally:
        engine.close()


def _kill_worker_after_first_clip(engine: WarmWorkerEngine, killed: dict[str, Any]) -> Callable[[Progress], None]:
    def on_progress(update: Progress) -> None:
        if update.clips_done >= 1 and not killed:
            worker = engine._worker
            if worker is None:
                return
            # The warm_worker.py process under torchrun, as an OOM killer or a crash would take it.
            # torchrun starts its ranks in sessions of their own: look by parent, not by group.
            child = next((pid for pid in processes.descendants(worker.pid)
                          if "warm_worker.py" in _cmdline(pid) and "torchrun" not in _cmdline(pid)), None)
            killed.update(pid=child, torchrun=worker.pid, at=time.monotonic())
            if child:
                os.kill(child, signal.SIGKILL)
    return on_progress


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run_warm_kill(args: argparse.Namespace, name: str, run: Run, emit: Emit) -> None:
    config = make_config(args)
    engine = WarmWorkerEngine(config, GANG, worker_log=args.work / "jobs" / f"{name}-worker.log",
                              load_timeout_s=args.job_timeout_s)
    try:
        killed: dict[str, Any] = {}
        job = run.jobs[0]
        request = make_request(args, job, f"{name}-1-killed")
        started = time.monotonic()
        result = engine.generate(request, GANG, _kill_worker_after_first_clip(engine, killed))
        gone = [pid for pid in (killed.get("pid"), killed.get("torchrun")) if pid and processes.pid_alive(pid)]
        emit(job_record(name, job, request, result, started, job_index=1, killed=killed,
                        processes_left=gone,
                        failed_within_s=round(time.monotonic() - killed["at"], 2) if killed else None))
        job = run.jobs[1]
        request = make_request(args, job, f"{name}-2-fresh")
        started = time.monotonic()
        result = engine.generate(request, GANG)
        emit(job_record(name, job, request, result, started, job_index=2,
                        worker_pid=result.config.get("worker_pid"), worker_starts=engine._starts))
    finally:
        engine.close()


def _rank_pid(launcher: int, local_rank: int) -> int | None:
    """The pid of a torchrun child with LOCAL_RANK=local_rank (from /proc/<pid>/environ)."""
    for pid in processes.descendants(launcher):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LOCAL_RANK={local_rank}".encode() in environ and "python" in _cmdline(pid):
            return pid
    return None


def run_rank_kill(args: argparse.Namespace, name: str, run: Run, emit: Emit) -> None:
    """Kill one denoising rank of a per-job pipeline run after its first clip; how does it end?"""
    job = run.jobs[0]
    engine = LiveAvatarEngine(make_config(args))
    request = make_request(args, job, name)
    killed: dict[str, Any] = {}

    def on_progress(update: Progress) -> None:
        if update.clips_done >= 1 and not killed:
            # The engine's torchrun is a descendant of this process; its rank 1 is a DiT rank.
            for pid in processes.descendants(os.getpid()):
                if "torchrun" in _cmdline(pid) and (rank := _rank_pid(pid, 1)):
                    killed.update(pid=rank, torchrun=pid, at=time.monotonic())
                    os.kill(rank, signal.SIGKILL)
                    return

    started = time.monotonic()
    result = engine.generate(request, run.gang, on_progress)
    left = [pid for pid in processes.descendants(os.getpid()) if "s2v_streaming_interact" in _cmdline(pid)]
    emit(job_record(name, job, request, result, started, run.gang, killed=killed, processes_left=left,
                    failed_within_s=round(time.monotonic() - killed["at"], 2) if killed else None))


def run_mixed(args: argparse.Namespace, name: str, run: Run, emit: Emit) -> None:
    """A 5-GPU gang and three 1-GPU gangs of one 8-GPU host generating at the same time."""
    gangs = [PIPELINE, GpuGang("gang5", (5,)), GpuGang("gang6", (6,)), GpuGang("gang7", (7,))]
    engine = LiveAvatarEngine(make_config(args))
    lock = threading.Lock()

    def one(i: int, job: Job, gang: GpuGang) -> None:
        request = make_request(args, job, f"{name}-{gang.name}")
        started = time.monotonic()
        result = engine.generate(request, gang)
        with lock:
            emit(job_record(name, job, request, result, started, gang, began_at=round(started - begun, 2)))

    begun = time.monotonic()
    threads = [threading.Thread(target=one, args=(i, job, gang)) for i, (job, gang) in enumerate(zip(run.jobs, gangs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _device_now(device: int) -> dict[str, Any]:
    """One NVML reading of `device`: memory used (MiB) and utilisation, for between phases."""
    sampler = NvmlSampler((device,)).start()
    summary = sampler.stop()
    return {"used_mb": summary.peak_memory_mb.get(str(device), summary.peak_memory_mb.get(device)),
            "unavailable": sampler.unavailable_reason or None}


def run_packed(args: argparse.Namespace, name: str, run: Run, emit: Emit) -> None:
    """Two warm workers packed on one GPU (gangs gang0.1 and gang0.2 of "0x2"): throughput of two
    preview jobs at once against one alone, the GPU's peak memory and utilisation in each phase."""
    job = run.jobs[0]
    gangs = parse_gangs("0x2")
    engines = [WarmWorkerEngine(make_config(args), gang, worker_log=args.work / "jobs" / f"{name}-{gang.name}.log",
                                load_timeout_s=args.job_timeout_s, backend=args.warm_backend) for gang in gangs]
    lock = threading.Lock()

    def phase(label: str, which: list[int]) -> None:
        sampler = NvmlSampler(gangs[0].devices, interval_s=0.25).start()
        begun = time.monotonic()
        walls: list[float] = []

        def one(i: int) -> None:
            request = make_request(args, job, f"{name}-{label}-{gangs[i].name}")
            started = time.monotonic()
            result = engines[i].generate(request, gangs[i])
            with lock:
                walls.append(time.monotonic() - started)
                emit(job_record(name, job, request, result, started, gangs[i], phase=label,
                                began_at=round(started - begun, 2), worker_starts=engines[i]._starts))

        threads = [threading.Thread(target=one, args=(i,)) for i in which]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        summary = sampler.stop()
        emit({"run": name, "phase": label, "ok": True, "jobs": len(which), "wall_s": round(time.monotonic() - begun, 2),
              "job_walls_s": [round(w, 2) for w in walls], "device_peak_mb": summary.peak_memory_mb,
              "mean_utilisation": summary.mean_utilisation, "samples": summary.samples,
              "after": _device_now(gangs[0].devices[0])})

    try:
        phase("pair-with-loads", [0, 1])
        phase("one-alone-warm", [0])
        phase("pair-warm", [0, 1])
    finally:
        for engine in engines:
            engine.close()


def run_missing_weights(args: argparse.Namespace, name: str, run: Run, emit: Emit) -> None:
    job = run.jobs[0]
    config = make_config(args)
    vae = config.ckpt_dir / VAE_CHECKPOINT
    hidden = vae.with_name(vae.name + ".hidden")
    vae.rename(hidden)
    try:
        request = make_request(args, job, f"{name}-preflight")
        started = time.monotonic()
        result = LiveAvatarEngine(config).generate(request, GANG)
        emit(job_record(name, job, request, result, started, stage="avatarflow preflight"))
        # The same job with avatarflow's weight check bypassed: what the real loader says, classified.
        original = liveavatar_checks.check_weights
        liveavatar_checks.check_weights = lambda _config: []
        try:
            request = make_request(args, job, f"{name}-real-loader")
            started = time.monotonic()
            result = LiveAvatarEngine(config).generate(request, GANG)
        finally:
            liveavatar_checks.check_weights = original
        emit(job_record(name, job, request, result, started, stage="real loader (preflight bypassed)",
                        program_lines=log_excerpt(request.log_path, ("Error", "error", "VAE"))))
    finally:
        hidden.rename(vae)


def run_probe(args: argparse.Namespace, name: str, run: Run, emit: Emit) -> None:
    job = run.jobs[0]
    request = make_request(args, job, name)
    started = time.monotonic()
    result = LiveAvatarEngine(make_config(args, with_flash=False)).generate(request, GANG)
    emit(job_record(name, job, request, result, started))


RUNNERS = {"per_job": run_per_job, "warm": run_warm, "warm_kill": run_warm_kill, "rank_kill": run_rank_kill,
           "mixed": run_mixed, "packed": run_packed, "missing_weights": run_missing_weights, "probe": run_probe}


# ------------------------------------------------------------------------------------------


def done_runs(results: Path) -> set[str]:
    if not results.exists():
        return set()
    return {json.loads(line)["run"] for line in results.read_text().splitlines() if line.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--liveavatar", type=Path, required=True, help="the Live Avatar checkout")
    parser.add_argument("--weights", type=Path, required=True,
                        help="folder with Wan2.2-S2V-14B/ and liveavatar.safetensors")
    parser.add_argument("--inputs", type=Path, required=True,
                        help="portrait_512.png, speech_6s.wav, speech_25s.wav (16 kHz mono WAV)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/acceptance"))
    parser.add_argument("--runs", default="all")
    parser.add_argument("--deadline-s", type=float, default=540.0,
                        help="start no run whose estimate ends after this many seconds")
    parser.add_argument("--job-timeout-s", type=float, default=900.0)
    parser.add_argument("--torchrun", type=Path, default=None, help="default: torchrun on PATH")
    parser.add_argument("--warm-backend", choices=("liveavatar", "fake"), default="liveavatar",
                        help="the warm worker's backend: the real pipeline, or the tests' named fake (no model)")
    args = parser.parse_args(argv)
    args.liveavatar, args.weights, args.inputs = (p.resolve() for p in (args.liveavatar, args.weights,
                                                                       args.inputs))
    args.work.mkdir(parents=True, exist_ok=True)
    begun = time.monotonic()
    names = list(RUNS) if args.runs == "all" else [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; known: {', '.join(RUNS)}")
    header = args.work / "versions.json"
    if not header.exists():
        header.write_text(json.dumps(versions(), indent=2))
    print(header.read_text(), flush=True)
    results = args.work / "results.jsonl"
    for name in names:
        if name in done_runs(results):
            print(f"== {name}: already done", flush=True)
            continue
        run = RUNS[name]
        left = args.deadline_s - (time.monotonic() - begun)
        if run.estimate_s > left:
            print(f"== {name}: not started ({run.estimate_s:.0f} s estimated, {left:.0f} s left)", flush=True)
            continue
        print(f"== {name}: {run.note or run.mode}", flush=True)

        def emit(record: dict[str, Any]) -> None:
            """Each job's record is written as it ends: a run stopped half-way keeps its jobs."""
            with open(results, "a") as handle:
                handle.write(json.dumps(record, default=str) + "\n")
            summary = {k: record.get(k) for k in ("ok", "failure", "peak_gb", "planner_gb", "wall_s")}
            summary["metrics"] = {k: v for k, v in (record.get("metrics") or {}).items()
                                  if k.endswith("seconds") or k.startswith("clips")}
            print(f"   {json.dumps(summary, default=str)}", flush=True)

        try:
            RUNNERS[run.mode](args, name, run, emit)
        except Exception as exc:  # noqa: BLE001 - one broken run must not lose the others
            import traceback

            emit({"run": name, "ok": False, "harness_error": traceback.format_exc()[-3000:]})
            print(f"   harness error: {exc}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
