"""`avatarflow gang worker | drain | list`: the long-lived GPU gang workers (inference.gang_worker).

One `avatarflow gang worker --gang NAME` process per gang, started by the platform engineer
(a systemd unit per gang); `drain` asks a worker to finish its job and exit; `list` shows every
worker that reports to this database.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from avatarflow.errors import ConfigurationError
from avatarflow.settings import Settings, get_settings
from db.models import utcnow
from db.session import shared_database
from db.stage import StageContext
from db.worker_models import GangWorkerRecord
from flows.hints import avatarflow_cmd
from inference.engine import GpuGang
from inference.gang_worker import GangWorker, live_workers, request_drain
from inference.gangs import configured_gangs
from inference.gpus import GpuInfo, inventory
from inference.packing import PackedGpu, check_packing

console = Console()
gang_app = typer.Typer(help="Long-lived GPU gang workers: one per gang, across batches.", no_args_is_help=True)


@gang_app.command("worker")
def worker_command(
    gang: Annotated[str, typer.Option("--gang", help="The gang to serve, a name from AVATARFLOW_GANGS "
                                      "(gang0, gang1-5, cpu).")],
) -> None:
    """Serve one gang until drained (SIGTERM or `avatarflow gang drain`): load once, take the next video."""
    from flows.components import components_for

    settings = get_settings()
    gangs = {g.name: g for g in configured_gangs(settings)}
    if gang not in gangs:
        raise ConfigurationError(f"no gang {gang!r} in AVATARFLOW_GANGS={settings.gangs!r} "
                                 f"(this host's gangs: {', '.join(gangs)})")
    packed = packed_gpu_here(gangs[gang], settings)
    ctx = StageContext(shared_database(settings), settings, components=components_for(settings, gang=gangs[gang]))
    worker = GangWorker(ctx, gangs[gang], packed=packed)
    stop = threading.Event()

    def drain(signum: int, _frame: object) -> None:
        console.print(f"{signal.Signals(signum).name}: finishing the current job, then stopping")
        worker.drain()
        stop.set()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    console.print(f"gang worker {worker.name}: engine {settings.engine}, GPUs "
                  f"{gangs[gang].cuda_visible_devices or 'none'}; drain with `{avatarflow_cmd(f'gang drain {gang}')}`")
    if packed is not None:
        console.print(packed.describe())
    worker.run(stop)


def packed_gpu_of(gang: GpuGang, settings: Settings, gpus: Sequence[GpuInfo]) -> PackedGpu | None:
    """The worker's packed GPU (None: not packed); refuses what does not fit."""
    return check_packing(gang, gpus, "fp8" if settings.liveavatar_fp8 else "bf16")


def packed_gpu_here(gang: GpuGang, settings: Settings) -> PackedGpu | None:
    """`packed_gpu_of` on this host's GPUs (probed only for a packed gang)."""
    return packed_gpu_of(gang, settings, inventory().gpus) if gang.shares > 1 else None


@gang_app.command("drain")
def drain_command(
    gang: Annotated[str, typer.Argument(help="The gang whose worker should finish its job and stop.")],
    host: Annotated[str | None, typer.Option("--host", help="Only the worker on this host.")] = None,
) -> None:
    """Ask a gang's worker to finish its current job, take no new one, free the GPUs and exit."""

    settings = get_settings()
    asked = request_drain(StageContext(shared_database(settings), settings), gang, host)
    console.print(f"asked {asked} worker(s) of {gang} to drain" if asked else f"no running worker of {gang}")
    if not asked:
        raise typer.Exit(1)


def _age(when: datetime | None) -> str:
    return "" if when is None else f"{(utcnow() - when).total_seconds():.0f} s ago"


@gang_app.command("list")
def list_command(
    everything: Annotated[bool, typer.Option("--all", help="Also stopped and presumed-dead workers.")] = False,
) -> None:
    """Each gang worker: where, state, model load, current job, jobs done, busy share since start."""

    settings = get_settings()
    ctx = StageContext(shared_database(settings), settings)
    if everything:
        with ctx.database.session() as session:
            rows = list(session.scalars(select(GangWorkerRecord).order_by(GangWorkerRecord.id)))
            session.expunge_all()
    else:
        rows = live_workers(ctx)
    console.print(workers_table(rows, f"{len(rows)} gang worker(s){'' if everything else ' alive'}"))


def workers_table(rows: Sequence[GangWorkerRecord], title: str) -> Table:
    """Each worker: where, what it takes, state, model load, current job, jobs, busy share since start."""
    table = Table(title=title, title_justify="left")
    for column in ("worker", "GPUs", "takes", "holds (plan)", "engine", "state", "model loads", "load",
                   "current asset", "done", "failed", "busy share", "heartbeat"):
        table.add_column(column)
    for row in rows:
        alive_s = max(((row.stopped_at or utcnow()) - row.started_at).total_seconds(), 1e-9)
        state = row.state + (" (drain asked)" if row.drain_requested and row.state != "stopped" else "")
        holds = "" if row.reserved_gb is None else f"{row.reserved_gb:.1f} GB"
        measured = row.load_seconds is not None and row.load_seconds == row.load_seconds  # NaN: unknown
        table.add_row(row.name, row.devices or "-", row.presets or "all", holds, row.engine, state,
                      str(row.model_loads), f"{row.load_seconds:.1f} s" if measured else "",
                      str(row.current_asset_id or ""), str(row.jobs_done), str(row.jobs_failed),
                      f"{row.busy_seconds / alive_s:.0%}", _age(row.heartbeat_at))
    return table
