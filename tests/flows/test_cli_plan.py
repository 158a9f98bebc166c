"""`avatarflow plan` and `avatarflow gpus` as an operator reads them: the verdict first, a table an
operator need not scroll, a reason on every "no", measured times labelled, and exit statuses."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows import cli_plan
from flows.cli import app
from inference.gpus import GpuInventory, parse_gpu_spec

pytestmark = pytest.mark.unit


def invoke(*args: str, columns: int = 80):
    """The command at a narrow terminal's width (80 columns) unless told otherwise."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result, lines, " ".join(result.output.split())


@pytest.fixture
def no_gpus(monkeypatch):
    monkeypatch.setattr(cli_plan, "inventory", lambda: GpuInventory([], "none", "no driver here"))
    monkeypatch.setattr(cli_plan, "_print_gang_workers", lambda: None)  # no database in this tier


def test_5x24gb_leads_with_the_verdict_stays_short_and_exits_1():
    result, lines, text = invoke("plan", "--gpus", "5x24GB")
    assert result.exit_code == 1, result.output
    assert lines[0].startswith("Nothing fits: 24 GB cards cannot run Live Avatar in any topology")
    assert len(result.output.splitlines()) < 40, result.output
    # One line per topology and reason, each naming what it needs against the 25.8 GB a card has.
    assert "1 GPU, offload, bf16 (preview, standard, long): needs 48.0–69.5 GB on the GPU" in text
    assert "FSDP over 5" in text and "Would fit with: one 80 GB card" in text
    assert "yes" not in text


def test_all_lists_every_option_with_what_would_make_it_fit():
    short, _, _ = invoke("plan", "--gpus", "5x24GB", columns=200)
    result, lines, text = invoke("plan", "--gpus", "5x24GB", "--all", columns=200)
    assert result.exit_code == 1
    assert lines[0].startswith("Nothing fits")
    assert "preset standard (688*368)" in text and "would fit with:" in text
    assert len(result.output.splitlines()) > len(short.output.splitlines())


def test_one_h200_fits_and_its_time_is_labelled_measured():
    result, lines, text = invoke("plan", "--gpus", "1xH200-141GB", columns=200)
    assert result.exit_code == 0, result.output
    assert lines[0].startswith("Fits: standard (688*368) on 1 GPU, offload, bf16")
    assert ("≈ 8.2 min per minute of video, measured on H200 (bf16, 688*368, compile off, warm)"
            in lines[0])
    assert "6 of 12 options fit" in text
    # Each time points at its source: the results file it was measured in, the per-job figure.
    assert "benchmarks/gpu/results/h200-2026-12-01-b/results.jsonl" in text
    assert "per-job (the model loaded for every video): ≈ 12.9 min per minute" in text
    assert "fp8 not measured, assumed no faster than bf16" in text
    assert "≤ 19.1 s: 4.0 min" in text  # the preview preset's capped video, as a whole
    assert "5 GPUs: 4 DiT + 1 VAE, bf16 and fp8 (preview, standard, long): needs 5 GPU(s); 1 given" in text


def test_other_gpus_say_their_time_is_scaled_from_the_h200():
    result, lines, _ = invoke("plan", "--gpus", "1xA100-80GB", columns=200)
    assert result.exit_code == 0
    assert "scaled from H200 measurement (bf16, 688*368, compile off, warm)" in lines[0]


def test_the_l40s_fp8_no_row_carries_its_reason():
    result, _, text = invoke("plan", "--gpus", "1xL40S-48GB", columns=200)
    assert result.exit_code == 1
    assert ("1 GPU, offload, bf16 and fp8 (preview): the single-GPU mode needs an 80 GB card" in text)
    assert "the 38.0–48.0 GB estimate is below this 48.3 GB card" in text
    # And in the full table, beside the row itself.
    result, _, text = invoke("plan", "--gpus", "1xL40S-48GB", "--all", columns=250)
    fp8_row = next(line for line in result.output.splitlines()
                   if "1 GPU, offload" in line and " fp8 " in line and "38.0 GB" in line)
    assert "the single-GPU mode needs an 80 GB card" in fp8_row


def test_no_gpus_shows_the_presets_and_how_to_ask_about_hypothetical_ones(no_gpus):
    result, lines, text = invoke("plan", columns=200)
    assert result.exit_code == 1
    assert lines[0].startswith("No GPUs on this host: no driver here")
    assert "plan --gpus 1xH100-80GB" in text
    for name, size in (("preview", "384*256"), ("standard", "688*368"), ("long", "688*368")):
        assert any(name in line and size in line for line in lines), name
    assert "≤ 10 clips (19.1 s)" in text and "48.0 / 38.0 GB" in text


def test_gpus_without_gpus_exits_1_with_a_hint(no_gpus):
    result, lines, text = invoke("gpus", columns=200)
    assert result.exit_code == 1
    assert lines[0].startswith("No GPUs on this host: no driver here")
    assert "nvidia-smi" in text and "plan --gpus 1xH100-80GB" in text


def test_the_host_inventory_is_planned_when_there_is_one(monkeypatch):
    monkeypatch.setattr(cli_plan, "inventory",
                        lambda: GpuInventory(parse_gpu_spec("1xH200-141GB"), "nvml"))
    result, lines, text = invoke("plan", "--preset", "standard", columns=200)
    assert result.exit_code == 0
    assert lines[0].startswith("Fits: standard") and "this host, via nvml" in text
    assert "preview" not in text


def test_help_documents_the_exit_status():
    result = CliRunner().invoke(app, ["plan", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    assert "1 when nothing fits" in text and "--all" in text and "presets are printed" in text
