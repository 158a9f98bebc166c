"""`avatarflow plan` and `avatarflow gpus`: will Live Avatar run on these GPUs, and how.

Plain functions, registered in flows/cli.py with `app.command("plan")(plan_command)` and
`app.command("gpus")(gpus_command)`.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from avatarflow.settings import get_settings
from db.session import open_database
from db.stage import StageContext
from flows.cli_gangs import workers_table
from flows.hints import avatarflow_cmd
from inference.gang_worker import live_workers
from inference.gpus import GpuInfo, GpuInventory, inventory, parse_gpu_spec
from inference.planner import (
    PORTRAIT,
    PlanRow,
    best_row,
    nothing_fits_explanation,
    plan,
    preset_video_seconds,
    single_gpu_memory,
    single_gpu_rule_reason,
)
from inference.presets import PRESETS

console = Console()

GPUS_HELP = ("Hypothetical GPUs, e.g. 5x24GB, 1xH100-80GB, 1xH200-141GB, 5xL40S-48GB, 4xRTX4090 "
             "(join groups with '+'). Without it: this host's GPUs.")
EXAMPLE_SPEC = "1xH100-80GB"


def _describe_gpus(gpus: list[GpuInfo]) -> str:
    groups: dict[str, int] = {}
    for gpu in gpus:
        label = f"{gpu.name} ({gpu.memory_total_gb:.1f} GB, cc {gpu.cc_text})"
        groups[label] = groups.get(label, 0) + 1
    return ", ".join(f"{n} × {label}" for label, n in groups.items())


def _peak(row: PlanRow) -> str:
    text = f"{row.peak_gb:.1f} GB"
    if len(row.memory) > 1:  # the pipeline: DiT ranks set the peak, the VAE rank needs less
        text += f" (VAE rank {row.memory[1].total_gb:.1f})"
    if row.capacity_gb is not None:
        text += f" of {row.capacity_gb:.1f}"
    return text


class _Notes:
    """Numbered footnotes for the time estimates ("[1] measured on H200 …"), each said once: one
    per measurement or published source, one per caveat (what a figure stands in for)."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def _number(self, text: str) -> int:
        if text not in self.notes:
            self.notes.append(text)
        return self.notes.index(text) + 1

    def mark(self, row: PlanRow) -> str:
        speed = row.speed
        if speed is None:
            return ""
        text = f"{speed.label}: {speed.source}" if speed.label and speed.source else speed.note
        if speed.per_job_minutes is not None:
            which = ("the whole job, load included" if "per-job" in speed.label
                     else "per-job (the model loaded for every video)")
            text += f"; {which}: ≈ {speed.per_job_minutes:.1f} min per minute"
        numbers = [self._number(text)] + [self._number(c) for c in speed.caveats]
        return "[" + ",".join(map(str, numbers)) + "]"

    def print(self) -> None:
        for number, text in enumerate(self.notes, 1):
            console.print(f"[{number}] {text}", highlight=False, markup=False)


def _time(row: PlanRow, notes: _Notes) -> str:
    if not row.fits or row.speed is None:
        return "—"
    return f"≈ {row.speed.minutes_per_video_minute:.1f} {notes.mark(row)}"


def _preset_video(row: PlanRow) -> str:
    preset = PRESETS.get(row.preset)
    seconds = preset_video_seconds(preset) if preset else None
    if seconds is None:
        return "whole audio"
    if not row.fits or row.speed is None:
        return f"≤ {seconds:.1f} s"
    return f"≤ {seconds:.1f} s: {row.speed.minutes_per_video_minute * seconds / 60:.1f} min"


def _why(row: PlanRow) -> str:
    if row.fits:
        return row.reason
    text = row.reason
    if row.remedies:
        text += "\n[bold]would fit with:[/] " + "; ".join(row.remedies)
    return text


