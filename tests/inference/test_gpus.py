"""GPU inventory (recorded nvidia-smi output, a real GPU where present), specs, gangs, sampler."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from avatarflow.errors import ConfigurationError
from inference import gpus as gpus_module
from inference.gangs import limit_name
from inference.gpus import (
    GpuInventory,
    NvidiaSmiError,
    NvmlSampler,
    inventory,
    nvidia_smi_inventory,
    nvml_inventory,
    parse_gangs,
    parse_gpu_spec,
    parse_nvidia_smi,
)

DATA = Path(__file__).parent / "data"
HAS_NVIDIA_SMI = shutil.which("nvidia-smi") is not None


def recorded(name: str) -> str:
    return (DATA / name).read_text()


# --- parsing recorded nvidia-smi output ------------------------------------------------------


def test_parse_one_h100():
    [gpu] = parse_nvidia_smi(recorded("nvidia-smi-h100x1.csv"))
    assert (gpu.index, gpu.name) == (0, "NVIDIA H100 80GB HBM3")
    assert (gpu.memory_total_mb, gpu.memory_used_mb, gpu.memory_free_mb) == (81559, 1, 81004)
    assert gpu.compute_capability == (9, 0) and gpu.supports_fp8 is True
    assert gpu.utilisation_pct == 0 and gpu.uuid.startswith("GPU-5a1f6c2e")
    assert gpu.memory_total_gb == pytest.approx(85.52, abs=0.01)


def test_parse_five_l40s_some_busy():
    gpus = parse_nvidia_smi(recorded("nvidia-smi-l40sx5.csv"))
    assert [g.index for g in gpus] == [0, 1, 2, 3, 4]
    assert {g.name for g in gpus} == {"NVIDIA L40S"}
    assert all(g.compute_capability == (8, 9) and g.memory_total_mb == 46068 for g in gpus)
    assert [g.utilisation_pct for g in gpus] == [0, 98, 97, 99, 41]
    assert gpus[1].memory_used_mb == 43186 and gpus[1].memory_free_mb == 2292
    assert len({g.uuid for g in gpus}) == 5


def test_parse_not_available_values_as_none():
    [gpu] = parse_nvidia_smi(recorded("nvidia-smi-a100-mig-na.csv"))
    assert gpu.memory_total_mb == 81920
    assert (gpu.memory_used_mb, gpu.memory_free_mb, gpu.utilisation_pct) == (None, None, None)
    assert gpu.compute_capability == (8, 0) and gpu.supports_fp8 is False


def test_parse_without_compute_cap_takes_it_from_the_model_table():
    [gpu] = parse_nvidia_smi(recorded("nvidia-smi-a100-no-compute-cap.csv"))
    assert gpu.name == "NVIDIA A100-SXM4-80GB" and gpu.compute_capability == (8, 0)


def test_no_devices_is_an_empty_list():
    assert parse_nvidia_smi(recorded("nvidia-smi-no-devices.txt")) == []
    assert parse_nvidia_smi("") == []


def test_driver_error_raises_with_nvidia_smis_own_words():
    with pytest.raises(NvidiaSmiError, match="couldn't communicate with the NVIDIA driver"):
        parse_nvidia_smi(recorded("nvidia-smi-no-driver.txt"))


# --- the nvidia-smi probe, with a stand-in executable on PATH --------------------------------


def fake_nvidia_smi(folder: Path, script: str, monkeypatch) -> None:
    binary = folder / "nvidia-smi"
    binary.write_text("#!/bin/sh\n" + script)
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


def test_nvidia_smi_probe_reads_the_csv(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, f'cat "{DATA / "nvidia-smi-l40sx5.csv"}"\n', monkeypatch)
    found = nvidia_smi_inventory()
    assert found.source == "nvidia-smi" and len(found.gpus) == 5


def test_nvidia_smi_probe_retries_without_compute_cap_on_old_drivers(tmp_path, monkeypatch):
    refusal = DATA / "nvidia-smi-old-driver-compute-cap.txt"
    script = (f'case "$1" in *compute_cap*) cat "{refusal}"; exit 2;; esac\n'
              f'cat "{DATA / "nvidia-smi-a100-no-compute-cap.csv"}"\n')
    fake_nvidia_smi(tmp_path, script, monkeypatch)
    [gpu] = nvidia_smi_inventory().gpus
    assert gpu.compute_capability == (8, 0)


def test_nvidia_smi_probe_reports_a_missing_driver(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, f'cat "{DATA / "nvidia-smi-no-driver.txt"}"\nexit 9\n', monkeypatch)
    found = nvidia_smi_inventory()
    assert found.gpus == [] and "NVIDIA driver" in found.reason and "exit status 9" in found.reason


def test_nvidia_smi_probe_has_its_own_timeout(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, "exec sleep 30\n", monkeypatch)
    started = time.monotonic()
    found = nvidia_smi_inventory(timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert found.gpus == [] and "did not answer within 0.5 s" in found.reason


def test_inventory_falls_back_to_nvidia_smi_then_to_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus_module, "nvml_inventory", lambda: GpuInventory([], "none", "no NVML"))
    fake_nvidia_smi(tmp_path, f'cat "{DATA / "nvidia-smi-h100x1.csv"}"\n', monkeypatch)
    found = inventory()
    assert found.source == "nvidia-smi" and len(found.gpus) == 1 and "no NVML" in found.reason

    fake_nvidia_smi(tmp_path, f'cat "{DATA / "nvidia-smi-no-devices.txt"}"\nexit 6\n', monkeypatch)
    found = inventory()
    assert not found and found.source == "none" and "no NVML" in found.reason


@pytest.mark.skipif(HAS_NVIDIA_SMI, reason="this host has an NVIDIA driver")
def test_nvml_without_a_driver_gives_a_reason_not_an_error():
    found = nvml_inventory()
    assert found.gpus == [] and found.reason


# --- hypothetical GPUs -----------------------------------------------------------------------


@pytest.mark.parametrize("spec, count, memory_mb, cc", [
    ("5x24GB", 5, 24 * 1024, None),
    ("1xH100-80GB", 1, 81559, (9, 0)),
    ("5xL40S-48GB", 5, 46068, (8, 9)),
    ("1xA100-80GB", 1, 81920, (8, 0)),
    ("4xRTX4090", 4, 24564, (8, 9)),
    ("2xV100", 2, 32768, (7, 0)),
    ("1xT4", 1, 15360, (7, 5)),
    ("1xA10", 1, 24576, (8, 6)),
])
def test_parse_gpu_spec(spec, count, memory_mb, cc):
    gpus = parse_gpu_spec(spec)
    assert len(gpus) == count
    assert all(g.memory_total_mb == memory_mb and g.compute_capability == cc for g in gpus)
    assert [g.index for g in gpus] == list(range(count))


def test_parse_gpu_spec_mixed_groups():
    gpus = parse_gpu_spec("1xH100-80GB+4xL40S")
    assert [g.compute_capability for g in gpus] == [(9, 0)] + [(8, 9)] * 4


@pytest.mark.parametrize("spec", ["", "H100", "0xH100", "5xFoo-80GB", "5x"])
def test_parse_gpu_spec_refuses_what_it_cannot_read(spec):
    with pytest.raises(ValueError, match="cannot read GPU spec"):
        parse_gpu_spec(spec)


# --- gangs -----------------------------------------------------------------------------------


def test_parse_gangs():
    single, pipeline = parse_gangs("0;1-5")
    assert (single.name, single.devices) == ("gang0", (0,))
    assert (pipeline.name, pipeline.devices) == ("gang1-5", (1, 2, 3, 4, 5))
    assert pipeline.cuda_visible_devices == "1,2,3,4,5"
    assert [g.devices for g in parse_gangs("0; 1,2,3,4,5 ;6", available=7)] == [
        (0,), (1, 2, 3, 4, 5), (6,)]


@pytest.mark.parametrize("text, words", [
    ("0;0-4", "GPU 0 is in two gangs"),
    ("0-1", "has 2 GPUs"),
    ("0-3", "2–4 GPUs are not supported"),
    ("0-5", "has 6 GPUs"),
    ("3-1", "runs backwards"),
    ("0;a", "not a GPU index"),
    ("1,1,2,3,4", "names a GPU twice"),
    ("", "no GPU gangs"),
])
def test_parse_gangs_refuses_bad_configurations(text, words):
    with pytest.raises(ConfigurationError, match=words):
        parse_gangs(text)


def test_parse_gangs_checks_the_hosts_gpu_count():
    with pytest.raises(ConfigurationError, match="this host has 4 GPU"):
        parse_gangs("0;1-5", available=4)


# --- the sampler -----------------------------------------------------------------------------


def test_sampler_records_peak_memory_and_mean_utilisation():
    readings = {0: iter([(1000.0, 10.0), (5000.0, 90.0)]), 1: iter([(2000.0, None)])}

    def reader(device: int) -> tuple[float, float | None]:
        try:
            return next(readings[device])
        except StopIteration:
            return 1500.0, 50.0

    sampler = NvmlSampler([0, 1], interval_s=0.01, reader=reader).start()
    time.sleep(0.1)
    summary = sampler.stop()
    assert summary.peak_memory_mb == {"0": 5000.0, "1": 2000.0}
    assert summary.mean_utilisation is not None and 10 < summary.mean_utilisation < 90
    assert summary.samples >= 3


def test_sampler_survives_a_failing_reader():
    def reader(device: int) -> tuple[float, float | None]:
        raise RuntimeError("GPU fell off the bus")

    with NvmlSampler([0], interval_s=0.01, reader=reader) as sampler:
        time.sleep(0.03)
    assert sampler.summary is not None
    assert sampler.summary.peak_memory_mb == {} and sampler.summary.mean_utilisation is None


@pytest.mark.skipif(HAS_NVIDIA_SMI, reason="this host has an NVIDIA driver")
def test_sampler_is_a_no_op_without_nvml():
    sampler = NvmlSampler([0]).start()
    assert not sampler.active and sampler.unavailable_reason
    summary = sampler.stop()
    assert summary.peak_memory_mb == {} and summary.mean_utilisation is None


# --- on a real NVIDIA GPU (skipped elsewhere) ------------------------------------------------

needs_gpu = pytest.mark.skipif(not HAS_NVIDIA_SMI, reason="needs an NVIDIA GPU and nvidia-smi")


@needs_gpu
def test_inventory_on_real_gpu():
    found = inventory()
    assert found.gpus, found.reason
    assert found.source in ("nvml", "nvidia-smi")
    smi = nvidia_smi_inventory()
    assert smi.gpus, smi.reason
    for gpu in smi.gpus:
        assert gpu.name and gpu.uuid.startswith(("GPU-", "MIG-"))
        assert gpu.memory_total_mb > 1024
        assert gpu.compute_capability is not None and gpu.compute_capability >= (3, 5)
        if gpu.memory_used_mb is not None and gpu.memory_free_mb is not None:
            assert gpu.memory_used_mb + gpu.memory_free_mb <= gpu.memory_total_mb
        assert gpu.utilisation_pct is None or 0 <= gpu.utilisation_pct <= 100
    # Whichever probe answered, both see the same devices.
    assert [g.uuid for g in found.gpus] == [g.uuid for g in smi.gpus]


@needs_gpu
def test_nvml_agrees_with_nvidia_smi_on_real_gpu():
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    nvml, smi = nvml_inventory(), nvidia_smi_inventory()
    assert nvml.gpus, nvml.reason
    by_uuid = {g.uuid: g for g in smi.gpus}
    assert set(by_uuid) == {g.uuid for g in nvml.gpus}
    for gpu in nvml.gpus:
        other = by_uuid[gpu.uuid]
        assert (gpu.index, gpu.name, gpu.compute_capability) == (other.index, other.name,
                                                                  other.compute_capability)
        assert abs(gpu.memory_total_mb - other.memory_total_mb) <= 1
        if gpu.memory_used_mb is not None and other.memory_used_mb is not None:
            # Read a moment apart, and older drivers count reserved memory as used under NVML.
            assert abs(gpu.memory_used_mb - other.memory_used_mb) <= 1024


@needs_gpu
def test_sampler_on_real_gpu():
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    with NvmlSampler([0], interval_s=0.1) as sampler:
        time.sleep(0.5)
    summary = sampler.summary
    assert summary is not None and summary.samples >= 3
    # An idle GPU can report 0 MiB used (reserved memory is counted apart).
    assert 0 <= summary.peak_memory_mb["0"] <= nvml_inventory().gpus[0].memory_total_mb
    assert summary.mean_utilisation is not None and 0 <= summary.mean_utilisation <= 100


def test_parses_output_captured_on_a_real_h100():
    text = (Path(__file__).parent / "data" / "nvidia-smi-h100-captured.csv").read_text()
    (gpu,) = parse_nvidia_smi(text)
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.memory_total_mb == 81559 and gpu.compute_capability == (9, 0)
    assert gpu.uuid.startswith("GPU-")


def test_a_packed_gpu_is_one_gang_per_worker_each_its_own_slot():
    gangs = parse_gangs("0x2;1;2-6")
    assert [(g.name, g.devices, g.shares) for g in gangs] == [
        ("gang0.1", (0,), 2), ("gang0.2", (0,), 2), ("gang1", (1,), 1), ("gang2-6", (2, 3, 4, 5, 6), 1)]
    assert len({limit_name(g) for g in gangs}) == 4
    assert [g.name for g in parse_gangs("0x1")] == ["gang0"]


@pytest.mark.parametrize(("spec", "message"), [
    ("1-5x2", "only a one-GPU gang can be packed"),
    ("0;0x2", 'write "0x2" to pack it'),
    ("0x0", "at least 1"),
])
def test_packing_that_cannot_work_is_refused(spec, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_gangs(spec)
