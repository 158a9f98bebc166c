"""Duty cycle of GPU gangs: how busy four ways of running one mixed batch keep them, side by side.

    .venv/bin/python benchmarks/duty_cycle.py [--time-scale 0.01] [--pipeline-time-scale 0.08]
                                              [--assets 32] [--gangs "0;1"]

What is simulated: the GPU. `sim_engine.SimulatedLiveAvatar` sleeps time_scale × the seconds
the H200 runs measured (model load, denoising, deferred decode) and records each gang's busy
intervals and model loads. What is real: in systems 3 and 4 everything else — intake,
preprocessing (face crop, speech preparation), planning, Prefect (a local test server), the
database, QC (lip-sync and technical checks) and transcoding — runs at this machine's speed on
real media from ../shared/media, and the engine hands them a real, verified video
(instant-replay, its cache filled before the timed runs). Systems 1 and 2 have no pipeline: their
CPU work happens outside the GPU timeline and no QC ever sees their videos.

The systems, on one mixed batch (preview, standard and long speech; ~10 % bad inputs: a cat and
a truncated image; ~10 % whose first video comes out black and fails QC; one urgent asset,
priority 10, arriving 10 modelled minutes in), on the gangs of --gangs:
  1. the per-video script loop: a new process per video (a load every time), the batch split in
     halves, one half per gang, videos in sequence;
  2. Live Avatar's batch_eval.py: one process per half (one load), strictly in sequence, the
     process ends at its first error;
  3. avatarflow's batch flow as it is (generation in the flow, assets dealt round-robin to the
     gangs, engine warm per process), run in-process under `prefect_test_harness`;
  4. avatarflow with long-lived gang workers (`inference.gang_worker.GangWorker`, flow setting
     AVATARFLOW_GENERATION=workers), when that module exists;
  5. the same on the same GPUs with one of them packed (--packed-gangs, "0x2;1": two workers on
     GPU 0, each job admitted only when its planned peak fits beside the other's, inference.packing);
     two jobs at once on one GPU each progress at the rate measured on the H200
     (benchmarks/gpu/results/h200-2026-12-01-c: a warm preview alone 70.0 s, two at once 95.3 s).
In 1 and 2 the cat is animated like any portrait (Live Avatar checks no face), the truncated
image crashes the script once the model is loaded, clips come from the raw speech (the pipeline
trims silence first: a clip or two fewer on the longer speech), and the urgent asset waits for
the first half to end, then runs (for 2 in a new batch_eval process, so with a load of its own).
In 3 and 4 the urgent asset is a manifest of its own, run as a second flow run beside the first:
in 3 it then queues for its gang like any other generate task; in 4 the workers claim by priority.
Gangs are held by a lock of this process (Prefect's slot polls every 5 s, which does not scale),
and the workers' and the workers-mode flow's polls are time-scaled like the GPU.

Figures, in modelled (real-GPU) time: busy share per GPU = time any of its workers was busy / span, span = first job start
to last job end on any gang; videos per hour = usable videos / span; preview videos per hour =
Σ over workers of busy share × previews per busy hour (its preview jobs' wall times, so slower
where a GPU was shared); time to the first finished
video; the urgent asset's wait from arrival to its generation start; model loads per worker.
Scaling back: GPU time is divided by the time scale; the real CPU time (preprocessing before a
job, QC and transcoding after) is added as measured here, not scaled. Inside the span, though,
any gang idle time the CPU side causes is scaled back with the rest: at small time scales this
machine's 2 cores weigh 1/scale times more against the GPU than on a real GPU host, which is why
systems 3 and 4 run at the larger --pipeline-time-scale (1 and 2 have no real work: their figures
do not depend on the scale).
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe, load_average
from sim_engine import Calibration, SimulatedLiveAvatar, Timeline, load_calibration, load_sharing

from avatarflow.media import wav_samples
from inference.engine import Failure, FailureKind, GenerationRequest, GpuGang
from inference.gpus import parse_gangs

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
URGENT_AFTER_S = 600.0  # modelled seconds after the batch starts
GOAL_BUSY, GOAL_PREVIEW_X = 0.95, 3.0
CPU_STAGES = {"preprocess", "join", "qc", "transcode"}
FINISHED = {"approved", "review_pending", "delivered"}
# Each asset's (preset, speech), cycled: preview, standard and long speech mixed.
PATTERN = (("preview", "s6"), ("standard", "s11"), ("preview", "s11"), ("standard", "s6"), ("long", "s25"),
           ("preview", "s6"), ("standard", "s11"), ("standard", "s6"), ("preview", "s11"), ("standard", "s11"))
# Few (portrait, speech) pairs: instant-replay renders each pair once on the CPU before timing.
FACES = {"s6": ("skimage_astronaut.png", "liveavatar_boy.jpg"), "s11": ("facerec_obama.jpg",),
         "s25": ("liveavatar_man.png",)}
CRASH = Failure(FailureKind.CRASHED, "OSError: image file is truncated (reading the portrait, after the model load)")


@dataclass(frozen=True)
class Spec:
    """One asset of the batch, as a manifest row; `kind` says what it is for the benchmark."""

    name: str
    image: Path
    audio: Path
    preset: str
    kind: str = "good"  # good | urgent | no_face | corrupt | spoiled (first video fails QC)
    priority: int = 0

    @property
    def subject(self) -> str:
        return f"presenter {self.name}"  # the template capitalises it: match prompts on the name

    def in_prompt(self, prompt: str) -> bool:
        return self.name in prompt

    @property
    def usable(self) -> bool:
        """A video of it is worth delivering (a loop ships spoiled and cat videos unchecked)."""
        return self.kind in ("good", "urgent")

    def row(self) -> dict[str, Any]:
        return {"image": str(self.image), "audio": str(self.audio), "template": "default",
                "vars": {"subject": self.subject}, "preset": self.preset, "priority": self.priority,
                "external_id": self.name}


@dataclass(frozen=True)
class Inputs:
    speech: dict[str, Path]
    faces: dict[str, Path]
    cat: Path
    corrupt: Path


@dataclass
class Run:
    """One system's run: its engines' timeline and what the batch got out of it."""

    name: str
    timeline: Timeline
    gangs: list[str]
    scale: float
    finished: int = 0  # usable videos delivered
    first_finished_s: float | None = None  # modelled seconds from the batch start
    urgent_wait_s: float | None = None  # modelled seconds from arrival to generation start
    notes: list[str] = field(default_factory=list)
    available: bool = True
    gpus: dict[str, list[str]] = field(default_factory=dict)  # "GPU 0" → the gangs on it (several: packed)


def gpu_map(gangs: Sequence[GpuGang]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for gang in gangs:
        found.setdefault(f"GPU {gang.cuda_visible_devices}", []).append(gang.name)
    return found


# --------------------------------------------------------------------------- the batch


def _cut(source: Path, seconds: float | None, out: Path) -> Path:
    """16 kHz mono WAV of the first `seconds` of `source` (all of it when None)."""
    limit = ["-t", str(seconds)] if seconds else []
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), *limit, "-ar", "16000", "-ac", "1", str(out)],
                   check=True, timeout=60)
    return out


def make_inputs(folder: Path) -> Inputs:
    """Speech of 6, 11 and 25 s cut from real recordings; a truncated copy of a real portrait."""
    audio = MEDIA / "audio"
    speech = {"s6": _cut(audio / "latentsync_demo1_audio.wav", 6.0, folder / "s6.wav"),
              "s11": _cut(audio / "whisper_jfk.flac", None, folder / "s11.wav"),
              "s25": _cut(audio / "pyannote_sample.wav", 25.0, folder / "s25.wav")}
    corrupt = folder / "truncated_portrait.png"
    corrupt.write_bytes((MEDIA / "image/liveavatar_man.png").read_bytes()[:300_000])
    faces = {name: MEDIA / "image" / name for names in FACES.values() for name in names}
    return Inputs(speech, faces, MEDIA / "image/skimage_chelsea.png", corrupt)


def mixed_batch(n: int, inputs: Inputs, seed: int) -> list[Spec]:
    """n assets: presets cycled, then shuffled (a batch in no particular order, which also keeps
    the flow's round-robin deal from lining up with the cycle); every tenth from the 4th bad (a
    cat, then truncated images), every tenth from the 8th spoiled (its first video fails QC)."""
    kinds = [PATTERN[i % len(PATTERN)] for i in range(n)]
    random.Random(seed).shuffle(kinds)
    specs = []
    for i, (preset, speech) in enumerate(kinds):
        faces = FACES[speech]
        image, kind = inputs.faces[faces[i % len(faces)]], "good"
        if i % 10 == 3:
            image, kind = (inputs.cat, "no_face") if i < 10 else (inputs.corrupt, "corrupt")
        elif i % 10 == 7:
            kind = "spoiled"
        specs.append(Spec(f"p{i:03d}", image, inputs.speech[speech], preset, kind))
    return specs


def preview_batch(n: int, inputs: Inputs) -> list[Spec]:
    """n good previews of 6 and 11 s speech: what a preview farm (and the 3× goal) is about."""
    speech = ["s6", "s11"]
    return [Spec(f"v{i:03d}", inputs.faces[FACES[speech[i % 2]][i % len(FACES[speech[i % 2]])]],
                 inputs.speech[speech[i % 2]], "preview") for i in range(n)]


def urgent_spec(inputs: Inputs) -> Spec:
    return Spec("u001", inputs.faces["skimage_astronaut.png"], inputs.speech["s6"], "standard", "urgent", 10)


def write_manifest(path: Path, specs: Sequence[Spec]) -> Path:
    path.write_text("".join(json.dumps(s.row()) + "\n" for s in specs))
    return path


def spec_of(specs: Sequence[Spec], prompt: str) -> Spec | None:
    return next((s for s in specs if s.in_prompt(prompt)), None)


# --------------------------------------------------------------------------- systems 1 and 2


def halves(specs: Sequence[Spec], parts: int) -> list[list[Spec]]:
    """The batch cut into `parts` consecutive pieces, as a person splits a list over machines."""
    size = -(-len(specs) // parts)
    return [list(specs[i * size:(i + 1) * size]) for i in range(parts)]


def loop_request(spec: Spec, folder: Path) -> GenerationRequest:
    """What a script hands Live Avatar: the raw portrait and speech (no preprocessing)."""
    samples = wav_samples(spec.audio) or 0
    return GenerationRequest(asset_key=spec.name, image=spec.image, audio=spec.audio, prompt=spec.subject,
                             preset=spec.preset, seed=0, output=folder / f"{spec.name}.mp4",
                             log_path=folder / f"{spec.name}.log", audio_seconds=samples / 16_000,
                             audio_samples=samples)


def run_loop(name: str, specs: list[Spec], urgent: Spec | None, gangs: list[GpuGang], calibration: Calibration,
             scale: float, folder: Path, *, warm: bool, stop_on_error: bool) -> Run:
    """Systems 1 and 2: one thread per gang works through its half; no pipeline around it."""
    timeline = Timeline()
    corrupt = {s.image for s in specs if s.kind == "corrupt"}

    def engine() -> SimulatedLiveAvatar:
        return SimulatedLiveAvatar(calibration, time_scale=scale, warm=warm, timeline=timeline,
                                   breaks=lambda r: CRASH if r.image in corrupt else None)

    t0 = time.time()
    arrival = t0 + URGENT_AFTER_S * scale
    urgent_taken = threading.Lock()
    stopped: list[str] = []

    def work(gang: GpuGang, mine: list[Spec]) -> None:
        process = engine()
        for spec in mine:
            if not process.generate(loop_request(spec, folder), gang).ok and stop_on_error:
                stopped.append(f"{gang.name} stopped at {spec.name} ({spec.kind}), "
                               f"{len(mine) - mine.index(spec) - 1} video(s) of its half never made")
                break
        if urgent and urgent_taken.acquire(blocking=False):  # the first half to end takes the urgent asset
            time.sleep(max(0.0, arrival - time.time()))
            (engine() if warm else process).generate(loop_request(urgent, folder), gang)

    threads = [threading.Thread(target=work, args=(g, h)) for g, h in zip(gangs, halves(specs, len(gangs)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run = Run(name, timeline, [g.name for g in gangs], scale, notes=stopped, gpus=gpu_map(gangs))
    everything = [*specs, urgent] if urgent else specs
    done = [j for j in timeline.jobs if j.ok and (s := spec_of(everything, j.prompt)) and s.usable]
    run.finished = len(done)
    run.first_finished_s = (min(j.end for j in done) - t0) / scale if done else None
    started = [j.start for j in timeline.jobs if urgent and urgent.in_prompt(j.prompt)]
    run.urgent_wait_s = (started[0] - arrival) / scale if started else None
    wasted = [j for j in timeline.jobs if (s := spec_of(specs, j.prompt)) and not s.usable]
    run.notes.append(f"{len(wasted)} GPU job(s) on bad inputs or unchecked bad videos "
                     f"({sum(j.modelled_s for j in wasted) / 60:.0f} GPU-min); CPU work outside the GPU timeline")
    return run


# --------------------------------------------------------------------------- systems 3 and 4


def configure(data_root: Path, gangs: str, inputs_root: Path, generation: str | None, scale: float) -> None:
    """The settings of one pipeline run (a fresh database each), read again by every stage."""
    from avatarflow.settings import Settings, get_settings

    # Polls (idle workers, the workers-mode flow) wait as long in GPU time as they do in production.
    poll = Settings.model_fields.get("worker_poll_seconds")
    os.environ.update({
        "AVATARFLOW_WORKER_POLL_SECONDS": str((poll.default if poll else 2.0) * scale),
        "AVATARFLOW_DATA_ROOT": str(data_root), "AVATARFLOW_ENGINE": "instant", "AVATARFLOW_GANGS": gangs,
        # A lock per gang in this process: the Prefect slot is polled every 5 s, unscaled, which
        # would idle a gang up to 5 s / scale modelled seconds per hand-over.
        "AVATARFLOW_GANG_LOCK": "process", "AVATARFLOW_REVIEW_SAMPLE_RATE": "0",
        "AVATARFLOW_GPU_WAIT_SECONDS": "900",  # a workers-mode flow whose workers died must not wait a day
        "AVATARFLOW_INPUT_ROOTS": json.dumps([str(MEDIA), str(inputs_root)]),
    })
    if generation is None:
        os.environ.pop("AVATARFLOW_GENERATION", None)
    else:
        os.environ["AVATARFLOW_GENERATION"] = generation
    get_settings.cache_clear()


def warm_replays(specs: Sequence[Spec], folder: Path, cache: Path) -> int:
    """Fill instant-replay's cache: one CPU-engine render per (crop, speech) pair, before timing.

    Preprocessing is deterministic, so the pipeline's own crops and speech later hash the same.
    """
    from avatarflow.settings import get_settings
    from avatarflow.storage import Storage, sha256_file
    from inference.instant import InstantEngine
    from tasks.face_detectors import default_detector
    from tasks.preprocess import face_crop, speech

    settings, storage, detector = get_settings(), Storage(folder), default_detector()
    engine = InstantEngine(cache_dir=cache)
    pairs = sorted({(s.image, s.audio) for s in specs if s.kind in ("good", "spoiled", "urgent")})
    for i, (image, audio) in enumerate(pairs):
        crop, _, _ = face_crop(image, sha256_file(image), storage, settings, detector)
        wav, prepared, _ = speech(audio, sha256_file(audio), storage, settings)
        request = GenerationRequest(asset_key=f"warm{i}", image=crop, audio=wav, prompt="warm-up", preset="standard",
                                    seed=0, output=folder / f"warm{i}.mp4", log_path=folder / f"warm{i}.log",
                                    audio_seconds=float(prepared["duration_s"]))
        if not engine.generate(request, GpuGang("warm")).ok:
            raise RuntimeError(f"instant-replay could not render {image.name} + {audio.name}")
    engine.close()
    return len(pairs)


def gang_worker_class() -> tuple[Any, str]:
    """`inference.gang_worker.GangWorker` and the workers setting, or why system 4 cannot run."""
    from avatarflow.settings import Settings

    try:
        from inference.gang_worker import GangWorker
    except ImportError as exc:
        return None, f"inference.gang_worker cannot be imported ({exc})"
    if "generation" not in Settings.model_fields:
        return None, "Settings has no `generation` field, so AVATARFLOW_GENERATION=workers would be ignored"
    return GangWorker, ""


def start_workers(worker_class: Any, gangs: list[GpuGang], engines: dict[str, SimulatedLiveAvatar],
                  stop: threading.Event) -> list[threading.Thread]:
    """One GangWorker thread per gang, its engine (kept warm) from the context's components;
    a packed GPU's workers are checked against an H200, the GPU the calibration was measured on."""
    from avatarflow.settings import get_settings
    from db.session import shared_database
    from db.stage import Components, StageContext, process_gang_lock
    from inference.gpus import parse_gpu_spec
    from inference.packing import check_packing

    settings = get_settings()
    h200s = parse_gpu_spec(f"{1 + max(d for g in gangs for d in g.devices)}xH200")
    threads = []
    for gang in gangs:
        ctx = StageContext(shared_database(settings), settings, actor=f"gang-worker:{gang.name}",
                           components=Components(engine_for=lambda g: engines[g.name], gang=gang,
                                                 gang_lock=process_gang_lock))
        packed = check_packing(gang, h200s, "bf16")
        # polls every AVATARFLOW_WORKER_POLL_SECONDS (time-scaled)
        worker = worker_class(ctx, gang, packed=packed) if packed else worker_class(ctx, gang)
        thread = threading.Thread(target=contextvars.copy_context().run, args=(worker.run, stop),
                                  name=f"worker-{gang.name}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def run_pipeline(name: str, specs: list[Spec], urgent: Spec | None, gang_spec: str, calibration: Calibration,
                 scale: float, folder: Path, cache: Path, worker_class: Any | None) -> Run:
    """Systems 3 to 5: the real batch flow with the simulated engine; 4 and 5 add gang workers."""
    import flows.components
    from avatarflow.settings import get_settings
    from db import stage
    from flows.batch import batch_flow
    from inference.instant import InstantEngine

    folder.mkdir(parents=True)
    configure(folder / "var", gang_spec, folder.parent, "workers" if worker_class else None, scale)
    gangs = parse_gangs(gang_spec)
    timeline = Timeline()
    spoiled = [s for s in specs if s.kind == "spoiled"]
    sharing = load_sharing() if any(g.shares > 1 for g in gangs) else None
    engines = {g.name: SimulatedLiveAvatar(calibration, time_scale=scale, warm=True, timeline=timeline,
                                           delegate=InstantEngine(cache_dir=cache), sharing=sharing,
                                           spoils=lambda r: any(s.in_prompt(r.prompt) for s in spoiled))
               for g in gangs}
    flows.components.engine_for = lambda settings, gang: engines[gang.name]  # the flow's engine factory
    main = write_manifest(folder / "batch.jsonl", specs)
    extra = write_manifest(folder / "urgent.jsonl", [urgent]) if urgent else None
    stop = threading.Event()
    workers = start_workers(worker_class, gangs, engines, stop) if worker_class else []
    stage.WORK_SECONDS.clear()
    arrival: list[float] = []

    def urgent_run() -> None:
        arrival.append(time.time())
        batch_flow(manifest=str(extra))  # its own flow run, as an operator would start it

    t0 = time.time()
    timer = threading.Timer(URGENT_AFTER_S * scale, contextvars.copy_context().run, args=(urgent_run,))
    if urgent:
        timer.start()
    state = batch_flow(manifest=str(main), return_state=True)
    if urgent:
        timer.join()
    wall = time.time() - t0
    stop.set()
    for thread in workers:
        thread.join(timeout=60)
    run = Run(name, timeline, [g.name for g in gangs], scale, notes=[state.message or ""], gpus=gpu_map(gangs))
    if sharing:
        run.notes.append(f"GPU sharing: {sharing.source}")
    _pipeline_figures(run, get_settings(), t0, arrival[0] if arrival else None, urgent)
    if worker_class:
        run.notes.append(_worker_rows(get_settings()))
    cpu = sum(v for k, v in stage.WORK_SECONDS.items() if k in CPU_STAGES)
    slots = get_settings().cpu_workers
    per_stage = ", ".join(f"{k} {v:.0f}" for k, v in sorted(stage.WORK_SECONDS.items()) if k in CPU_STAGES)
    run.notes.append(f"wall {wall:.0f} s; CPU stages {cpu:.0f} s ({per_stage}) = {cpu / (wall * slots):.0%} "
                     f"of {slots} CPU slots; load average {load_average()}")
    overrun = sum(j.overrun_s for j in timeline.jobs)
    if overrun > 0.05 * sum(j.end - j.start for j in timeline.jobs):
        run.notes.append(f"the replayed videos took {overrun:.1f} s beyond the scaled GPU time: figures skewed")
    return run