def verdict(rows: list[PlanRow], gpus: list[GpuInfo]) -> list[str]:
    """The plan's first lines: what fits best and how fast, or that nothing fits and why."""
    explanation = nothing_fits_explanation(rows, gpus)
    if explanation:
        return [f"[bold red]{explanation}[/]"]
    best = best_row(rows)
    assert best is not None  # something fits
    speed = (f", ≈ {best.speed.minutes_per_video_minute:.1f} min per minute of video, "
             f"{best.speed.short}" if best.speed else
             ", speed unknown for this GPU model (name a known model in --gpus for an estimate)")
    lines = [f"[bold green]Fits:[/] [bold]{best.preset}[/] ({best.size}) on {best.topology_label}, "
             f"{best.precision}: peak {_peak(best)} GB per GPU{speed}."]
    if "free now" in best.reason:
        lines.append("[yellow]" + best.reason.split("; ", 1)[1] + "[/]")
    fitting = [r for r in rows if r.fits]
    presets = list(dict.fromkeys(r.preset for r in rows))
    nowhere = [p for p in presets if not any(r.fits for r in fitting if r.preset == p)]
    summary = f"{len(fitting)} of {len(rows)} options fit"
    summary += (f"; {', '.join(nowhere)} fit{'s' if len(nowhere) == 1 else ''} nowhere." if nowhere
                else f" (every preset: {', '.join(presets)}).")
    lines.append(summary)
    return lines


def _mask(text: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "#", text)


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(n) for n in re.findall(r"\d+(?:\.\d+)?", text))


def _group_reason(members: list[PlanRow]) -> str:
    """The members' shared problems in words, the peak as a range where the members differ."""
    texts = []
    peaks = [r.peak_gb for r in members]
    low, high = min(peaks), max(peaks)
    span = f"{low:.1f} GB" if high - low < 0.05 else f"{low:.1f}–{high:.1f} GB"
    for kind, text in members[0].problems:
        if kind == "memory":
            capacity = members[0].capacity_gb or 0.0
            where = "on the GPU" if members[0].topology == "single" else f"per {members[0].memory[0].role}"
            text = f"needs {span} {where}, more than the {capacity:.1f} GB a GPU has"
        elif kind == "single-80GB":
            text = single_gpu_rule_reason(span, members[0].capacity_gb or 0.0)
        texts.append(text)
    return "; ".join(texts)


def print_refusals(rows: list[PlanRow]) -> None:
    """The rows that do not fit, one line per topology and distinct reason."""
    refused = [r for r in rows if not r.fits]
    if not refused:
        return
    groups: dict[tuple, list[PlanRow]] = {}
    order = {"single": 0, "pipeline": 1, "fsdp": 2}
    for row in sorted(refused, key=lambda r: order[r.topology]):  # stable: presets keep their order
        # The memory and 80 GB texts differ in the peak only: one group per topology, capacity,
        # kinds of problem and the other problems' texts.
        key = (row.topology_label, tuple(k for k, _ in row.problems),
               tuple(t for k, t in row.problems if k not in ("memory", "single-80GB")),
               row.capacity_gb)
        groups.setdefault(key, []).append(row)
    console.print(f"[bold]Does not fit[/] ({len(refused)} of {len(rows)}; `--all` lists every option "
                  "with what would make it fit):", highlight=False)
    for (label, _, _, _), members in groups.items():
        precisions = " and ".join(dict.fromkeys(r.precision for r in members))
        presets = ", ".join(dict.fromkeys(r.preset for r in members))
        console.print(f" • {label}, {precisions} ({presets}): {_group_reason(members)}",
                      highlight=False, markup=False)


def _remedies_summary(rows: list[PlanRow]) -> str | None:
    """What would make something fit: each remedy once, the most demanding of those that differ
    only in their numbers (so that it covers every preset)."""
    chosen: dict[str, str] = {}
    for row in rows:
        for remedy in row.remedies:
            masked = _mask(remedy)
            if masked not in chosen or _numbers(remedy) > _numbers(chosen[masked]):
                chosen[masked] = remedy
    return "; ".join(chosen.values()) if chosen else None


def print_fits(rows: list[PlanRow], notes: _Notes) -> None:
    fitting = [r for r in rows if r.fits]
    if not fitting:
        return
    table = Table(title=f"Fits ({len(fitting)} of {len(rows)})", title_justify="left",
                  title_style="bold")
    for column in ("preset", "size", "topology", "precision", "peak / GPU",
                   "min per min of video", "preset's video"):
        table.add_column(column, overflow="fold")
    table.box = box.SIMPLE_HEAD
    for row in fitting:
        peak = f"{row.peak_gb:.1f} / {row.capacity_gb or 0:.1f} GB"
        if len(row.memory) > 1:
            peak += f" (VAE rank {row.memory[1].total_gb:.1f})"
        if "free now" in row.reason:
            peak += " (less free now)"
        table.add_row(row.preset, row.size, row.topology_label, row.precision, peak,
                      _time(row, notes), _preset_video(row))
    console.print(table)


