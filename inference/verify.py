"""Verify a generated video: it exists, decodes, has a video and an audio stream, and lasts as long as the speech.

Live Avatar's writer and muxer swallow their errors (it can exit 0 with no file or a silent
file), so every engine's output goes through here before anyone trusts it.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from inference.engine import Failure, FailureKind

FPS = 25


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
    if not path.exists():
        return Failure(FailureKind.NO_OUTPUT, f"the engine exited without writing {path}")
    if path.stat().st_size == 0:
        return Failure(FailureKind.NO_OUTPUT, f"the engine wrote an empty file {path}")
    try:
        done = subprocess.run(
            ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
            capture_output=True, text=True, timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return Failure(FailureKind.TIMEOUT, f"ffprobe took more than {timeout_s:.0f} s on {path}")
    if done.returncode != 0:
        return Failure(FailureKind.NO_OUTPUT, f"{path} does not decode: {done.stderr.strip()[-500:]}")
    data = json.loads(done.stdout or "{}")
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        return Failure(FailureKind.NO_VIDEO_STREAM, f"{path} has no video stream")
    num, _, den = str(video.get("avg_frame_rate") or video.get("r_frame_rate", "0/1")).partition("/")
    fps = float(num) / float(den or 1) if float(den or 1) else 0.0
    duration = float(data.get("format", {}).get("duration") or video.get("duration") or 0.0)
    frames = int(video["nb_frames"]) if str(video.get("nb_frames", "")).isdigit() else None
    return VideoInfo(
        width=int(video["width"]), height=int(video["height"]), fps=fps, duration_s=duration,
        video_codec=str(video.get("codec_name")), audio_codec=audio.get("codec_name") if audio else None,
        audio_sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        frames=frames,
        audio_duration_s=float(audio["duration"]) if audio and audio.get("duration") else None,
        video_duration_s=float(video["duration"]) if video.get("duration") else None,
    )


# ffmpeg's -shortest (Live Avatar's muxer) lets the AAC stream run past the video: by 0.25 s
# with ffmpeg 5.1 (Debian 12), not at all with 7.0. Audio that long is the muxer, not a fault.
SHORTEST_OVERSHOOT_S = 0.35


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
    # ffmpeg's -shortest does).
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
