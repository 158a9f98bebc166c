"""The per-job Live Avatar engine, against a FAKE Live Avatar checkout (tests/fakes/liveavatar).

Proves the refusals (nothing launched), the exact torchrun command lines of both topologies,
master-port allocation, progress parsing, the process-group kill on timeout and every failure
classification. Nothing here touches a GPU or real weights.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes.liveavatar.fake_layout import make_checkpoint, make_lora

from avatarflow.errors import ConfigurationError
from avatarflow.media import wav_samples
from inference.engine import FailureKind, GenerationRequest, GpuGang, Progress
from inference.failures import classify_exit
from inference.liveavatar import LiveAvatarEngine, run_job_process
from inference.liveavatar_checks import check_request
from inference.liveavatar_command import build_command
from inference.liveavatar_config import (
    SETTING_CKPT_DIR,
    SETTING_LORA,
    LiveAvatarConfig,
    config_from_settings,
)
from inference.liveavatar_environment import EnvironmentReport
from inference.liveavatar_facts import ENTRY_SCRIPT, ONLINE_DECODE_FLAG
from inference.liveavatar_job import partial_output_path
from inference.ports import PortAllocator
from inference.presets import get_preset
from inference.processes import ProcessTree, kill_process_group, kill_survivors, pid_alive
from inference.progress import TqdmProgress
from inference.sampling import NoSamples
from inference.verify import probe_video

FAKES = Path(__file__).resolve().parents[1] / "fakes" / "liveavatar"
GANG1 = GpuGang("gang0", (0,))
GANG5 = GpuGang("gang1-5", (1, 2, 3, 4, 5))
PROMPT = "A man in a dark suit is speaking calmly to the camera in an office."


@pytest.fixture(scope="module")
def speech(media, tmp_path_factory) -> Path:
    """3 s of real speech, 16 kHz mono: short enough to keep the fake's encodes fast."""
    out = tmp_path_factory.mktemp("speech") / "speech3s.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media / "audio/latentsync_demo1_audio.wav"),
                    "-t", "3", "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def portrait(media) -> Path:
    return media / "image/liveavatar_man.png"


@pytest.fixture
def config(tmp_path) -> LiveAvatarConfig:
    ckpt = make_checkpoint(tmp_path / "weights/Wan2.2-S2V-14B")
    lora = make_lora(tmp_path / "weights/liveavatar.safetensors")
    return LiveAvatarConfig(
        checkout=FAKES, torchrun=FAKES / "torchrun", python=FAKES / "python", ckpt_dir=ckpt, lora_path=lora,
        extra_env={"FAKE_TORCHRUN_RECORD": str(tmp_path / "torchrun.jsonl")},
        timeout_floor_s=120, kill_grace_s=2, port_lock_dir=tmp_path / "ports",
    )


def with_env(config: LiveAvatarConfig, **env: str) -> LiveAvatarConfig:
    return dataclasses.replace(config, extra_env={**config.extra_env, **env})


def make_request(tmp_path: Path, audio: Path, image: Path, *, preset: str = "preview", name: str = "a1",
                 seconds: float | None = None, **overrides) -> GenerationRequest:
    samples = wav_samples(audio) if seconds is None else None
    return GenerationRequest(
        asset_key=name, image=image, audio=audio, prompt=PROMPT, preset=preset, seed=42,
        output=tmp_path / "out" / f"{name}.mp4", log_path=tmp_path / "logs" / f"{name}.log",
        audio_seconds=samples / 16000 if samples else seconds, audio_samples=samples, overrides=overrides,
    )


def launches(tmp_path: Path) -> list[dict]:
    record = tmp_path / "torchrun.jsonl"
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


# ---------------------------------------------------------------------------------------------
# Refusals: each with its reason, nothing launched