def print_all(rows: list[PlanRow], notes: _Notes) -> None:
    """Every option, per preset: the table `--all` shows."""
    for name in dict.fromkeys(r.preset for r in rows):
        preset_rows = [r for r in rows if r.preset == name]
        preset = PRESETS.get(name)
        title = f"preset {name} ({preset_rows[0].size})"
        if preset:
            title += f": {preset.description}"
        table = Table(title=title, title_justify="left", show_lines=True)
        table.add_column("topology", overflow="fold")
        table.add_column("precision", overflow="fold")
        table.add_column("fits", overflow="fold")
        table.add_column("predicted peak / GPU", overflow="fold")
        table.add_column("why / what would make it fit", overflow="fold", ratio=3)
        table.add_column("time per minute of video", overflow="fold")
        for row in preset_rows:
            fits = "[green]yes[/]" if row.fits else "[red]no[/]"
            table.add_row(row.topology_label, row.precision, fits, _peak(row), _why(row),
                          _time(row, notes))
        console.print(table)


def print_plan(rows: list[PlanRow], gpus: list[GpuInfo], origin: str, show_all: bool = False) -> None:
    for line in verdict(rows, gpus):
        console.print(line, highlight=False)
    console.print(f"[bold]GPUs[/] ({origin}): {_describe_gpus(gpus)}", highlight=False)
    notes = _Notes()
    if show_all:
        print_all(rows, notes)
    else:
        print_fits(rows, notes)
        print_refusals(rows)
        if not any(r.fits for r in rows) and (remedies := _remedies_summary(rows)):
            console.print(f"[bold]Would fit with:[/] {remedies}", highlight=False)
    notes.print()
    if any(r.speed is not None and r.speed.basis in ("measured", "scaled") and r.fits for r in rows):
        console.print("Measured figures include a run's fixed costs (prefill, first clip, a final "
                      "decode), so those from short videos overstate the time per minute of a long "
                      "one.", highlight=False)
    timed = "Times exclude model loading (warm workers) unless a note says otherwise. " if any(
        r.fits and r.speed is not None for r in rows) else ""
    console.print(f"{timed}GB = 10⁹ bytes; peaks from DESIGN.md's parameter counts and KV-cache "
                  "formula, calibrated to the published figures and the H200 runs "
                  "(inference/planner.py).", highlight=False)


def print_presets() -> None:
    """The presets and what each asks of one GPU (for a host with no GPUs to plan for)."""
    table = Table(title="Presets", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD)
    for column in ("preset", "size", "video", "decode", "1 GPU peak bf16 / fp8"):
        table.add_column(column, overflow="fold")
    table.add_column("description", overflow="fold")
    for preset in PRESETS.values():
        seconds = preset_video_seconds(preset)
        video = "whole audio" if seconds is None else f"≤ {preset.num_clip} clips ({seconds:.1f} s)"
        peaks = " / ".join(f"{single_gpu_memory(preset.size, p, PORTRAIT).total_gb:.1f}"
                           for p in ("bf16", "fp8"))
        table.add_row(preset.name, preset.size, video, "online" if preset.online_decode else "at the end",
                      f"{peaks} GB", preset.description)
    console.print(table)
    first = next(iter(PRESETS.values()))
    console.print(f"Every preset: {first.solver}, {first.sample_steps} steps, {first.infer_frames} "
                  "frames per clip (the DMD LoRA's schedule). One GPU needs ≥ 80 GB whatever the "
                  "peak; the 5-GPU pipeline ≈ 45 GB per card with fp8.", highlight=False)


def _no_gpus_hint() -> str:
    return (f"to plan for GPUs this host lacks: `{avatarflow_cmd('plan --gpus ' + EXAMPLE_SPEC)}` "
            "(or 1xH200-141GB, 5xL40S-48GB, 5x24GB)")


