"""The warm Live Avatar worker: its JSON-lines protocol and `WarmWorkerEngine`, on the FAKE backend.

The fake backend (`warm_worker.py --backend fake`) writes real MP4s with ffmpeg and fails on
request, so these tests prove the protocol, several jobs through one loaded worker, a failed job
in the middle, a worker crash and restart, the timeout kill, health and clean shutdown. The real
backend (Live Avatar's model in memory, torch.distributed broadcast) is not run here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.liveavatar.fake_layout import make_checkpoint, make_lora

from avatarflow.media import wav_samples
from inference.engine import FailureKind, GenerationRequest, GpuGang, Progress
from inference.liveavatar_config import LiveAvatarConfig
from inference.liveavatar_job import partial_output_path
from inference.ports import PortAllocator
from inference.processes import pid_alive
from inference.verify import probe_video
from inference.warm_client import WORKER_SCRIPT, WarmWorkerEngine, worker_command
from inference.warm_worker import classify_exception

FAKES = Path(__file__).resolve().parents[1] / "fakes" / "liveavatar"
GANG1 = GpuGang("gang0", (0,))
GANG5 = GpuGang("gang1-5", (1, 2, 3, 4, 5))
PROMPT = "A woman in a grey jacket is speaking calmly to the camera."
FAKE_LAUNCHER = [sys.executable, str(WORKER_SCRIPT), "--backend", "fake"]


@pytest.fixture(scope="module")
def speech(media, tmp_path_factory) -> Path:
    """3 s of real speech, 16 kHz mono: short enough to keep the fake's encodes fast."""
    out = tmp_path_factory.mktemp("speech") / "speech3s.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media / "audio/latentsync_demo1_audio.wav"),
                    "-t", "3", "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def portrait(media) -> Path:
    return media / "image/liveavatar_fashion_blogger.jpg"


@pytest.fixture
def config(tmp_path) -> LiveAvatarConfig:
    ckpt = make_checkpoint(tmp_path / "weights/Wan2.2-S2V-14B")
    lora = make_lora(tmp_path / "weights/liveavatar.safetensors")
    return LiveAvatarConfig(
        checkout=FAKES, torchrun=FAKES / "torchrun", python=FAKES / "python", ckpt_dir=ckpt, lora_path=lora,
        extra_env={"FAKE_TORCHRUN_RECORD": str(tmp_path / "torchrun.jsonl")},
        timeout_floor_s=60, kill_grace_s=2, port_lock_dir=tmp_path / "ports",
    )


@pytest.fixture
def engine(config):
    engine = WarmWorkerEngine(config, GANG1, launcher=FAKE_LAUNCHER, load_timeout_s=60)
    yield engine
    engine.close()


def make_request(tmp_path: Path, audio: Path, image: Path, name: str, *, fail: str | None = None,
                 preset: str = "preview", **overrides) -> GenerationRequest:
    prompt = f"{PROMPT} [fake_fail={fail}]" if fail else PROMPT
    samples = wav_samples(audio)
    return GenerationRequest(
        asset_key=name, image=image, audio=audio, prompt=prompt, preset=preset, seed=7,
        output=tmp_path / "out" / f"{name}.mp4", log_path=tmp_path / "logs" / f"{name}.log",
        audio_seconds=samples / 16000, audio_samples=samples, overrides=overrides,
    )


def assert_verified(result, request) -> None:
    assert result.ok, result.failure
    assert result.output == request.output and not partial_output_path(request.output).exists()
    info = probe_video(request.output)
    assert info.audio_codec == "aac" and abs(info.duration_s - 3.0) < 0.15


# ---------------------------------------------------------------------------------------------
# The protocol, spoken directly