@pytest.mark.parametrize(
    ("devices", "overrides", "reason"),
    [
        ((0, 1), {}, "has 2 GPUs: Live Avatar runs on exactly 1 GPU"),
        ((0, 1, 2), {}, "2–4 GPUs are not supported"),
        ((0, 1, 2, 3), {}, "2–4 GPUs are not supported"),
        ((), {}, "has no GPUs"),
        ((0,), {"sample_steps": 3}, "sample_steps=3"),
        ((0, 1, 2, 3, 4), {"sample_steps": 8}, "deadlocks the 5-GPU pipeline"),
        ((0,), {"solver": "dpm++"}, "only 'euler' works"),
        ((0,), {"solver": "unipc"}, "only 'euler' works"),
        ((0,), {"infer_frames": 32}, "infer_frames=32: must be a multiple of 12"),
        ((0,), {"infer_frames": 80}, "infer_frames=80: must be a multiple of 12"),
        ((0,), {"size": "1280*720"}, "above 720*400"),
        ((0,), {"size": "832*480"}, "above 720*400"),
        ((0,), {"size": "640*360"}, "not one of the valid sizes"),
        ((0,), {"size": "big"}, "not of the form W*H"),
        ((0,), {"guidance": 5}, "guidance=5: not a setting avatarflow passes to Live Avatar"),
        ((0,), {"fp8": True}, "fp8=True: not a setting"),  # the precision is the engine's, not a request's
        ((0,), {"sample_shift": 5.0}, "--sample_shift is ignored"),  # no one would see the warning
    ],
)
def test_refused_before_launch(tmp_path, config, speech, portrait, devices, overrides, reason):
    request = make_request(tmp_path, speech, portrait, **overrides)
    result = LiveAvatarEngine(config).generate(request, GpuGang("g", devices))
    assert result.failure is not None and result.failure.kind == FailureKind.CONFIG_REJECTED
    assert reason in result.failure.message
    assert not result.failure.retryable
    assert launches(tmp_path) == []
    assert not request.log_path.exists() and not request.output.exists()


def test_plus_in_audio_path_is_refused(tmp_path, config, speech, portrait):
    plus = tmp_path / "speaker1+speaker2.wav"
    shutil.copy(speech, plus)
    result = LiveAvatarEngine(config).generate(make_request(tmp_path, plus, portrait), GANG1)
    assert result.failure.kind == FailureKind.CONFIG_REJECTED
    assert "contains '+'" in result.failure.message and "several speakers" in result.failure.message
    assert launches(tmp_path) == []


def test_relative_lora_is_refused(tmp_path, config, speech, portrait):
    relative = dataclasses.replace(config, lora_path=Path("ckpt/liveavatar.safetensors"))
    result = LiveAvatarEngine(relative).generate(make_request(tmp_path, speech, portrait), GANG1)
    assert result.failure.kind == FailureKind.CONFIG_REJECTED
    assert "is relative" in result.failure.message and SETTING_LORA in result.failure.message
    assert launches(tmp_path) == []


def test_unknown_preset_is_refused(tmp_path, config, speech, portrait):
    result = LiveAvatarEngine(config).generate(make_request(tmp_path, speech, portrait, preset="ultra"), GANG1)
    assert result.failure.kind == FailureKind.CONFIG_REJECTED and "unknown preset 'ultra'" in result.failure.message


@pytest.mark.parametrize("what", ["ckpt", "lora"])
def test_missing_weights_name_path_and_setting(tmp_path, config, speech, portrait, what):
    if what == "ckpt":
        config = dataclasses.replace(config, ckpt_dir=tmp_path / "nowhere/Wan2.2-S2V-14B")
        expected = (str(tmp_path / "nowhere/Wan2.2-S2V-14B"), SETTING_CKPT_DIR)
    else:
        config = dataclasses.replace(config, lora_path=tmp_path / "nowhere/liveavatar.safetensors")
        expected = (str(tmp_path / "nowhere/liveavatar.safetensors"), SETTING_LORA)
    result = LiveAvatarEngine(config).generate(make_request(tmp_path, speech, portrait), GANG1)
    assert result.failure.kind == FailureKind.MISSING_WEIGHTS and not result.failure.retryable
    for text in expected:
        assert text in result.failure.message
    assert launches(tmp_path) == []


def test_valid_requests_pass_the_checks(tmp_path, config, speech, portrait):
    for preset in ("preview", "standard", "long"):
        for gang in (GANG1, GANG5):
            assert check_request(make_request(tmp_path, speech, portrait, preset=preset), gang,
                                 get_preset(preset), config) == []


# ---------------------------------------------------------------------------------------------
# Command lines


def test_config_from_settings(tmp_path):
    settings = SimpleNamespace(liveavatar_dir=str(tmp_path / "LiveAvatar"), liveavatar_ckpt_dir=str(tmp_path / "ckpt"),
                               liveavatar_lora=str(tmp_path / "liveavatar.safetensors"), liveavatar_fp8=True)
    config = config_from_settings(settings)
    assert config.torchrun_path == tmp_path / "LiveAvatar/.venv/bin/torchrun"
    assert config.fp8 and config.offload and config.lora_path == tmp_path / "liveavatar.safetensors"
    assert config.timeout_for(10) == 1800 and config.timeout_for(100) == 6000
    with pytest.raises(ConfigurationError, match="AVATARFLOW_LIVEAVATAR_CKPT_DIR"):
        config_from_settings(SimpleNamespace(liveavatar_dir="/x", liveavatar_lora="/y"))