def plan_command(
    gpus: Annotated[str | None, typer.Option("--gpus", help=GPUS_HELP)] = None,
    preset: Annotated[list[str] | None, typer.Option(
        "--preset", help="Only these presets (repeatable); default: all.")] = None,
    show_all: Annotated[bool, typer.Option(
        "--all", help="Every preset × topology × precision with its reason and what would make "
                      "it fit (default: the options that fit, one line per reason for the rest).")] = False,
) -> None:
    """Which presets fit which topology on these GPUs, the predicted memory, and the speed.

    The first line is the verdict: the best option that fits (largest size, then fastest) with
    its time per minute of video, or why nothing fits. Times are measured on a real GPU where
    avatarflow has run those settings (labelled "measured on H200 …"), scaled by TFLOPS from such
    a run for other known GPUs, and otherwise the published 5-GPU figure with assumptions
    (labelled as such).

    Exit status: 0 when something fits; 1 when nothing fits, or when there are no GPUs to plan
    for (no --gpus and none on this host: the presets are printed with how to ask about
    hypothetical GPUs); 2 when --gpus or --preset cannot be read.
    """
    unknown = [p for p in preset or [] if p not in PRESETS]
    if unknown:
        raise typer.BadParameter(
            f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}",
            param_hint="--preset")
    if gpus:
        try:
            devices = parse_gpu_spec(gpus)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--gpus") from None
        origin = "hypothetical"
    else:
        found = inventory()
        if not found.gpus:
            console.print(f"[bold red]No GPUs on this host[/]: {found.reason}", highlight=False)
            console.print(_no_gpus_hint(), highlight=False, markup=False)
            print_presets()
            raise typer.Exit(1)
        devices, origin = found.gpus, f"this host, via {found.source}"
    chosen = [PRESETS[p] for p in preset] if preset else None
    rows = plan(devices, chosen)
    print_plan(rows, devices, origin, show_all)
    if not any(r.fits for r in rows):
        raise typer.Exit(1)


def print_inventory(found: GpuInventory) -> None:
    table = Table(title=f"GPUs of this host (via {found.source})", title_justify="left")
    columns = ("index", "name", "total MiB", "used MiB", "free MiB", "cc", "fp8", "util %", "uuid")
    for column in columns:
        table.add_column(column, overflow="fold")
    for gpu in found.gpus:
        fp8 = {True: "yes", False: "no", None: "?"}[gpu.supports_fp8]
        table.add_row(str(gpu.index), gpu.name, str(gpu.memory_total_mb),
                      _opt(gpu.memory_used_mb), _opt(gpu.memory_free_mb), gpu.cc_text, fp8,
                      _opt(gpu.utilisation_pct), gpu.uuid)
    console.print(table)
    if found.reason:
        console.print(f"note: {found.reason}", highlight=False)


def _opt(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def gpus_command() -> None:
    """List this host's NVIDIA GPUs (NVML, else nvidia-smi) and the gang workers running on them.

    Exit status 1 when the host has no GPU (with why, and how to plan for hypothetical GPUs).
    """
    found = inventory()
    if found.gpus:
        print_inventory(found)
    else:
        console.print(f"[bold red]No GPUs on this host[/]: {found.reason}", highlight=False)
        console.print("check that the NVIDIA driver is installed and loaded (`nvidia-smi` lists the "
                      "GPUs) and that CUDA_VISIBLE_DEVICES does not hide them; "
                      + _no_gpus_hint(), highlight=False, markup=False)
    _print_gang_workers()
    if not found.gpus:
        raise typer.Exit(1)


def _print_gang_workers() -> None:
    """This host's live gang workers, when a database is configured and reachable."""
    settings = get_settings()
    try:
        # Read only: listing GPUs must not create or migrate a database.
        workers = [w for w in live_workers(StageContext(open_database(settings, migrate=False), settings))
                   if w.host == settings.gang_host]
    except Exception as exc:  # noqa: BLE001 - the GPU list stands without the database
        console.print(f"gang workers: cannot read the database ({type(exc).__name__}: {exc})", highlight=False)
        return
    if workers:
        console.print(workers_table(workers, f"gang workers on {settings.gang_host}"))
    else:
        console.print(f"no gang worker running on {settings.gang_host}", highlight=False)