def _worker_rows(settings: Any) -> str:
    """What the gang workers recorded about themselves (loads, jobs), beside the engines' count."""
    from sqlalchemy import select

    from db.session import shared_database
    from db.worker_models import GangWorkerRecord

    with shared_database(settings).session() as session:
        rows = session.scalars(select(GangWorkerRecord).order_by(GangWorkerRecord.gang)).all()
        return "worker rows: " + ", ".join(f"{r.gang} {r.model_loads} load(s), {r.jobs_done} job(s) done, "
                                           f"{r.jobs_failed} failed, state {r.state}" for r in rows)


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _pipeline_figures(run: Run, settings: Any, t0: float, arrival: float | None, urgent: Spec | None) -> None:
    """Finished videos, first finished and the urgent wait, from the database's events."""
    from sqlalchemy import select

    from db.models import Asset
    from db.session import shared_database

    with shared_database(settings).session() as session:
        assets = session.scalars(select(Asset).where(Asset.parent_id.is_(None))).all()
        events = {a.key: sorted((_epoch(e.at), e.to_state) for e in a.events) for a in assets}
        states = {a.key: (a.state, a.external_id) for a in assets}
    finished = {k: min(t for t, s in ev if s in FINISHED) for k, ev in events.items()
                if states[k][0] in FINISHED}
    run.finished = len(finished)
    if finished:
        key = min(finished, key=finished.__getitem__)
        run.first_finished_s = _scaled(run, t0, _first(events[key], "planned"),
                                       max(j.end for j in run.timeline.jobs if j.asset_key == key and j.ok),
                                       finished[key])
    urgent_key = next((k for k, (_, ext) in states.items() if urgent and ext == urgent.name), None)
    starts = [j.start for j in run.timeline.jobs if j.asset_key == urgent_key]
    if arrival is not None and urgent_key and starts:
        planned = _first(events[urgent_key], "planned")
        run.urgent_wait_s = (planned - arrival) + (min(starts) - planned) / run.scale