def test_single_gpu_command(tmp_path, config, speech, portrait):
    request = make_request(tmp_path, speech, portrait, preset="standard")
    argv, env = build_command(request, GANG1, get_preset("standard"), config, 29611)
    assert argv == [
        str(FAKES / "torchrun"), "--nproc_per_node", "1", "--master_port", "29611", ENTRY_SCRIPT,
        "--task", "s2v-14B", "--ulysses_size", "1", "--ckpt_dir", str(config.ckpt_dir),
        "--training_config", "liveavatar/configs/s2v_causal_sft.yaml", "--load_lora",
        "--lora_path_dmd", str(config.lora_path), "--offload_model", "True", "--convert_model_dtype",
        "--num_gpus_dit", "1", "--single_gpu",
        "--prompt", PROMPT, "--image", str(portrait), "--audio", str(speech),
        "--save_file", str(partial_output_path(request.output)), "--size", "688*368", "--num_clip", "2",
        "--infer_frames", "48", "--sample_steps", "4", "--sample_solver", "euler",
        "--sample_guide_scale", "0", "--base_seed", "42",
    ]
    assert Path(argv[argv.index("--lora_path_dmd") + 1]).is_absolute()
    assert ONLINE_DECODE_FLAG not in argv and "--fp8" not in argv and "--enable_vae_parallel" not in argv
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env
    # Live Avatar compiles when ENABLE_COMPILE is unset: it is always said explicitly.
    assert env["ENABLE_COMPILE"] == "false"
    assert build_command(request, GANG1, get_preset("standard"), dataclasses.replace(config, enable_compile=True),
                         29611)[1]["ENABLE_COMPILE"] == "true"


def test_pipeline_command(tmp_path, config, speech, portrait):
    request = make_request(tmp_path, speech, portrait, preset="long", seconds=600.0)
    fp8 = dataclasses.replace(config, fp8=True)
    argv, env = build_command(request, GANG5, get_preset("long"), fp8, 29612)
    assert argv == [
        str(FAKES / "torchrun"), "--nproc_per_node", "5", "--master_port", "29612", "--tee", "2", ENTRY_SCRIPT,
        "--task", "s2v-14B", "--ulysses_size", "1", "--ckpt_dir", str(config.ckpt_dir),
        "--training_config", "liveavatar/configs/s2v_causal_sft.yaml", "--load_lora",
        "--lora_path_dmd", str(config.lora_path), "--offload_model", "False", "--convert_model_dtype",
        "--num_gpus_dit", "4", "--enable_vae_parallel", "--fp8",
        "--prompt", PROMPT, "--image", str(portrait), "--audio", str(speech),
        "--save_file", str(partial_output_path(request.output)), "--size", "688*368", "--num_clip", "313",
        "--infer_frames", "48", "--sample_steps", "4", "--sample_solver", "euler",
        "--sample_guide_scale", "0", "--base_seed", "42", ONLINE_DECODE_FLAG,
    ]
    assert env["CUDA_VISIBLE_DEVICES"] == "1,2,3,4,5"


def test_preview_caps_clips_and_decodes_online(tmp_path, config, speech, portrait):
    request = make_request(tmp_path, speech, portrait, preset="preview", seconds=60.0)
    argv, _ = build_command(request, GANG1, get_preset("preview"), config, 29613)
    assert argv[argv.index("--num_clip") + 1] == "10"
    assert argv[argv.index("--size") + 1] == "384*256"
    assert ONLINE_DECODE_FLAG in argv


