"""The identity proxy's study: how similar each real clip's face stays to its own first frame,
and how similar it looks to every other clip's first frame (a stranger).

    .venv/bin/python benchmarks/qc_identity.py [--media ../shared/media]

For each of the nine reference clips (the lip-sync calibration's set), QC's one pass is run once
(face track and face samples, as `qc.technical.run_checks` makes them); each clip's first frame
is the reference portrait of every clip in turn. The value is the identity check's: the worst
1 s window's median similarity. Prints the matrix (rows: video, columns: reference), the range
of own-portrait values, and how the stranger values fall against the thresholds (fail < 0.65,
warn < 0.75). Not a test: it prints numbers and the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from anywhere
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's setup chatter

import numpy as np
from machine import describe

from qc.facetrack import MeshTracker
from qc.identity import reference_face, similarity
from qc.picture import PictureScan
from qc.scan import scan_video
from qc.technical import Thresholds, _windows
from tasks.face_detectors import default_detector

CLIPS = ["infinitetalk_ref_video", "latentsync_demo1_video", "latentsync_demo2_video",
         "latentsync_demo3_video", "retalking_face1", "retalking_face2", "retalking_face3",
         "retalking_face4", "retalking_face5"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    args = parser.parse_args()
    print(describe())
    th = Thresholds()
    tracker = MeshTracker()
    with tempfile.TemporaryDirectory() as tmp:
        refs, stats = {}, {}
        for name in CLIPS:
            video = args.media / "video" / f"{name}.mp4"
            refs[name] = Path(tmp) / f"{name}.png"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-frames:v", "1",
                            str(refs[name])], check=True, timeout=120)  # fmt: skip
            picture = PictureScan(black_luma=th.black_luma)
            scan_video(video, tracker, consumers=[picture])
            stats[name] = picture.stats
        worst = np.zeros((len(CLIPS), len(CLIPS)))
        for i, name in enumerate(CLIPS):
            faces = stats[name].faces
            eyes = float(np.median([f.eye_px for f in faces]))
            for j, other in enumerate(CLIPS):
                ref = reference_face(refs[other], default_detector(), eyes)
                assert not isinstance(ref, str), ref
                sims = [similarity(ref, f) for f in faces]
                worst[i, j] = min(v for _, v in _windows([f.t for f in faces], sims, th.window_s))
    tracker.close()
    short = [n.replace("_video", "").replace("retalking_", "rt_").replace("latentsync_", "ls_")[:12] for n in CLIPS]
    print("\n" + "video / reference".ljust(24) + " " + " ".join(f"{s:>12s}" for s in short))
    for i, name in enumerate(CLIPS):
        print(f"{name:24s} " + " ".join(f"{v:12.2f}" for v in worst[i]))
    own = np.diag(worst)
    strangers = worst[~np.eye(len(CLIPS), dtype=bool)]
    print(f"\nown first frame: {own.min():.2f}-{own.max():.2f} (lowest: {CLIPS[int(own.argmin())]})")
    print(f"strangers: {strangers.min():.2f}-{strangers.max():.2f}; below {th.identity_fail:g} in "
          f"{int((strangers < th.identity_fail).sum())} of {strangers.size}, "
          f"{th.identity_fail:g}-{th.identity_warn:g} in "
          f"{int(((strangers >= th.identity_fail) & (strangers < th.identity_warn)).sum())}, "
          f"≥ {th.identity_warn:g} in {int((strangers >= th.identity_warn).sum())}")  # fmt: skip


if __name__ == "__main__":
    main()
