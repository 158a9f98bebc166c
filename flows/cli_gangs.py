"""`avatarflow gang worker | drain | list`: the long-lived GPU gang workers (inference.gang_worker).

One `avatarflow gang worker --gang NAME` process per gang, started by the platform engineer
(a systemd unit per gang); `drain` asks a worker to finish its job and exit; `list` shows every
worker that reports to this database.
"""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from avatarflow.errors import ConfigurationError
from avatarflow.settings import get_settings
from db.models import utcnow
from db.session import shared_database
from db.stage import StageContext
from db.worker_models import GangWorkerRecord
from inference.gang_worker import GangWorker, live_workers, request_drain
from inference.gangs import configured_gangs

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
    ctx = StageContext(shared_database(settings), settings, components=components_for(settings, gang=gangs[gang]))
    worker = GangWorker(ctx, gangs[gang])
    stop = threading.Event()

    def drain(signum: int, _frame: object) -> None:
        console.print(f"{signal.Signals(signum).name}: finishing the current job, then stopping")
        worker.drain()
        stop.set()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    console.print(f"gang worker {worker.name}: engine {settings.engine}, GPUs "
                  f"{gangs[gang].cuda_visible_devices or 'none'}; drain with `avatarflow gang drain {gang}`")
    worker.run(stop)


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
    table = Table(title=f"{len(rows)} gang worker(s){'' if everything else ' alive'}", title_justify="left")
    for column in ("worker", "GPUs", "engine", "state", "model loads", "load", "current asset",
                   "done", "failed", "busy share", "heartbeat"):
        table.add_column(column)
    for row in rows:
        end = row.stopped_at or utcnow()
        alive_s = max((end - row.started_at).total_seconds(), 1e-9)
        table.add_row(row.name, row.devices or "-", row.engine, row.state + (" (drain asked)" if row.drain_requested
                      and row.state != "stopped" else ""), str(row.model_loads),
                      f"{row.load_seconds:.1f} s" if row.load_seconds is not None and row.load_seconds == row.load_seconds
                      else "", str(row.current_asset_id or ""), str(row.jobs_done), str(row.jobs_failed),
                      f"{row.busy_seconds / alive_s:.0%}", _age(row.heartbeat_at))  # fmt: skip
    console.print(table)
