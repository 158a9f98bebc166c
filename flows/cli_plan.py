"""`avatarflow plan` and `avatarflow gpus`: will Live Avatar run on these GPUs, and how.

Plain functions, registered in flows/cli.py with `app.command("plan")(plan_command)` and
`app.command("gpus")(gpus_command)`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from avatarflow.settings import get_settings
from db.session import open_database
from db.stage import StageContext
from flows.cli_gangs import workers_table
from inference.gang_worker import live_workers
from inference.gpus import GpuInfo, GpuInventory, inventory, parse_gpu_spec
from inference.planner import (
    THROUGHPUT_SOURCES,
    PlanRow,
    nothing_fits_explanation,
    plan,
)
from inference.presets import PRESETS

console = Console()

GPUS_HELP = ("Hypothetical GPUs, e.g. 5x24GB, 1xH100-80GB, 5xL40S-48GB, 4xRTX4090 "
             "(join groups with '+'). Without it: this host's GPUs.")


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


def _time(row: PlanRow) -> str:
    if not row.fits or row.speed is None:
        return "—"
    return f"≈ {row.speed.minutes_per_video_minute:.2g} min ({row.speed.basis})"


def _why(row: PlanRow) -> str:
    if row.fits:
        return row.reason
    text = row.reason
    if row.remedies:
        text += "\n[bold]would fit with:[/] " + "; ".join(row.remedies)
    return text


def print_plan(rows: list[PlanRow], gpus: list[GpuInfo], origin: str) -> None:
    console.print(f"[bold]GPUs[/] ({origin}): {_describe_gpus(gpus)}", highlight=False)
    for name in dict.fromkeys(r.preset for r in rows):
        preset_rows = [r for r in rows if r.preset == name]
        preset = PRESETS.get(name)
        title = f"preset {name} ({preset_rows[0].size})"
        if preset:
            title += f": {preset.description}"
        table = Table(title=title, title_justify="left", show_lines=True)
        table.add_column("topology")
        table.add_column("precision")
        table.add_column("fits")
        table.add_column("predicted peak / GPU")
        table.add_column("why / what would make it fit", overflow="fold")
        table.add_column("time per minute of video")
        for row in preset_rows:
            fits = "[green]yes[/]" if row.fits else "[red]no[/]"
            table.add_row(row.topology_label, row.precision, fits, _peak(row), _why(row),
                          _time(row))
        console.print(table)
    console.print("GB = 10⁹ bytes. Peaks come from DESIGN.md's parameter counts and KV-cache "
                  "formula "
                  "(calibrated to the published ≈ 80 GB one-GPU bf16 and ≈ 45 GB fp8 pipeline-rank "
                  "figures); see inference/planner.py for every term.", highlight=False)
    console.print("Times exclude model loading (warm workers). Sources: "
                  + " | ".join(s.source for s in THROUGHPUT_SOURCES), highlight=False)
    explanation = nothing_fits_explanation(rows, gpus)
    if explanation:
        console.print(f"[bold red]{explanation}[/]", highlight=False)


def plan_command(
    gpus: Annotated[str | None, typer.Option("--gpus", help=GPUS_HELP)] = None,
    preset: Annotated[list[str] | None, typer.Option(
        "--preset", help="Only these presets (repeatable); default: all.")] = None,
) -> None:
    """Which presets fit which topology on these GPUs, the predicted memory, and the speed."""
    if gpus:
        try:
            devices = parse_gpu_spec(gpus)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--gpus") from None
        origin = "hypothetical"
    else:
        found = inventory()
        if not found.gpus:
            console.print(f"no GPUs on this host: {found.reason}", highlight=False)
            console.print("plan for hypothetical GPUs instead, e.g. "
                          "`avatarflow plan --gpus 1xH100-80GB`", highlight=False)
            raise typer.Exit(1)
        devices, origin = found.gpus, f"this host, via {found.source}"
    unknown = [p for p in preset or [] if p not in PRESETS]
    if unknown:
        raise typer.BadParameter(
            f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}",
            param_hint="--preset")
    chosen = [PRESETS[p] for p in preset] if preset else None
    print_plan(plan(devices, chosen), devices, origin)


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
    """List this host's NVIDIA GPUs (NVML, else nvidia-smi) and the gang workers running on them."""
    found = inventory()
    if found.gpus:
        print_inventory(found)
    else:
        console.print(f"no GPUs on this host: {found.reason}", highlight=False)
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
