"""Throughput of audio preprocessing on the real test media: audio seconds per wall second.

Run: .venv/bin/python benchmarks/preprocess_audio.py [--repeat N] [--media PATH]
Prepares every file in ../shared/media/audio and one video soundtrack, splits the 60 s file,
and prints per-file and overall figures with a description of the machine. Not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from anywhere

from tasks.audio import prepare_audio, split_at_pauses

DEFAULT_MEDIA = Path(os.environ.get("AVATARFLOW_TEST_MEDIA", REPO.parent / "shared" / "media"))
SPLIT_FILE = "musetalk_eng.wav"
SPLIT_MAX_S = 20.0


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        version = subprocess.run(
            ["ffmpeg", "-version"], capture_output=True, text=True, timeout=30
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        version = "ffmpeg not found"
    return (
        f"CPU: {cpu}, {os.cpu_count()} cores\n"
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}\n"
        f"{version}"
    )


def best_of(repeat: int, run) -> tuple[float, object]:
    """Fastest wall time of `repeat` runs (the least disturbed by other work on the machine)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA)
    parser.add_argument("--repeat", type=int, default=3, help="runs per file; the fastest counts")
    args = parser.parse_args()
    audio_dir = args.media / "audio"
    if not audio_dir.is_dir():
        print(
            f"real test media not found at {args.media}; pass --media or set AVATARFLOW_TEST_MEDIA"
        )
        return 2
    sources = sorted(p for p in audio_dir.iterdir() if p.is_file())
    sources.append(args.media / "video" / "retalking_face2.mp4")

    print(machine())
    print(f"best of {args.repeat} runs per file\n")
    print(f"{'file':34} {'format':>22} {'audio s':>8} {'wall s':>7} {'audio s/wall s':>15}")
    total_audio = total_wall = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        prepared = {}
        for src in sources:
            out = out_dir / f"{src.stem}.wav"
            wall, result = best_of(args.repeat, lambda src=src, out=out: prepare_audio(src, out))
            info = result.source
            fmt = f"{info.codec} {info.sample_rate / 1000:g}k {info.channels}ch"
            seconds = info.duration_s
            total_audio += seconds
            total_wall += wall
            prepared[src.name] = result
            print(f"{src.name:34} {fmt:>22} {seconds:8.1f} {wall:7.3f} {seconds / wall:15.1f}")

        split_src = prepared[SPLIT_FILE].out_path
        seconds = prepared[SPLIT_FILE].duration_s
        wall, segments = best_of(
            args.repeat,
            lambda: split_at_pauses(split_src, out_dir / "split", max_segment_s=SPLIT_MAX_S),
        )
        label = f"split {SPLIT_FILE} (max {SPLIT_MAX_S:g} s)"
        fmt = f"{len(segments)} segments"
        print(f"{label:34} {fmt:>22} {seconds:8.1f} {wall:7.3f} {seconds / wall:15.1f}")
        total_audio += seconds
        total_wall += wall

    rate = total_audio / total_wall
    print(f"\n{'overall':34} {'':>22} {total_audio:8.1f} {total_wall:7.3f} {rate:15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
