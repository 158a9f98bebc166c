"""`avatarflow server start | stop | status`: the local Prefect server (see flows/local_server.py)."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from avatarflow.settings import get_settings
from flows.hints import avatarflow_cmd
from flows.local_server import ServerStatus, server_status, start_server, stop_server

console = Console()
server_app = typer.Typer(help="The local Prefect server avatarflow runs when PREFECT_API_URL is not set.",
                         no_args_is_help=True)


def describe(status: ServerStatus) -> str:
    """One line: where the server is and who runs it."""
    if status.source == "PREFECT_API_URL":
        health = "answering" if status.healthy else "[red]not answering[/]"
        return f"Prefect server {status.api_url} (from PREFECT_API_URL, not managed by avatarflow): {health}"
    if status.source == "avatarflow":
        up = time.time() - (status.started_at or time.time())
        health = "running" if status.healthy else "starting (not answering yet)"
        return (f"Prefect server {health} at {status.ui_url} — pid {status.pid}, up {up / 60:.0f} min, "
                f"log {status.log}")
    if status.source == "other":
        return f"a Prefect server answers at {status.ui_url}, started outside avatarflow"
    return "no Prefect server running"


@server_app.command("start")
def start() -> None:
    """Start the local Prefect server in the background (nothing happens if one answers)."""
    status, started = start_server(get_settings())
    console.print(("started: " if started else "already running: ") + describe(status), highlight=False)
    if started or status.source == "avatarflow":
        console.print(f"stop it with `{avatarflow_cmd('server stop')}`", highlight=False)


@server_app.command("stop")
def stop() -> None:
    """Stop the Prefect server avatarflow started, and every process of it."""
    result = stop_server(get_settings())
    console.print(result.message, highlight=False)


@server_app.command("status")
def status() -> None:
    """Is a Prefect server running, where, and who started it (exit 1 when none answers)."""
    found = server_status(get_settings())
    console.print(describe(found), highlight=False)
    if not found.healthy:
        console.print(f"start one with `{avatarflow_cmd('server start')}`", highlight=False)
        raise typer.Exit(code=1)
