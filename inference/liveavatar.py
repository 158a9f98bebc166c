"""The Live Avatar engine, per-job mode: one `torchrun` launch per video.

Live Avatar runs from its own checkout and environment (Python 3.10, pinned packages), so it is
driven across a process boundary and never imported here. A job goes: refused or not before a GPU
is touched (`inference.liveavatar_checks`), planned (`inference.liveavatar_job`), launched with an
explicit command line (`inference.liveavatar_command`) on a master port of its own
(`inference.ports`), watched — output to the log, tqdm bars to clips done
(`inference.progress`), the process tree killed on timeout (`inference.processes`) — then
classified (`inference.failures`) and its file verified and moved into place. The warm mode
(`inference.warm_client`) shares every one of those steps but the launch.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from inference.engine import (
    GenerationMetrics,
    GenerationRequest,
    GenerationResult,
    GpuGang,
    ProgressCallback,
)
from inference.failures import classify_exit
from inference.liveavatar_checks import preflight
from inference.liveavatar_command import build_command, progress_rank
from inference.liveavatar_config import LiveAvatarConfig
from inference.liveavatar_job import plan_job, plan_record, prepare_output, settle_output
from inference.ports import PortAllocator
from inference.processes import (
    LogSink,
    ProcessTree,
    group_members,
    kill_process_group,
    kill_survivors,
    pump,
)
from inference.progress import TqdmProgress
from inference.sampling import SamplerFactory, nvml_sampler_factory

# config_from_settings is re-exported for inference/factory.py, which imports it from here.
__all__ = ["ENGINE_NAME", "LiveAvatarEngine", "RunOutcome", "run_job_process"]

ENGINE_NAME = "liveavatar"


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

    sink.write_command(argv, cwd)
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
        if group_members(proc.pid):
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
    loads_per_job = True  # a new process, and a model load, for every video

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
        partial = prepare_output(request)
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
        failure = settle_output(partial, request, plan, failure, config_record)
        if tracker.last_bar_at is not None:
            metrics.tail_seconds = tracker.started + outcome.seconds - tracker.last_bar_at
        if failure is not None:
            return GenerationResult(self.name, config_record, failure=failure, metrics=metrics)
        return GenerationResult(self.name, config_record, output=request.output, metrics=metrics)

    def close(self) -> None:
        """Nothing is held between jobs."""
