"""The GPU acceptance harness (benchmarks/gpu/acceptance.py) runs end to end — against the FAKE
Live Avatar here, so the harness itself cannot rot between GPU sessions."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.liveavatar.fake_layout import make_checkpoint, make_lora

ROOT = Path(__file__).resolve().parents[2]
FAKES = ROOT / "tests/fakes/liveavatar"


def _harness():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", ROOT / "benchmarks/gpu/acceptance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def inputs(tmp_path, media) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media / "image/liveavatar_man.png"), "-vf",
                    "crop=512:512", str(folder / "portrait_512.png")], check=True)
    for name, seconds in (("speech_6s.wav", 6), ("speech_25s.wav", 25)):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media / "audio/musetalk_eng.wav"), "-t",
                        str(seconds), "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(folder / name)],
                       check=True)
    return folder


def test_the_harness_records_each_job(tmp_path, inputs, monkeypatch):
    weights = tmp_path / "weights"
    make_checkpoint(weights / "Wan2.2-S2V-14B")
    make_lora(weights / "liveavatar.safetensors")
    monkeypatch.setenv("PYTHONPATH", str(FAKES / "fake_env"))  # the fake environment's flash_attn
    harness = _harness()
    work = tmp_path / "work"
    argv = ["--liveavatar", str(FAKES), "--weights", str(weights), "--inputs", str(inputs), "--work", str(work),
            "--torchrun", str(FAKES / "torchrun"),
            "--runs", "perjob-preview-25s-bf16,missing-weights,probe-no-flash-attn"]
    assert harness.main(argv) == 0
    records = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
    preview, preflight, loader, probe = records
    assert preview["ok"] and preview["config"]["num_clip"] == 10
    assert preview["config"]["verified"]["duration_s"] == pytest.approx(19.08, abs=0.3)
    assert preview["planner_gb"] > 40 and preview["metrics"]["clips_done"] == 10
    assert preflight["failure"]["kind"] == "missing_weights" and "Wan2.1_VAE.pth" in preflight["failure"]["message"]
    assert loader["failure"]["kind"] == "missing_weights" and loader["stage"].startswith("real loader")
    assert (weights / "Wan2.2-S2V-14B/Wan2.1_VAE.pth").exists(), "the harness puts the weight file back"
    assert probe["failure"]["kind"] == "environment"
    # A second invocation resumes: nothing is run again.
    assert harness.main(argv) == 0
    assert len((work / "results.jsonl").read_text().splitlines()) == 4


def test_the_pipeline_runs_of_the_harness(tmp_path, inputs, monkeypatch):
    """The 5-GPU runs, ready for a machine with 5+ GPUs: a job, and a denoising rank killed mid-job."""
    weights = tmp_path / "weights"
    make_checkpoint(weights / "Wan2.2-S2V-14B")
    make_lora(weights / "liveavatar.safetensors")
    monkeypatch.setenv("PYTHONPATH", str(FAKES / "fake_env"))
    monkeypatch.setenv("FAKE_LIVEAVATAR_STEP_SECONDS", "0.02")  # ranks still running when one is killed
    harness = _harness()
    work = tmp_path / "work"
    assert harness.main(["--liveavatar", str(FAKES), "--weights", str(weights), "--inputs", str(inputs),
                         "--work", str(work), "--torchrun", str(FAKES / "torchrun"),
                         "--runs", "pipeline-384x256-bf16,pipeline-kill-a-denoising-rank"]) == 0
    job, killed = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
    assert job["ok"] and job["gang"] == "gang0-4" and job["metrics"]["clips_done"] == 10
    assert job["fps_total"] > 0 and job["planner_gb"] < 60  # a pipeline rank's prediction
    assert killed["killed"]["pid"] and killed["failure"]["kind"] in ("worker_died", "nccl_hang")
    assert killed["processes_left"] == []


def test_the_packed_run_of_the_harness(tmp_path, inputs, monkeypatch):
    """Two warm workers on one GPU ("0x2"): three phases, each job on its own gang, loaded once each."""
    weights = tmp_path / "weights"
    make_checkpoint(weights / "Wan2.2-S2V-14B")
    make_lora(weights / "liveavatar.safetensors")
    monkeypatch.setenv("PYTHONPATH", str(FAKES / "fake_env"))
    harness = _harness()
    work = tmp_path / "work"
    assert harness.main(["--liveavatar", str(FAKES), "--weights", str(weights), "--inputs", str(inputs),
                         "--work", str(work), "--torchrun", str(FAKES / "torchrun"),
                         "--runs", "packed-two-previews", "--warm-backend", "fake"]) == 0
    records = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
    phases = [r for r in records if "phase" in r and "jobs" in r]
    jobs = [r for r in records if "jobs" not in r]
    assert [(p["phase"], p["jobs"]) for p in phases] == [("pair-with-loads", 2), ("one-alone-warm", 1),
                                                          ("pair-warm", 2)]
    assert all(j["ok"] for j in jobs) and len(jobs) == 5, [j.get("failure") or j.get("harness_error") for j in jobs]
    assert sorted(j["gang"] for j in jobs) == ["gang0.1"] * 3 + ["gang0.2"] * 2
    assert {j["worker_starts"] for j in jobs} == {1}  # each worker loaded once for all its jobs
