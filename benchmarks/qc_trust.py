"""Can a reviewer trust QC? Sync on real footage, broken videos caught, and how fast all of it runs.

    .venv/bin/python benchmarks/qc_trust.py [--media ../shared/media] [--clips N] [--skip-sync]
        [--skip-defects] [--skip-speed]

Three parts, each printed with the data set and the machine:
1. Sync, leave-one-source-out on every clip of ../shared/media/video (`qc.calibration.calibrate`
   with the landmark scorer: each source's clips measured with the mouth model fitted without
   that source, the logistic map cross-validated the same way). Per negative kind, on 5 s
   windows and whole clips: n, the share passing the 0.92 gate, ROC AUC against in-sync; the
   share of genuine windows marked out of sync (`qc.checks.WINDOW_OUT_OF_SYNC`); the genuine
   clips that do not pass, with their P.
2. Defects: every clip made 512 px, 25 fps H.264 (what the generator delivers), then each
   `qc.defects` kind made from it; `qc.checks.check_video` on the clean copy (false alarms per
   check) and on every broken copy: caught = the kind's own check fails or warns (either keeps
   the video from automatic approval) with a time range overlapping the defect (lip-sync: the
   gate's score below 0.89, a fail); also the share flagged by any check.
3. Speed: `check_video` (every check, one decode) on the clean 512 px copies, one video at a
   time and two at once (the batch flow runs two CPU stages at once by default), as seconds of
   video per wall second.
The calibration shipped in qc/calibrations is not touched. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from anywhere
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's setup chatter

import numpy as np
from machine import describe
from qc_lipsync import production_copy

from avatarflow import media as av_media
from qc.calibration import calibrate, clip_source
from qc.checks import WINDOW_OUT_OF_SYNC, check_video
from qc.defects import KINDS, make_defect
from qc.facetrack import MeshTracker
from qc.gate import DEFAULT_GATE, DEFAULT_MARGIN
from qc.lipsync import LandmarkSyncScorer, thread_scorer

VIDEO_SUFFIXES = (".mp4", ".mpg", ".mov", ".mkv", ".webm")


def dev_clips(media: Path, limit: int | None) -> list[Path]:
    clips = sorted(p for p in (media / "video").iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return clips[:limit] if limit else clips


def _rate(values: np.ndarray, gate: float) -> str:
    return f"{(values > gate).mean():6.1%}" if values.size else "     -"


def sync_part(clips: list[Path], media: Path) -> None:
    print(f"\n== 1. sync, leave-one-source-out: {len(clips)} clips, "
          f"{len({clip_source(c.stem) for c in clips})} sources")  # fmt: skip
    pairs = []
    for clip in clips:
        if clip.stem.endswith("_video"):
            pairs += [(clip, a) for a in sorted((media / "audio").glob(clip.stem.removesuffix("_video") + "_audio.*"))]
    scorer = LandmarkSyncScorer(calibration=False)
    started = time.perf_counter()
    calibration = calibrate(clips, scorer, extra_pairs=pairs)
    scorer.close()
    print(f"measured and fitted in {time.perf_counter() - started:.0f} s; features {calibration.features}")
    for scope, title in (("cross_validated", "5 s windows"), ("whole_clips_cross_validated", "whole clips")):
        table = calibration.report[scope]
        print(f"\n{title}: {'kind':18s} {'n':>5s} {'pass@0.92':>9s} {'AUC':>6s} {'P < 0.5':>8s}")
        for kind, row in table.items():
            auc, rate, under = row.get("auc_vs_in_sync"), row.get("pass_rate"), row.get("under_half")
            print(f"{'':{len(title) + 2}s}{kind:18s} {row['n']:5d} {'-' if rate is None else f'{rate:.1%}':>9s} "
                  f"{'-' if auc is None else f'{auc:.3f}':>6s} {'-' if under is None else f'{under:.1%}':>8s}")  # fmt: skip
    per_window = calibration.report["per_clip_cross_validated"]
    genuine = np.array([p for row in per_window.values() for p in row["in_sync_p"]])
    print(f"\ngenuine windows marked out of sync (P < {WINDOW_OUT_OF_SYNC}): "
          f"{(genuine < WINDOW_OUT_OF_SYNC).mean():.1%} of {genuine.size}")  # fmt: skip
    whole = calibration.report["whole_clip_in_sync_p"]
    failing = {clip: p for clip, p in whole.items() if p <= DEFAULT_GATE}
    print(f"genuine whole clips passing 0.92: {len(whole) - len(failing)} of {len(whole)}; the others: "
          + ", ".join(f"{c} {p:.2f}" for c, p in sorted(failing.items(), key=lambda cp: cp[1])))  # fmt: skip


def _caught(result, kind: str, span: tuple[float, float]) -> tuple[bool, bool, str]:
    """(caught by the kind's own check, failing or warning, with a range on the defect; the video
    kept from automatic approval at all; what said so)."""
    spec = KINDS[kind]
    flagged = [c for c in result.checks if c.verdict != "pass"]
    score = result.score
    sync_bad = score is not None and score <= DEFAULT_GATE + DEFAULT_MARGIN
    if spec.catches == "lipsync":
        right = score is not None and score < DEFAULT_GATE - DEFAULT_MARGIN
    else:
        own = [c for c in flagged if c.name in spec.checks]
        right = bool(own) and any(a < span[1] and b > span[0] for a, b in own[0].ranges)
    said = ", ".join(f"{c.name} {c.verdict} ({c.value})" for c in flagged)
    if score is not None:
        said += f"{', ' if said else ''}lip-sync P {score:.2f}"
    own_check = next((c for c in result.checks if c.name == spec.catches), None)
    if own_check is not None and own_check.verdict == "pass":
        said += f"; {own_check.name} passed with {own_check.value}"
    return right, bool(flagged) or sync_bad, said or "nothing"


def defects_part(clips: list[Path], folder: Path, workers: int) -> list[Path]:
    print(f"\n== 2. defects: {len(KINDS)} kinds x {len(clips)} clips (512 px, 25 fps H.264 copies)")
    tracker = MeshTracker()
    clean = []
    for clip in clips:
        clean.append(production_copy(clip, folder))
    print(f"clean copies made: {len(clean)}")
    false_alarms: dict[str, int] = {}
    refs = {}
    for video in clean:
        refs[video] = video.with_suffix(".reference.png")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-frames:v", "1", str(refs[video])],
                       check=True, timeout=60)  # fmt: skip
        seconds = float(av_media.probe(video).duration_s or 0.0)
        result = check_video(video, expected_seconds=seconds, expected_size=None, reference_image=refs[video],
                             scorer=thread_scorer())  # fmt: skip
        for c in result.checks:
            if c.verdict != "pass":
                key = f"{c.name} {c.verdict}"
                false_alarms[key] = false_alarms.get(key, 0) + 1
        if result.score is not None and result.score < DEFAULT_GATE - DEFAULT_MARGIN:
            false_alarms["lip-sync score fail"] = false_alarms.get("lip-sync score fail", 0) + 1
    print("clean copies flagged by each check (false alarms; fail sends to regeneration, warn to a "
          "person): " + (", ".join(f"{k} {v}/{len(clean)}" for k, v in sorted(false_alarms.items())) or "none"))  # fmt: skip

    def one(job: tuple[Path, str, Path]) -> tuple[str, bool, bool, str]:
        video, kind, other = job
        out = folder / f"{video.stem}__{kind}.mp4"
        try:
            made = make_defect(video, kind, out, tracker=MeshTracker() if workers > 1 else tracker, other=other)
            result = check_video(out, expected_seconds=made.seconds, expected_size=None,
                                 reference_image=refs[video], scorer=thread_scorer())  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - one broken job is a line in the table, not the end
            return kind, False, False, f"{video.stem}: ERROR {type(exc).__name__}: {exc}"
        finally:
            out.unlink(missing_ok=True)
        right, any_fail, said = _caught(result, kind, made.span_s)
        return kind, right, any_fail, f"{video.stem}: {said}"

    jobs = [(v, k, clean[(i + 1) % len(clean)]) for i, v in enumerate(clean) for k in KINDS]
    rows: dict[str, list[tuple[bool, bool, str]]] = {k: [] for k in KINDS}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for kind, right, any_fail, said in pool.map(one, jobs):
            rows[kind].append((right, any_fail, said))
    print(f"\n{'defect kind':16s} {'right check':14s} {'caught: right check + range':>28s} {'flagged at all':>15s}")
    for kind, results in rows.items():
        n = len(results)
        right = sum(r for r, _, _ in results)
        anyf = sum(a for _, a, _ in results)
        print(f"{kind:16s} {'/'.join(KINDS[kind].checks):14s} {right:>5d}/{n:<3d} {right / n:>17.1%} {anyf / n:>15.1%}")
        for r, _, said in results:
            if not r:
                print(f"{'':18s}missed: {said}")
    return clean


def speed_part(videos: list[Path]) -> None:
    total = sum(float(av_media.probe(v).duration_s or 0.0) for v in videos)
    print(f"\n== 3. speed: check_video on {len(videos)} clean 512 px videos, {total:.0f} s of video")

    def one(video: Path) -> None:
        seconds = float(av_media.probe(video).duration_s or 0.0)
        check_video(video, expected_seconds=seconds, expected_size=None, reference_image=None, scorer=thread_scorer())

    for n in (1, 2):
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(one, videos[:n]))  # warm-up: each thread's face mesh and calibration
            started = time.perf_counter()
            list(pool.map(one, videos))
            wall = time.perf_counter() - started
        print(f"  {n} at a time: {total / wall:5.1f} s of video per wall second ({wall:.1f} s); "
              f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    parser.add_argument("--clips", type=int, default=None, help="only the first N clips (default all)")
    parser.add_argument("--workers", type=int, default=2, help="defect videos made and checked at once")
    parser.add_argument("--skip-sync", action="store_true")
    parser.add_argument("--skip-defects", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    clips = dev_clips(args.media, args.clips)
    if not clips:
        sys.exit(f"no clips in {args.media / 'video'}")
    print(describe())
    print(f"data set: {len(clips)} clips in {args.media / 'video'}: {', '.join(c.name for c in clips)}")
    if not args.skip_sync:
        sync_part(clips, args.media)
    with tempfile.TemporaryDirectory(prefix="qc-trust-") as tmp:
        clean = [] if args.skip_defects else defects_part(clips, Path(tmp), args.workers)
        if not args.skip_speed:
            speed_part(clean or [production_copy(c, Path(tmp)) for c in clips])


if __name__ == "__main__":
    main()
