"""`avatarflow qc`: calibrate the lip-sync score and score a video from the command line.

    avatarflow qc calibrate [--videos DIR] [--out PATH]   # fit P(in sync), print AUCs, store JSON
    avatarflow qc score VIDEO [--audio FILE]              # raw metrics and the calibrated score
    avatarflow qc check VIDEO --seconds S [--size WxH]    # the technical checks QC runs

Register with `app.add_typer(qc_app, name="qc")`. The scorers (MediaPipe, optionally torch) are
imported only when a command runs, so other commands do not pay for them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from avatarflow.errors import ConfigurationError
from avatarflow.settings import get_settings

qc_app = typer.Typer(help="Quality control: lip-sync calibration and scoring.", no_args_is_help=True)
console = Console()

SHARED_MEDIA = Path("../shared/media")  # relative to the repository root, where operators run it


def _media(sub: str) -> Path:
    """../shared/media/<sub> from the working directory, else beside the repository."""
    here = SHARED_MEDIA / sub
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "shared" / "media" / sub


def _scorer(kind: str, calibration_path: Path | None = None, calibrated: bool = True):
    from qc.lipsync import default_scorer

    return default_scorer(get_settings(), kind=kind, calibration_path=calibration_path,
                          calibration=None if calibrated else False)


def _speech_pairs(videos: list[Path], speech_dir: Path | None) -> list[tuple[Path, Path]]:
    """(X_video.mp4, X_audio.wav) pairs: the same person with different speech (LatentSync demos)."""
    if speech_dir is None or not speech_dir.is_dir():
        return []
    pairs = []
    for video in videos:
        if video.stem.endswith("_video"):
            stem = video.stem.removesuffix("_video")
            for candidate in sorted(speech_dir.glob(f"{stem}_audio.*")):
                pairs.append((video, candidate))
    return pairs


def print_report(calibration, which: str = "cross_validated", title: str | None = None) -> None:
    from qc.calibration import report_rows

    gate = calibration.gate
    table = Table(title=title or which.replace("_", " "), title_justify="left")
    for column, justify in (("case", "left"), ("n", "right"), ("ROC AUC vs in sync", "right"),
                            (f"pass rate at {gate:g}", "right"), ("median P", "right")):  # fmt: skip
        table.add_column(column, justify=justify)
    for row in report_rows(calibration, which):
        table.add_row(*row)
    console.print(table)


@qc_app.command()
def calibrate(
    videos: Annotated[Path | None, typer.Option(
        "--videos", help="Folder of real talking-face clips with their own (in-sync) soundtrack "
        "(default ../shared/media/video).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where to write the calibration JSON (default: the shipped "
        "qc/calibrations/<scorer>.json, or AVATARFLOW_LIPSYNC_CALIBRATION).")] = None,
    speech: Annotated[Path | None, typer.Option(
        "--speech", help="Folder with <name>_audio.* speech for <name>_video.mp4 clips: extra "
        "'different speech' negatives (default ../shared/media/audio).")] = None,
    scorer_kind: Annotated[str, typer.Option(
        "--scorer", help="landmark (default, no weights) or syncnet (needs "
        "AVATARFLOW_SYNCNET_WEIGHTS).")] = "landmark",
    gate: Annotated[float, typer.Option("--gate", help="Gate the pass rates are reported at.")] = 0.92,
    prior: Annotated[float, typer.Option("--prior", help="Share of videos the score assumes in sync "
        "a priori (0.8: most generated videos are).")] = 0.8,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the report, write nothing.")] = False,
) -> None:
    """Fit the lip-sync score (P(in sync)) on real clips against shifted and mismatched audio."""
    from qc.calibration import calibrate as run_calibration
    from qc.calibration import save_calibration

    folder = videos or _media("video")
    clips = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm", ".mpg"))
    if len(clips) < 2:
        raise ConfigurationError(f"{folder}: need at least 2 reference videos, found {len(clips)}")
    pairs = _speech_pairs(clips, speech if speech is not None else _media("audio"))
    scorer = _scorer(scorer_kind, calibrated=False)
    console.print(f"calibrating [bold]{scorer.name}[/] on {len(clips)} clips in {folder}"
                  f"{f' (+{len(pairs)} different-speech pairs)' if pairs else ''}")  # fmt: skip
    started = time.perf_counter()
    calibration = run_calibration(clips, scorer, extra_pairs=pairs, gate=gate, prior_in_sync=prior,
                                  progress=lambda msg: console.print(f"  {msg}", style="dim"))  # fmt: skip
    console.print(f"measured in {time.perf_counter() - started:.0f} s; features "
                  f"{', '.join(calibration.features)}")  # fmt: skip
    print_report(calibration, "cross_validated",
                 "5 s windows, leave-one-source-out cross-validated (honest)")  # fmt: skip
    print_report(calibration, "whole_clips_cross_validated",
                 "whole clips, scored by the model that left the clip's source out")  # fmt: skip
    print_report(calibration, "training_set", "5 s windows, training set (optimistic)")
    worst = {clip: entry["in_sync_p"] for clip, entry in
             calibration.report["per_clip_cross_validated"].items()}  # fmt: skip
    console.print("in-sync P per clip (cross-validated, per 5 s window): " +
                  "; ".join(f"{c} {', '.join(f'{p:.2f}' for p in ps)}" for c, ps in worst.items()))  # fmt: skip
    if dry_run:
        console.print("dry run: nothing written")
        return
    written = save_calibration(calibration, out or get_settings().lipsync_calibration)
    console.print(f"wrote {written}")


@qc_app.command()
def score(
    video: Annotated[Path, typer.Argument(help="The video to score.")],
    audio: Annotated[Path | None, typer.Option(
        "--audio", help="Score against this speech instead of the video's own soundtrack.")] = None,
    scorer_kind: Annotated[str, typer.Option(
        "--scorer", help="auto (SyncNet if configured, else landmark), landmark or syncnet.")] = "auto",
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="A calibration JSON other than the stored default.")] = None,
    gate: Annotated[float, typer.Option("--gate", help="The gate to compare the score with.")] = 0.92,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
) -> None:
    """Score one video's lip sync: raw metrics and the calibrated P(in sync)."""
    scorer = _scorer(scorer_kind, calibration)
    result = scorer.score(video, audio)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    table = Table(title=f"lip sync of {video.name}" + (f" with {audio.name}" if audio else ""),
                  show_header=False, title_justify="left")  # fmt: skip
    table.add_column(style="bold")
    table.add_column()

    def fmt(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    table.add_row("scorer", result.scorer)
    table.add_row("frames (25 fps)", f"{result.frames} ({result.duration_s:.1f} s)")
    table.add_row("face tracked", f"{result.face_fraction:.0%} of frames")
    table.add_row("confidence", fmt(result.confidence))
    if result.correlation is not None:
        table.add_row("peak correlation", fmt(result.correlation))
    if result.distance is not None:
        table.add_row("distance (LSE-D)", fmt(result.distance))
    if result.offset_frames is not None:
        ms = result.offset_frames * 40
        side = "late" if ms > 0 else "early" if ms < 0 else "in step"
        table.add_row("offset", f"{result.offset_frames:+d} frames ({abs(ms)} ms, audio {side})")
    if result.window_values:
        values = ", ".join("-" if v is None else f"{v:.2f}" for v in result.window_values)
        table.add_row(f"per {result.window_s:g} s window", values)
    if result.score is None:
        table.add_row("score", f"[yellow]none[/]: {result.score_reason}")
    else:
        verdict = "[green]in sync[/]" if result.score >= gate else "[red]below the gate[/]"
        table.add_row("score P(in sync)", f"{result.score:.3f} ({verdict} at {gate:g})")
        table.add_row("calibration", result.calibration or "-")
    for note in result.notes:
        table.add_row("note", note)
    table.add_row("time", f"{result.timings_s.get('total', 0.0):.2f} s")
    console.print(table)


@qc_app.command()
def check(
    video: Annotated[Path, typer.Argument(help="The video to check.")],
    seconds: Annotated[float, typer.Option(
        "--seconds", help="How long it should last (the speech, or a preview's clips).")],
    size: Annotated[str | None, typer.Option(
        "--size", help="The size it should have, WIDTHxHEIGHT (e.g. 512x512); omitted: not checked.")] = None,
    reference: Annotated[Path | None, typer.Option(
        "--reference", help="The portrait it was made from (identity and colour checks).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Run QC's technical and visual checks on one video: streams, fps, size, duration, black, frozen,
    face, identity, colour, mouth, flicker, jitter, blinks, sound; where each fails or warns."""
    from qc.technical import run_checks

    expected_size = None
    if size:
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise ConfigurationError(f"--size must be WIDTHxHEIGHT, e.g. 512x512, not {size!r}") from None
        expected_size = (width, height)
    results = run_checks(video, expected_seconds=seconds, expected_size=expected_size,
                         reference_image=reference)
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in results]))
    else:
        table = Table(title=f"checks of {video.name}", title_justify="left")
        for column in ("check", "value", "threshold", "verdict", "where", "reason"):
            table.add_column(column)
        colour = {"pass": "green", "warn": "yellow", "fail": "red"}
        for r in results:
            value = f"{r.value:.3g}" if isinstance(r.value, float) else str(r.value)
            where = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in r.ranges[:4]) + (" …" if len(r.ranges) > 4 else "")
            table.add_row(r.name, value, r.threshold, f"[{colour[r.verdict]}]{r.verdict}[/]", where, r.reason)
        console.print(table)
    if any(r.verdict == "fail" for r in results):
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover - `python -m flows.cli_qc ...` before registration
    qc_app()
