"""Benchmark the face preprocessing stage: crop the real portraits N times and print faces/second.

    .venv/bin/python benchmarks/preprocess_faces.py [--repeat 5] [--media ../shared/media]

One MediaPipe detector is built first (not timed) and reused, as a worker does. Each pass loads,
detects, crops and writes every portrait; refused images (the cat) are timed too, since a worker
spends that time as well. Not a test: it prints numbers and the machine they were measured on.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from anywhere

from tasks.face import crop_face
from tasks.face_detectors import MediaPipeDetector
from tasks.face_types import FaceError

IMAGES = [
    "facerec_obama.jpg",
    "facerec_lin-manuel-miranda.png",
    "facerec_two_people.jpg",
    "skimage_astronaut.png",
    "infinitetalk_ref_image.png",
    "liveavatar_boy.jpg",
    "liveavatar_fashion_blogger.jpg",
    "liveavatar_kitchen_grandmother.jpg",
    "liveavatar_man.png",
    "liveavatar_music_producer.jpg",
    "liveavatar_cyclops_baker.jpg",
    "musetalk_monalisa.png",
    "sadtalker_happy.png",
    "skimage_chelsea.png",
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    import mediapipe
    import numpy

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"CPU: {cpu_model()}, {cores} cores usable ({os.cpu_count()} online)\n"
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"mediapipe {mediapipe.__version__}, numpy {numpy.__version__}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="passes over the images (default 5)")
    parser.add_argument(
        "--media",
        type=Path,
        default=Path(os.environ.get("AVATARFLOW_TEST_MEDIA", REPO.parent / "shared" / "media")),
        help="the shared media folder (default ../shared/media)",
    )
    args = parser.parse_args()
    images = [args.media / "image" / name for name in IMAGES]
    missing = [p for p in images if not p.is_file()]
    if missing:
        print(f"missing test media: {', '.join(str(p) for p in missing)}", file=sys.stderr)
        return 2

    print(machine())
    started = time.perf_counter()
    detector = MediaPipeDetector()
    print(f"detector built in {time.perf_counter() - started:.2f} s (not counted)")

    per_image: dict[str, list[float]] = {p.name: [] for p in images}
    cropped = refused = 0
    with tempfile.TemporaryDirectory() as tmp:
        crop_face(images[0], Path(tmp) / "warmup.png", detector=detector)  # first call warms caches
        started = time.perf_counter()
        for _ in range(args.repeat):
            for path in images:
                t0 = time.perf_counter()
                try:
                    crop_face(path, Path(tmp) / f"{path.stem}.png", detector=detector)
                    cropped += 1
                except FaceError:
                    refused += 1
                per_image[path.name].append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    detector.close()

    total = cropped + refused
    print(f"\n{'image':38s} {'median ms':>10s}")
    for name, times in per_image.items():
        print(f"{name:38s} {statistics.median(times) * 1000:10.0f}")
    print(
        f"\n{total} images ({cropped} cropped, {refused} refused) in {elapsed:.2f} s over "
        f"{args.repeat} passes: {total / elapsed:.1f} faces/s, "
        f"{elapsed / total * 1000:.0f} ms per image (one process, one detector)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
