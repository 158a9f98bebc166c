"""Benchmark the lip-sync scorer: seconds of video scored per wall second, per clip and overall.

    .venv/bin/python benchmarks/qc_lipsync.py [--media ../shared/media] [--repeat 1]
        [--stride 2] [--no-production]

Two sets are timed with one `LandmarkSyncScorer` built first (not timed) and reused, as a worker
does; each `score(video)` call decodes, tracks, reads the soundtrack and measures:
- the real clips in ../shared/media/video as they are (VFR, 30 fps, HEVC 1080x1920 included);
- the same clips in the format Live Avatar delivers (H.264 + AAC, 25 fps, 512x512 or 384x704 for
  portrait video), transcoded first into a temporary folder (not timed): what production scores.

Besides wall time it prints the CPU time of this process and its ffmpeg children: on a shared
machine the wall time depends on what else runs (the load average is printed), while
"CPU-bound on 2 cores" = 2 x video seconds / CPU seconds is what the two cores could deliver if
this were the only work on them. Not a test: it prints numbers and the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from anywhere
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's setup chatter

from machine import cpu_seconds, describe

from qc.lipsync import LandmarkSyncScorer


def production_copy(src: Path, folder: Path) -> Path:
    """The clip as Live Avatar would deliver it: H.264 + AAC, 25 fps, 512x512 (or 384x704)."""
    out = folder / f"{src.stem}_prod.mp4"
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height", "-of", "csv=p=0", str(src)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    w, h = (int(v) for v in probe.stdout.strip().split(",")[:2])
    size = "512:512" if abs(w - h) < 0.1 * max(w, h) else ("384:704" if h > w else "704:384")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf",
                    f"fps=25,scale={size}:force_original_aspect_ratio=increase,crop={size}",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "128k", "-ar", "44100", str(out)],
                   check=True, timeout=600)  # fmt: skip
    return out


def run(scorer: LandmarkSyncScorer, clips: list[Path], repeat: int, title: str) -> None:
    print(f"\n{title}")
    print(f"{'clip':32s} {'video s':>7s} {'wall s':>7s} {'video s/wall s':>14s} "
          f"{'CPU s':>6s} {'CPU-bound on 2 cores':>20s}  offset  score")  # fmt: skip
    total_video = total_wall = total_cpu = 0.0
    load_before = os.getloadavg()[0]
    for clip in clips:
        walls, cpus = [], []
        result = None
        for _ in range(repeat):
            c0, t0 = cpu_seconds(), time.perf_counter()
            result = scorer.score(clip)
            walls.append(time.perf_counter() - t0)
            cpus.append(cpu_seconds() - c0)
        assert result is not None
        wall, cpu = min(walls), min(cpus)
        video = result.duration_s
        total_video += video
        total_wall += wall
        total_cpu += cpu
        score = "-" if result.score is None else f"{result.score:.3f}"
        print(f"{clip.name:32s} {video:7.1f} {wall:7.2f} {video / wall:14.1f} {cpu:6.2f} "
              f"{2 * video / cpu:20.1f}  {result.offset_frames!s:>6s}  {score}")  # fmt: skip
    print(f"{'overall':32s} {total_video:7.1f} {total_wall:7.2f} {total_video / total_wall:14.1f} "
          f"{total_cpu:6.2f} {2 * total_video / total_cpu:20.1f}")  # fmt: skip
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    parser.add_argument("--repeat", type=int, default=1, help="runs per clip (the best is kept)")
    parser.add_argument("--stride", type=int, default=None, help="face-mesh stride (default 2)")
    parser.add_argument("--no-production", action="store_true", help="skip the delivered-format set")
    args = parser.parse_args()
    clips = sorted((args.media / "video").glob("*.mp4"))
    if not clips:
        sys.exit(f"no clips in {args.media / 'video'}")
    print(describe())
    kwargs = {} if args.stride is None else {"mesh_stride": args.stride}
    scorer = LandmarkSyncScorer(**kwargs)
    print(f"scorer {scorer.name}: mesh every {scorer.mesh_stride} frame(s), decode short side "
          f"{scorer.short_side} px")  # fmt: skip
    scorer.score(clips[-1])  # warm-up: builds the face-mesh graph, loads the calibration
    run(scorer, clips, args.repeat, "real clips as they are")
    if not args.no_production:
        with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
            made = [production_copy(c, Path(tmp)) for c in clips]
            run(scorer, made, args.repeat, "the same clips as delivered (H.264/AAC, 25 fps, 512x512 or 384x704)")
    scorer.close()


if __name__ == "__main__":
    main()
