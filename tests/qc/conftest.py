"""QC test fixtures: one landmark scorer for the session (its face mesh graph is built once), and
a clip's first frame as its reference portrait."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qc.lipsync import LandmarkSyncScorer


@pytest.fixture(scope="session")
def scorer() -> Iterator[LandmarkSyncScorer]:
    s = LandmarkSyncScorer()
    yield s
    s.close()


@pytest.fixture(scope="session")
def portrait_of(tmp_path_factory) -> Callable[[Path], Path]:
    """The first frame of a video, as a PNG: the reference portrait the clip is checked against."""
    folder = tmp_path_factory.mktemp("portraits")

    def extract(video: Path) -> Path:
        out = folder / f"{video.stem}.png"
        if not out.exists():
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(video), "-frames:v", "1",
                            str(out)], check=True, timeout=120)  # fmt: skip
        return out

    return extract