def _first(events: list[tuple[float, str | None]], state: str) -> float:
    return min(t for t, s in events if s == state)


def _scaled(run: Run, t0: float, planned: float, job_end: float, finished: float) -> float:
    """Real CPU time before planning and after the job, GPU wait and job scaled back."""
    return (planned - t0) + (job_end - planned) / run.scale + (finished - job_end)


# --------------------------------------------------------------------------- figures


def span(run: Run) -> float:
    jobs = run.timeline.jobs
    return max(j.end for j in jobs) - min(j.start for j in jobs) if jobs else 0.0


def _union(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of intervals: a packed GPU is busy while any of its workers is."""
    total, reach = 0.0, -float("inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def gpu_busy(run: Run, gpu: str, until: float | None = None) -> float:
    gangs = run.gpus[gpu]
    return _union([(j.start, min(j.end, until) if until else j.end) for j in run.timeline.jobs
                   if j.gang in gangs and (until is None or j.start < until)])


def busy_share(run: Run, gpu: str) -> float:
    return gpu_busy(run, gpu) / max(span(run), 1e-9)


def steady_share(run: Run, gpu: str) -> float:
    """Busy share until the first GPU ran dry: the batch's last-job imbalance left out."""
    jobs = run.timeline.jobs
    if not jobs:
        return 0.0
    start = min(j.start for j in jobs)
    dry = min(max((j.end for j in jobs if j.gang in gangs), default=start) for gangs in run.gpus.values())
    return gpu_busy(run, gpu, until=dry) / max(dry - start, 1e-9)


def per_hour(run: Run) -> float:
    return run.finished / max(span(run) / run.scale, 1e-9) * 3600


def preview_per_hour(run: Run) -> float:
    """Preview videos an hour if every worker made only previews, at this run's preview job times
    (wall, scaled back: slower where a packed GPU was shared) and each worker's busy share."""
    previews = [j for j in run.timeline.jobs if j.preset == "preview" and j.ok]
    if not previews:
        return 0.0
    seconds = {g: [(j.end - j.start) / run.scale for j in previews if j.gang == g] for g in run.gangs}
    overall = mean(s for each in seconds.values() for s in each)
    total = 0.0
    for gang in run.gangs:
        busy = sum(j.end - j.start for j in run.timeline.jobs if j.gang == gang) / max(span(run), 1e-9)
        total += busy * 3600 / (mean(seconds[gang]) if seconds[gang] else overall)
    return total


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def print_runs(runs: Sequence[Run]) -> None:
    gpus = list(runs[0].gpus)
    width = max(12, *(len(g) + 7 for g in gpus))
    head = "".join(f"{g + ' busy':>{width}}" for g in gpus)
    print(f"\n{'system':<40}{head}{'videos/h':>10}{'preview/h':>11}{'1st video':>11}{'urgent wait':>13}"
          f"{'loads/worker':>14}{'videos':>8}")
    for run in runs:
        if not run.available:
            print(f"{run.name:<40}not available: {run.notes[0]}")
            continue
        shares = "".join(f"{busy_share(run, g):>{width}.1%}" if g in run.gpus else f"{'—':>{width}}" for g in gpus)
        loads = "/".join(str(run.timeline.loads.get(g, 0)) for g in run.gangs)
        print(f"{run.name:<40}{shares}{per_hour(run):>10.1f}{preview_per_hour(run):>11.1f}"
              f"{clock(run.first_finished_s):>11}{clock(run.urgent_wait_s):>13}{loads:>14}{run.finished:>8}")
    for run in runs:
        if run.available:
            steady = " / ".join(f"{steady_share(run, g):.1%}" for g in run.gpus)
            jobs = run.timeline.jobs
            clips = mean(j.clips for j in jobs) if jobs else 0.0
            layout = ", ".join(f"{g}: {' + '.join(names)}" for g, names in run.gpus.items())
            print(f"  {run.name} ({layout}): span {clock(span(run) / run.scale)} modelled (scale {run.scale:g}); "
                  f"{len(jobs)} jobs, {clips:.1f} clips per job; busy until the first GPU ran dry {steady}; "
                  + "; ".join(n for n in run.notes if n))


def print_goal(runs: Sequence[Run], calibration: Calibration, previews: Sequence[Run]) -> None:
    preview = calibration.timings["preview"]
    bound = preview.per_job_s(4) / preview.job_s(4)
    print(f"\ngoal: ≥ {GOAL_BUSY:.0%} busy share per GPU, one load per gang worker, ≥ {GOAL_PREVIEW_X:g}× "
          f"the per-video loop's preview videos/h (measured on the previews-only batch)")
    print(f"  one worker per GPU: the calibration caps the preview ratio at {bound:.2f}× (4 clips: "
          f"{preview.per_job_s(4):.0f} s per job against {preview.job_s(4):.0f} s warm, at equal busy share)")
    sharing = load_sharing()
    print(f"  two workers per GPU: at {bound * 2 * sharing.pair_rate:.2f}× (two at once, each at {sharing.pair_rate:.3f} "
          f"of the speed alone: {sharing.source})")
    for workers in runs[3:]:
        if not workers.available:
            print(f"  {workers.name}: not available ({workers.notes[0]}): goal not assessed")
            continue
        shares = [busy_share(workers, g) for g in workers.gpus]
        loads = [workers.timeline.loads.get(g, 0) for g in workers.gangs]
        twin = next((r for r in previews[1:] if r.name.split()[0] == workers.name.split()[0]), None)
        ratio = per_hour(twin) / max(per_hour(previews[0]), 1e-9) if twin else 0.0
        checks = {"busy": all(s >= GOAL_BUSY for s in shares), "loads": all(n == 1 for n in loads),
                  "preview": ratio >= GOAL_PREVIEW_X}
        print(f"  {workers.name}: busy {' / '.join(f'{s:.1%}' for s in shares)} {'✓' if checks['busy'] else '✗'}; "
              f"loads {' / '.join(map(str, loads))} {'✓' if checks['loads'] else '✗'}; previews/h "
              f"{ratio:.2f}× the loop's ({twin.name if twin else 'no previews-only run'}) "
              f"{'✓' if checks['preview'] else '✗'} → {'met' if all(checks.values()) else 'not met'}")
        if not checks["busy"] and all(steady_share(workers, g) >= GOAL_BUSY for g in workers.gpus):
            print("    (every GPU was ≥ 95 % busy until the first ran dry: what is lost is the batch's last job(s) "
                  "on one GPU while the other has nothing left)")


# --------------------------------------------------------------------------- main


def pipeline_runs(specs: list[Spec], urgent: Spec, args: argparse.Namespace, calibration: Calibration,
                  root: Path, previews: list[Spec]) -> tuple[list[Run], list[Run]]:
    """Systems 3 to 5 under one Prefect test server; 4 and 5 only when the gang workers exist."""
    os.environ.update({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "DO_NOT_TRACK": "1",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"})
    from prefect.testing.utilities import prefect_test_harness

    cache = root / "instant-cache"
    configure(root / "warm-var", args.gangs, root, None, 1.0)
    started, rendered = time.perf_counter(), []
    # The renders run while the Prefect test server starts (20-25 s of mostly waiting).
    warming = threading.Thread(target=lambda: rendered.append(warm_replays([*specs, urgent, *previews], root / "warm",
                                                                           cache)))
    warming.start()
    worker_class, missing = gang_worker_class()
    scale = args.pipeline_time_scale
    runs: list[Run] = []
    preview_only: list[Run] = []
    with prefect_test_harness(server_startup_timeout=180):
        warming.join()
        if not rendered:
            raise RuntimeError("instant-replay's cache could not be filled (see the error above)")
        pairs = rendered[0]
        print(f"Prefect test server up, instant-replay cache filled ({pairs} (portrait, speech) pairs) in "
              f"{time.perf_counter() - started:.0f} s (before timing)", flush=True)
        if not args.previews_only:
            runs.append(run_pipeline("3 avatarflow flow (round-robin)", specs, urgent, args.gangs, calibration,
                                     scale, root / "sys3", cache, None))
            print(f"system 3 done ({runs[-1].notes[-1]})", flush=True)
        if worker_class is None and not args.previews_only:
            runs.append(Run("4 avatarflow gang workers", Timeline(), runs[-1].gangs, scale, notes=[missing],
                            available=False, gpus=runs[-1].gpus))
        elif worker_class is not None:
            if not args.previews_only:
                runs.append(run_pipeline("4 avatarflow gang workers", specs, urgent, args.gangs, calibration, scale,
                                         root / "sys4", cache, worker_class))
                print(f"system 4 done ({runs[-1].notes[-1]})", flush=True)
                runs.append(run_pipeline(f"5 gang workers, packed {args.packed_gangs!r}", specs, urgent,
                                         args.packed_gangs, calibration, scale, root / "sys5", cache, worker_class))
                print(f"system 5 done ({runs[-1].notes[-1]})", flush=True)
            for name, spec in (("4 gang workers", args.gangs), (f"5 gang workers, packed {args.preview_gangs!r}",
                                                                 args.preview_gangs)):
                preview_only.append(run_pipeline(name, previews, None, spec, calibration, scale,
                                                 root / f"previews-{len(preview_only)}", cache, worker_class))
                print(f"previews: {name} done ({preview_only[-1].notes[-1]})", flush=True)
    misses = len(list(cache.glob("*.mp4"))) - pairs
    if misses:
        print(f"warning: instant-replay rendered {misses} pair(s) during the timed runs (cache misses)")
    return runs, preview_only


def main(argv: Sequence[str] | None = None) -> list[Run]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time-scale", type=float, default=0.01, help="GPU time scale of systems 1 and 2")
    parser.add_argument("--pipeline-time-scale", type=float, default=0.08,
                        help="GPU time scale of systems 3 and 4 (their CPU stages run at real speed)")
    parser.add_argument("--assets", type=int, default=32, help="assets in the batch, the urgent one not counted")
    parser.add_argument("--gangs", default="0;1", help='gangs as AVATARFLOW_GANGS writes them ("0;1", "0;1-5")')
    parser.add_argument("--packed-gangs", default="0x2;1",
                        help='system 5: the same GPUs with one packed ("0x2": two workers on GPU 0)')
    parser.add_argument("--previews", type=int, default=16, help="previews in the previews-only batch")
    parser.add_argument("--previews-only", action="store_true",
                        help="run only the previews-only comparison (its figures are printed either way)")
    parser.add_argument("--preview-gangs", default="0x2;1x2",
                        help="the packed layout of the previews-only run (both GPUs packed by default)")
    parser.add_argument("--seed", type=int, default=1, help="order of the batch")
    args = parser.parse_args(argv)
    calibration = load_calibration()
    print(f"machine: {describe()}")
    print(f"calibration: {calibration.source}")
    print(f"  {calibration.compile}")
    print(f"  5-GPU gangs: {calibration.published_5gpu}")
    for t in calibration.timings.values():
        print(f"  {t.preset:<8} load {t.load_s:5.1f} s per job | warm: load {t.warm_load_s:5.1f} s once, "
              f"{t.warm_first_step_s:4.1f} s to first step | denoise {t.denoise.fixed_s:5.1f} + "
              f"{t.denoise.per_clip_s:4.2f}/clip | tail {t.tail.fixed_s:5.1f} + {t.tail.per_clip_s:4.2f}/clip "
              f"({t.note})")
    root = Path(tempfile.mkdtemp(prefix="avatarflow-duty-"))
    inputs = make_inputs(root)
    specs, urgent = mixed_batch(args.assets, inputs, args.seed), urgent_spec(inputs)
    gangs = parse_gangs(args.gangs)
    kinds = {k: sum(s.kind == k for s in specs) for k in ("good", "no_face", "corrupt", "spoiled")}
    print(f"batch: {len(specs)} assets + 1 urgent on {len(gangs)} gang(s) {args.gangs!r}: "
          + ", ".join(f"{p} {sum(s.preset == p for s in specs)}" for p in ("preview", "standard", "long"))
          + "; " + ", ".join(f"{k} {n}" for k, n in kinds.items()), flush=True)
    print(f"time scales: systems 1-2 ×{args.time_scale:g} (no real work: the figures do not depend on it), "
          f"3-4 ×{args.pipeline_time_scale:g} (real CPU stages at this machine's speed)", flush=True)
    previews = preview_batch(args.previews, inputs)
    preview_runs = [run_loop("1 per-video script loop", previews, None, gangs, calibration, args.time_scale,
                             root / "previews-loop", warm=False, stop_on_error=False)]
    if args.previews_only:
        _, preview_pipelines = pipeline_runs(specs, urgent, args, calibration, root, previews)
        preview_runs.extend(preview_pipelines)
        print(f"\npreviews only: {len(previews)} good previews (6 and 11 s speech), no urgent asset")
        print_runs(preview_runs)
        loop = per_hour(preview_runs[0])
        print("  previews/h against the loop's: " + ", ".join(f"{r.name} {per_hour(r) / loop:.2f}×"
                                                          for r in preview_runs[1:]))
        return preview_runs
    runs = [run_loop("1 per-video script loop", specs, urgent, gangs, calibration, args.time_scale,
                     root / "loop1", warm=False, stop_on_error=False)]
    print("system 1 done", flush=True)
    runs.append(run_loop("2 Live Avatar batch_eval.py", specs, urgent, gangs, calibration, args.time_scale,
                         root / "loop2", warm=True, stop_on_error=True))
    print("system 2 done", flush=True)
    mixed, preview_pipelines = pipeline_runs(specs, urgent, args, calibration, root, previews)
    runs.extend(mixed)
    preview_runs.extend(preview_pipelines)
    print_runs(runs)
    print(f"\npreviews only: {len(previews)} good previews (6 and 11 s speech), no urgent asset")
    print_runs(preview_runs)
    print_goal(runs, calibration, preview_runs)
    return runs


if __name__ == "__main__":
    main()
