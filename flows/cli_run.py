"""`avatarflow run`, `deliver`, `demo` and `automations`: running flows from the command line.

The flows themselves (flows.batch, flows.deliver) are imported inside the commands that run
them: they import Prefect and the engines, seconds that `avatarflow --help` and every other
command should not pay.
"""

from __future__ import annotations

import contextvars
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from avatarflow.demo import make_demo_inputs
from avatarflow.settings import get_settings
from db.queries import get_batch
from db.session import shared_database
from flows.automations import AUTOMATION_NAME, create_failure_webhook
from flows.local_server import ensure_local_server, using_server
from tasks.intake import IntakeResult, submit
from tasks.pipeline import DONE, batch_counts

console = Console()
automations_app = typer.Typer(help="Prefect automations.", no_args_is_help=True)


def print_intake(result: IntakeResult) -> None:
    """What a submission registered and which rows it rejected (shared by `submit` and `run`)."""
    if result.problems:
        table = Table(title=f"{len(result.rejected_rows) or 1} row(s) rejected", title_style="bold red")
        for column in ("row", "where", "field", "reason"):
            table.add_column(column, overflow="fold")
        for problem in result.problems:
            table.add_row(str(problem.row or "-"), problem.location, problem.field, problem.reason)
        console.print(table)
    new, known = len(result.created), len(result.existing)
    if result.batch_id is None and not result.specs:
        console.print(f"[red]nothing registered[/]: no valid rows in {result.source}")
        return
    if result.batch_id is None:
        console.print(f"dry run: {len(result.specs)} valid row(s) in {result.source}, nothing registered")
        return
    summary = f"batch [bold]{result.batch_name}[/] (id {result.batch_id}): {new} new asset(s) registered"
    if known:
        summary += f", {known} already registered (nothing new created for them)"
    if result.problems:
        summary += f", {len(result.rejected_rows) or len(result.problems)} row(s) rejected"
    console.print(summary)


def run_with_progress(manifest: Path | None, batch: str | None) -> dict[str, Any]:
    """Run the batch flow in a thread and show its assets moving in a progress bar."""
    from flows.batch import batch_flow  # Prefect and the engines: see the module docstring

    settings = get_settings()
    database = shared_database(settings)
    if manifest is not None:
        intake = submit(database, manifest, batch_name=batch, input_roots=settings.input_roots,
                        default_preset=settings.default_preset, actor="cli:run")
        print_intake(intake)
        batch = intake.batch_name
    assert batch is not None
    with database.session() as session:
        batch_id = get_batch(session, batch).id
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            state = batch_flow(batch=batch, return_state=True)
            outcome["message"] = state.message
            outcome["summary"] = state.result(raise_on_failure=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            outcome["error"] = exc

    # The thread runs in a copy of this context, so it sees the Prefect settings chosen here.
    worker = threading.Thread(target=contextvars.copy_context().run, args=(target,), name="batch-flow",
                              daemon=True)
    worker.start()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[states]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"batch {batch}", total=None, states="")

        def show_counts() -> None:
            with database.session() as session:
                counts = batch_counts(session, batch_id)
            progress.update(bar, total=sum(counts.values()),
                            completed=sum(n for state, n in counts.items() if state in DONE),
                            states=", ".join(f"{state} {n}" for state, n in sorted(counts.items())))

        while worker.is_alive():
            show_counts()
            worker.join(timeout=1.0)
        show_counts()  # once more: the last stages finished after the last look
    if "error" in outcome:
        raise outcome["error"]
    console.print(outcome.get("message", ""))
    return outcome


def run_command(
    manifest: Annotated[Path | None, typer.Argument(help="A manifest to submit and run.")] = None,
    batch: Annotated[str | None, typer.Option(help="Batch name (or a batch already submitted).")] = None,
) -> None:
    """Run a batch through the whole pipeline (uses PREFECT_API_URL, or a local Prefect server)."""
    if manifest is None and batch is None:
        raise typer.BadParameter("give a manifest or --batch")
    settings = get_settings()
    api = ensure_local_server(settings.storage.logs)
    console.print(f"Prefect API: {api}")
    with using_server(api):
        run_with_progress(manifest, batch)


def deliver_command(
    asset: Annotated[list[int] | None, typer.Option("--asset", help="Only these asset ids (repeatable).")] = None,
) -> None:
    """Deliver approved assets now (the scheduled deliver flow does this too)."""
    from flows.deliver import deliver_flow  # Prefect: see the module docstring

    with using_server(ensure_local_server(get_settings().storage.logs)):
        result = deliver_flow(asset_ids=asset or None)
    console.print(f"delivered {len(result.get('delivered', []))} asset(s); "
                  f"failed {len(result.get('failed') or {})}; folders: {', '.join(map(str, result.get('folders', [])))}")


@automations_app.command("failure-webhook")
def failure_webhook(url: Annotated[str, typer.Argument(help="The URL to POST to when a flow run fails.")]) -> None:
    """Create (or replace) the automation that calls URL when any flow run fails or crashes."""
    with using_server(ensure_local_server(get_settings().storage.logs)):
        automation_id = create_failure_webhook(url)
    console.print(f"automation {AUTOMATION_NAME!r} ({automation_id}) calls {url} on failed or crashed flow runs")


def demo_command() -> None:
    """Make the bundled demo, run it through the whole pipeline, and say where everything is."""
    from flows.deliver import deliver_flow  # Prefect: see the module docstring

    settings = get_settings()
    settings.storage.ensure()
    manifest = make_demo_inputs(settings.data_root / "demo")
    console.print("starting a local Prefect server (first start takes a minute)…")
    api = ensure_local_server(settings.storage.logs)
    started = time.monotonic()
    with using_server(api):
        run_with_progress(manifest, "demo")
        deliver_flow()
    ui = api.removesuffix("/api")
    console.print(f"\n[bold]demo finished in {time.monotonic() - started:.0f} s[/]")
    console.print(f"  delivered videos   {settings.storage.deliveries / 'demo'}")
    console.print(f"  all renditions     {settings.storage.assets}")
    console.print(f"  review queue       `avatarflow reviewer add NAME --role admin`, then "
                  f"`avatarflow review serve` and open {settings.review_url}/queue")
    console.print(f"  Prefect UI         {ui} (the server keeps running; `prefect server stop` ends it)")
    console.print("  status             `avatarflow status --batch demo`")
