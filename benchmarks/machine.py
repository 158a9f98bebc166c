"""A one-line description of the machine a benchmark ran on, printed with every figure."""

from __future__ import annotations

import os
import platform
import resource
import subprocess


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as handle:
            kib = int(handle.readline().split()[1])
        return kib / 1024 / 1024
    except (OSError, ValueError, IndexError):
        return float("nan")


def describe() -> str:
    gpu = "no GPU"
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        if names and names[0].strip():
            gpu = ", ".join(n.strip() for n in names if n.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return (f"{cpu_model()}, {os.cpu_count()} cores, {memory_gib():.0f} GiB RAM, {gpu}; "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


if __name__ == "__main__":
    print(describe())


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (ffmpeg, ffprobe)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for the line a figure is printed with."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