def test_protocol(tmp_path, speech, portrait):
    worker = subprocess.Popen(FAKE_LAUNCHER, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)

    def ask(message: dict) -> list[dict]:
        worker.stdin.write(json.dumps(message) + "\n")
        worker.stdin.flush()
        answers = []
        while True:
            answers.append(json.loads(worker.stdout.readline()))
            if answers[-1].get("event") != "progress":
                return answers

    try:
        ready = json.loads(worker.stdout.readline())
        assert ready["event"] == "ready" and ready["ok"] and ready["backend"] == "fake"
        assert ready["load_seconds"] >= 0 and ready["pid"] == worker.pid
        args = {"prompt": PROMPT, "image": str(portrait), "audio": str(speech), "size": "384*256",
                "num_clip": 10, "infer_frames": 48, "sample_steps": 4, "sample_solver": "euler", "base_seed": 1}

        *progress, failed = ask({"id": "j1", "op": "generate", "args": dict(args, save_file=str(tmp_path / "1.mp4")),
                                 "fake_fail": "oom"})
        assert [p["progress"] for p in progress] == [{"clips_done": 1, "clips_planned": 2}]
        assert failed["id"] == "j1" and not failed["ok"] and failed["error"]["kind"] == "out_of_memory"
        assert "CUDA out of memory" in failed["error"]["message"]

        *progress, done = ask({"id": "j2", "op": "generate", "args": dict(args, save_file=str(tmp_path / "2.mp4"))})
        assert [p["progress"]["clips_done"] for p in progress] == [1, 2]
        assert done == {"id": "j2", "ok": True, "result": {"save_file": str(tmp_path / "2.mp4"), "clips": 2,
                                                            "seconds": done["result"]["seconds"]}}
        assert (tmp_path / "2.mp4").stat().st_size > 0

        (bad,) = ask({"id": "j3", "op": "generate", "args": dict(args, sample_solver="dpm++",
                                                                  save_file=str(tmp_path / "3.mp4"))})
        assert bad["error"]["kind"] == "config_rejected" and "Unsupported solver" in bad["error"]["message"]

        (health,) = ask({"id": "h", "op": "health"})
        assert health["ok"] and health["health"]["jobs_served"] == 1 and health["health"]["jobs_failed"] == 2
        assert health["health"]["last_error"]["kind"] == "config_rejected"

        worker.stdin.write("this is not json\n")
        worker.stdin.flush()
        garbage = json.loads(worker.stdout.readline())
        assert garbage["ok"] is False and garbage["error"]["kind"] == "bad_request"

        (bye,) = ask({"id": "s", "op": "shutdown"})
        assert bye["ok"] and bye["event"] == "bye"
        assert worker.wait(timeout=10) == 0
        # Everything that is not protocol (ffmpeg, logs) went to stderr.
        assert worker.stdout.read() == ""
        assert "job j2: done" in worker.stderr.read()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


# ---------------------------------------------------------------------------------------------
# The engine


def test_several_jobs_through_one_worker_with_a_failure_in_the_middle(tmp_path, engine, speech, portrait):
    requests = [make_request(tmp_path, speech, portrait, "w1"),
                make_request(tmp_path, speech, portrait, "w2", fail="oom"),
                make_request(tmp_path, speech, portrait, "w3"),
                make_request(tmp_path, speech, portrait, "w4", fail="no_audio"),
                make_request(tmp_path, speech, portrait, "w5")]
    progress: list[Progress] = []
    results = [engine.generate(r, GANG1, progress.append) for r in requests]
    pids = {r.config["worker_pid"] for r in results}
    assert len(pids) == 1, "one worker served every job"
    for index in (0, 2, 4):
        assert_verified(results[index], requests[index])
    assert results[1].failure.kind == FailureKind.OUT_OF_MEMORY and results[1].failure.retryable
    assert results[3].failure.kind == FailureKind.NO_AUDIO_STREAM
    assert not requests[1].output.exists() and not requests[3].output.exists()
    assert not partial_output_path(requests[3].output).exists()
    # Only the job that started the worker paid for the load.
    assert results[0].metrics.load_seconds is not None
    assert all(r.metrics.load_seconds is None for r in results[1:])
    first = results[0].metrics
    assert first.clips_done == 2 and first.clips_planned == 2 and first.first_clip_seconds is not None
    assert progress.count(Progress(2, 2, "clip 2/2")) == 4  # w1, w3, w5, and w4 (fails verification)
    health = engine.health()
    assert health["alive"] and health["pid"] in pids and health["jobs_served"] == 3
    assert health["worker"]["jobs_served"] == 4 and health["worker"]["jobs_failed"] == 1
    assert "no_audio_stream" in health["last_error"] and health["restarts"] == 0
    # Each asset's log holds its own job's output.
    assert "warm worker" in requests[2].log_path.read_text()


def test_worker_crash_is_worker_died_and_the_next_job_restarts_it(tmp_path, engine, speech, portrait):
    first = engine.generate(make_request(tmp_path, speech, portrait, "c1"), GANG1)
    assert first.ok
    old_pid = first.config["worker_pid"]
    crashed = engine.generate(make_request(tmp_path, speech, portrait, "c2", fail="crash_worker"), GANG1)
    assert crashed.failure.kind == FailureKind.WORKER_DIED and crashed.failure.retryable
    assert crashed.metrics.exit_status == 17 and crashed.metrics.clips_done == 1
    assert not pid_alive(old_pid)
    assert engine.health()["alive"] is False
    request = make_request(tmp_path, speech, portrait, "c3")
    after = engine.generate(request, GANG1)
    assert_verified(after, request)
    assert after.config["worker_pid"] != old_pid
    assert after.metrics.load_seconds is not None  # the restart's load is charged to this job
    health = engine.health()
    assert health["alive"] and health["restarts"] == 1 and health["jobs_served"] == 2


