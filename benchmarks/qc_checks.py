"""Benchmark QC's single entry point against its two halves run apart, side by side.

    .venv/bin/python benchmarks/qc_checks.py [--media ../shared/media] [--repeat 2] [--no-generated]

For every real clip in ../shared/media/video (and, unless --no-generated, the same clips in the
generator's shape: 512x512 or 384x704 H.264 + AAC at 25 fps, what production checks):
- one pass: `qc.checks.check_video` (one ffprobe, one ffmpeg run for picture and sound, one face
  track feeding the lip-sync score and the technical checks);
- apart: `LandmarkSyncScorer.score` then `qc.technical.run_checks` (each probes and decodes the
  video, each tracks the face; the checks reuse the scorer's face mesh, as a worker would).
The clip's first frame is the reference portrait. One scorer is built and warmed up first (not
timed), as in a worker. Reports seconds of video per wall second for each, the best of
--repeat runs (the machine may be shared: the best run is the least disturbed), with the CPU
seconds of that run (this process and its ffmpeg children), and the load average. Not a test:
it prints numbers and the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from anywhere
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's setup chatter

from machine import cpu_seconds, describe, load_average
from qc_lipsync import production_copy

from avatarflow import media
from qc.checks import check_video
from qc.lipsync import LandmarkSyncScorer
from qc.technical import run_checks


def best(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the fastest of `repeat` runs."""
    runs = []
    for _ in range(repeat):
        c0, t0 = cpu_seconds(), time.perf_counter()
        run()
        runs.append((time.perf_counter() - t0, cpu_seconds() - c0))
    return min(runs)


def run_set(title: str, clips: list[Path], refs: dict[Path, Path], scorer: LandmarkSyncScorer, repeat: int) -> None:
    print(f"\n{title}")
    print(f"{'clip':34s} {'video s':>7s} | {'one pass: wall s':>16s} {'cpu s':>6s} {'video s/wall s':>14s}"
          f" | {'apart: wall s':>13s} {'cpu s':>6s} {'video s/wall s':>14s} | speed-up")  # fmt: skip
    totals = [0.0, 0.0, 0.0, 0.0, 0.0]  # video, one-pass wall, cpu, apart wall, cpu
    for clip in clips:
        info = media.probe(clip)
        seconds = float(info.duration_s or 0.0)
        kwargs = {"expected_seconds": seconds, "expected_size": None, "reference_image": refs[clip]}
        one_wall, one_cpu = best(lambda: check_video(clip, scorer=scorer, **kwargs), repeat)  # noqa: B023

        def apart() -> None:
            scorer.score(clip)  # noqa: B023
            run_checks(clip, tracker=scorer.tracker(), **kwargs)  # noqa: B023

        two_wall, two_cpu = best(apart, repeat)
        totals = [a + b for a, b in zip(totals, (seconds, one_wall, one_cpu, two_wall, two_cpu), strict=True)]
        print(f"{clip.name:34s} {seconds:7.1f} | {one_wall:16.2f} {one_cpu:6.2f} {seconds / one_wall:14.1f}"
              f" | {two_wall:13.2f} {two_cpu:6.2f} {seconds / two_wall:14.1f} | {two_wall / one_wall:5.2f}x")  # fmt: skip
    seconds, one_wall, one_cpu, two_wall, two_cpu = totals
    print(f"{'all':34s} {seconds:7.1f} | {one_wall:16.2f} {one_cpu:6.2f} {seconds / one_wall:14.1f}"
          f" | {two_wall:13.2f} {two_cpu:6.2f} {seconds / two_wall:14.1f} | {two_wall / one_wall:5.2f}x")  # fmt: skip
    print(f"video seconds per CPU second: one pass {seconds / one_cpu:.1f}, apart {seconds / two_cpu:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    parser.add_argument("--repeat", type=int, default=2, help="runs per clip and way; the best counts")
    parser.add_argument("--no-generated", action="store_true", help="skip the generator-shaped copies")
    args = parser.parse_args()
    clips = sorted((args.media / "video").glob("*.mp4"))
    if not clips:
        print(f"no clips in {args.media / 'video'}", file=sys.stderr)
        return 2
    print(describe())
    print(f"load average at start: {load_average()}")
    scorer = LandmarkSyncScorer()
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        folder = Path(tmp)
        refs: dict[Path, Path] = {}
        for clip in clips:
            refs[clip] = folder / f"{clip.stem}.png"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clip), "-frames:v", "1",
                            str(refs[clip])], check=True, timeout=120)  # fmt: skip
        # Warm-up, untimed: the face mesh graph, the calibration, the portrait detector.
        check_video(clips[0], expected_seconds=1.0, expected_size=None, reference_image=refs[clips[0]], scorer=scorer)
        run_set("real clips as they are (HEVC 1080x1920, H.264 up to 844x844; 30 fps and VFR)",
                clips, refs, scorer, args.repeat)  # fmt: skip
        if not args.no_generated:
            made = []
            for clip in clips:
                copy = production_copy(clip, folder)
                refs[copy] = refs[clip]
                made.append(copy)
            run_set("the same clips as delivered (H.264/AAC, 25 fps, 512x512 or 384x704)", made, refs, scorer,
                    args.repeat)  # fmt: skip
    scorer.close()
    print(f"\nload average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
