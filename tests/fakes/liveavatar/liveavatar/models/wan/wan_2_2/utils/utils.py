"""FAKE: save_video and merge_video_audio with the real script's behaviour (errors swallowed,
-shortest mux), writing a synthetic picture of the size and frame count the fake pipeline made."""

from __future__ import annotations

from ..._fake_script import script


def save_video(tensor, save_file=None, fps=30, suffix=".mp4", nrow=8, normalize=True, value_range=(-1, 1)):
    video = tensor  # the fake pipeline's FakeVideo (its [None] is itself)
    script.save_video(save_file, video.width, video.height, video.frames)


def merge_video_audio(video_path: str, audio_path: str) -> None:
    script.merge_video_audio(video_path, audio_path)