def test_job_timeout_kills_the_worker_and_the_next_job_restarts_it(tmp_path, config, speech, portrait):
    short = dataclasses.replace(config, timeout_floor_s=3, timeout_per_video_second_s=0, kill_grace_s=1)
    engine = WarmWorkerEngine(short, GANG1, launcher=FAKE_LAUNCHER, load_timeout_s=60)
    try:
        hung = engine.generate(make_request(tmp_path, speech, portrait, "t1", fail="hang"), GANG1)
        assert hung.failure.kind == FailureKind.TIMEOUT and hung.failure.retryable
        assert not pid_alive(hung.config["worker_pid"])
        request = make_request(tmp_path, speech, portrait, "t2")
        after = engine.generate(request, GANG1)
        assert_verified(after, request)
        assert after.config["worker_pid"] != hung.config["worker_pid"]
    finally:
        engine.close()


def test_refused_jobs_never_start_a_worker(tmp_path, engine, speech, portrait):
    result = engine.generate(make_request(tmp_path, speech, portrait, "r1", sample_steps=3), GANG1)
    assert result.failure.kind == FailureKind.CONFIG_REJECTED and "sample_steps=3" in result.failure.message
    assert engine.health() == {"gang": "gang0", "alive": False, "pid": None, "jobs_served": 0,
                               "load_seconds": None, "last_error": None, "restarts": 0, "busy": False}
    with pytest.raises(ValueError):
        engine.generate(make_request(tmp_path, speech, portrait, "r2"), GpuGang("other", (3,)))
    # Without a gang (as the engine factory builds it) the first job's gang is bound for good.
    unbound = WarmWorkerEngine(engine.config, launcher=FAKE_LAUNCHER)
    assert unbound.health()["gang"] is None
    refused = unbound.generate(make_request(tmp_path, speech, portrait, "r3", infer_frames=32), GANG5)
    assert refused.failure.kind == FailureKind.CONFIG_REJECTED and unbound.health()["gang"] == GANG5.name
    with pytest.raises(ValueError):
        unbound.generate(make_request(tmp_path, speech, portrait, "r4"), GANG1)
    unbound.close()


def test_load_timeout_kills_a_slow_worker(tmp_path, config, speech, portrait):
    slow = WarmWorkerEngine(config, GANG1, launcher=[*FAKE_LAUNCHER, "--fake-load-seconds", "60"],
                            load_timeout_s=2)
    result = slow.generate(make_request(tmp_path, speech, portrait, "l1"), GANG1)
    assert result.failure.kind == FailureKind.TIMEOUT and "did not finish loading" in result.failure.message
    assert slow.health()["alive"] is False
    slow.close()


def test_clean_shutdown(tmp_path, engine, speech, portrait):
    assert engine.generate(make_request(tmp_path, speech, portrait, "s1"), GANG1).ok
    worker = engine._worker
    assert worker is not None and worker.alive()
    engine.close()
    assert worker.proc.returncode == 0, "the worker exited on its own after 'shutdown'"
    assert not pid_alive(worker.pid) and engine.health()["alive"] is False
    engine.close()  # idempotent


# ---------------------------------------------------------------------------------------------
# The real launch path (torchrun -> warm_worker.py), through the fake torchrun


def test_worker_command_shares_the_per_job_arguments(config):
    argv = worker_command(GANG5, dataclasses.replace(config, fp8=True), 29777)
    assert argv == [
        str(FAKES / "torchrun"), "--nproc_per_node", "5", "--master_port", "29777", "--tee", "2",
        str(WORKER_SCRIPT),
        "--backend", "liveavatar", "--checkout", str(FAKES),
        "--task", "s2v-14B", "--ulysses_size", "1", "--ckpt_dir", str(config.ckpt_dir),
        "--training_config", "liveavatar/configs/s2v_causal_sft.yaml", "--load_lora",
        "--lora_path_dmd", str(config.lora_path), "--offload_model", "False", "--convert_model_dtype",
        "--num_gpus_dit", "4", "--enable_vae_parallel", "--fp8",
    ]
    single = worker_command(GANG1, config, 29778)
    assert single[1:5] == ["--nproc_per_node", "1", "--master_port", "29778"]
    assert "--single_gpu" in single and single[single.index("--offload_model") + 1] == "True"


