"""The media layer every stage uses: one process runner and one probe.

`run_tool` runs ffmpeg or ffprobe (or any tool) in its own process group with its own timeout and
kills the whole group when it runs out — a task's timeout never reaches a child process.
`probe` asks ffprobe once for a file's container and streams and returns a typed `MediaInfo`;
each layer turns a `MediaError` into its own words (an audio error for an operator, a failure
kind for an engine, a check verdict for QC).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatarflow.errors import AvatarflowError, ConfigurationError

PROBE_TIMEOUT_S = 60.0


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


class MediaError(AvatarflowError):
    """A file ffprobe cannot describe. Codes: missing, empty, timeout, unreadable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, str(self)))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN → None


def _rate(text: Any) -> float | None:
    """ "25/1" → 25.0; "0/0" or missing → None."""
    num, _, den = str(text or "").partition("/")
    top, bottom = _number(num), _number(den or "1")
    return top / bottom if top is not None and bottom else None


@dataclass(frozen=True)
class Stream:
    """One stream as ffprobe describes it (the fields avatarflow reads; `raw` has the rest)."""

    index: int
    kind: str  # "video", "audio", "subtitle", "data", ...
    codec: str
    duration_s: float | None
    start_s: float | None
    frames: int | None  # nb_frames, when the container says
    width: int | None = None
    height: int | None = None
    fps: float | None = None  # avg_frame_rate, else r_frame_rate
    pix_fmt: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    sample_fmt: str | None = None
    rotation: int = 0  # degrees from the display matrix (phone video); ffmpeg turns it on decode
    attached_pic: bool = False  # cover art, not a picture track
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def display_size(self) -> tuple[int, int] | None:
        """(width, height) as decoded: turned by a 90° or 270° rotation."""
        if self.width is None or self.height is None:
            return None
        if abs(self.rotation) % 180 == 90:
            return self.height, self.width
        return self.width, self.height

    @classmethod
    def from_ffprobe(cls, data: dict[str, Any]) -> Stream:
        kind = str(data.get("codec_type") or "unknown")
        frames = str(data.get("nb_frames", ""))
        return cls(
            index=int(data.get("index") or 0), kind=kind, codec=str(data.get("codec_name") or "unknown"),
            duration_s=_number(data.get("duration")), start_s=_number(data.get("start_time")),
            frames=int(frames) if frames.isdigit() else None,
            width=int(data["width"]) if data.get("width") else None,
            height=int(data["height"]) if data.get("height") else None,
            fps=(_rate(data.get("avg_frame_rate")) or _rate(data.get("r_frame_rate"))) if kind == "video" else None,
            pix_fmt=data.get("pix_fmt"),
            sample_rate=int(data["sample_rate"]) if data.get("sample_rate") else None,
            channels=int(data["channels"]) if data.get("channels") else None,
            sample_fmt=data.get("sample_fmt"), rotation=_rotation(data),
            attached_pic=bool((data.get("disposition") or {}).get("attached_pic")), raw=data,
        )


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return int(round(float(side["rotation"])))
    return int(round(float((stream.get("tags") or {}).get("rotate", 0) or 0)))


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    container: str
    duration_s: float | None  # the container's (the longest stream's)
    size_bytes: int
    streams: tuple[Stream, ...]

    @property
    def video(self) -> Stream | None:
        """The first picture track (cover art does not count)."""
        return next((s for s in self.streams if s.kind == "video" and not s.attached_pic), None)

    @property
    def audio(self) -> Stream | None:
        return next((s for s in self.streams if s.kind == "audio"), None)

    def kinds(self) -> list[str]:
        """ "video (h264)", "audio (aac)": what the file holds, for messages."""
        return sorted({f"{s.kind} ({s.codec})" for s in self.streams})


def probe(path: Path, *, timeout_s: float = PROBE_TIMEOUT_S) -> MediaInfo:
    """The container and streams of `path`, from one ffprobe call; MediaError when it cannot say."""
    path = Path(path)
    if not path.is_file():
        raise MediaError("missing", f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise MediaError("empty", f"{path.name} is empty (0 bytes)")
    done = run_tool(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                     ff_input(path)], timeout_s=timeout_s)
    if done.timed_out:
        raise MediaError("timeout", f"{path.name}: ffprobe did not finish within {timeout_s:g} s; "
                                    f"ffprobe said: {stderr_tail(done.err)}")
    if done.returncode != 0:
        raise MediaError("unreadable", f"{path.name} cannot be read as media (ffprobe exit "
                                       f"{done.returncode}); ffprobe said: {stderr_tail(done.err)}")
    try:
        data = json.loads(done.out or b"{}")
    except json.JSONDecodeError:
        data = {}
    fmt = data.get("format") or {}
    return MediaInfo(path=path, container=str(fmt.get("format_name") or "unknown"),
                     duration_s=_number(fmt.get("duration")), size_bytes=size,
                     streams=tuple(Stream.from_ffprobe(s) for s in data.get("streams") or []))


def wav_samples(path: Path, rate: int = 16_000) -> int | None:
    """The sample count of a PCM WAV at `rate` (what preprocessing writes), from its header; None
    for anything else (another rate, another format, an unreadable file)."""
    try:
        with wave.open(str(path), "rb") as handle:
            return handle.getnframes() if handle.getframerate() == rate else None
    except (OSError, EOFError, wave.Error):
        return None
