"""Throughput of transcoding: seconds of video turned into all four renditions per wall second.

Run: .venv/bin/python benchmarks/transcode.py [--repeat N] [--media PATH] [--clips NAME ...]
Each clip from ../shared/media/video is transcoded from scratch (web + small MP4, poster,
thumbnail, two-pass loudness) into a fresh folder; the fastest of N runs counts. The figure
printed last is what a transcoding worker on this machine sustains. Not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from anywhere
sys.path.insert(0, str(Path(__file__).parent))
from machine import describe

from tasks.transcode import X264_PRESET, probe_media, transcode

DEFAULT_MEDIA = Path(os.environ.get("AVATARFLOW_TEST_MEDIA", REPO.parent / "shared" / "media"))
# Square talking heads near the generator's 512x512, and one larger frame.
DEFAULT_CLIPS = ["infinitetalk_ref_video.mp4", "retalking_face5.mp4", "retalking_face2.mp4"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA)
    parser.add_argument("--repeat", type=int, default=1, help="runs per clip; the fastest counts")
    parser.add_argument("--clips", nargs="+", default=DEFAULT_CLIPS)
    parser.add_argument("--x264-preset", default=X264_PRESET)
    args = parser.parse_args()
    clips = [args.media / "video" / name for name in args.clips]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        print(f"clips not found: {', '.join(missing)}; pass --media or set AVATARFLOW_TEST_MEDIA")
        return 2

    print(describe())
    print(
        f"x264 preset {args.x264_preset}; best of {args.repeat} run(s) per clip; "
        f"load average at start {os.getloadavg()[0]:.1f}\n"
    )
    # CPU seconds of the ffmpeg children: a figure that other work on the machine does not skew.
    print(
        f"{'clip':30} {'size':>9} {'video s':>8} {'wall s':>7} {'cpu s':>7} {'video s/wall s':>15}"
    )
    total_video = total_wall = total_cpu = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for n, clip in enumerate(clips):
            info = probe_media(clip)
            best, best_cpu = float("inf"), float("inf")
            for run in range(args.repeat):
                out_dir = Path(tmp) / f"{n}-{run}"  # fresh folder: nothing to reuse
                cpu_start = _children_cpu()
                start = time.perf_counter()
                transcode(clip, out_dir, name=clip.stem, x264_preset=args.x264_preset)
                best = min(best, time.perf_counter() - start)
                best_cpu = min(best_cpu, _children_cpu() - cpu_start)
            total_video += info.duration_s
            total_wall += best
            total_cpu += best_cpu
            size = f"{info.width}x{info.height}"
            print(
                f"{clip.name:30} {size:>9} {info.duration_s:8.1f} {best:7.2f} {best_cpu:7.2f} "
                f"{info.duration_s / best:15.2f}"
            )
    print(
        f"\n{'overall':30} {'':>9} {total_video:8.1f} {total_wall:7.2f} {total_cpu:7.2f} "
        f"{total_video / total_wall:15.2f}"
    )
    print(f"video seconds per CPU second: {total_video / total_cpu:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