def test_ports_are_unique_free_and_exclusive_across_processes(tmp_path):
    allocator = PortAllocator(29700, 29709, lock_dir=tmp_path / "ports")
    leases = [allocator.acquire() for _ in range(4)]
    assert len({lease.port for lease in leases}) == 4
    # A second allocator (another engine, same lock folder) never hands out a held port.
    other = PortAllocator(29700, 29709, lock_dir=tmp_path / "ports")
    extra = other.acquire()
    assert extra.port not in {lease.port for lease in leases}
    # A port somebody else listens on is skipped.
    with socket.socket() as busy:
        busy.bind(("", 29720))
        busy.listen()
        only_busy = PortAllocator(29720, 29721, lock_dir=tmp_path / "ports")
        with only_busy.acquire() as lease:
            assert lease.port == 29721
    # A port held by another process's lease is skipped too.
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl,sys,time; f=open(sys.argv[1],'a+b'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
         str(tmp_path / "ports/29730.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with PortAllocator(29730, 29731, lock_dir=tmp_path / "ports").acquire() as lease:
            assert lease.port == 29731
    finally:
        holder.kill()
        holder.wait()
    for lease in [*leases, extra]:
        lease.release()
    with PortAllocator(29730, 29730, lock_dir=tmp_path / "ports").acquire() as lease:
        assert lease.port == 29730  # released with its holder


# ---------------------------------------------------------------------------------------------
# Progress


RECORDED_STDERR = (
    "Loading checkpoint shards:   0%|          | 0/4 [00:00<?, ?it/s]"
    "\rLoading checkpoint shards:  50%|█████     | 2/4 [00:05<00:05,  2.61s/it]"
    "\rLoading checkpoint shards: 100%|██████████| 4/4 [00:10<00:00,  2.50s/it]"
    "\rLoading checkpoint shards: 100%|██████████| 4/4 [00:10<00:00,  2.50s/it]\n"
    + "".join(
        "  0%|          | 0/4 [00:00<?, ?it/s]"
        "\r 25%|██▌       | 1/4 [00:01<00:03,  1.02s/it]"
        "\r 50%|█████     | 2/4 [00:02<00:02,  1.01s/it]"
        "\r 75%|███████▌  | 3/4 [00:03<00:01,  1.00s/it]"
        "\r100%|██████████| 4/4 [00:04<00:00,  1.00s/it]"
        "\r100%|██████████| 4/4 [00:04<00:00,  1.00s/it]\n"
        for _ in range(8)
    )
    + "[rank0]: 100%|██████████| 4/4 [00:04<00:00,  1.00s/it]\n"  # a rank-prefixed bar of clip 3
)


def test_progress_from_recorded_stderr():
    clock = iter(range(1000)).__next__
    tracker = TqdmProgress(clips_planned=3, clock=lambda: float(clock()))
    updates = tracker.feed_text(RECORDED_STDERR)
    assert updates == [Progress(1, 3, "clip 1/3"), Progress(2, 3, "clip 2/3")]
    # The closing repaints ("4/4" with \r, then again with \n) count once per bar, and the
    # loading bar never counts; a repaint of a finished bar (the last line) adds nothing.
    assert tracker.bars_done == 8 and tracker.clips_done == 2
    timings = tracker.timings()
    assert timings["seconds_per_step"] == pytest.approx(1.0)  # tqdm's own "1.00s/it" at close
    assert timings["first_step_seconds"] is not None and timings["seconds_per_clip"] > 0


# Real H200 stderr (acceptance run, 2026-12-01): rates in it/s, and each block's final state twice.
REAL_BAR = ("  0%|          | 0/4 [00:00<?, ?it/s]\r 25%|██▌       | 1/4 [00:00<00:00,  3.22it/s]"
            "\r 50%|█████     | 2/4 [00:00<00:00,  3.51it/s]\r 75%|███████▌  | 3/4 [00:00<00:00,  3.32it/s]"
            "\r100%|██████████| 4/4 [00:01<00:00,  3.48it/s]\r100%|██████████| 4/4 [00:01<00:00,  3.43it/s]\n")


def test_progress_reads_rates_in_iterations_per_second():
    tracker = TqdmProgress(clips_planned=2)
    tracker.feed_text(REAL_BAR * 8)
    assert tracker.clips_done == 2
    assert tracker.timings()["seconds_per_step"] == pytest.approx(1 / 3.43, rel=1e-3)


def test_pipeline_progress_counts_one_rank_under_torchrun_tee():
    """--tee turns every repaint into a prefixed line of its own; five ranks print bars."""
    lines = []
    for block in range(8):
        for rank in (4, 0, 1, 2, 3):  # the VAE rank races ahead, the last DiT rank closes the block
            for n in range(5):
                lines.append(f"[default{rank}]:{' ' if n < 4 else ''}{25 * n:3d}%|   | {n}/4 [00:01<00:00,  2.00s/it]")
            lines.append(f"[default{rank}]:100%|██████████| 4/4 [00:01<00:00,  2.00s/it]")
    tracker = TqdmProgress(clips_planned=2, count_rank=3)
    updates = tracker.feed_text("\n".join(lines) + "\n")
    assert [u.clips_done for u in updates] == [1, 2] and tracker.bars_done == 8
    # Without the rank filter the same text would count five ranks' bars.
    assert TqdmProgress(clips_planned=99).feed_text("\n".join(lines) + "\n")[-1].clips_done == 10


def test_progress_never_exceeds_the_plan():
    tracker = TqdmProgress(clips_planned=1)
    tracker.feed_text(" 50%|█████     | 2/4 [00:02<00:02]\r100%|██████████| 4/4 [00:04<00:00]\n" * 12)
    assert tracker.clips_done == 1


# ---------------------------------------------------------------------------------------------
# Running the fake


def test_two_concurrent_jobs_succeed_on_their_own_gpus_and_ports(tmp_path, config, speech, portrait):
    engine = LiveAvatarEngine(config)
    requests = [make_request(tmp_path, speech, portrait, name=f"job{i}") for i in range(2)]
    seen: dict[str, list[Progress]] = {r.asset_key: [] for r in requests}
    results = {}

    def run(request, gang):
        results[request.asset_key] = engine.generate(request, gang, seen[request.asset_key].append)

    threads = [threading.Thread(target=run, args=(r, GpuGang(f"gang{i}", (i,)))) for i, r in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for request in requests:
        result = results[request.asset_key]
        assert result.ok, result.failure
        assert result.output == request.output and request.output.exists()
        assert not partial_output_path(request.output).exists()
        info = probe_video(request.output)
        assert info.audio_codec == "aac" and abs(info.fps - 25) < 0.01 and abs(info.duration_s - 3.0) < 0.15
        assert seen[request.asset_key] == [Progress(1, 2, "clip 1/2"), Progress(2, 2, "clip 2/2")]
        metrics = result.metrics
        assert metrics.exit_status == 0 and metrics.clips_done == 2 and metrics.clips_planned == 2
        assert metrics.first_clip_seconds is not None and metrics.total_seconds >= metrics.first_clip_seconds
        log = request.log_path.read_text()
        assert "--nproc_per_node 1" in log and "4/4" in log and "exit status 0" in log
    runs = launches(tmp_path)
    assert len(runs) == 2
    assert len({run["launcher"]["master_port"] for run in runs}) == 2
    assert {run["env"]["CUDA_VISIBLE_DEVICES"] for run in runs} == {"0", "1"}
    assert all(run["cwd"] == str(FAKES) and run["script"] == ENTRY_SCRIPT for run in runs)
    assert {results[r.asset_key].config["master_port"] for r in requests} == {
        int(run["launcher"]["master_port"]) for run in runs}


class RecordingSampler:
    def __init__(self, gang: GpuGang) -> None:
        self.gang, self.calls = gang, []

    def start(self):
        self.calls.append("start")
        return self

    def stop(self):
        self.calls.append("stop")
        return NoSamples({str(d): 1000.0 + d for d in self.gang.devices}, 55.0)


def test_pipeline_job_runs_with_five_gpus_and_records_samples(tmp_path, config, speech, portrait):
    request = make_request(tmp_path, speech, portrait, preset="standard")
    samplers: list[RecordingSampler] = []

    def factory(gang):
        samplers.append(RecordingSampler(gang))
        return samplers[-1]

    seen: list[Progress] = []
    result = LiveAvatarEngine(config, sampler_factory=factory).generate(request, GANG5, seen.append)
    assert result.ok, result.failure
    # Five ranks print bars (the fake torchrun starts five processes, as the real one does):
    # progress is counted on one rank, clip by clip, never five times over.
    planned = result.metrics.clips_planned
    assert [p.clips_done for p in seen] == list(range(1, planned + 1))
    assert samplers[0].calls == ["start", "stop"] and samplers[0].gang == GANG5
    assert result.metrics.peak_memory_mb == {"1": 1001.0, "2": 1002.0, "3": 1003.0, "4": 1004.0, "5": 1005.0}
    assert result.metrics.mean_utilisation == 55.0
    (run,) = launches(tmp_path)
    assert run["launcher"]["nproc_per_node"] == "5" and run["env"]["CUDA_VISIBLE_DEVICES"] == "1,2,3,4,5"
    assert run["launcher"]["tee"] == "2"
    assert "--enable_vae_parallel" in run["script_args"]


@pytest.mark.parametrize(
    ("mode", "kind", "status"),
    [
        ("oom", FailureKind.OUT_OF_MEMORY, 1),
        ("crash", FailureKind.CRASHED, 1),
        # save_video swallows its error; the merge then raises on the missing file: exit 1.
        ("exit0_no_file", FailureKind.NO_OUTPUT, 1),
        # the mux fails inside merge_video_audio's try: swallowed, exit 0 with a silent file.
        ("mux_fails", FailureKind.NO_AUDIO_STREAM, 0),
        ("wrong_duration", FailureKind.WRONG_DURATION, 0),
    ],
)
def test_failure_classification(tmp_path, config, speech, portrait, mode, kind, status):
    request = make_request(tmp_path, speech, portrait)
    result = LiveAvatarEngine(with_env(config, FAKE_LIVEAVATAR_MODE=mode)).generate(request, GANG1)
    assert result.failure is not None and result.failure.kind == kind, result.failure
    assert result.failure.retryable
    assert not request.output.exists() and not partial_output_path(request.output).exists()
    assert result.metrics.exit_status == status
    if mode == "crash":
        assert result.failure.message.startswith("exited with status 1: RuntimeError:")


@pytest.mark.parametrize(
    ("mode", "text"),
    [
        ("compile_unbound", "torch.compile failed at the first DiT forward"),
        ("flash_attn_missing", "FlashAttention is not installed"),
    ],
)
def test_environment_failures_are_not_retried(tmp_path, config, speech, portrait, mode, text):
    """The real program's own failures (preflight bypassed): recognised, with what to change."""
    request = make_request(tmp_path, speech, portrait)
    faulty = dataclasses.replace(with_env(config, FAKE_LIVEAVATAR_MODE=mode), enable_compile=mode == "compile_unbound")
    argv, env = build_command(request, GANG1, get_preset("preview"), faulty, 29651)
    outcome = run_job_process(argv, env, FAKES, request.log_path, 60, 1, TqdmProgress(2))
    failure = classify_exit(outcome.exit_status, outcome.tail, timed_out=False, timeout_s=60, config=config)
    assert failure.kind == FailureKind.ENVIRONMENT and not failure.retryable
    assert text in failure.message
    if mode == "compile_unbound":
        assert "AVATARFLOW_LIVEAVATAR_COMPILE=false" in failure.message


def test_compile_with_scalar_capture_fails_in_inductor_and_is_recognised(tmp_path, config, speech, portrait):
    """The H200 run's second compile failure (TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS=1): not retried."""
    request = make_request(tmp_path, speech, portrait)
    faulty = dataclasses.replace(with_env(config, FAKE_LIVEAVATAR_MODE="compile_unbound",
                                          TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS="1"), enable_compile=True)
    argv, env = build_command(request, GANG1, get_preset("preview"), faulty, 29653)
    outcome = run_job_process(argv, env, FAKES, request.log_path, 60, 1, TqdmProgress(2))
    failure = classify_exit(outcome.exit_status, outcome.tail, timed_out=False, timeout_s=60, config=config)
    assert failure.kind == FailureKind.ENVIRONMENT and not failure.retryable
    assert "GuardOnDataDependentSymNode" in failure.message and "AVATARFLOW_LIVEAVATAR_COMPILE=false" in failure.message


def test_missing_flash_attention_is_refused_before_launch(tmp_path, config, speech, portrait):
    request = make_request(tmp_path, speech, portrait)
    result = LiveAvatarEngine(with_env(config, FAKE_LIVEAVATAR_MODE="flash_attn_missing")).generate(request, GANG1)
    assert result.failure.kind == FailureKind.ENVIRONMENT and "pip install flash-attn" in result.failure.message
    assert launches(tmp_path) == []


def test_compile_on_python_312_is_refused(tmp_path, config, speech, portrait, monkeypatch):
    report = EnvironmentReport((3, 12), True)
    compile_on = dataclasses.replace(config, enable_compile=True)
    assert "torch.compile fails there" in report.problems(compile_on)[0]
    assert report.problems(dataclasses.replace(compile_on, refuse_broken_compile=False)) == []
    # Capturing scalar outputs got past dynamo but not inductor on the H200: the refusal says so.
    assert "TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS=1 does not help" in report.problems(compile_on)[0]
    assert EnvironmentReport((3, 10), True).problems(compile_on) == []


def test_no_ffmpeg_on_the_jobs_path_is_refused(tmp_path, config, speech, portrait):
    """merge_video_audio runs `ffmpeg` from PATH and swallows its failure: refuse, not a silent video."""
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    result = LiveAvatarEngine(with_env(config, PATH=str(bare))).generate(make_request(tmp_path, speech, portrait),
                                                                          GANG1)
    assert result.failure.kind == FailureKind.ENVIRONMENT and "no `ffmpeg` on the PATH" in result.failure.message
    assert launches(tmp_path) == []


@pytest.mark.parametrize(
    ("skip", "names"),
    [
        ("models_t5_umt5-xxl-enc-bf16.pth", "T5 text encoder not found"),
        ("Wan2.1_VAE.pth", "VAE not found"),
        ("config.json", "DiT config not found"),
        ("diffusion_pytorch_model-00003-of-00004.safetensors", "diffusion_pytorch_model-00003-of-00004"),
        ("google/umt5-xxl", "T5 tokenizer not found"),
        ("wav2vec2-large-xlsr-53-english/model.safetensors", "wav2vec2 audio encoder weights not found"),
    ],
)
def test_a_partial_checkpoint_names_the_missing_file(tmp_path, config, speech, portrait, skip, names):
    ckpt = make_checkpoint(tmp_path / "partial/Wan2.2-S2V-14B", skip=(skip,))
    request = make_request(tmp_path, speech, portrait)
    result = LiveAvatarEngine(dataclasses.replace(config, ckpt_dir=ckpt)).generate(request, GANG1)
    assert result.failure.kind == FailureKind.MISSING_WEIGHTS and not result.failure.retryable
    assert names in result.failure.message and SETTING_CKPT_DIR in result.failure.message
    assert launches(tmp_path) == []


@pytest.mark.parametrize("skip", ["config.json", "google/umt5-xxl", "wav2vec2-large-xlsr-53-english"])
def test_the_real_loaders_errors_are_missing_weights_too(tmp_path, config, speech, portrait, skip):
    """diffusers' 'no file named config.json' and transformers' hub-id errors, past our own check."""
    ckpt = make_checkpoint(tmp_path / "partial/Wan2.2-S2V-14B", skip=(skip,))
    request = make_request(tmp_path, speech, portrait)
    argv, env = build_command(request, GANG1, get_preset("preview"), dataclasses.replace(config, ckpt_dir=ckpt),
                              29652)
    outcome = run_job_process(argv, env, FAKES, request.log_path, 60, 1, TqdmProgress(2))
    failure = classify_exit(outcome.exit_status, outcome.tail, timed_out=False, timeout_s=60, config=config)
    assert outcome.exit_status == 1 and failure.kind == FailureKind.MISSING_WEIGHTS, failure


def test_a_preview_of_long_speech_lasts_its_clips(tmp_path, config, media, portrait):
    """Live Avatar caps a preview at 10 clips and its muxer cuts the speech there: 19.08 s of 25 s."""
    long_speech = tmp_path / "speech25s.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media / "audio/musetalk_eng.wav"), "-t", "25",
                    "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(long_speech)], check=True)
    request = make_request(tmp_path, long_speech, portrait, preset="preview")
    result = LiveAvatarEngine(config).generate(request, GANG1)
    assert result.ok, result.failure
    assert result.config["num_clip"] == 10 and result.config["video_seconds"] == pytest.approx(477 / 25)
    info = probe_video(request.output)
    assert info.video_duration_s == pytest.approx(19.08, abs=0.05)
    assert result.metrics.clips_done == 10


def test_the_output_size_follows_the_portrait(tmp_path, config, speech, media):
    wide = tmp_path / "wide.png"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media / "image/liveavatar_kitchen_grandmother.jpg"),
                    "-vf", "scale=1280:720", str(wide)], check=True)
    request = make_request(tmp_path, speech, wide, preset="standard")
    result = LiveAvatarEngine(config).generate(request, GANG1)
    assert result.ok, result.failure
    assert result.config["planned_size"] == [640, 384]  # 688*368 for 16:9 (DESIGN.md)
    assert result.config["verified"]["size"] == [640, 384] and result.config["verified"]["size_as_planned"]


