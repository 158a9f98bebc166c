"""`avatarflow run`, `deliver`, `demo` and `automations`: running flows from the command line."""

from __future__ import annotations

import contextvars
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
automations_app = typer.Typer(help="Prefect automations.", no_args_is_help=True)


def run_with_progress(manifest: Path | None, batch: str | None) -> dict[str, Any]:
    """Run the batch flow in a thread and show its assets moving in a progress bar."""
    from avatarflow.settings import get_settings
    from db.queries import get_batch
    from db.session import shared_database
    from flows.batch import DONE, batch_flow
    from tasks.intake import submit
    from tasks.pipeline import batch_counts

    settings = get_settings()
    database = shared_database(settings)
    if manifest is not None:
        intake = submit(database, manifest, batch_name=batch, input_roots=settings.input_roots,
                        default_preset=settings.default_preset, actor="cli:run")
        from flows.cli import print_intake

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
        while worker.is_alive():
            with database.session() as session:
                counts = batch_counts(session, batch_id)
            done = sum(n for state, n in counts.items() if state in DONE)
            states = ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))
            progress.update(bar, total=sum(counts.values()), completed=done, states=states)
            worker.join(timeout=1.0)
        with database.session() as session:
            counts = batch_counts(session, batch_id)
        progress.update(bar, total=sum(counts.values()),
                        completed=sum(n for state, n in counts.items() if state in DONE),
                        states=", ".join(f"{state} {n}" for state, n in sorted(counts.items())))
    if "error" in outcome:
        raise outcome["error"]
    console.print(outcome.get("message", ""))
    return outcome


def run_command(
    manifest: Annotated[Optional[Path], typer.Argument(help="A manifest to submit and run.")] = None,
    batch: Annotated[Optional[str], typer.Option(help="Batch name (or a batch already submitted).")] = None,
) -> None:
    """Run a batch through the whole pipeline (uses PREFECT_API_URL, or a local Prefect server)."""
    from avatarflow.settings import get_settings
    from flows.local_server import ensure_local_server, using_server

    if manifest is None and batch is None:
        raise typer.BadParameter("give a manifest or --batch")
    settings = get_settings()
    api = ensure_local_server(settings.storage.logs)
    console.print(f"Prefect API: {api}")
    with using_server(api):
        run_with_progress(manifest, batch)


def deliver_command(
    asset: Annotated[Optional[list[int]], typer.Option("--asset", help="Only these asset ids (repeatable).")] = None,
) -> None:
    """Deliver approved assets now (the scheduled deliver flow does this too)."""
    from avatarflow.settings import get_settings
    from flows.deliver import deliver_flow
    from flows.local_server import ensure_local_server, using_server

    with using_server(ensure_local_server(get_settings().storage.logs)):
        result = deliver_flow(asset_ids=asset or None)
    console.print(f"delivered {len(result.get('delivered', []))} asset(s); "
                  f"failed {len(result.get('failed') or {})}; folders: {', '.join(map(str, result.get('folders', [])))}")


@automations_app.command("failure-webhook")
def failure_webhook(url: Annotated[str, typer.Argument(help="The URL to POST to when a flow run fails.")]) -> None:
    """Create (or replace) the automation that calls URL when any flow run fails or crashes."""
    from avatarflow.settings import get_settings
    from flows.automations import AUTOMATION_NAME, create_failure_webhook
    from flows.local_server import ensure_local_server, using_server

    with using_server(ensure_local_server(get_settings().storage.logs)):
        automation_id = create_failure_webhook(url)
    console.print(f"automation {AUTOMATION_NAME!r} ({automation_id}) calls {url} on failed or crashed flow runs")


def demo_command() -> None:
    """Make the bundled demo, run it through the whole pipeline, and say where everything is."""
    from avatarflow.demo import make_demo_inputs
    from avatarflow.settings import get_settings
    from flows.deliver import deliver_flow
    from flows.local_server import ensure_local_server, using_server

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
