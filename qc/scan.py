"""QC's one pass over a video: decode it once, track the face once, hand every frame to whoever
measures it (the mouth recorder always; the technical checks' `PictureScan` when asked)."""

from __future__ import annotations

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
    with Decoding(video, decode_size(info, short_side), soundtracks=soundtracks, timeout_s=timeout_s) as decoding:
        with tracker.lock:
            tracker.reset()
            track = StridedTrack(tracker, stride)

            def hand_on(done: list[tuple[Frame, np.ndarray | None]]) -> None:
                for frame, marks in done:
                    recorder.add(frame, marks)
                    for consumer in consumers:
                        consumer.add(frame, marks)

            for frame in decoding.frames():
                hand_on(track.feed(frame))
            hand_on(track.finish())
        pcm = decoding.soundtrack(SPEECH)
        raw = decoding.soundtrack(NATIVE)
    rate = int(info.audio.sample_rate or 0) if info.audio is not None else None
    channels = min(int(info.audio.channels or 1), 2) if info.audio is not None else 1
    mouth = recorder.build(str(video), info, seconds=time.perf_counter() - started, soundtrack=pcm)
    return Scan(video=video, info=info, mouth=mouth, speech=pcm,
                native=None if raw is None else mono(raw, channels), native_rate=rate,
                decoding=decoding)  # fmt: skip
