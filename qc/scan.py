"""QC's one pass over a video: decode it once, track the face once, hand every frame to whoever
measures it (the mouth recorder always; the technical checks' `PictureScan` when asked)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from avatarflow import media
from qc.decode import (
    DECODE_SHORT_SIDE,
    DECODE_TIMEOUT_S,
    NATIVE,
    SPEECH,
    SPEECH_ARGS,
    Decoding,
    Frame,
    decode_size,
    mono,
    native_rendition,
    probe_video,
)  # fmt: skip
from qc.facetrack import MESH_STRIDE, MeshTracker, MouthRecorder, MouthTrack, StridedTrack


class FrameConsumer(Protocol):
    def add(self, frame: Frame, marks: np.ndarray | None) -> None:
        """One frame of the 25 fps grid, in order, with the face track's landmarks (None: no face)."""
        ...


@dataclass
class Scan:
    """Everything one pass measured, and how the decoding went."""

    video: Path
    info: media.MediaInfo
    mouth: MouthTrack
    speech: np.ndarray | None  # 16 kHz mono, sample 0 at time 0 (None: not asked for, or no audio)
    native: np.ndarray | None  # mono at `native_rate`, from the stream's first sample
    native_rate: int | None
    decoding: Decoding  # returncode, timed_out, errors, frames_read, seconds, timeout_s

    @property
    def frames(self) -> int:
        return self.decoding.frames_read


class _Measurer:
    """Hands tracked frames to the consumers in a thread of their own, in order.

    The face mesh (native code, the GIL released) and the consumers' numpy and OpenCV work then
    run on two cores at once. The queue holds at most `depth` batches of frames, so memory stays
    at a few frames however long the video.
    """

    def __init__(self, consumers: Sequence[FrameConsumer], depth: int = 8) -> None:
        self.consumers = consumers
        self._queue: queue.Queue[list[tuple[Frame, np.ndarray | None]] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="qc-measure", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (done := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the producer learns of the error at close
            try:
                for frame, marks in done:
                    for consumer in self.consumers:
                        consumer.add(frame, marks)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc

    def put(self, done: list[tuple[Frame, np.ndarray | None]]) -> None:
        if done:
            self._queue.put(done)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def scan_video(
    video: Path, tracker: MeshTracker, *, info: media.MediaInfo | None = None,
    short_side: int = DECODE_SHORT_SIDE, stride: int = MESH_STRIDE,
    consumers: Sequence[FrameConsumer] = (), speech: bool = False, native: bool = False,
    timeout_s: float = DECODE_TIMEOUT_S,
) -> Scan:  # fmt: skip
    """Decode `video` onto the 25 fps grid and track its face, feeding `consumers` on the way.

    `speech` / `native` also decode the soundtrack's renditions in the same ffmpeg run (when the
    file has an audio stream). Raises DecodeError only when the file cannot be probed; a failed
    or timed-out decode is recorded in `Scan.decoding` with whatever was read before it.
    """
    started = time.perf_counter()
    video = Path(video)
    info = info or probe_video(video)
    soundtracks: dict[str, Sequence[str]] = {}
    if info.audio is not None:
        if speech:
            soundtracks[SPEECH] = SPEECH_ARGS
        if native:
            soundtracks[NATIVE] = native_rendition(info.audio)
    recorder = MouthRecorder()
    measure = _Measurer([recorder, *consumers])
    with Decoding(video, decode_size(info, short_side), soundtracks=soundtracks, timeout_s=timeout_s) as decoding:
        try:
            with tracker.lock:
                tracker.reset()
                track = StridedTrack(tracker, stride)
                for frame in decoding.frames():
                    measure.put(track.feed(frame))
                measure.put(track.finish())
        finally:
            measure.close()
        pcm = decoding.soundtrack(SPEECH)
        raw = decoding.soundtrack(NATIVE)
    rate = int(info.audio.sample_rate or 0) if info.audio is not None else None
    channels = min(int(info.audio.channels or 1), 2) if info.audio is not None else 1
    mouth = recorder.build(str(video), info, seconds=time.perf_counter() - started, soundtrack=pcm)
    return Scan(video=video, info=info, mouth=mouth, speech=pcm,
                native=None if raw is None else mono(raw, channels), native_rate=rate,
                decoding=decoding)  # fmt: skip
