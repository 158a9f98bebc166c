"""Verify a generated video: it exists, decodes, has a video and an audio stream, and lasts as long as the speech.

Live Avatar's writer and muxer swallow their errors (it can exit 0 with no file or a silent
file), so every engine's output goes through here before anyone trusts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avatarflow import media
from inference.engine import Failure, FailureKind
from inference.liveavatar_facts import FPS, SHORTEST_OVERSHOOT_S


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration_s: float
    video_codec: str
    audio_codec: str | None
    audio_sample_rate: int | None
    frames: int | None
    audio_duration_s: float | None = None
    video_duration_s: float | None = None


def probe_video(path: Path, timeout_s: float = 60) -> VideoInfo | Failure:
    """ffprobe the file; a Failure when it is missing, unreadable or has no video stream."""
    try:
        info = media.probe(path, timeout_s=timeout_s)
    except media.MediaError as exc:
        kind = {"timeout": FailureKind.TIMEOUT}.get(exc.code, FailureKind.NO_OUTPUT)
        what = {"missing": f"the engine exited without writing {path}",
                "empty": f"the engine wrote an empty file {path}"}.get(exc.code, f"{path} does not decode: {exc}")
        return Failure(kind, what)
    video, audio = info.video, info.audio
    if video is None:
        return Failure(FailureKind.NO_VIDEO_STREAM, f"{path} has no video stream")
    return VideoInfo(
        width=int(video.width or 0), height=int(video.height or 0), fps=video.fps or 0.0,
        duration_s=float(info.duration_s or video.duration_s or 0.0), video_codec=video.codec,
        audio_codec=audio.codec if audio else None, audio_sample_rate=audio.sample_rate if audio else None,
        frames=video.frames, audio_duration_s=audio.duration_s if audio else None,
        video_duration_s=video.duration_s,
    )


def verify_output(path: Path, expected_seconds: float, *, tolerance_s: float = 2 / FPS + 0.05,
                  expected: str = "the speech") -> VideoInfo | Failure:
    """The video's info when it is sound, else the classified failure.

    `expected_seconds` is how long the job's video must last: the speech, or less when the job
    makes fewer clips than the speech needs (`inference.output_rules.video_seconds`); `expected`
    says in words where that length comes from, for the failure message.
    """
    info = probe_video(path)
    if isinstance(info, Failure):
        return info
    if info.audio_codec is None:
        return Failure(FailureKind.NO_AUDIO_STREAM, f"{path} has no audio stream (muxing failed silently)")
    # The container's duration is the longer stream's, so each stream is checked on its own: the
    # picture must last as planned, the sound must cover it (and may overrun it only as far as
    # ffmpeg's -shortest does: SHORTEST_OVERSHOOT_S).
    video_s = info.video_duration_s if info.video_duration_s is not None else info.duration_s
    if abs(video_s - expected_seconds) > tolerance_s:
        return Failure(
            FailureKind.WRONG_DURATION,
            f"{path}: the picture lasts {video_s:.2f} s but {expected} lasts {expected_seconds:.2f} s "
            f"(tolerance {tolerance_s:.2f} s)",
        )
    audio_s = info.audio_duration_s if info.audio_duration_s is not None else info.duration_s
    if expected_seconds - audio_s > tolerance_s:
        return Failure(
            FailureKind.WRONG_DURATION,
            f"{path}: the audio stream stops at {audio_s:.2f} s but {expected} lasts "
            f"{expected_seconds:.2f} s",
        )
    if audio_s - expected_seconds > max(tolerance_s, SHORTEST_OVERSHOOT_S):
        return Failure(
            FailureKind.WRONG_DURATION,
            f"{path}: the audio stream lasts {audio_s:.2f} s but {expected} lasts "
            f"{expected_seconds:.2f} s",
        )
    return info
