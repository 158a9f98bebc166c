"""Packing a big GPU with several gang workers (inference/packing.py, `avatarflow gang worker`)."""

from __future__ import annotations

import pytest

from avatarflow.errors import ConfigurationError
from avatarflow.settings import Settings
from flows import cli_gangs
from inference.engine import GpuGang
from inference.gpus import GpuInventory, parse_gangs, parse_gpu_spec
from inference.packing import PACKED_USABLE, check_packing, resident_gb

H200 = parse_gpu_spec("1xH200")


def gang(spec: str, index: int = 0) -> GpuGang:
    return parse_gangs(spec)[index]


def test_an_unpacked_gang_takes_everything():
    assert check_packing(gang("0"), H200, "bf16") is None


def test_the_resident_weights_agree_with_the_h200_measurement():
    # Two idle bf16 warm workers held 67902 MiB of an H200 (benchmarks/gpu/results/h200-2026-12-01-c).
    measured_each = 67902 * 2**20 / 1e9 / 2
    assert resident_gb("bf16") == pytest.approx(measured_each, rel=0.03)


def test_two_bf16_workers_on_an_h200_run_two_previews_or_a_preview_and_a_standard_never_two_standards():
    packed = check_packing(gang("0x2"), H200, "bf16")
    assert packed.usable_gb == pytest.approx(H200[0].memory_total_gb * PACKED_USABLE)
    assert packed.presets == ("preview", "standard", "long")  # each fits beside an idle sibling
    assert packed.admissible([packed.idle_gb]) == ("preview", "standard", "long")
    assert packed.admissible([packed.peaks_gb["preview"]]) == ("preview", "standard", "long")
    # Beside a standard job (69.5 GB) only a preview fits: two standards would be 139 of 135.7 usable.
    assert packed.admissible([packed.peaks_gb["standard"]]) == ("preview",)
    assert packed.admissible([]) == packed.admissible([packed.idle_gb])  # a sibling not registered yet: idle
    assert "takes preview (48.0 GB), standard (69.5 GB), long (69.5 GB)" in packed.describe()


def test_three_workers_on_an_h200_take_previews_only_and_four_do_not_fit():
    packed = check_packing(gang("0x3"), H200, "bf16")
    assert packed.presets == ("preview",)
    assert packed.admissible([packed.peaks_gb["preview"]] * 2) == ()  # 3 × 48 GB > 135.7 GB usable
    with pytest.raises(ConfigurationError, match=r'do not fit GPU 0 .* At most 3 fit \(AVATARFLOW_GANGS="0x3"\)'):
        check_packing(gang("0x4"), H200, "bf16")


def test_an_80_gb_card_is_not_packed():
    with pytest.raises(ConfigurationError, match="do not pack GPU 0"):
        check_packing(gang("0x2"), parse_gpu_spec("1xH100-80GB"), "bf16")


def test_a_packed_gang_needs_its_gpu_to_be_there():
    with pytest.raises(ConfigurationError, match="this host reports no GPU 3"):
        check_packing(gang("3x2"), H200, "bf16")


def test_the_worker_command_checks_packing_on_this_hosts_gpus(monkeypatch):
    monkeypatch.setattr(cli_gangs, "inventory", lambda: GpuInventory(H200, "nvml"))
    settings = Settings(gangs="0x2;1", liveavatar_fp8=False)
    packed = cli_gangs.packed_gpu_here(gang("0x2", 1), settings)
    assert packed is not None and packed.gang.name == "gang0.2"
    assert cli_gangs.packed_gpu_here(gang("0x2;1", 2), settings) is None  # gang1: not packed, no probe
    monkeypatch.setattr(cli_gangs, "inventory", lambda: GpuInventory([], "none", "no driver"))
    with pytest.raises(ConfigurationError, match="this host reports no GPU 0"):
        cli_gangs.packed_gpu_here(gang("0x2"), settings)
