"""Live Avatar's speed as measured on real GPUs: seconds of wall time per second of video.

`MEASURED` is curated from the GPU acceptance runs, benchmarks/gpu/results/*/results.jsonl (the
real Live Avatar program, random weights). Those files are not shipped with the package, so the
planner reads this table, never the files; tests/inference/test_planner.py recomputes the table
from the files with `from_results` and fails when the two differ. After a new GPU session, print
the new table with `python -m inference.measured_speed` (from the repository root) and paste it.

Which records count: "ok", engine "liveavatar" (per-job: one torchrun per video, the model loads
in every job) or "liveavatar-warm" (a worker that keeps the model loaded), not "superseded", on
one GPU, and alone on it: the packed runs' "pair-*" phases are two jobs sharing a GPU, not the
speed of one job ("one-alone-warm", one job beside an idle sibling worker, counts). Records are
grouped by GPU model, size, precision, compile, online decode and mode; a group's figure comes from
its longest video (fixed costs weigh least there), averaged over the runs of that length.

The figures, in seconds of wall time per second of video (= minutes per minute of video):
- warm: `load_excluded` = the job on a loaded worker (total_seconds / video); `load_included` adds
  the worker's start where a job paid for it (load_seconds), None where no measured job did;
- per-job: `load_included` = the whole job (total_seconds, which contains the load); the load cannot
  be told apart from the first denoising step there, so `load_excluded` starts the clock at the
  first step (the harness's `fps_after_load`).
A run's fixed costs (prefill, the first clip, the final decode of a non-online-decode preset) are
part of its figure, so a short video's figure overstates the time per minute of a long one.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inference.gpus import known_model

Mode = Literal["warm", "per-job"]
ENGINE_MODES: dict[str, Mode] = {"liveavatar-warm": "warm", "liveavatar": "per-job"}
# Phases of a packed run in which a job ran alone on its GPU (see the module's docstring).
ALONE_PHASES = (None, "one-alone-warm")


@dataclass(frozen=True)
class MeasuredSpeed:
    gpu: str  # the known model's key (inference.gpus.KNOWN_GPUS): "H200"
    size: str  # the preset's --size (a maximum area; the 512×512 crop made 448×448 / 256×256)
    precision: str  # "bf16" or "fp8"
    compile: bool
    online_decode: bool
    mode: Mode
    video_seconds: float  # the video the figures were measured over
    runs: int  # runs of that length averaged
    load_excluded: float  # s of wall time per s of video (see the module's docstring)
    load_included: float | None
    sources: tuple[str, ...]  # results files, relative to the repository root
    date: str  # of the GPU session (versions.json), YYYY-MM-DD

    @property
    def settings(self) -> str:
        """"bf16, 688*368, compile off, warm": the words the planner labels its estimate with."""
        return f"{self.precision}, {self.size}, compile {'on' if self.compile else 'off'}, {self.mode}"


# Recomputed by `from_results` from benchmarks/gpu/results/*/results.jsonl (tests/inference/
# test_planner.py checks it). Do not edit by hand: run `python -m inference.measured_speed`.
MEASURED: tuple[MeasuredSpeed, ...] = (
    MeasuredSpeed("H200", "384*256", "bf16", False, True, "per-job", 19.08, 1, 4.699, 9.826,
                  ("benchmarks/gpu/results/h200-2026-12-01/results.jsonl",), "2026-12-01"),
    MeasuredSpeed("H200", "384*256", "bf16", False, True, "warm", 5.945, 3, 12.588, 30.894,
                  ("benchmarks/gpu/results/h200-2026-12-01-b/results.jsonl",
                   "benchmarks/gpu/results/h200-2026-12-01-c/results.jsonl"), "2026-12-01"),
    MeasuredSpeed("H200", "384*256", "fp8", False, True, "per-job", 5.945, 1, 10.417, 37.374,
                  ("benchmarks/gpu/results/h200-2026-12-01/results.jsonl",), "2026-12-01"),
    MeasuredSpeed("H200", "688*368", "bf16", False, False, "per-job", 25.3, 1, 7.723, 12.866,
                  ("benchmarks/gpu/results/h200-2026-12-01-b/results.jsonl",), "2026-12-01"),
    MeasuredSpeed("H200", "688*368", "bf16", False, False, "warm", 25.3, 1, 8.175, 11.147,
                  ("benchmarks/gpu/results/h200-2026-12-01-b/results.jsonl",), "2026-12-01"),
)


def find(gpu: str, size: str, precision: str, online_decode: bool, mode: Mode,
         compile: bool = False, table: Iterable[MeasuredSpeed] = MEASURED) -> MeasuredSpeed | None:
    """The measurement of exactly these settings on GPU model `gpu`, or None."""
    for entry in table:
        if (entry.gpu, entry.size, entry.precision, entry.online_decode, entry.mode, entry.compile) == (
                gpu, size, precision, online_decode, mode, compile):
            return entry
    return None


# --- recomputing the table from the results files ---------------------------------------------


def _counts(record: dict) -> bool:
    config = record.get("config") or {}
    metrics = record.get("metrics") or {}
    devices = str(config.get("cuda_visible_devices") or "").split(",")
    return (record.get("ok") is True and record.get("engine") in ENGINE_MODES
            and not record.get("superseded") and record.get("phase") in ALONE_PHASES
            and len([d for d in devices if d.strip()]) == 1
            and bool(config.get("video_seconds")) and bool(metrics.get("total_seconds")))


def _session(results: Path) -> tuple[str, str]:
    """(GPU model key, date) of the session that wrote `results`, from its versions.json."""
    versions = json.loads((results.parent / "versions.json").read_text())
    name = str(versions["gpu"]).split(",")[0]
    model = known_model(name)
    if model is None:
        raise ValueError(f"{results.parent / 'versions.json'}: unknown GPU {name!r}")
    return model.key, str(versions["date"])[:10]


def from_results(paths: Iterable[Path], root: Path | None = None) -> tuple[MeasuredSpeed, ...]:
    """The table, recomputed from results.jsonl files (each beside its session's versions.json)."""
    groups: dict[tuple, list[tuple[dict, str, str]]] = {}
    for path in sorted(Path(p) for p in paths):
        gpu, date = _session(path)
        shown = path.resolve().relative_to(root.resolve()).as_posix() if root else path.as_posix()
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if not _counts(record):
                continue
            settings = record["config"]["settings"]
            job = record["job"]
            key = (gpu, settings["size"], "fp8" if job["fp8"] else "bf16", bool(job["compile"]),
                   bool(settings["online_decode"]), ENGINE_MODES[record["engine"]])
            groups.setdefault(key, []).append((record, shown, date))
    table = []
    for key, members in sorted(groups.items()):
        gpu, size, precision, compiled, online, mode = key
        longest = max(r["config"]["video_seconds"] for r, _, _ in members)
        chosen = [(r, s, d) for r, s, d in members if r["config"]["video_seconds"] == longest]
        excluded, included = [], []
        for record, _, _ in chosen:
            metrics, video = record["metrics"], record["config"]["video_seconds"]
            total = metrics["total_seconds"]
            if mode == "warm":
                excluded.append(total / video)
                if metrics.get("load_seconds"):
                    included.append((total + metrics["load_seconds"]) / video)
            else:
                excluded.append((total - (metrics.get("first_step_seconds") or 0.0)) / video)
                included.append(total / video)
        table.append(MeasuredSpeed(
            gpu=gpu, size=size, precision=precision, compile=compiled, online_decode=online, mode=mode,
            video_seconds=longest, runs=len(chosen), load_excluded=round(statistics.mean(excluded), 3),
            load_included=round(statistics.mean(included), 3) if included else None,
            sources=tuple(sorted({s for _, s, _ in chosen})), date=max(d for _, _, d in chosen)))
    return tuple(table)


def table_source(table: Iterable[MeasuredSpeed]) -> str:
    """`table` as the Python that `MEASURED` is written in."""
    def q(text: str) -> str:
        return json.dumps(text)

    lines = ["MEASURED: tuple[MeasuredSpeed, ...] = ("]
    for e in table:
        lines.append(f"    MeasuredSpeed({q(e.gpu)}, {q(e.size)}, {q(e.precision)}, {e.compile}, "
                     f"{e.online_decode}, {q(e.mode)}, {e.video_seconds}, {e.runs}, {e.load_excluded}, "
                     f"{e.load_included},")
        sources = [q(s) for s in e.sources]
        if len(sources) == 1:
            lines.append(f"                  ({sources[0]},), {q(e.date)}),")
        else:
            lines.append(f"                  ({sources[0]},")
            lines += [f"                   {s}," for s in sources[1:-1]]
            lines.append(f"                   {sources[-1]}), {q(e.date)}),")
    lines.append(")")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m inference.measured_speed [RESULTS.jsonl ...]
    files = [Path(a) for a in sys.argv[1:]] or sorted(Path("benchmarks/gpu/results").glob("*/results.jsonl"))
    print(table_source(from_results(files, root=Path.cwd())))
