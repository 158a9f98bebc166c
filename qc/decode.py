"""One ffmpeg pass over a video: its picture on QC's 25 fps grid, and its soundtrack renditions.

Every QC measurement reads the video through `Decoding`: one ffmpeg process resamples any source
(VFR, 30 fps, HEVC 1080x1920, rotated phone video) onto the 25 fps grid of the container's
timeline (`fps=25:start_time=0`, frame i covers [i/25, (i+1)/25) s), scales it to a short side of
at most `DECODE_SHORT_SIDE` px and pipes it as I420, while the same process writes the
soundtrack renditions QC asks for (`SPEECH` for lip sync, `native_rendition` for loudness and
clipping). Starting ffmpeg or ffprobe costs about 0.17 s of CPU on the reference machine, as much
as decoding 2 s of video, and HEVC decoding dominates everything else: so one process, one demux,
one decode of each stream, whatever QC measures.

A reader thread keeps ffmpeg decoding while the caller works on earlier frames (two cores in
parallel). The process runs in its own process group with its own time limit; when it runs out
the whole group is killed (a Prefect task's timeout never reaches a child process).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from avatarflow import media
from tasks.audio import AudioError, load_pcm

FPS = 25  # the grid every QC measurement is made on (Live Avatar writes 25 fps)
SAMPLE_RATE = 16_000  # the lip-sync soundtrack's rate
HOP = SAMPLE_RATE // FPS  # audio samples per video frame (640)
DECODE_SHORT_SIDE = 360  # px; the face mesh looks at 192 px, the mouth patch at 32 px
DECODE_TIMEOUT_S = 900.0


class DecodeError(media.MediaError):
    """A video QC cannot read. Codes: missing, empty, timeout, unreadable, no_video, no_audio."""


def probe_video(path: Path, timeout_s: float = media.PROBE_TIMEOUT_S) -> media.MediaInfo:
    """The file's streams (one ffprobe call); DecodeError when it is unreadable or has no picture."""
    path = Path(path)
    try:
        info = media.probe(path, timeout_s=timeout_s)
    except media.MediaError as exc:
        raise DecodeError(exc.code, str(exc)) from None
    if info.video is None or info.video.display_size is None:
        raise DecodeError("no_video", f"{path.name} has no video stream: nothing to check")
    return info


def decode_size(info: media.MediaInfo, short_side: int = DECODE_SHORT_SIDE) -> tuple[int, int]:
    """Even (width, height) as displayed, with the short side at most `short_side` (never upscaled)."""
    assert info.video is not None and info.video.display_size is not None
    width, height = info.video.display_size  # ffmpeg turns rotated video upright when decoding
    k = min(1.0, short_side / max(1, min(width, height)))
    # Even sizes: 4:2:0 chroma has half the luma's width and height.
    return max(2, int(round(width * k / 2)) * 2), max(2, int(round(height * k / 2)) * 2)


# --------------------------------------------------------------------------------------------
# Soundtrack renditions

SPEECH = "speech"
# 16 kHz mono float32 with sample 0 at the container's time 0: ffmpeg pads (or trims) a stream
# that starts later (or earlier) than the picture's timeline, so audio frame i is video frame i.
SPEECH_ARGS = ("-map", "0:a:0", "-vn", "-sn", "-ac", "1",
               "-af", f"aresample={SAMPLE_RATE}:async=1:first_pts=0",
               "-c:a", "pcm_f32le", "-f", "f32le")  # fmt: skip
NATIVE = "native"


def native_rendition(stream: media.Stream) -> tuple[str, ...]:
    """The first audio stream at its own rate, at most 2 channels (surround folded by ffmpeg).

    Loudness (BS.1770) and clipping are judged on the samples as delivered: resampling would
    move the peaks. It starts at the stream's first sample, as `tasks.audio.load_pcm` reads it.
    """
    channels = min(int(stream.channels or 1), 2)
    rate = int(stream.sample_rate or SAMPLE_RATE)
    return ("-map", "0:a:0", "-vn", "-sn", "-ac", str(channels), "-ar", str(rate),
            "-c:a", "pcm_f32le", "-f", "f32le")  # fmt: skip


