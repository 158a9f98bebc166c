"""`SimulatedLiveAvatar`: an engine that takes as long as Live Avatar did on an H200, time-scaled.

It implements the Engine protocol (`inference.engine`) for the duty-cycle benchmark. A job
sleeps `time_scale ×` the seconds the measured H200 runs say it takes (`Calibration`, read from
`benchmarks/gpu/results/*/results.jsonl`), records when its gang was busy, and counts model
loads: a per-job engine (`warm=False`, one process per video) loads for every job, a warm one
(`warm=True`, one long-lived worker) on its first job only. The video itself comes from a
delegate engine (`inference.instant.InstantEngine`: a real, verified file, made in well under
the modelled time), so the pipeline around it checks, scores and transcodes a real video.

What is measured and what is not:
- measured (H200, bf16, random weights, compile off): the load (per job: process start → first
  denoising step; warm: the worker's `load_seconds`), the warm worker's job start → first step,
  the denoising time and the tail (deferred decode and mux) at two clip counts per preset, fitted
  as `fixed + per_clip × clips` (a preview's ≈ 47 s fixed denoising cost is its online decode
  moving the DiT to the CPU and back after the first clip);
- not measured: compile (it fails on that toolchain, so no compile figure exists), the `long`
  preset (modelled as `standard`: same size; its online decode at 688*368 never ran), bad-input
  failures (modelled as failing once the model is loaded), and any 5-GPU figure: a 5-GPU gang
  uses Live Avatar's *published* 20 FPS on 5×H800, with the one-GPU loads (an assumption).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from avatarflow.storage import atomic_path
from inference.engine import (
    Engine,
    Failure,
    GenerationMetrics,
    GenerationRequest,
    GenerationResult,
    GpuGang,
    Progress,
    ProgressCallback,
)
from inference.liveavatar_facts import FRAMES_PER_CLIP, PUBLISHED_PIPELINE_FPS
from inference.output_rules import planned_clips
from inference.presets import get_preset

RESULTS = Path(__file__).resolve().parent / "gpu" / "results"
RESULT_FILES = (RESULTS / "h200-2026-12-01" / "results.jsonl", RESULTS / "h200-2026-12-01-b" / "results.jsonl")
PACKED_RESULTS = RESULTS / "h200-2026-12-01-c" / "results.jsonl"  # two warm workers on one H200
COMPILE_NOTE = ("compile off: ENABLE_COMPILE fails on the H200 toolchain (Python 3.12, torch 2.11: inductor "
                "GuardOnDataDependentSymNode), so no compile figure exists")
# Published, not measured (Live Avatar README / arXiv:2512.04677): 5-GPU pipeline speeds.
PUBLISHED_5GPU = ("published, not measured: 20 FPS end-to-end on 5×H800, bf16, 4 steps "
                  "(45 FPS with fp8 + compile in a later version of the paper)")


@dataclass(frozen=True)
class Linear:
    """seconds = fixed + per_clip × clips, never below zero."""

    fixed_s: float
    per_clip_s: float

    def at(self, clips: int) -> float:
        return max(0.0, self.fixed_s + self.per_clip_s * clips)


@dataclass(frozen=True)
class PresetTiming:
    """How long one job of a preset keeps a gang busy, in real (unscaled) seconds."""

    preset: str
    load_s: float  # per-job engine: process start → first denoising step (model load included)
    warm_load_s: float  # warm worker: the model load, once per worker
    warm_first_step_s: float  # warm worker: job start → first denoising step (inputs, prefill)
    denoise: Linear  # first denoising step → last clip denoised
    tail: Linear  # last clip denoised → verified file (deferred VAE decode, mux)
    note: str = ""

    def job_s(self, clips: int) -> float:
        """A job on a loaded model (warm): set-up, denoising and tail."""
        return self.warm_first_step_s + self.denoise.at(clips) + self.tail.at(clips)

    def per_job_s(self, clips: int) -> float:
        """A job in a fresh process: load, denoising and tail."""
        return self.load_s + self.denoise.at(clips) + self.tail.at(clips)


@dataclass(frozen=True)
class Calibration:
    timings: dict[str, PresetTiming]
    source: str  # the result files and records the figures come from
    compile: str = COMPILE_NOTE
    published_5gpu: str = PUBLISHED_5GPU

    def timing(self, preset: str, gang: GpuGang) -> PresetTiming:
        """The preset's figures; a 5-GPU gang denoises at the published pipeline speed."""
        base = self.timings[preset]
        if len(gang.devices) != 5:
            return base
        per_clip = FRAMES_PER_CLIP / PUBLISHED_PIPELINE_FPS  # 20 FPS end-to-end: decode included
        return PresetTiming(base.preset, base.load_s, base.warm_load_s, base.warm_first_step_s,
                            Linear(0.0, per_clip), Linear(0.0, 0.0),
                            note=f"{PUBLISHED_5GPU}; loads assumed as on one GPU")