def test_worker_started_through_torchrun(tmp_path, config, speech, portrait):
    engine = WarmWorkerEngine(config, GANG5, backend="fake", load_timeout_s=60)
    try:
        request = make_request(tmp_path, speech, portrait, "p1")
        result = engine.generate(request, GANG5)
        assert_verified(result, request)
        (run,) = [json.loads(line) for line in (tmp_path / "torchrun.jsonl").read_text().splitlines()]
        assert run["launcher"]["nproc_per_node"] == "5"
        assert run["env"]["CUDA_VISIBLE_DEVICES"] == "1,2,3,4,5"
        assert run["script"] == str(WORKER_SCRIPT) and run["cwd"] == str(FAKES)
        assert result.config["cuda_visible_devices"] == "1,2,3,4,5"
        # In the pipeline a failed job restarts the ranks (one may be stuck in NCCL).
        failed = engine.generate(make_request(tmp_path, speech, portrait, "p2", fail="oom"), GANG5)
        assert failed.failure.kind == FailureKind.OUT_OF_MEMORY
        assert engine.health()["alive"] is False
    finally:
        engine.close()


def test_worker_classifies_exceptions():
    assert classify_exception(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")) == "out_of_memory"
    assert classify_exception(RuntimeError("The expanded size of the tensor (3000) must match")) == "config_rejected"
    assert classify_exception(NotImplementedError("Unsupported solver.")) == "config_rejected"
    weights = FileNotFoundError(2, "No such file or directory", "/w/Wan2.2-S2V-14B/models_t5_umt5-xxl-enc-bf16.pth")
    assert classify_exception(weights) == "missing_weights"
    # A missing tool is not missing weights (seen on a host without ffprobe).
    assert classify_exception(FileNotFoundError(2, "No such file or directory", "ffprobe")) == "crashed"


# torch is a test dependency: its torchrun sits beside the test interpreter.
REAL_TORCHRUN = (os.environ.get("AVATARFLOW_TEST_TORCHRUN") or shutil.which("torchrun")
                 or (str(Path(sys.executable).with_name("torchrun"))
                     if Path(sys.executable).with_name("torchrun").exists() else None))


@pytest.mark.skipif(not REAL_TORCHRUN, reason="needs a real torchrun (set AVATARFLOW_TEST_TORCHRUN)")
def test_pipeline_broadcast_under_real_torchrun(tmp_path, config, speech, portrait):
    """Five ranks over gloo (no GPU): rank 0 reads stdin and broadcasts, only rank 0 answers."""
    port = PortAllocator(29800, 29899, lock_dir=tmp_path / "ports").acquire()
    launcher = [REAL_TORCHRUN, "--nproc_per_node", "5", "--master_port", str(port.port), str(WORKER_SCRIPT),
                "--backend", "fake", "--fake-distributed"]
    gloo = dataclasses.replace(config, extra_env={"AVATARFLOW_WARM_DIST_BACKEND": "gloo"})
    engine = WarmWorkerEngine(gloo, GANG5, launcher=launcher, load_timeout_s=120)
    port.release()  # free it for torchrun's store to bind
    try:
        first = make_request(tmp_path, speech, portrait, "d1")
        assert_verified(engine.generate(first, GANG5), first)
        assert engine.health()["worker"]["world_size"] == 5
        failed = engine.generate(make_request(tmp_path, speech, portrait, "d2", fail="oom"), GANG5)
        assert failed.failure.kind == FailureKind.OUT_OF_MEMORY
        again = make_request(tmp_path, speech, portrait, "d3")
        assert_verified(engine.generate(again, GANG5), again)
    finally:
        engine.close()


@pytest.mark.skipif(not REAL_TORCHRUN, reason="needs a real torchrun (set AVATARFLOW_TEST_TORCHRUN)")
def test_the_real_backend_path_on_one_gpu(tmp_path, config, speech, portrait):
    """warm_worker.py's LiveAvatarBackend, launched as production launches it (a real torchrun of
    the script in inference/), driving the FAKE Live Avatar package's WanS2V (tests/fakes/liveavatar/
    liveavatar): a process group exists on one GPU (the real pipeline calls dist.get_rank() in
    every block), WanS2V gets the script's keyword arguments (init_on_cpu left at its default),
    Live Avatar's own `liveavatar` package is imported (not inference/liveavatar.py), the model is
    loaded once for several jobs, and each job's clips are reported as they finish."""
    record = tmp_path / "pipeline.jsonl"
    real = dataclasses.replace(config, torchrun=Path(REAL_TORCHRUN), extra_env={
        "AVATARFLOW_WARM_DIST_BACKEND": "gloo", "FAKE_LIVEAVATAR_RECORD": str(record)})
    port = PortAllocator(29840, 29899, lock_dir=tmp_path / "ports").acquire()
    launcher = worker_command(GANG1, real, port.port)
    port.release()
    engine = WarmWorkerEngine(real, GANG1, launcher=launcher, load_timeout_s=120)
    try:
        seen: list[Progress] = []
        first = make_request(tmp_path, speech, portrait, "r1")
        result = engine.generate(first, GANG1, seen.append)
        assert result.ok, result.failure
        assert [p.clips_done for p in seen] == list(range(1, result.metrics.clips_planned + 1))
        assert result.metrics.first_step_seconds is not None and result.metrics.seconds_per_step is not None
        second = make_request(tmp_path, speech, portrait, "r2", preset="standard")
        assert engine.generate(second, GANG1).ok
        assert engine.health()["worker"]["jobs_served"] == 2 and engine._starts == 1
    finally:
        engine.close()
    events = [json.loads(line) for line in record.read_text().splitlines()]
    (init,) = [e for e in events if e["event"] == "init"]
    assert "init_on_cpu" not in init, "the script never passes init_on_cpu; its default (True) must hold"
    assert init["single_gpu"] is True and init["rank"] == 0
    assert [e["event"] for e in events].count("generate") == 2


def test_gang_workers_serve_a_1_gpu_and_a_5_gpu_gang_side_by_side(tmp_path, config, speech, portrait):
    """The topology of one host with AVATARFLOW_GANGS="0;1-5": a long-lived gang worker per gang,
    each with its warm engine (the 5-rank one under real torchrun over gloo), sharing one queue.
    Not skipped without torchrun: torch (and its torchrun) is a test dependency."""
    assert REAL_TORCHRUN, "torchrun not found beside the test interpreter (torch is a test extra)"
    import threading
    import time

    from stages.test_stage_functions import add_asset, with_parts

    from avatarflow import records
    from avatarflow.records import Crop, Speech
    from avatarflow.settings import Settings
    from db.models import Asset, GenerationAttempt
    from db.session import open_database
    from db.stage import StageContext
    from db.states import AssetState as S
    from db.worker_models import GangWorkerRecord
    from inference.gang_worker import GangWorker
    from inference.stage import plan_asset

    settings = Settings(data_root=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'a.db'}",
                        input_roots=[tmp_path], engine="liveavatar-warm")
    ctx = StageContext(open_database(settings), settings, actor="test")
    details = records.write({}, Crop(path=str(portrait), source_size=(512, 512), face_box=(150, 100, 360, 400),
                                     crop_box=(0, 0, 512, 512)),
                            Speech(path=str(speech), duration_s=3.0, samples=wav_samples(speech)))
    ids = [add_asset(ctx, state=S.PREPROCESSED, details=details, name=f"t{i}", preset="preview") for i in range(4)]
    assert all(plan_asset(ctx, i).state == S.PLANNED for i in ids)

    port = PortAllocator(29800, 29899, lock_dir=tmp_path / "ports").acquire()
    five = [REAL_TORCHRUN, "--nproc_per_node", "5", "--master_port", str(port.port), str(WORKER_SCRIPT),
            "--backend", "fake", "--fake-distributed"]
    gloo = dataclasses.replace(config, extra_env={"AVATARFLOW_WARM_DIST_BACKEND": "gloo"})
    port.release()
    engines = {GANG1.name: WarmWorkerEngine(config, GANG1, launcher=FAKE_LAUNCHER, load_timeout_s=60),
               GANG5.name: WarmWorkerEngine(gloo, GANG5, launcher=five, load_timeout_s=120)}
    parts = with_parts(ctx, engine_for=lambda gang: engines[gang.name])
    workers = [GangWorker(parts, gang, poll_s=0.1, lease_s=30) for gang in (GANG1, GANG5)]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with ctx.database.session() as session:
                if all(session.get(Asset, i).state == S.GENERATED for i in ids):
                    break
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    with ctx.database.session() as session:
        assert [session.get(Asset, i).state for i in ids] == [S.GENERATED] * 4
        gangs = {a.gang for a in session.query(GenerationAttempt)}
        assert gangs == {"gang0", "gang1-5"}  # both gangs took videos from the one queue
        rows = session.query(GangWorkerRecord).all()
        assert {r.gang: r.model_loads for r in rows} == {"gang0": 1, "gang1-5": 1}
        assert all(r.state == "stopped" for r in rows)
    assert all(not e._worker for e in engines.values())  # closing the worker closed the engine