def mono(samples: np.ndarray, channels: int) -> np.ndarray:
    """Interleaved float32 samples averaged to one channel (float32)."""
    usable = samples[: samples.size - samples.size % max(1, channels)]
    if channels <= 1:
        return np.ascontiguousarray(usable, dtype=np.float32)
    return usable.reshape(-1, channels).mean(axis=1, dtype=np.float64).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Frames


class Frame:
    """One decoded I420 frame of the grid; its RGB conversion is made once, when first asked for."""

    __slots__ = ("_rgb", "index", "yuv")

    def __init__(self, index: int, yuv: np.ndarray) -> None:
        self.index = index
        self.yuv = yuv  # (h * 3 / 2, w) uint8: Y plane, then U and V
        self._rgb: np.ndarray | None = None

    @property
    def luma(self) -> np.ndarray:
        """The grey (Y) plane, video range 16-235, without a copy."""
        return self.yuv[: self.yuv.shape[0] * 2 // 3]

    @property
    def rgb(self) -> np.ndarray:
        # I420 rather than RGB through the pipe: half the bytes, and most frames are only ever
        # read as luma (black, frozen, the mouth patch); the face mesh needs RGB on every second.
        if self._rgb is None:
            self._rgb = cv2.cvtColor(self.yuv, cv2.COLOR_YUV2RGB_I420)
        return self._rgb

    @property
    def t(self) -> float:
        return self.index / FPS


class Decoding:
    """One ffmpeg process over `path`: `frames()` streams the picture, `soundtrack(name)` reads a
    rendition once the picture is done. Use as a context manager (it owns a scratch folder).

    Failures are recorded, not raised (`returncode`, `timed_out`, `errors`): the technical checks
    report them as verdicts, the lip-sync scorers raise (`raise_for_failure`).
    """

    def __init__(
        self, path: Path, size: tuple[int, int], *, soundtracks: Mapping[str, Sequence[str]] | None = None,
        timeout_s: float = DECODE_TIMEOUT_S, prefetch: int = 6,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.size = size
        self.timeout_s = timeout_s
        self.returncode: int | None = None
        self.timed_out = False
        self.errors = ""  # the tail of what ffmpeg printed at -v error
        self.frames_read = 0
        self.seconds = 0.0
        self._soundtracks = dict(soundtracks or {})
        self._prefetch = prefetch
        self._scratch = tempfile.TemporaryDirectory(prefix="qc-decode-")
        self._stream: Iterator[Frame] | None = None

    def __enter__(self) -> Decoding:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.close()  # a consumer that stopped early: kill and reap ffmpeg now
        self._scratch.cleanup()

    def _file(self, name: str) -> Path:
        return Path(self._scratch.name) / f"{name}.f32"

    def _command(self) -> list[str]:
        w, h = self.size
        # Bilinear is enough before a 192 px mesh, a 32 px mouth patch and 16 px blocks, and costs
        # far less than area averaging on 1080x1920 HEVC; skipping the loop filter speeds the
        # decoder up for free at this downscale. ffmpeg converts a tagged matrix (BT.709 phone
        # video) to BT.601, so OpenCV's BT.601 conversion gives the colours a player shows.
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-y", "-v", "error", "-skip_loop_filter", "all",
               "-i", media.ff_input(self.path), "-map", "0:v:0", "-an", "-sn",
               "-vf", (f"fps={FPS}:start_time=0,"
                       f"scale={w}:{h}:flags=bilinear:out_color_matrix=bt601:out_range=tv"),
               "-pix_fmt", "yuv420p", "-f", "rawvideo", "pipe:1"]  # fmt: skip
        for name, args in self._soundtracks.items():
            cmd += [*args, str(self._file(name))]
        return cmd

    def frames(self) -> Iterator[Frame]:
        """The picture, frame by frame, in order; once only."""
        if self._stream is not None:
            raise RuntimeError("a Decoding streams its frames once")
        self._stream = self._frames()
        return self._stream

    def _frames(self) -> Iterator[Frame]:
        w, h = self.size
        frame_bytes = w * h * 3 // 2
        started = time.perf_counter()
        frames: queue.Queue[np.ndarray | None | BaseException] = queue.Queue(maxsize=self._prefetch)
        stop = threading.Event()
        # stderr to a file: a damaged file can print more than a pipe holds and block ffmpeg.
        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=errors,
                                        start_new_session=True)  # fmt: skip
            except FileNotFoundError as exc:
                raise DecodeError("unreadable", "ffmpeg is not installed or not on PATH") from exc

            def kill(timed_out: bool) -> None:
                self.timed_out = self.timed_out or timed_out
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: ffmpeg may fork helpers
                except ProcessLookupError:
                    pass

            def reader() -> None:
                assert proc.stdout is not None
                try:
                    while not stop.is_set():
                        data = proc.stdout.read(frame_bytes)
                        if len(data) < frame_bytes:
                            break
                        frames.put(np.frombuffer(data, dtype=np.uint8).reshape(h * 3 // 2, w))
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                    frames.put(exc)
                    return
                frames.put(None)

            thread = threading.Thread(target=reader, name="qc-decode", daemon=True)
            timer = threading.Timer(self.timeout_s, kill, args=(True,))
            thread.start()
            timer.start()
            try:
                while True:
                    item = frames.get()
                    if item is None:
                        break
                    if isinstance(item, BaseException):
                        raise DecodeError("unreadable", f"{self.path.name}: reading decoded frames failed: {item}")
                    yield Frame(self.frames_read, item)
                    self.frames_read += 1
            finally:
                stop.set()
                timer.cancel()
                if proc.poll() is None and not self.timed_out:
                    kill(False)  # the consumer stopped early (an exception): do not leave ffmpeg running
                # Unblock a reader waiting on a full queue, then reap ffmpeg.
                while thread.is_alive():
                    try:
                        frames.get_nowait()
                    except queue.Empty:
                        thread.join(timeout=0.05)
                self.returncode = proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
                errors.seek(0)
                self.errors = errors.read().decode("utf-8", errors="replace").strip()[-600:]
                self.seconds = time.perf_counter() - started

    @property
    def failed(self) -> bool:
        return self.timed_out or self.returncode != 0

    def failure(self) -> str:
        """Why the pass failed, in one sentence (empty when it did not)."""
        if self.timed_out:
            return (f"{self.path.name}: decoding did not finish within {self.timeout_s:g} s "
                    f"({self.frames_read} frames read)")  # fmt: skip
        if self.returncode != 0:
            return (f"{self.path.name}: ffmpeg could not decode it (exit {self.returncode}): "
                    f"{self.errors[-300:] or 'no message'}")  # fmt: skip
        return ""

    def raise_for_failure(self) -> None:
        if self.failed:
            raise DecodeError("timeout" if self.timed_out else "unreadable", self.failure())

    def soundtrack(self, name: str) -> np.ndarray | None:
        """A rendition's float32 samples (interleaved), once the picture is done; None if absent."""
        path = self._file(name)
        if name not in self._soundtracks or not path.is_file():
            return None
        return np.fromfile(path, dtype="<f4")


def own_soundtrack(video: Path, info: media.MediaInfo | None = None,
                   timeout_s: float = DECODE_TIMEOUT_S) -> np.ndarray:  # fmt: skip
    """The video's first audio stream as the `SPEECH` rendition, without decoding the picture.

    The same samples `Decoding` writes next to the picture, so calibration (which swaps
    soundtracks) and scoring see the same audio. (`tasks.audio.load_pcm` decodes separate speech
    files; it starts at a stream's first sample, not at the video's time 0.)
    """
    video = Path(video)
    info = info or probe_video(video)
    if info.audio is None:
        raise DecodeError("no_audio", f"{video.name} has no audio stream: nothing to compare the mouth with")
    done = media.run_tool(["ffmpeg", "-nostdin", "-v", "error", "-i", media.ff_input(video),
                           *SPEECH_ARGS, "pipe:1"], timeout_s=timeout_s)  # fmt: skip
    if done.timed_out:
        raise DecodeError("timeout", f"{video.name}: decoding its soundtrack took more than {timeout_s:g} s")
    if done.returncode != 0:
        raise DecodeError("unreadable", f"{video.name}: ffmpeg could not decode its soundtrack: "
                                        f"{media.stderr_tail(done.err)}")  # fmt: skip
    out = done.out
    return np.frombuffer(out[: len(out) - len(out) % 4], dtype="<f4").copy()


def load_audio(path: Path) -> np.ndarray:
    """A separate speech file's audio, 16 kHz mono float32 (its sample 0 is the video's time 0)."""
    try:
        return load_pcm(Path(path), SAMPLE_RATE)
    except AudioError as exc:
        raise DecodeError("unreadable", str(exc)) from exc