def _fit(points: Sequence[tuple[int, float]]) -> Linear:
    """Least-squares fixed + per-clip line; a plain ratio when only one clip count was measured."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return Linear(0.0, mean(y / x for x, y in points))
    mx, my = mean(xs), mean(y for _, y in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return Linear(my - slope * mx, slope)


def _records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """bf16, compile-off Live Avatar records: the configuration the simulation stands for."""
    found = []
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            job = record.get("job", {})
            if record.get("engine") in ("liveavatar", "liveavatar-warm") and not job.get("fp8") \
                    and not job.get("compile"):
                found.append(record)
    return found


def _preset_timing(preset: str, records: list[dict[str, Any]],
                   all_warm_loads: list[float]) -> PresetTiming:
    mine = [r for r in records if r["job"]["preset"] == preset]
    done = [r for r in mine if r.get("ok")]
    per_job = [r["metrics"]["first_step_seconds"] for r in done if r["engine"] == "liveavatar"]
    warm_steps = [r["metrics"]["first_step_seconds"] for r in done if r["engine"] == "liveavatar-warm"]
    # A worker's load is a load even when its job later died (the kill came after the first clip).
    warm_loads = [r["metrics"]["load_seconds"] for r in mine
                  if r["engine"] == "liveavatar-warm" and r["metrics"].get("load_seconds")]
    if not per_job or not warm_steps:
        raise ValueError(f"the results hold no complete per-job and warm {preset} run")
    denoise, tail = [], []
    for r in done:
        m = r["metrics"]
        clips = int(m["clips_planned"])
        denoise.append((clips, m["total_seconds"] - m["first_step_seconds"] - m["tail_seconds"]))
        tail.append((clips, m["tail_seconds"]))
    return PresetTiming(preset, mean(per_job), mean(warm_loads or all_warm_loads), mean(warm_steps),
                        _fit(denoise), _fit(tail), note=f"{len(done)} runs")


def load_calibration(paths: Sequence[Path] = RESULT_FILES) -> Calibration:
    """Per-preset timings from the H200 result files; `long` is `standard` on long speech."""
    records = _records(paths)
    warm_loads = [r["metrics"]["load_seconds"] for r in records if r["metrics"].get("load_seconds")]
    timings = {p: _preset_timing(p, records, warm_loads) for p in ("preview", "standard")}
    standard = timings["standard"]
    timings["long"] = PresetTiming("long", standard.load_s, standard.warm_load_s, standard.warm_first_step_s,
                                   standard.denoise, standard.tail,
                                   note="standard's runs (6 s and 25 s speech); online decode at 688*368 not measured")
    repo = RESULTS.parents[2]
    names = ", ".join(str(p.relative_to(repo)) if p.is_relative_to(repo) else str(p) for p in paths)
    runs = ", ".join(f"{r['run']} ({r['job']['preset']}, {r['speech_seconds']} s)" for r in records if r.get("ok"))
    return Calibration(timings, source=f"{names}: bf16, compile off, {len(records)} records; complete runs: {runs}")


@dataclass(frozen=True)
class Busy:
    """One job on one gang, in wall-clock seconds (time.time(), comparable with database times)."""

    gang: str
    asset_key: str
    prompt: str
    preset: str
    clips: int
    start: float
    end: float
    loaded: bool  # this job paid a model load
    ok: bool
    modelled_s: float  # the unscaled seconds the job stands for
    overrun_s: float  # wall seconds the delegate took beyond the scaled time (a slow replay)


@dataclass
class Timeline:
    """What the engines of one system did: busy intervals and loads per gang (thread-safe)."""

    jobs: list[Busy] = field(default_factory=list)
    loads: dict[str, int] = field(default_factory=dict)
    spoiled: set[str] = field(default_factory=set)  # asset keys already given a bad first video
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, job: Busy) -> None:
        with self._lock:
            self.jobs.append(job)
            if job.loaded:
                self.loads[job.gang] = self.loads.get(job.gang, 0) + 1

    def spoil_first(self, asset_key: str) -> bool:
        """True only the first time it is asked for `asset_key`."""
        with self._lock:
            if asset_key in self.spoiled:
                return False
            self.spoiled.add(asset_key)
            return True


@dataclass
class GpuSharing:
    """Jobs of several workers on one GPU slow each other down, as measured on the H200.

    A job progresses at `pair_rate` modelled seconds per second while another job runs on its GPU
    (1 alone). Measured for two at once only; three at once are not modelled."""

    pair_rate: float
    source: str
    _active: dict[tuple[int, ...], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextmanager
    def running(self, devices: tuple[int, ...]) -> Iterator[None]:
        with self._lock:
            self._active[devices] = self._active.get(devices, 0) + 1
            if self._active[devices] > 2:
                raise RuntimeError(f"{self._active[devices]} jobs at once on GPU {devices}: only 2 were measured")
        try:
            yield
        finally:
            with self._lock:
                self._active[devices] -= 1

    def rate(self, devices: tuple[int, ...]) -> float:
        with self._lock:
            return self.pair_rate if self._active.get(devices, 0) > 1 else 1.0


def load_sharing(path: Path = PACKED_RESULTS) -> GpuSharing:
    """From the packed run: one warm preview alone against two at once on the same GPU."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    alone = next(r["wall_s"] for r in records if r.get("phase") == "one-alone-warm" and "jobs" in r)
    pair = [r["wall_s"] for r in records if r.get("phase") == "pair-warm" and "jobs" not in r]
    rate = alone / mean(pair)
    repo = RESULTS.parents[2]
    name = path.relative_to(repo) if path.is_relative_to(repo) else path
    return GpuSharing(rate, f"{name}: a warm preview alone {alone:.1f} s, two at once {mean(pair):.1f} s each "
                            f"→ {rate:.3f} modelled s per s while sharing")


