"""Process control for launched engines: process trees that outlive their launcher, group kills,
and streaming a child's output to a log.

torchrun starts each rank in a session of its own, so a plain process-group kill misses them:
the helpers here find a launcher's descendants in /proc (by parent, in any session) and remember
them while the job runs.
"""

from __future__ import annotations

import codecs
import collections
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# /proc/<pid>/stat after the command name: state, ppid, pgrp, ... (field 22 of proc(5) is index 19).
_STATE, _PPID, _PGRP, _START_TIME = 0, 1, 2, 19


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()  # the name may hold spaces and ")"


def _live_processes() -> list[tuple[int, list[str]]]:
    """(pid, stat fields) of every process that is not a zombie."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(entry)) and len(fields) > _PGRP and fields[_STATE] != "Z":
            found.append((int(entry), fields))
    return found


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    return [pid for pid, fields in _live_processes() if int(fields[_PGRP]) == pgid]


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and len(fields) > _STATE and fields[_STATE] != "Z"


def descendants(root: int) -> list[int]:
    """Live descendants of `root`, from /proc (in whatever session or group they now are)."""
    children: dict[int, list[int]] = {}
    for pid, fields in _live_processes():
        children.setdefault(int(fields[_PPID]), []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def start_time(pid: int) -> str | None:
    """When the process started (clock ticks after boot): tells a reused pid from the original."""
    fields = _stat(pid)
    return fields[_START_TIME] if fields and len(fields) > _START_TIME else None


def _signal_each(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # gone already, or a reused pid that is not ours


def _signal_group_and(pgid: int, pids: list[int], sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    _signal_each(pids, sig)


class ProcessTree:
    """Remembers a launcher's descendants while it runs (a thread looks every `interval_s`).

    When torchrun dies abnormally its ranks are re-parented and, being in sessions of their
    own, escape both the process group and the parent chain: only pids seen earlier can still
    be found. Each is remembered with its start time, so a reused pid is never signalled.
    """

    def __init__(self, root: int, interval_s: float = 2.0) -> None:
        self.root = root
        self._seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(interval_s,), daemon=True)
        self._thread.start()

    def _watch(self, interval_s: float) -> None:
        while True:
            self.refresh()
            if self._stop.wait(interval_s):
                return

    def refresh(self) -> None:
        for pid in descendants(self.root):
            if pid not in self._seen and (started := start_time(pid)):
                self._seen[pid] = started

    def survivors(self) -> list[int]:
        """Remembered descendants that are still alive (and still the same processes)."""
        return [pid for pid, started in list(self._seen.items())
                if pid_alive(pid) and start_time(pid) == started]

    def stop(self) -> None:
        self._stop.set()


def kill_survivors(tree: ProcessTree, grace_s: float) -> list[int]:
    """SIGTERM, then SIGKILL, the remembered descendants still alive; the pids that were."""
    tree.stop()
    left = tree.survivors()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal_each(left, sig)
        end = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < end and any(pid_alive(p) for p in left):
            time.sleep(0.05)
    return left


def kill_process_group(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM torchrun's group and every descendant, wait, then SIGKILL whatever is left.

    torchrun starts each rank in a session of its own, outside the launcher's process group, and
    waits 30 s for ranks that ignore SIGTERM: the descendants are listed before anything is
    signalled, so a rank never outlives the kill holding its GPU.
    """
    pgid = proc.pid  # start_new_session=True made the child its group's leader
    tree = descendants(proc.pid)
    _signal_group_and(pgid, tree, signal.SIGTERM)

    def alive() -> bool:
        return proc.poll() is None or bool(group_members(pgid)) or any(pid_alive(p) for p in tree)

    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and alive():
        time.sleep(0.05)
    tree += [p for p in descendants(proc.pid) if p not in tree]
    _signal_group_and(pgid, tree, signal.SIGKILL)
    try:
        proc.wait(timeout=max(grace_s, 5.0))
    except subprocess.TimeoutExpired:
        pass
    # Processes reparented to init die from the SIGKILL; wait briefly until they are gone.
    end = time.monotonic() + 5.0
    while (group_members(pgid) or any(pid_alive(p) for p in tree)) and time.monotonic() < end:
        time.sleep(0.05)


class LogSink:
    """Appends a process's output to a log file, keeps a tail in memory for classification."""

    def __init__(self, log_path: Path | None, tail_lines: int = 400) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)

    def write_command(self, argv: list[str], cwd: Path) -> None:
        """The launch as a shell line a person can paste."""
        self.write(f"$ (cd {shlex.quote(str(cwd))} && {shlex.join(argv)})")

    def write(self, line: str) -> None:
        with self._lock:
            self.tail.append(line)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def tail_text(self) -> str:
        with self._lock:
            return "\n".join(self.tail)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def split_segments(buffer: str) -> tuple[list[tuple[str, bool]], str]:
    """Split on \\r and \\n: (segment, ended by \\n) pairs, and the unterminated rest."""
    # A trailing "\\r" may be the first half of "\\r\\n": decide when the next chunk comes.
    hold = buffer.endswith("\r")
    body = buffer[:-1] if hold else buffer
    segments: list[tuple[str, bool]] = []
    start = 0
    for match in re.finditer(r"\r\n|\r|\n", body):
        piece = body[start:match.start()]
        if piece.strip():
            segments.append((piece, match.group() != "\r"))
        start = match.end()
    return segments, body[start:] + ("\r" if hold else "")


def pump(stream: IO[bytes], on_segment: Callable[[str, bool], None]) -> None:
    """Read a pipe to EOF, calling `on_segment(text, ends_line)` for every \\r- or \\n-terminated piece.

    Reads whatever is available rather than whole lines: tqdm repaints with \\r and only writes
    \\n when a bar closes, so line reads would hold progress back.
    """
    rest = ""
    fd = stream.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        segments, rest = split_segments(rest + decoder.decode(chunk))
        for segment, ends_line in segments:
            on_segment(segment, ends_line)
    rest += decoder.decode(b"", final=True)
    if rest.strip("\r\n ").strip():
        on_segment(rest.rstrip("\r"), True)
