"""Validation refuses what Live Avatar would crash on or silently mishandle, and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatarflow.errors import AvatarflowError, ConfigurationError
from inference.engine import GenerationRequest
from inference.gpus import parse_gpu_spec
from inference.presets import PRESETS, get_preset
from inference.validation import (
    VALID_SIZES,
    ConfigRejected,
    Problem,
    check_or_raise,
    effective_settings,
    errors_in,
    raise_for,
    validate,
    validate_request,
)

H100 = parse_gpu_spec("1xH100-80GB")


def only_error(problems: list[Problem], setting: str) -> Problem:
    errors = errors_in(problems)
    assert [p.setting for p in errors] == [setting], errors
    return errors[0]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_on_one_h100_and_on_five_l40s_with_fp8(name):
    assert validate(name, H100) == []
    assert validate(name, parse_gpu_spec("5xL40S-48GB"), {"fp8": True}) == []


def test_three_steps_is_refused_and_the_advice_named():
    problem = only_error(validate("standard", None, {"sample_steps": 3}), "sample_steps")
    assert problem.value == 3
    assert "exactly 4" in problem.reason and "deadlocks" in problem.reason
    assert "'3 steps' advice" in problem.reason


@pytest.mark.parametrize("steps", [1, 5, 8, 50, "4"])
def test_any_step_count_but_four_is_refused(steps):
    only_error(validate("standard", None, {"sample_steps": steps}), "sample_steps")


@pytest.mark.parametrize("solver", ["dpm++", "unipc"])
def test_other_solvers_are_refused_because_argparse_accepts_them_then_raises(solver):
    # The command-line spelling of the override works too.
    problem = only_error(validate("standard", None, {"sample_solver": solver}), "solver")
    assert problem.value == solver
    assert "only 'euler'" in problem.reason and "then raises" in problem.reason


@pytest.mark.parametrize("frames, words", [(32, "'--infer_frames 32' advice is wrong"),
                                            (80, "argparse default and leaves blank frames")])
def test_infer_frames_not_a_multiple_of_12_is_refused_with_the_trained_value(frames, words):
    problem = only_error(validate("standard", None, {"infer_frames": frames}), "infer_frames")
    assert "multiple of 12" in problem.reason and "48 is the trained value" in problem.reason
    assert words in problem.reason


@pytest.mark.parametrize("frames", [24, 36, 96])
def test_other_multiples_of_12_pass_with_a_warning_that_48_is_trained(frames):
    problems = validate("standard", None, {"infer_frames": frames})
    assert errors_in(problems) == []
    assert [p.severity for p in problems] == ["warning"]
    assert "48 is the value the model was trained with" in problems[0].reason
    raise_for(problems)  # warnings alone never raise


def test_size_above_720x400_is_refused_with_the_crash_it_would_cause():
    problem = only_error(validate("standard", None, {"size": "1280*720"}), "size")
    assert "921600" in problem.reason and "288000" in problem.reason
    assert "expanded size of the tensor (3000)" in problem.reason


@pytest.mark.parametrize("size", ["640*360", "1280x720", "big"])
def test_sizes_outside_the_supported_list_are_refused(size):
    problem = only_error(validate("standard", None, {"size": size}), "size")
    assert all(valid in problem.reason for valid in VALID_SIZES)


@pytest.mark.parametrize("size", VALID_SIZES)
def test_the_four_supported_sizes_pass(size):
    assert validate("standard", H100, {"size": size}) == []


@pytest.mark.parametrize("count", [2, 3, 4])
def test_two_to_four_gpus_are_refused(count):
    problems = validate("standard", parse_gpu_spec(f"{count}xH100-80GB"))
    problem = only_error(problems, "gpus")
    assert problem.value == count and f"gpus={count}" in str(problem)
    assert "2–4 GPUs are not supported" in problem.reason and "exactly 5" in problem.reason


def test_six_gpus_are_refused_and_told_to_split_into_gangs():
    problem = only_error(validate("standard", parse_gpu_spec("6xH100-80GB")), "gpus")
    assert "gangs of 1 or 5" in problem.reason


def test_fp8_on_an_a100_is_refused_for_its_compute_capability():
    problem = only_error(validate("standard", parse_gpu_spec("1xA100-80GB"), {"fp8": True}), "fp8")
    assert "8.9" in problem.reason and "8.0" in problem.reason
    # The same card without fp8 is fine: one ≥ 80 GB GPU.
    assert validate("standard", parse_gpu_spec("1xA100-80GB")) == []


def test_fp8_on_a_card_of_unknown_capability_is_a_warning():
    problems = validate("standard", parse_gpu_spec("1x80GB"), {"fp8": True})
    assert errors_in(problems) == []
    assert problems[0].setting == "fp8" and problems[0].severity == "warning"


@pytest.mark.parametrize("spec", ["1x24GB", "5x24GB", "4xRTX4090", "5xRTX4090", "1xRTX3090"])
def test_24gb_cards_are_refused_in_any_topology(spec):
    problems = errors_in(validate("standard", parse_gpu_spec(spec), {"fp8": True}))
    card = [p for p in problems if "24 GB cards cannot run Live Avatar in any topology" in p.reason]
    assert card, problems
    assert "≥ 80 GB" in card[0].reason and "≈ 45 GB even with fp8" in card[0].reason


def test_a_single_gpu_below_80gb_is_refused():
    problem = only_error(validate("standard", parse_gpu_spec("1xL40S-48GB")), "gpus")
    assert "≥ 80 GB" in problem.reason and "48.3 GB" in problem.reason


def test_pipeline_cards_below_45gb_are_refused():
    problem = only_error(validate("standard", parse_gpu_spec("5xA100-40GB")), "gpus")
    assert "≈ 45 GB even with fp8" in problem.reason


def test_no_gpus_is_refused_and_points_to_the_cpu_engine():
    assert "CPU engine" in only_error(validate("standard", []), "gpus").reason


def test_unknown_override_is_refused_and_ignored_ones_warn():
    problems = validate("standard", None, {"sample_stpes": 4, "sample_shift": 5.0})
    assert only_error(problems, "sample_stpes").reason.startswith("not a setting")
    warning = [p for p in problems if p.severity == "warning"]
    assert [p.setting for p in warning] == ["sample_shift"]


def test_raise_for_names_every_problem_in_one_message():
    problems = validate("standard", parse_gpu_spec("4xRTX4090"),
                        {"sample_steps": 3, "sample_solver": "dpm++", "infer_frames": 32,
                         "size": "1280*720", "fp8": True})
    with pytest.raises(ConfigRejected) as caught:
        raise_for(problems)
    error = caught.value
    assert isinstance(error, ConfigurationError) and isinstance(error, AvatarflowError)
    message = str(error)
    for fragment in ("sample_steps=3", "solver='dpm++'", "infer_frames=32", "size='1280*720'",
                     "gpus=4", "24 GB cards"):
        assert fragment in message
    settings = {p.setting for p in error.problems}
    assert settings >= {"sample_steps", "solver", "infer_frames", "size", "gpus"}


def test_check_or_raise_returns_warnings_for_a_valid_config():
    assert check_or_raise("preview", H100, {"infer_frames": 48}) == []
    with pytest.raises(ConfigRejected):
        check_or_raise("preview", H100, {"sample_steps": 3})


def test_effective_settings_apply_overrides_under_canonical_names():
    settings = effective_settings(get_preset("long"), {"--sample_solver": "euler", "frames": 48})
    assert settings["solver"] == "euler" and settings["infer_frames"] == 48
    assert settings["size"] == "688*368" and settings["online_decode"] is True
    assert settings["fp8"] is False and settings["preset"] == "long"


def test_request_with_a_plus_in_the_audio_path_is_refused(tmp_path: Path):
    request = GenerationRequest(asset_key="a1", image=tmp_path / "face.png",
                                audio=tmp_path / "alice+bob.wav", prompt="a person talking",
                                preset="standard", seed=1, output=tmp_path / "out.mp4",
                                log_path=tmp_path / "log.txt", audio_seconds=3.0,
                                overrides={"sample_steps": 3})
    settings = {p.setting for p in errors_in(validate_request(request, H100))}
    assert settings == {"audio", "sample_steps"}
