"""The memory planner against the published figures, and the `plan` command."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from flows import cli_plan
from flows.cli_plan import gpus_command, plan_command
from inference.gpus import GpuInventory, parse_gpu_spec
from inference.liveavatar_facts import PUBLISHED_ONE_GPU_BF16_GB, PUBLISHED_PIPELINE_RANK_FP8_GB
from inference.planner import (
    estimate_speed,
    fsdp_rank_memory,
    kv_cache_bytes,
    kv_cache_gb,
    nothing_fits_explanation,
    pipeline_rank_memory,
    plan,
    single_gpu_memory,
    tokens_per_frame,
)
from inference.presets import get_preset


def row(rows, preset, topology, precision):
    wanted = (preset, topology, precision)
    [found] = [r for r in rows if (r.preset, r.topology, r.precision) == wanted]
    return found


def test_kv_cache_formula_gives_10_4_gb_at_704x384():
    assert tokens_per_frame("704*384") == 44 * 24
    assert kv_cache_bytes("704*384") == 40 * 2 * 12 * 1056 * 40 * 128 * 2
    assert kv_cache_gb("704*384") == pytest.approx(10.4, abs=0.05)


def test_one_gpu_bf16_matches_the_published_80gb_within_10_percent():
    predicted = single_gpu_memory("704*384", "bf16").total_gb
    assert predicted == pytest.approx(PUBLISHED_ONE_GPU_BF16_GB, rel=0.10)


def test_pipeline_rank_fp8_matches_the_published_45gb_within_10_percent():
    predicted = pipeline_rank_memory("704*384", "fp8").total_gb
    assert predicted == pytest.approx(PUBLISHED_PIPELINE_RANK_FP8_GB, rel=0.10)


def test_memory_grows_with_size_and_shrinks_with_fp8():
    assert single_gpu_memory("384*256").total_gb < single_gpu_memory("720*400").total_gb
    assert (single_gpu_memory("704*384", "bf16").total_gb
            - single_gpu_memory("704*384", "fp8").total_gb) == pytest.approx(17.0)


def test_5x24gb_cannot_run_and_the_plan_says_why():
    gpus = parse_gpu_spec("5x24GB")
    rows = plan(gpus)
    assert rows and not any(r.fits for r in rows)
    # Even the most favourable row (smallest preset, fp8 pipeline) needs more than a 24 GB card.
    best = row(rows, "preview", "pipeline", "fp8")
    assert best.peak_gb > best.capacity_gb
    assert "more than the 25.8 GB a GPU has" in best.reason
    # FSDP (comparison only) runs out too: shard + unshard peak + the replicated T5.
    fsdp = row(rows, "preview", "fsdp", "bf16")
    assert not fsdp.fits and fsdp.peak_gb > fsdp.capacity_gb
    line = nothing_fits_explanation(rows, gpus)
    assert line and "24 GB cards cannot run Live Avatar in any topology" in line


def test_1xh100_fits_the_single_gpu_mode_in_every_preset():
    rows = plan(parse_gpu_spec("1xH100-80GB"))
    for preset in ("preview", "standard", "long"):
        single = row(rows, preset, "single", "bf16")
        assert single.fits, single.reason
        assert single.speed is not None and single.speed.basis == "assumption"
        pipeline = row(rows, preset, "pipeline", "fp8")
        assert not pipeline.fits and "5 GPUs (have 1)" in pipeline.remedies
    assert nothing_fits_explanation(rows, parse_gpu_spec("1xH100-80GB")) is None


def test_5xl40s_runs_the_pipeline_only_with_fp8_and_says_so():
    rows = plan(parse_gpu_spec("5xL40S-48GB"))
    assert row(rows, "standard", "pipeline", "fp8").fits
    bf16 = row(rows, "standard", "pipeline", "bf16")
    assert not bf16.fits
    assert any(r.startswith("fp8 (--fp8)") for r in bf16.remedies)
    single = row(rows, "standard", "single", "bf16")
    assert not single.fits and any("80 GB card" in r for r in single.remedies)


def test_fp8_on_a100_is_refused_and_bf16_offered():
    rows = plan(parse_gpu_spec("1xA100-80GB"))
    assert row(rows, "standard", "single", "bf16").fits
    fp8 = row(rows, "standard", "single", "fp8")
    assert not fp8.fits and "8.9" in fp8.reason
    assert any(r.startswith("bf16 (drop --fp8)") for r in fp8.remedies)


def test_only_80gb_class_cards_run_one_gpu_even_when_the_memory_model_would_fit():
    # A hypothetical 64 GB card holds the fp8 preview config, but one GPU must have ≥ 80 GB.
    preview = row(plan(parse_gpu_spec("1x64GB")), "preview", "single", "fp8")
    assert preview.peak_gb < preview.capacity_gb and not preview.fits


def test_fsdp_is_comparison_only_even_where_it_would_fit():
    rows = plan(parse_gpu_spec("5xH100-80GB"))
    fsdp = row(rows, "standard", "fsdp", "bf16")
    assert fsdp.peak_gb < fsdp.capacity_gb and not fsdp.fits
    assert "comparison" in fsdp.topology_label
    parts = fsdp_rank_memory("704*384", 5).parts
    assert parts["unshard peak"] > 0 and parts["DiT shard (bf16, 1/5)"] == pytest.approx(34 / 5)


def test_speed_is_the_published_figure_only_for_5xh800_at_720x400():
    published = estimate_speed("pipeline", parse_gpu_spec("5xH800"), "720*400")
    assert published is not None and published.basis == "published" and published.fps == 20.0
    assert published.minutes_per_video_minute == pytest.approx(1.25)
    derived = estimate_speed("pipeline", parse_gpu_spec("5xL40S"), "688*368")
    assert derived is not None and derived.basis == "derived" and derived.fps < 20
    assert estimate_speed("single", parse_gpu_spec("1x80GB"), "688*368") is None  # unknown card


def test_rows_cover_every_preset_topology_and_precision():
    rows = plan(parse_gpu_spec("5xH100-80GB"), [get_preset("standard")])
    assert {(r.topology, r.precision) for r in rows} == {
        ("single", "bf16"), ("single", "fp8"), ("pipeline", "bf16"), ("pipeline", "fp8"),
        ("fsdp", "bf16")}
    assert plan([]) == []


# --- the command -----------------------------------------------------------------------------


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("plan")(plan_command)
    app.command("gpus")(gpus_command)
    return app


def invoke(app, *args):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result, " ".join(result.output.split())


def test_plan_5x24gb_explains_why_nothing_runs(app):
    result, text = invoke(app, "plan", "--gpus", "5x24GB")
    assert result.exit_code == 0, result.output
    assert "5 × generic 24 GB GPU" in text
    assert "preset standard" in text and "FSDP over 5" in text
    assert "24 GB cards cannot run Live Avatar in any topology" in text
    assert " yes " not in text


def test_plan_1xh100_shows_the_single_gpu_mode_fitting(app):
    result, text = invoke(app, "plan", "--gpus", "1xH100-80GB", "--preset", "standard")
    assert result.exit_code == 0, result.output
    assert "1 GPU, offload" in text and " yes " in text
    assert "preset preview" not in text
    assert "min (assumption)" in text and "arXiv:2512.04677" in text
    assert "Nothing fits" not in text


def test_plan_rejects_a_spec_it_cannot_read(app):
    result, text = invoke(app, "plan", "--gpus", "3xFoo")
    assert result.exit_code == 2
    assert "unknown GPU model" in text


def test_plan_without_gpus_uses_this_hosts_inventory(app, monkeypatch):
    monkeypatch.setattr(cli_plan, "inventory",
                        lambda: GpuInventory(parse_gpu_spec("5xL40S-48GB"), "nvidia-smi"))
    result, text = invoke(app, "plan", "--preset", "preview")
    assert result.exit_code == 0, result.output
    assert "this host, via nvidia-smi" in text and " yes " in text

    monkeypatch.setattr(cli_plan, "inventory", lambda: GpuInventory([], "none", "no driver here"))
    result, text = invoke(app, "plan")
    assert result.exit_code == 1
    assert "no driver here" in text and "--gpus 1xH100-80GB" in text


def test_gpus_lists_the_inventory(app, monkeypatch):
    monkeypatch.setattr(cli_plan, "inventory",
                        lambda: GpuInventory(parse_gpu_spec("1xH100-80GB"), "nvml"))
    result, text = invoke(app, "gpus")
    assert result.exit_code == 0, result.output
    assert "NVIDIA H100 80GB" in text and "81559" in text and "9.0" in text


# Peaks measured on one H200 with the real program (random weights; benchmarks/gpu/results/
# h200-2026-12-01): avatarflow's 512×512 crop, one GPU, offload on.
MEASURED_H200_GB = {("standard", "bf16"): 68.99, ("preview", "bf16"): 49.12, ("preview", "fp8"): 37.97}


@pytest.mark.parametrize(("preset", "precision"), sorted(MEASURED_H200_GB))
def test_the_plan_agrees_with_the_h200_measurements_within_10_percent(preset, precision):
    rows = plan(parse_gpu_spec("1xH200-141GB"))
    predicted = row(rows, preset, "single", precision).peak_gb
    measured = MEASURED_H200_GB[(preset, precision)]
    assert abs(predicted - measured) / measured < 0.10


def test_tokens_come_from_the_video_the_portrait_gives():
    # 688*368 as a frame of its own shape: 43 × 23 tokens; a 512×512 crop makes 448×448: 28 × 28.
    assert tokens_per_frame("688*368") == 43 * 23
    assert tokens_per_frame("688*368", (512, 512)) == 28 * 28
    assert tokens_per_frame("384*256", (512, 512)) == 16 * 16


def test_fp8_at_small_sizes_peaks_while_loading_the_bf16_dit():
    small = single_gpu_memory("384*256", "fp8", (512, 512))
    assert small.peak_phase.startswith("loading") and small.total_gb > small.denoising_gb
    large = single_gpu_memory("688*368", "fp8", (512, 512))
    assert large.peak_phase == "denoising"
    assert single_gpu_memory("384*256", "bf16", (512, 512)).peak_phase == "denoising"
