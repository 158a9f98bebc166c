"""Keep the operator's terminal for avatarflow's own display; everything else goes to a log file."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console


@contextmanager
def others_to_log(log: Path) -> Iterator[Console]:
    """While inside, whatever is written to file descriptors 1 and 2 — MediaPipe's C++ logging,
    Prefect's log handler, warnings, ffmpeg and engine children — is appended to `log`; the
    yielded Console writes to the real terminal.

    File descriptors rather than sys.stdout/sys.stderr, because the C++ libraries write to them
    directly; restored on the way out, so errors after it reach the terminal as usual.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    width = Console().width  # measured while fd 1 is still the terminal
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1, encoding="utf-8", errors="replace")
    console = Console(file=terminal, width=width)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    try:
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        terminal.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err, log_fd):
            os.close(fd)
        terminal.close()