def test_timeout_kills_the_whole_process_group(tmp_path, config, speech, portrait):
    pidfile = tmp_path / "pids.json"
    hang = dataclasses.replace(
        with_env(config, FAKE_LIVEAVATAR_MODE="hang", FAKE_LIVEAVATAR_PIDFILE=str(pidfile)),
        timeout_floor_s=3, timeout_per_video_second_s=0, kill_grace_s=1,
    )
    request = make_request(tmp_path, speech, portrait)
    result = LiveAvatarEngine(hang).generate(request, GANG1)
    assert result.failure.kind == FailureKind.TIMEOUT and result.failure.retryable
    pids = json.loads(pidfile.read_text())
    assert not pid_alive(pids["main"]), "the launched process survived"
    assert not pid_alive(pids["child"]), "a child of the launched process survived"
    assert "killing the process group" in request.log_path.read_text()


def test_nccl_hang_is_recognised_after_the_kill(tmp_path, config, speech, portrait):
    # The time limit leaves room for five rank processes to start on a loaded 2-core machine
    # (3 s was too little there: the job was killed before any rank reached the collective).
    hang = dataclasses.replace(with_env(config, FAKE_LIVEAVATAR_MODE="nccl_hang"),
                               timeout_floor_s=10, timeout_per_video_second_s=0, kill_grace_s=1)
    result = LiveAvatarEngine(hang).generate(make_request(tmp_path, speech, portrait), GANG5)
    assert result.failure.kind == FailureKind.NCCL_HANG and result.failure.retryable
    assert "Watchdog caught collective operation timeout" in result.failure.message


