"""The memory planner against the published figures, and the `plan` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flows import cli_plan
from flows.cli_plan import gpus_command, plan_command
from inference import measured_speed
from inference.gpus import GpuInventory, parse_gpu_spec
from inference.liveavatar_facts import PUBLISHED_ONE_GPU_BF16_GB, PUBLISHED_PIPELINE_RANK_FP8_GB
from inference.planner import (
    best_row,
    estimate_speed,
    fsdp_rank_memory,
    kv_cache_bytes,
    kv_cache_gb,
    nothing_fits_explanation,
    pipeline_rank_memory,
    plan,
    preset_video_seconds,
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
        # No H100 run was measured: the H200's (same datasheet TFLOPS) stands in, scaled.
        assert single.speed is not None and single.speed.basis == "scaled"
        assert single.speed.label.startswith("scaled from H200 measurement")
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
    assert result.exit_code == 1, result.output  # nothing fits
    assert "5 × generic 24 GB GPU" in text
    assert "standard" in text and "FSDP over 5" in text
    assert "24 GB cards cannot run Live Avatar in any topology" in text
    assert " yes " not in text


def test_plan_1xh100_shows_the_single_gpu_mode_fitting(app):
    result, text = invoke(app, "plan", "--gpus", "1xH100-80GB", "--preset", "standard")
    assert result.exit_code == 0, result.output
    assert "1 GPU, offload" in text and text.startswith("Fits: standard")
    assert "preview" not in text
    assert "scaled from H200 measurement (bf16, 688*368, compile off, warm)" in text
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
    assert "this host, via nvidia-smi" in text and text.startswith("Fits:")

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


# --- speed: the measured table and what the planner makes of it --------------------------------

REPO = Path(__file__).resolve().parents[2]
RESULTS = sorted((REPO / "benchmarks" / "gpu" / "results").glob("*/results.jsonl"))


def test_the_shipped_speed_table_is_what_the_gpu_results_files_say():
    assert RESULTS, "benchmarks/gpu/results/*/results.jsonl not found"
    recomputed = measured_speed.from_results(RESULTS, root=REPO)
    assert recomputed == measured_speed.MEASURED, (
        "inference/measured_speed.py's MEASURED differs from benchmarks/gpu/results; paste the "
        "output of `python -m inference.measured_speed`:\n" + measured_speed.table_source(recomputed))


def test_the_standard_warm_figure_by_hand_from_its_record():
    # Independently of from_results: the warm standard job of the second session, load excluded.
    path = REPO / "benchmarks/gpu/results/h200-2026-12-01-b/results.jsonl"
    [record] = [r for r in map(json.loads, path.read_text().splitlines())
                if r["engine"] == "liveavatar-warm" and r["ok"] and r["job"]["preset"] == "standard"]
    entry = measured_speed.find("H200", "688*368", "bf16", False, "warm")
    assert entry is not None and entry.sources == ("benchmarks/gpu/results/h200-2026-12-01-b/results.jsonl",)
    video, total = record["config"]["video_seconds"], record["metrics"]["total_seconds"]
    assert entry.load_excluded == pytest.approx(total / video, abs=1e-3)
    assert entry.load_included == pytest.approx((total + record["metrics"]["load_seconds"]) / video, abs=1e-3)
    assert entry.date == "2026-12-01" and entry.settings == "bf16, 688*368, compile off, warm"


def test_packed_pairs_superseded_and_failed_records_do_not_count():
    packed = REPO / "benchmarks/gpu/results/h200-2026-12-01-c/results.jsonl"
    [alone] = measured_speed.from_results([packed], root=REPO)
    assert alone.runs == 1 and alone.mode == "warm"  # "one-alone-warm" only, not the pairs
    first = REPO / "benchmarks/gpu/results/h200-2026-12-01/results.jsonl"
    # The first session's warm records are all superseded or failed: only per-job figures remain.
    assert {e.mode for e in measured_speed.from_results([first], root=REPO)} == {"per-job"}


def test_one_h200_uses_the_measurement_not_the_assumption():
    h200 = parse_gpu_spec("1xH200-141GB")
    speed = estimate_speed("single", h200, "688*368", "bf16", online_decode=False)
    assert speed is not None and speed.basis == "measured"
    assert speed.label == "measured on H200 (bf16, 688*368, compile off, warm)"
    assert speed.minutes_per_video_minute == pytest.approx(8.175, abs=0.01)
    assert speed.per_job_minutes == pytest.approx(12.866, abs=0.01)
    assert "h200-2026-12-01-b/results.jsonl" in speed.source
    # The old assumption (¼ of the published pipeline rate) said about half of that.
    assumed = estimate_speed("single", parse_gpu_spec("1xH800"), "688*368")
    assert assumed is not None and assumed.minutes_per_video_minute > 8  # H800 now scales the H200 run


def test_other_gpus_scale_the_h200_measurement_by_tflops_and_say_so():
    a100 = estimate_speed("single", parse_gpu_spec("1xA100-80GB"), "688*368", "bf16", False)
    assert a100 is not None and a100.basis == "scaled"
    assert a100.minutes_per_video_minute == pytest.approx(8.175 * 989 / 312, rel=1e-3)
    assert "scaled from H200 measurement" in a100.label and "A100 312" in a100.label


def test_stand_ins_for_unmeasured_settings_are_labelled():
    h200 = parse_gpu_spec("1xH200-141GB")
    fp8 = estimate_speed("single", h200, "688*368", "fp8", online_decode=False)
    assert fp8 is not None and fp8.caveats == ("fp8 not measured, assumed no faster than bf16",)
    long = estimate_speed("single", h200, "688*368", "bf16", online_decode=True)
    assert long is not None and "online decode not measured" in long.short
    measured_fp8 = estimate_speed("single", h200, "384*256", "fp8", online_decode=True)
    assert measured_fp8 is not None and measured_fp8.caveats == ()
    assert measured_fp8.label == "measured on H200 (fp8, 384*256, compile off, per-job)"
    # The pipeline was never measured: the published figure, labelled as not measured.
    pipeline = estimate_speed("pipeline", parse_gpu_spec("5xH100-80GB"), "688*368", "bf16")
    assert pipeline is not None and pipeline.basis == "derived" and "not measured" in pipeline.label


def test_every_row_that_does_not_fit_says_why():
    for spec in ("5x24GB", "1xL40S-48GB", "5xL40S-48GB", "1xA100-80GB", "1x64GB", "1xH200-141GB"):
        for r in plan(parse_gpu_spec(spec)):
            assert r.fits or (r.problems and r.reason and r.reason != "does not fit"), (spec, r)


def test_an_l40s_that_holds_the_fp8_preview_is_refused_by_the_80gb_rule_and_says_so():
    preview = row(plan(parse_gpu_spec("1xL40S-48GB")), "preview", "single", "fp8")
    assert not preview.fits and preview.peak_gb < preview.capacity_gb
    assert [kind for kind, _ in preview.problems] == ["single-80GB"]
    assert preview.reason.startswith("the single-GPU mode needs an 80 GB card")
    assert "38.0 GB estimate is below this 48.3 GB card" in preview.reason


def test_the_best_row_is_the_largest_size_then_the_fastest():
    best = best_row(plan(parse_gpu_spec("1xH200-141GB")))
    assert best is not None and (best.preset, best.topology, best.precision) == ("standard", "single", "bf16")
    pipeline = best_row(plan(parse_gpu_spec("5xL40S-48GB")))
    assert pipeline is not None and (pipeline.preset, pipeline.topology, pipeline.precision) == (
        "standard", "pipeline", "fp8")
    assert best_row(plan(parse_gpu_spec("5x24GB"))) is None


def test_a_capped_preset_has_a_longest_video():
    assert preset_video_seconds(get_preset("preview")) == pytest.approx(19.08)
    assert preset_video_seconds(get_preset("standard")) is None
