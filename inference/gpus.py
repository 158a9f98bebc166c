"""The GPUs of this host (NVML, else nvidia-smi), hypothetical GPUs for planning, GPU gangs, and a
sampler that records peak memory and utilisation while a job runs.

Indices are NVML / nvidia-smi indices, which follow PCI bus order. CUDA numbers devices
fastest-first unless `CUDA_DEVICE_ORDER=PCI_BUS_ID` is set, so whoever launches an engine with
`CUDA_VISIBLE_DEVICES` taken from a gang must set that variable too, or the indices can differ.

Memory is in MiB, as NVML and nvidia-smi report it (`*_mb` fields). The planner converts to
GB = 10⁹ bytes, the unit of the published Live Avatar figures.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from avatarflow.errors import ConfigurationError
from inference.engine import GpuGang
from inference.liveavatar_facts import (
    FP8_MIN_COMPUTE_CAPABILITY,
    SUPPORTED_GPU_COUNTS,
    TOPOLOGY_RULE,
)

MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_mb: int
    memory_used_mb: int | None = None  # None where the driver reports [N/A]
    memory_free_mb: int | None = None
    compute_capability: tuple[int, int] | None = None  # None: unknown (e.g. a generic "24GB" card)
    utilisation_pct: int | None = None
    uuid: str = ""

    @property
    def memory_total_gb(self) -> float:
        """Total memory in GB (10⁹ bytes), the unit of the published figures."""
        return self.memory_total_mb * MIB / 1e9

    @property
    def memory_free_gb(self) -> float | None:
        return None if self.memory_free_mb is None else self.memory_free_mb * MIB / 1e9

    @property
    def cc_text(self) -> str:
        if self.compute_capability is None:
            return "unknown"
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    @property
    def supports_fp8(self) -> bool | None:
        """True/False when the compute capability is known, None when it is not."""
        if self.compute_capability is None:
            return None
        return self.compute_capability >= FP8_MIN_COMPUTE_CAPABILITY


def parse_compute_capability(text: str) -> tuple[int, int] | None:
    text = text.strip()
    match = re.fullmatch(r"(\d+)\.(\d+)", text)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


# --- known GPU models ------------------------------------------------------------------------
# Compute capabilities: NVIDIA, "CUDA GPUs - Compute Capability" (developer.nvidia.com/cuda-gpus).
# Memory: where a value is the one nvidia-smi commonly reports for that card it is given in MiB
# (H100 80GB → 81559, H200 → 143771, A100 80GB → 81920, L40S/L40 → 46068, RTX 4090 → 24564);
# otherwise the nominal size × 1024 MiB. Planning only needs them to within a few percent.


@dataclass(frozen=True)
class GpuModel:
    key: str  # normalised name used in specs ("H100", "L40S", "4090")
    display: str
    compute_capability: tuple[int, int]
    memory_mb: dict[int, int]  # nominal GB -> MiB reported; the first entry is the default
    bf16_dense_tflops: float | None = None  # datasheet dense BF16 tensor TFLOPS (no sparsity)

    @property
    def default_gb(self) -> int:
        return next(iter(self.memory_mb))


# bf16_dense_tflops from NVIDIA datasheets (dense, without sparsity): H100 SXM 989, H200 989,
# A100 312, L40S 362, L40 181, RTX 6000 Ada 364, RTX A6000 155, RTX 4090 165 (FP32 accumulate),
# RTX 3090 71, A10 125, L4 121. The planner uses them only as an assumed ratio for throughput.
KNOWN_GPUS: dict[str, GpuModel] = {
    m.key: m
    for m in (
        GpuModel("H100", "NVIDIA H100", (9, 0), {80: 81559, 94: 95830}, 989),
        GpuModel("H200", "NVIDIA H200", (9, 0), {141: 143771}, 989),
        # H800: the H100 for the Chinese market, same SMs, reduced NVLink (the paper's GPU).
        GpuModel("H800", "NVIDIA H800", (9, 0), {80: 81559}, 989),
        GpuModel("A100", "NVIDIA A100", (8, 0), {80: 81920, 40: 40960}, 312),
        GpuModel("A800", "NVIDIA A800", (8, 0), {80: 81920, 40: 40960}, 312),
        GpuModel("L40S", "NVIDIA L40S", (8, 9), {48: 46068}, 362),
        GpuModel("L40", "NVIDIA L40", (8, 9), {48: 46068}, 181),
        GpuModel("6000ADA", "NVIDIA RTX 6000 Ada Generation", (8, 9), {48: 49152}, 364),
        GpuModel("A6000", "NVIDIA RTX A6000", (8, 6), {48: 49152}, 155),
        GpuModel("A40", "NVIDIA A40", (8, 6), {48: 49152}, 150),
        GpuModel("A10", "NVIDIA A10", (8, 6), {24: 24576}, 125),
        GpuModel("L4", "NVIDIA L4", (8, 9), {24: 24576}, 121),
        GpuModel("4090", "NVIDIA GeForce RTX 4090", (8, 9), {24: 24564}, 165),
        GpuModel("3090", "NVIDIA GeForce RTX 3090", (8, 6), {24: 24576}, 71),
        GpuModel("V100", "Tesla V100", (7, 0), {32: 32768, 16: 16384}, None),
        GpuModel("T4", "Tesla T4", (7, 5), {16: 15360}, None),
    )
}


def _normalise_model(text: str) -> str:
    key = text.upper()
    for noise in ("NVIDIA", "GEFORCE", "TESLA", "RTX", " ", "-", "_"):
        key = key.replace(noise, "")
    return key


def known_model(name: str) -> GpuModel | None:
    """The known model a device or spec name refers to ("NVIDIA H100 80GB HBM3" → H100)."""
    if (direct := KNOWN_GPUS.get(_normalise_model(name))) is not None:
        return direct
    # Device names carry extra words ("H100 80GB HBM3", "A100-SXM4-80GB", "RTX 6000 Ada
    # Generation"): look at each word, and each pair of neighbouring words, on its own.
    words = [w.removeprefix("RTX") for w in re.findall(r"[A-Z0-9]+", name.upper())]
    for candidate in words + [a + b for a, b in zip(words, words[1:], strict=False)]:
        if candidate in KNOWN_GPUS:
            return KNOWN_GPUS[candidate]
    return None


_SPEC_GROUP = re.compile(r"^\s*(\d+)\s*[x×]\s*(.+?)\s*$", re.IGNORECASE)
_GENERIC_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*GB$", re.IGNORECASE)
_MODEL_MEMORY = re.compile(r"^(.+?)(?:[-_ ](\d+(?:\.\d+)?)\s*GB)?$", re.IGNORECASE)


def parse_gpu_spec(spec: str) -> list[GpuInfo]:
    """Hypothetical GPUs for the planner: "5x24GB", "1xH100-80GB", "5xL40S-48GB", "4xRTX4090".

    Several groups may be joined with "+" ("1xH100-80GB+4xL40S"). A generic "24GB" card has an
    unknown compute capability; a named model gets its known one. Raises ValueError with the
    accepted forms when the spec cannot be read.
    """
    groups = [g for g in re.split(r"[+,]", spec) if g.strip()]
    if not groups:
        raise ValueError(_spec_help(spec, "it is empty"))
    gpus: list[GpuInfo] = []
    for group in groups:
        match = _SPEC_GROUP.match(group)
        if not match:
            raise ValueError(_spec_help(spec, f"{group.strip()!r} is not COUNTxGPU"))
        count, what = int(match.group(1)), match.group(2)
        if count < 1:
            raise ValueError(_spec_help(spec, "the count must be at least 1"))
        generic = _GENERIC_MEMORY.match(what)
        if generic:
            gb = float(generic.group(1))
            name, memory_mb, cc = f"generic {generic.group(1)} GB GPU", round(gb * 1024), None
        else:
            parts = _MODEL_MEMORY.match(what)
            assert parts is not None  # the pattern matches any non-empty text
            model = KNOWN_GPUS.get(_normalise_model(parts.group(1)))
            if model is None:
                raise ValueError(_spec_help(spec, f"unknown GPU model {parts.group(1)!r}"))
            gb = float(parts.group(2)) if parts.group(2) else float(model.default_gb)
            memory_mb = round(gb * 1024)
            if gb.is_integer():  # a size the table knows: what nvidia-smi reports for it
                memory_mb = model.memory_mb.get(int(gb), memory_mb)
            name, cc = f"{model.display} {gb:g}GB", model.compute_capability
        for _ in range(count):
            index = len(gpus)
            gpus.append(GpuInfo(index=index, name=name, memory_total_mb=memory_mb,
                                memory_used_mb=0, memory_free_mb=memory_mb, compute_capability=cc,
                                utilisation_pct=None, uuid=f"hypothetical-{index}"))
    return gpus


def _spec_help(spec: str, why: str) -> str:
    models = ", ".join(sorted(KNOWN_GPUS))
    return (f"cannot read GPU spec {spec!r}: {why}. Write COUNTxMEMORY or COUNTxMODEL[-MEMORY], "
            f"e.g. 5x24GB, 1xH100-80GB, 5xL40S-48GB, 4xRTX4090; known models: {models}")


# --- inventory -------------------------------------------------------------------------------


@dataclass
class GpuInventory:
    gpus: list[GpuInfo]
    source: str  # "nvml", "nvidia-smi" or "none"
    reason: str = ""  # why the list is empty, or why the preferred probe was not used

    def __bool__(self) -> bool:
        return bool(self.gpus)


class NvidiaSmiError(ValueError):
    """nvidia-smi answered with something other than the CSV we asked for."""


NVIDIA_SMI_FIELDS = ("index", "name", "memory.total", "memory.used", "memory.free", "compute_cap",
                     "utilization.gpu", "uuid")


def _optional_int(text: str) -> int | None:
    text = text.strip()
    # nvidia-smi writes "[N/A]" or "[Not Supported]" for values a device cannot report (MIG, vGPU).
    if text.startswith("[") or text in ("", "N/A"):
        return None
    return int(float(text))


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse `nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits`.

    "No devices were found" gives an empty list. Anything else that is not the CSV (the driver is
    not loaded, a field is not known to an old driver) raises NvidiaSmiError with nvidia-smi's
    own words. Seven fields (no compute_cap, for drivers older than R510) are accepted too: the
    capability is then taken from the known-model table.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or any("no devices were found" in line.lower() for line in lines):
        return []
    gpus = []
    for line in lines:
        fields = [f.strip() for f in line.split(",")]
        if len(fields) not in (7, 8) or not fields[0].isdigit():
            raise NvidiaSmiError(f"nvidia-smi: {' '.join(lines)[:300]}")
        if len(fields) == 7:  # no compute_cap column
            index, name, total, used, free, util, uuid = fields
            model = known_model(name)
            cc = model.compute_capability if model else None
        else:
            index, name, total, used, free, cc_text, util, uuid = fields
            cc = parse_compute_capability(cc_text)
        total_mb = _optional_int(total)
        if total_mb is None:
            raise NvidiaSmiError(f"nvidia-smi reports no total memory for GPU {index}: {line}")
        gpus.append(GpuInfo(index=int(index), name=name, memory_total_mb=total_mb,
                            memory_used_mb=_optional_int(used), memory_free_mb=_optional_int(free),
                            compute_capability=cc, utilisation_pct=_optional_int(util), uuid=uuid))
    return gpus


def nvidia_smi_inventory(timeout_s: float = 15.0) -> GpuInventory:
    """Ask nvidia-smi; it can hang on a wedged driver, hence its own timeout."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return GpuInventory([], "none",
                            "nvidia-smi is not installed (no NVIDIA driver on this host)")
    fields = list(NVIDIA_SMI_FIELDS)
    for attempt in range(2):
        try:
            done = subprocess.run([binary, f"--query-gpu={','.join(fields)}",
                                   "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return GpuInventory([], "none", f"nvidia-smi did not answer within {timeout_s:g} s")
        except OSError as exc:
            return GpuInventory([], "none", f"nvidia-smi could not be run: {exc}")
        output = (done.stdout or "") + (done.stderr or "")
        # Drivers older than R510 do not know compute_cap: ask again without it.
        if attempt == 0 and "compute_cap" in output and "not a valid field" in output.lower():
            fields.remove("compute_cap")
            continue
        try:
            gpus = parse_nvidia_smi(done.stdout if done.returncode == 0 else output)
        except NvidiaSmiError as exc:
            return GpuInventory([], "none", f"{exc} (exit status {done.returncode})")
        if done.returncode != 0 and not gpus:
            return GpuInventory([], "none", f"nvidia-smi: {output.strip()[:300] or 'no output'} "
                                            f"(exit status {done.returncode})")
        return GpuInventory(gpus, "nvidia-smi", "" if gpus else "nvidia-smi found no devices")
    raise AssertionError("unreachable")


def _load_pynvml() -> Any:
    """The pynvml module (package nvidia-ml-py), or None when it is not installed."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    return pynvml


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes for names and UUIDs.
    return value.decode() if isinstance(value, bytes) else value


def _nvml_memory(nvml: Any, handle: Any) -> Any:
    # The v2 structure reports reserved memory apart from used, as nvidia-smi does; drivers that
    # lack it fall back to v1 (used then includes the driver's reservation).
    try:
        return nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
    except (nvml.NVMLError, AttributeError, TypeError):
        return nvml.nvmlDeviceGetMemoryInfo(handle)


def nvml_inventory() -> GpuInventory:
    nvml = _load_pynvml()
    if nvml is None:
        return GpuInventory([], "none", "NVML bindings not installed (pip package nvidia-ml-py)")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return GpuInventory([], "none", f"NVML could not start: {exc}")
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = _nvml_memory(nvml, handle)
            try:
                utilisation: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except nvml.NVMLError:  # not supported on MIG instances and some vGPUs
                utilisation = None
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                cc: tuple[int, int] | None = (int(major), int(minor))
            except nvml.NVMLError:
                cc = None
            gpus.append(GpuInfo(
                index=index, name=_text(nvml.nvmlDeviceGetName(handle)),
                memory_total_mb=int(memory.total // MIB), memory_used_mb=int(memory.used // MIB),
                memory_free_mb=int(memory.free // MIB), compute_capability=cc,
                utilisation_pct=utilisation, uuid=_text(nvml.nvmlDeviceGetUUID(handle))))
        return GpuInventory(gpus, "nvml", "" if gpus else "NVML found no devices")
    except nvml.NVMLError as exc:
        return GpuInventory([], "none", f"NVML failed while listing GPUs: {exc}")
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def inventory(timeout_s: float = 15.0) -> GpuInventory:
    """This host's GPUs: NVML when it works, else nvidia-smi, else an empty list with the reason."""
    by_nvml = nvml_inventory()
    if by_nvml.gpus:
        return by_nvml
    by_smi = nvidia_smi_inventory(timeout_s)
    if by_smi.gpus:
        by_smi.reason = f"NVML not used: {by_nvml.reason}"
        return by_smi
    return GpuInventory([], "none", f"{by_nvml.reason}; {by_smi.reason}")


# --- gangs -----------------------------------------------------------------------------------


def parse_gangs(text: str, available: int | None = None) -> list[GpuGang]:
    """A host's gangs, ";"-separated, each a list or range of GPU indices: "0;1-5", "0;1,2,3,4,5".

    "0x2" packs GPU 0 with two workers (gangs gang0.1 and gang0.2, each its own slot); only a
    one-GPU gang can be packed, and whether that many fit is checked when a worker starts
    (`inference.packing`). Refuses overlapping gangs, sizes other than 1 or 5, and (when
    `available` is given) indices this host does not have.
    """
    gangs: list[GpuGang] = []
    owner: dict[int, str] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        part, shares = _packed(part)
        devices: list[int] = []
        for item in (i.strip() for i in part.split(",")):
            range_match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", item)
            if range_match:
                first, last = int(range_match.group(1)), int(range_match.group(2))
                if last < first:
                    raise ConfigurationError(f"GPU gang {part!r}: range {item!r} runs backwards")
                devices.extend(range(first, last + 1))
            elif item.isdigit():
                devices.append(int(item))
            else:
                raise ConfigurationError(f"GPU gang {part!r}: {item!r} is not a GPU index or "
                                         "range (write e.g. \"0;1-5\", or \"0x2\" for two workers on GPU 0)")
        if len(set(devices)) != len(devices):
            raise ConfigurationError(f"GPU gang {part!r} names a GPU twice")
        if len(devices) not in SUPPORTED_GPU_COUNTS:
            raise ConfigurationError(f"GPU gang {part!r} has {len(devices)} GPUs: {TOPOLOGY_RULE}")
        if shares > 1 and len(devices) != 1:
            raise ConfigurationError(f"GPU gang {part!r}x{shares}: only a one-GPU gang can be packed with "
                                     "several workers (a pipeline rank needs its GPU to itself)")
        name = f"gang{devices[0]}" if len(devices) == 1 else f"gang{devices[0]}-{devices[-1]}"
        if len(devices) > 1 and devices != list(range(devices[0], devices[-1] + 1)):
            name = "gang" + "_".join(str(d) for d in devices)
        for device in devices:
            if device in owner:
                raise ConfigurationError(f"GPU {device} is in two gangs ({owner[device]} and "
                                         f"{name}): two jobs would share it (write \"{device}x2\" to "
                                         "pack it with two workers on purpose)")
            if available is not None and device >= available:
                raise ConfigurationError(f"GPU gang {name} names GPU {device}, but this host has "
                                         f"{available} GPU(s) (indices 0–{available - 1})")
            owner[device] = name
        if shares == 1:
            gangs.append(GpuGang(name=name, devices=tuple(devices)))
        else:
            gangs.extend(GpuGang(name=f"{name}.{n}", devices=tuple(devices), shares=shares)
                         for n in range(1, shares + 1))
    if not gangs:
        raise ConfigurationError("no GPU gangs configured (write e.g. \"0;1-5\")")
    return gangs


def _packed(part: str) -> tuple[str, int]:
    """"0x2" → ("0", 2): GPU 0 shared by two workers; a plain gang → (part, 1)."""
    match = re.fullmatch(r"(.+?)\s*[x×]\s*(\d+)", part)
    if not match:
        return part, 1
    shares = int(match.group(2))
    if shares < 1:
        raise ConfigurationError(f"GPU gang {part!r}: the number of workers after 'x' must be at least 1")
    return match.group(1).strip(), shares


# --- sampling a running job ------------------------------------------------------------------

# One reading of a device: (memory used MiB, utilisation % or None).
Reader = Callable[[int], tuple[float, float | None]]


@dataclass
class SampleSummary:
    peak_memory_mb: dict[str, float] = field(default_factory=dict)  # by GPU index, as in metrics
    mean_utilisation: float | None = None  # mean over samples and devices, percent
    samples: int = 0


class NvmlSampler:
    """Samples the memory and utilisation of a job's GPUs in a background thread.

    `start()` takes a first sample at once, then one every `interval_s`; `stop()` takes a last
    one and returns the peak memory per GPU and the mean utilisation. Without NVML (no driver, no
    bindings) it does nothing and `stop()` returns an empty summary, so callers need no branch.
    A `reader` can be injected (tests, other backends).
    """

    def __init__(self, devices: Sequence[int], interval_s: float = 0.5,
                 reader: Reader | None = None) -> None:
        self.devices = tuple(devices)
        self.interval_s = interval_s
        self._reader = reader
        self._nvml: Any = None
        self._handles: dict[int, Any] = {}
        self._peak: dict[int, float] = {}
        self._utilisation: list[float] = []
        self._samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.unavailable_reason = ""
        self.summary: SampleSummary | None = None  # set by stop() and by leaving a `with` block

    @property
    def active(self) -> bool:
        return self._thread is not None

    def _open_nvml(self) -> bool:
        nvml = _load_pynvml()
        if nvml is None:
            self.unavailable_reason = "NVML bindings not installed (nvidia-ml-py)"
            return False
        try:
            nvml.nvmlInit()
            self._handles = {d: nvml.nvmlDeviceGetHandleByIndex(d) for d in self.devices}
        except nvml.NVMLError as exc:
            self.unavailable_reason = f"NVML unavailable: {exc}"
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass
            return False
        self._nvml = nvml

        def read(device: int) -> tuple[float, float | None]:
            handle = self._handles[device]
            used = float(_nvml_memory(nvml, handle).used) / MIB
            try:
                utilisation: float | None = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except nvml.NVMLError:
                utilisation = None
            return used, utilisation

        self._reader = read
        return True

    def start(self) -> NvmlSampler:
        if self._thread is not None or not self.devices:
            return self
        if self._reader is None and not self._open_nvml():
            return self
        self._stop.clear()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        assert self._reader is not None
        for device in self.devices:
            try:
                used, utilisation = self._reader(device)
            except Exception:  # noqa: BLE001 - a failed reading must never break the job
                continue
            with self._lock:
                self._peak[device] = max(self._peak.get(device, 0.0), used)
                if utilisation is not None:
                    self._utilisation.append(utilisation)
        with self._lock:
            self._samples += 1

    def stop(self) -> SampleSummary:
        if self._thread is None:  # never started, or already stopped
            return self.summary or SampleSummary()
        self._stop.set()
        self._thread.join(timeout=max(5.0, 4 * self.interval_s))
        self._thread = None
        self._sample()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None
            self._reader = None
        with self._lock:
            self.summary = SampleSummary(
                peak_memory_mb={str(d): round(v, 1) for d, v in sorted(self._peak.items())},
                mean_utilisation=(round(statistics.fmean(self._utilisation), 1)
                                  if self._utilisation else None),
                samples=self._samples)
        return self.summary

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        summary = self.stop()
        if self.summary is None:  # it never started (no NVML): still leave an empty summary
            self.summary = summary
