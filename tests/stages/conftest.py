"""Fixtures of the fast stage tests: a tiny real clip and a stage context on SQLite."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from avatarflow.settings import Settings
from db.session import open_database
from db.stage import StageContext


@pytest.fixture(scope="module")
def clip(media, tmp_path_factory) -> dict[str, Path]:
    """A real talking clip cut to 3 s at 512×512, its soundtrack as 16 kHz speech, a frame as the crop."""
    folder = tmp_path_factory.mktemp("clip")
    video, speech, crop = folder / "talk.mp4", folder / "speech.wav", folder / "crop.png"
    source = media / "video/retalking_face2.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", "3", "-vf", "scale=512:512,fps=25",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1",
                    "-ar", "16000", str(video)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-vn", "-ac", "1", "-ar", "16000",
                    "-c:a", "pcm_s16le", str(speech)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "1", "-i", str(video), "-frames:v", "1", str(crop)],
                   check=True)
    return {"video": video, "speech": speech, "crop": crop}


@pytest.fixture
def ctx(tmp_path) -> StageContext:
    settings = Settings(data_root=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'a.db'}",
                        input_roots=[tmp_path], gang_lock="process")
    return StageContext(open_database(settings), settings, actor="test")
