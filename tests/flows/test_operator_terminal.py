"""The operator's first hour, in a real pseudo-terminal: demo → status → run → deliver → server stop.

Drives the installed `avatarflow` console script with pexpect, as a person at a terminal would
(a tty, so rich draws its live display), against a Prefect server that avatarflow itself starts
and stops, and checks what the operator sees.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import pexpect
import pytest

AVATARFLOW = Path(sys.executable).with_name("avatarflow")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
# One row of the stage display: "generate    ━━━━━━━━━━━╺━━━━ 1/2 ..."
STAGE_ROW = re.compile(r"(preprocess|plan|generate|qc|transcode|route) +[━╸╺ ]+ +(\d+)/(\d+)")
# What third-party code writes when it reaches the terminal: MediaPipe/TFLite/absl C++ logging,
# Prefect's log lines, Python warnings, setuptools' editable-install notice.
THIRD_PARTY = re.compile(r"W0000|I0000|inference_feedback_manager|XNNPACK|absl::|TensorFlow|"
                         r"\| (INFO|WARNING|ERROR|DEBUG) +\||Warning:|Editable installation|Traceback")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Operator:
    """One terminal session: every command's screen output, ANSI codes removed, is kept."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd
        self.screens: dict[str, str] = {}

    def run(self, label: str, args: list[str], expect_status: int = 0, timeout: float = 300) -> str:
        child = pexpect.spawn(str(AVATARFLOW), args, env=self.env, cwd=str(self.cwd), encoding="utf-8",
                              codec_errors="replace", dimensions=(50, 200), timeout=timeout)
        child.expect(pexpect.EOF)
        child.close()
        text = ANSI.sub("", child.before)
        self.screens[label] = text
        assert child.exitstatus == expect_status, f"`avatarflow {' '.join(args)}` exited {child.exitstatus}:\n{text}"
        return text


def _stage_counts(screen: str, stage: str) -> list[int]:
    return [int(done) for name, done, _ in STAGE_ROW.findall(screen) if name == stage]


def _processes_with(marker: str) -> list[str]:
    """Processes (other than this one) whose environment names `marker`: avatarflow's, in this test."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {cmdline[:200]}")
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_first_hour_in_a_terminal(tmp_path, media):
    root = tmp_path / "data"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("image/facerec_obama.jpg", "image/skimage_chelsea.png", "audio/retalking_audio2.wav",
                 "audio/retalking_audio1.wav"):
        shutil.copy(media / name, inputs)
    manifest = inputs / "monday.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["external_id", "image", "audio", "template"])
        writer.writeheader()
        writer.writerow({"external_id": "anchor", "image": "facerec_obama.jpg", "audio": "retalking_audio2.wav",
                         "template": "default"})
        # The bad row: a cat has no human face; preprocessing fails it with a reason.
        writer.writerow({"external_id": "cat", "image": "skimage_chelsea.png", "audio": "retalking_audio1.wav",
                         "template": "default"})
    marker = str(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AVATARFLOW_"))}
    env.update(AVATARFLOW_DATA_ROOT=marker, AVATARFLOW_PREFECT_PORT=str(_free_port()),
               PREFECT_HOME=str(tmp_path / "prefect-home"), TERM="xterm-256color", HF_HUB_OFFLINE="1")
    operator = Operator(env, tmp_path)
    try:
        demo = operator.run("demo", ["demo"], timeout=420)
        assert "starting a local Prefect server" in demo
        assert "demo finished" in demo
        # The display filled: each stage was seen below its total, then at it.
        for stage in ("preprocess", "route"):
            counts = _stage_counts(demo, stage)
            assert counts and min(counts) == 0 and max(counts) == 2, (stage, counts, demo[-3000:])
        assert re.search(r"demo-welcome +│ (approved|delivered|review_pending|rejected)", demo), demo[-3000:]
        # Hints as the operator can paste them: the full path unless the PATH finds this avatarflow.
        assert re.search(rf"`({re.escape(str(AVATARFLOW))}|avatarflow) server stop`", demo), demo[-2000:]

        status = operator.run("status", ["status"])
        assert "demo" in status and "total" in status

        run = operator.run("run", ["run", str(manifest)], timeout=420)
        assert "already running" not in run and "starting a local Prefect server" not in run  # reused
        assert "batch monday" in run
        assert re.search(r"│ \d+ +│ cat +│ failed +│ preprocess: No human face found", run), run[-3000:]
        assert re.search(r"│ \d+ +│ anchor +│ (approved|delivered|review_pending|rejected)", run), run[-3000:]
        assert _stage_counts(run, "route"), run[-3000:]
        assert "log " in run and (root / "logs" / "runs").is_dir()

        deliver = operator.run("deliver", ["deliver"])
        assert "delivered" in deliver or "nothing to deliver" in deliver

        for label, screen in operator.screens.items():
            assert not THIRD_PARTY.search(screen), f"third-party output reached the terminal in `{label}`:\n{screen}"
        # ...and went to the run's log file instead.
        logs = "".join(p.read_text(errors="replace") for p in (root / "logs" / "runs").glob("run-*.log"))
        assert "| INFO    |" in logs

        assert _processes_with(marker), "the Prefect server avatarflow started should be running here"
    finally:
        stop = operator.run("stop", ["server", "stop"])
    assert "stopped" in stop, stop
    deadline = time.monotonic() + 10
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"avatarflow processes left after `server stop`: {left}"
    status = operator.run("server status", ["server", "status"], expect_status=1)
    assert "no Prefect server running" in status
