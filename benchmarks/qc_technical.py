"""Benchmark the technical QC checks: seconds of video checked per wall second.

    .venv/bin/python benchmarks/qc_technical.py [--repeat 3] [--no-generated] [--media DIR]

Runs `qc.technical.run_checks` (every check, with the clip's first frame as the reference
portrait) on each real clip in ../shared/media/video as it is, then, unless --no-generated, on
the same clips transcoded to the generator's output shape (a 512x512 square around the person,
H.264 + AAC, 25 fps), which is what QC sees in production. The face mesh and the portrait
detector are built first and not timed, and the face mesh is reused, as in a worker.
(Production runs these checks with the lip-sync score on one pass: `benchmarks/qc_checks.py`.) Reports the best of --repeat runs per clip (the machine is
shared: the best run is the least disturbed one), the CPU seconds that run used (Python and its
ffmpeg children: on an idle 2-core machine the wall time approaches half of it, since decoding
and analysis overlap), the checks that did not pass, the load average, and the totals.
Not a test: it prints numbers and the machine they were measured on.
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

from machine import cpu_seconds, describe, load_average

from qc.facetrack import MeshTracker
from qc.technical import run_checks
from tasks.audio import probe_audio
from tasks.face_detectors import default_detector

TRACKER: MeshTracker | None = None


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=600)



def measure(video: Path, reference: Path, repeat: int) -> tuple[float, float, float, str]:
    """(speech seconds, best wall seconds, CPU seconds of that run, checks that did not pass)."""
    speech = probe_audio(video).duration_s
    best = (float("inf"), 0.0)
    flagged = ""
    for _ in range(repeat):
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        results = run_checks(
            video, expected_seconds=speech, expected_size=None, reference_image=reference, tracker=TRACKER
        )
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        best = min(best, (wall, cpu))
        flagged = " ".join(f"{r.name}:{r.verdict}" for r in results if r.verdict != "pass")
    return speech, best[0], best[1], flagged or "all pass"


def run_set(title: str, videos: list[Path], refs: dict[Path, Path], repeat: int) -> None:
    print(f"\n{title}")
    print(f"{'clip':32} {'video s':>7} {'wall s':>6} {'cpu s':>6} {'x real':>6}  not passing")
    totals = [0.0, 0.0, 0.0]  # video, wall, CPU seconds
    for video in videos:
        speech, wall, cpu, flagged = measure(video, refs[video], repeat)
        totals = [totals[0] + speech, totals[1] + wall, totals[2] + cpu]
        print(f"{video.name:32} {speech:7.2f} {wall:6.2f} {cpu:6.2f} {speech / wall:6.1f}  "
              f"{flagged}")  # fmt: skip
    seconds, wall, cpu = totals
    print(f"{'all':32} {seconds:7.2f} {wall:6.2f} {cpu:6.2f} {seconds / wall:6.1f}  "
          f"({seconds / cpu:.1f} s of video per CPU second)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per clip; the best counts")
    parser.add_argument("--no-generated", action="store_true",
                        help="skip the clips in the generator's 512x512 shape")  # fmt: skip
    parser.add_argument(
        "--media", type=Path,
        default=Path(os.environ.get("AVATARFLOW_TEST_MEDIA", REPO.parent / "shared" / "media")),
        help="the shared media folder (default ../shared/media)",
    )  # fmt: skip
    args = parser.parse_args()
    clips = sorted((args.media / "video").glob("*.mp4"))
    if not clips:
        print(f"no clips in {args.media / 'video'}", file=sys.stderr)
        return 2

    print(describe())
    print(f"load average at start: {load_average()}")
    import numpy as np

    global TRACKER
    TRACKER = MeshTracker()  # build the graphs, untimed
    TRACKER.landmarks(np.zeros((64, 64, 3), np.uint8))
    default_detector().detect(np.zeros((64, 64, 3), np.uint8))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        refs: dict[Path, Path] = {}
        for clip in clips:
            refs[clip] = folder / f"{clip.stem}.png"
            ffmpeg("-i", str(clip), "-frames:v", "1", str(refs[clip]))
        run_set("real clips as they are (HEVC 1080x1920, H.264 up to 844x844; 30 fps and VFR)",
                clips, refs, args.repeat)  # fmt: skip
        if not args.no_generated:
            generated = []
            # A square from the upper part of portrait videos, where the head is.
            square = "crop='min(iw,ih)':'min(iw,ih)':'(iw-min(iw,ih))/2':'(ih-min(iw,ih))/4'"
            for clip in clips:
                out = folder / f"{clip.stem}_512.mp4"
                ffmpeg("-i", str(clip), "-vf", f"fps=25,{square},scale=512:512",
                       "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                       "-c:a", "aac", str(out))  # fmt: skip
                refs[out] = refs[clip]
                generated.append(out)
            run_set("the same clips in the generator's shape (512x512 H.264 25 fps + AAC)",
                    generated, refs, args.repeat)  # fmt: skip
    print(f"\nload average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
