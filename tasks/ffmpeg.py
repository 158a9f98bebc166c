"""Running ffmpeg and ffprobe: own process group, own timeout, readable stderr tails."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from avatarflow.errors import ConfigurationError


@dataclass(frozen=True)
class Finished:
    out: bytes
    err: bytes
    returncode: int | None  # None: killed on timeout
    timed_out: bool


def ff_input(path: Path) -> str:
    # "file:" stops ffmpeg reading a name that starts with "-" as an option or "a:b" as a protocol.
    return "file:" + str(path)


def stderr_tail(stderr: bytes, max_chars: int = 600) -> str:
    """The last few non-empty lines of a tool's stderr, on one line."""
    lines = [line for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    tail = " | ".join(lines[-6:])
    return tail[-max_chars:] if tail else "(no output on stderr)"


def run_tool(cmd: list[str], *, timeout_s: float) -> Finished:
    """Run `cmd` in its own process group; on timeout kill the whole group (children included)."""
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"{cmd[0]} is not installed or not on PATH; install the Debian ffmpeg package") from exc
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it finished just as the time ran out
        _, err = proc.communicate()
        return Finished(b"", err, None, True)
    return Finished(out, err, proc.returncode, False)
