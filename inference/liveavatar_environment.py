"""What Live Avatar's own environment has, asked of its interpreter before a job is launched.

Its text and audio cross-attention need FlashAttention, compiling fails on Python >= 3.12, and its
muxer runs plain `ffmpeg` from PATH: each fails minutes into a job (or, for ffmpeg, silently), so
they are checked first. The wording of each problem is shared with the failure classification,
which recognises the same problems when they happen anyway.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from inference.liveavatar_config import SETTING_COMPILE, SETTING_PYTHON, LiveAvatarConfig
from inference.liveavatar_facts import COMPILE_BROKEN_FROM_PYTHON, COMPILE_WORKAROUND_ENV

COMPILE_REMEDY = (
    f"Set {SETTING_COMPILE}=false, or run Live Avatar on Python 3.10 as it documents "
    f"({COMPILE_WORKAROUND_ENV}=1 does not help: on an H200 with Python 3.12 / torch 2.11 a job "
    "then failed in inductor after ~88 s of compiling, GuardOnDataDependentSymNode in "
    "causal_model_s2v.py)")
NO_FFMPEG = ("no `ffmpeg` on the PATH Live Avatar runs with: it muxes the soundtrack with it "
             "(imageio-ffmpeg's bundled binary is not on PATH); install ffmpeg or add its folder to PATH")


def flash_attention_missing(python: Path | None = None) -> str:
    """Why a job without FlashAttention fails, and how to install it (with Live Avatar's python)."""
    pip = f"{python} -m pip" if python is not None else "pip"
    return ("FlashAttention is not installed in Live Avatar's environment: its text and audio "
            "cross-attention assert flash-attn 2 or 3 at the first DiT forward; install it there "
            f"(`{pip} install flash-attn --no-build-isolation`)")


@dataclass(frozen=True)
class EnvironmentReport:
    """What Live Avatar's own interpreter has: probed once, in the environment jobs run with."""

    python_version: tuple[int, int] | None
    flash_attention: bool  # flash_attn (2) or flash_attn_interface (3) importable
    problem: str | None = None  # why the probe itself failed

    def problems(self, config: LiveAvatarConfig) -> list[str]:
        if self.problem:
            return [self.problem]
        found = [] if self.flash_attention else [flash_attention_missing(config.python_path)]
        if (config.enable_compile and config.refuse_broken_compile and self.python_version
                and self.python_version >= COMPILE_BROKEN_FROM_PYTHON):
            found.append(
                f"compiling is on ({SETTING_COMPILE}=true) but Live Avatar's environment runs Python "
                f"{self.python_version[0]}.{self.python_version[1]}: torch.compile fails there at the "
                "first DiT forward (UnboundLocalError in attention.py flash_attention, a dynamo bug "
                f"with inlined comprehensions). {COMPILE_REMEDY}")
        return found


_PROBE = (
    "import importlib.util as u, json, sys\n"
    "print(json.dumps({'python': sys.version_info[:2], 'flash': any(u.find_spec(m) is not None "
    "for m in ('flash_attn_interface', 'flash_attn'))}))"
)
_probed: dict[tuple[str, str, int], EnvironmentReport] = {}
_probe_lock = threading.Lock()


def probe_environment(config: LiveAvatarConfig, env: Mapping[str, str]) -> EnvironmentReport:
    """Ask Live Avatar's interpreter (with the jobs' environment) what it has; healthy answers are cached."""
    key = (str(config.python_path), str(config.checkout), hash(frozenset(env.items())))
    with _probe_lock:
        if key in _probed:
            return _probed[key]
    python = config.python_path
    if not os.access(python, os.X_OK):
        return EnvironmentReport(None, False, f"Live Avatar's python not found or not executable: {python} "
                                              f"(set {SETTING_PYTHON})")
    try:
        done = subprocess.run([str(python), "-c", _PROBE], cwd=config.checkout, env=dict(env),
                              capture_output=True, text=True, timeout=60, check=False)
        data = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return EnvironmentReport(None, False, f"could not query Live Avatar's python {python}: {exc}")
    if data is None:
        return EnvironmentReport(None, False, f"Live Avatar's python {python} failed: "
                                              f"{(done.stderr or '').strip()[-300:]}")
    report = EnvironmentReport(tuple(data["python"]), bool(data["flash"]))  # type: ignore[arg-type]
    if report.flash_attention:
        with _probe_lock:
            _probed[key] = report
    return report


def environment_problems(config: LiveAvatarConfig, env: Mapping[str, str]) -> list[str]:
    """Everything in the jobs' environment that would make a job fail: the probe's answer, and ffmpeg."""
    problems = probe_environment(config, env).problems(config)
    if shutil.which("ffmpeg", path=env.get("PATH")) is None:
        # merge_video_audio runs plain `ffmpeg`, and a failure there is swallowed: the job would
        # run to the end and leave a video without sound.
        problems.append(NO_FFMPEG)
    return problems