Breaks = Callable[[GenerationRequest], Failure | None]


class SimulatedLiveAvatar:
    """Engine protocol; sleeps the calibrated, time-scaled job time; the file comes from `delegate`.

    `breaks(request)`: the failure the real engine would hit on this input (a corrupt image), or
    None. `spoils(request)`: True for assets whose first video must fail QC (it is blacked out).
    Without a delegate no file is written (the script-loop systems have no pipeline to check one).
    """

    def __init__(self, calibration: Calibration, *, time_scale: float, warm: bool, timeline: Timeline,
                 delegate: Engine | None = None, breaks: Breaks | None = None,
                 spoils: Callable[[GenerationRequest], bool] | None = None,
                 sharing: GpuSharing | None = None) -> None:
        self.name = "liveavatar-warm-sim" if warm else "liveavatar-sim"
        self.calibration = calibration
        self.time_scale = time_scale
        self.warm = warm
        self.timeline = timeline
        self.delegate = delegate
        self.breaks = breaks
        self.spoils = spoils
        self.sharing = sharing  # the GPU is shared with other workers' engines (packing)
        self._loaded = False
        self._lock = threading.Lock()  # one job at a time, as on a real gang

    def close(self) -> None:
        if self.delegate is not None:
            self.delegate.close()

    def generate(self, request: GenerationRequest, gang: GpuGang,
                 progress: ProgressCallback | None = None) -> GenerationResult:
        with self._lock, (self.sharing.running(gang.devices) if self.sharing else nullcontext()):
            return self._generate(request, gang, progress)

    def _generate(self, request: GenerationRequest, gang: GpuGang,
                  progress: ProgressCallback | None) -> GenerationResult:
        start = time.time()
        timing = self.calibration.timing(request.preset, gang)
        clips = planned_clips(request.samples, get_preset(request.preset).num_clip)
        loads = not (self.warm and self._loaded)
        self._loaded = True
        load_s = (timing.warm_load_s if self.warm else timing.load_s) if loads else 0.0
        failure = self.breaks(request) if self.breaks else None
        if failure is not None:
            # The script reads its inputs once the model is loaded: a bad input costs the load.
            modelled = load_s if not self.warm else load_s + timing.warm_first_step_s
            return self._finish(request, gang, clips, start, loads, modelled, failure=failure)
        # A per-job engine's load is inside per_job_s (process start → first step); warm adds it once.
        modelled = (load_s + timing.job_s(clips)) if self.warm else timing.per_job_s(clips)
        result = self.delegate.generate(request, gang) if self.delegate else None
        if result is not None and result.ok and self.spoils and self.spoils(request) \
                and self.timeline.spoil_first(request.asset_key):
            _black_out(request.output)
        metrics = GenerationMetrics(
            load_seconds=load_s or None, first_step_seconds=(load_s if not self.warm else timing.warm_first_step_s),
            seconds_per_clip=timing.denoise.at(clips) / clips, tail_seconds=timing.tail.at(clips),
            total_seconds=modelled, exit_status=0, clips_done=clips, clips_planned=clips)
        if progress:
            progress(Progress(clips, clips, "simulated"))
        return self._finish(request, gang, clips, start, loads, modelled, result=result, metrics=metrics)

    def _finish(self, request: GenerationRequest, gang: GpuGang, clips: int, start: float, loads: bool,
                modelled: float, *, failure: Failure | None = None, result: GenerationResult | None = None,
                metrics: GenerationMetrics | None = None) -> GenerationResult:
        """Sleep out the scaled job time, record the interval, return the result with our metrics."""
        spent = time.time() - start
        self._sleep_out(modelled * self.time_scale - spent, gang)
        end = time.time()
        if result is not None and not result.ok:
            failure = result.failure
        ok = failure is None
        self.timeline.add(Busy(gang.name, request.asset_key, request.prompt, request.preset, clips, start, end,
                               loads, ok, modelled, max(0.0, spent - modelled * self.time_scale)))
        config: dict[str, Any] = {"simulated": True, "time_scale": self.time_scale, "warm": self.warm,
                                  "modelled_seconds": round(modelled, 3), "calibration": self.calibration.source,
                                  **(result.config if result else {})}
        output = (result.output if result else request.output) if ok else None
        return GenerationResult(engine=self.name, config=config, output=output, failure=failure,
                                metrics=metrics or GenerationMetrics(total_seconds=modelled, exit_status=1))


    def _sleep_out(self, seconds: float, gang: GpuGang) -> None:
        """Sleep `seconds` of the job's own progress; slower while another job shares the GPU."""
        if self.sharing is None:
            time.sleep(max(0.0, seconds))
            return
        while seconds > 0:
            rate = self.sharing.rate(gang.devices)
            step = min(0.02, seconds / rate)
            time.sleep(step)
            seconds -= step * rate


def _black_out(video: Path) -> None:
    """Replace the picture with black (same length, same sound), so QC's black-frame check fails."""
    with atomic_path(video) as tmp:
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-vf", "drawbox=c=black:t=fill",
                        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy", "-f", "mp4", str(tmp)],
                       check=True, timeout=120)