@pytest.mark.parametrize(
    ("edit", "kind", "text"),
    [
        ({"--size": "1280*720"}, FailureKind.CONFIG_REJECTED, "expanded size of the tensor (2800)"),
        ({"--sample_solver": "unipc"}, FailureKind.CONFIG_REJECTED, "only sample_solver euler works"),
        ({"--sample_steps": "5"}, FailureKind.CONFIG_REJECTED, "sample_steps must be 4"),
        ({"--ckpt_dir": "/nonexistent/Wan2.2-S2V-14B"}, FailureKind.MISSING_WEIGHTS, "models_t5_umt5"),
        ({"--lora_path_dmd": "/nonexistent/liveavatar.safetensors"}, FailureKind.MISSING_WEIGHTS, "liveavatar.safetensors"),
    ],
)
def test_engine_side_rejections_are_classified(tmp_path, config, speech, portrait, edit, kind, text):
    """What the real engine says when a bad configuration gets past us (an old checkout, a hand-made command)."""
    request = make_request(tmp_path, speech, portrait)
    argv, env = build_command(request, GANG1, get_preset("preview"), config, 29650)
    for flag, value in edit.items():
        argv[argv.index(flag) + 1] = value
    outcome = run_job_process(argv, env, FAKES, request.log_path, 60, 1, TqdmProgress(2))
    failure = classify_exit(outcome.exit_status, outcome.tail, timed_out=outcome.timed_out, timeout_s=60,
                            config=config)
    assert outcome.exit_status != 0
    assert failure is not None and failure.kind == kind and text in failure.message


def test_classification_of_log_texts():
    oom = "Traceback...\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert classify_exit(1, oom, timed_out=False, timeout_s=9).kind == FailureKind.OUT_OF_MEMORY
    nccl = "[E ProcessGroupNCCL.cpp:1316] NCCL error: unhandled system error, NCCL version 2.20.5"
    assert classify_exit(1, nccl, timed_out=False, timeout_s=9).kind == FailureKind.NCCL_HANG
    assert classify_exit(-9, "nothing useful", timed_out=False, timeout_s=9).kind == FailureKind.CRASHED
    # torchrun's summary of a failed child must not hide the child's own error.
    torchrun_tail = ("ValueError: bad latent shape\n[rank0]: more\n"
                     "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n  exitcode  : 1 (pid: 7)")
    assert classify_exit(1, torchrun_tail, timed_out=False, timeout_s=9).message == (
        "exited with status 1: ValueError: bad latent shape")
    missing_tool = "FileNotFoundError: [Errno 2] No such file or directory: 'ffprobe'"
    assert classify_exit(1, missing_tool, timed_out=False, timeout_s=9).kind == FailureKind.CRASHED
    assert classify_exit(None, "", timed_out=True, timeout_s=9).kind == FailureKind.TIMEOUT
    assert classify_exit(0, "", timed_out=False, timeout_s=9) is None
    # OOM on one rank outranks the NCCL errors it causes on the others.
    assert classify_exit(1, nccl + "\n" + oom, timed_out=False, timeout_s=9).kind == FailureKind.OUT_OF_MEMORY


def test_ranks_that_escape_the_process_group_are_killed_too(tmp_path):
    """torchrun starts ranks in sessions of their own and waits 30 s for ones ignoring SIGTERM."""
    pidfile = tmp_path / "rank.pid"
    launcher = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "rank = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
         "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'], start_new_session=True)\n"
         f"open({str(pidfile)!r}, 'w').write(str(rank.pid))\n"
         "time.sleep(300)\n"],
        start_new_session=True)
    tree = ProcessTree(launcher.pid, interval_s=0.1)
    while not pidfile.exists() or not pidfile.read_text():
        threading.Event().wait(0.05)
    rank = int(pidfile.read_text())
    tree.refresh()
    kill_process_group(launcher, grace_s=0.5)
    assert not pid_alive(launcher.pid) and not pid_alive(rank)
    assert kill_survivors(tree, 0.5) == []


def test_ranks_orphaned_by_a_dead_torchrun_are_found_and_killed(tmp_path):
    pidfile = tmp_path / "rank.pid"
    launcher = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "rank = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True)\n"
         f"open({str(pidfile)!r}, 'w').write(str(rank.pid))\n"
         "time.sleep(300)\n"])
    tree = ProcessTree(launcher.pid, interval_s=0.1)
    while not pidfile.exists() or not pidfile.read_text():
        threading.Event().wait(0.05)
    rank = int(pidfile.read_text())
    tree.refresh()
    launcher.kill()  # torchrun dies; its rank, in a session of its own, lives on as an orphan
    launcher.wait()
    assert pid_alive(rank)
    assert kill_survivors(tree, 0.5) == [rank]
    assert not pid_alive(rank)


def test_a_rank_killed_by_a_signal_is_worker_death():
    tail = ("torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
            "  exitcode  : -9 (pid: 25324)\n  traceback : Signal 9 (SIGKILL) received by PID 25324")
    failure = classify_exit(1, tail, timed_out=False, timeout_s=9)
    assert failure.kind == FailureKind.WORKER_DIED and failure.retryable and "signal 9" in failure.message
