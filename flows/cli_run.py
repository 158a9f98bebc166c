"""`avatarflow run`, `deliver`, `demo` and `automations`: running flows from the command line.

The flows themselves (flows.batch, flows.deliver) are imported inside the commands that run
them: they import Prefect and the engines, seconds that `avatarflow --help` and every other
command should not pay.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from avatarflow.demo import make_demo_inputs
from avatarflow.settings import get_settings
from db.queries import get_batch
from db.session import shared_database
from db.states import AssetState
from flows.automations import AUTOMATION_NAME, create_failure_webhook
from flows.hints import avatarflow_cmd
from flows.local_server import ensure_local_server, server_status, using_server
from flows.terminal import others_to_log
from tasks.intake import IntakeResult, submit
from tasks.progress import STAGES, AssetOutcome, batch_outcomes, batch_stage_rows, stage_progress

console = Console()
automations_app = typer.Typer(help="Prefect automations.", no_args_is_help=True)


def print_intake(result: IntakeResult, out: Console | None = None) -> None:
    """What a submission registered and which rows it rejected (shared by `submit` and `run`)."""
    out = out or console
    if result.problems:
        table = Table(title=f"{len(result.rejected_rows) or 1} row(s) rejected", title_style="bold red")
        for column in ("row", "where", "field", "reason"):
            table.add_column(column, overflow="fold")
        for problem in result.problems:
            table.add_row(str(problem.row or "-"), problem.location, problem.field, problem.reason)
        out.print(table)
    new, known = len(result.created), len(result.existing)
    if result.batch_id is None and not result.specs:
        out.print(f"[red]nothing registered[/]: no valid rows in {result.source}")
        return
    if result.batch_id is None:
        out.print(f"dry run: {len(result.specs)} valid row(s) in {result.source}, nothing registered")
        return
    summary = f"batch [bold]{result.batch_name}[/] (id {result.batch_id}): {new} new asset(s) registered"
    if known:
        summary += f", {known} already registered (nothing new created for them)"
    if result.problems:
        summary += f", {len(result.rejected_rows) or len(result.problems)} row(s) rejected"
    out.print(summary)


@dataclass
class RunOutcome:
    """What `run` did: the flow's end, the delivery, every asset, and where the details are."""

    batch: str
    batch_id: int
    message: str
    flow_run_url: str | None
    delivered: list[int]
    delivery_failed: dict[int, str]
    assets: list[AssetOutcome]
    log: Path
    error: BaseException | None = None


def _stage_display(out: Console) -> Progress:
    return Progress(TextColumn("{task.description:<11}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=out,
                    redirect_stdout=False, redirect_stderr=False)


def _show_stages(progress: Progress, bars: dict[str, TaskID], database: Any, batch_id: int) -> None:
    with database.session() as session:
        rows = batch_stage_rows(session, batch_id)
    for stage in stage_progress(rows):
        notes = [f"{stage.here} here" if stage.here else "", f"[red]{stage.failed} failed[/]" if stage.failed else ""]
        # Failed assets are settled at their stage: the bar fills, the note says how many failed.
        progress.update(bars[stage.stage], total=max(stage.total, 1) if rows else None,
                        completed=stage.done + stage.failed,
                        note=" · ".join(n for n in notes if n))


def run_batch(manifest: Path | None, batch: str | None, *, api_url: str, deliver: bool) -> RunOutcome:
    """Submit (if a manifest is given) and run a batch, showing each stage fill; deliver what it
    approved. Everything but avatarflow's own display goes to a log file under the data root."""
    settings = get_settings()
    log = settings.storage.logs / "runs" / f"run-{datetime.now():%Y%m%d-%H%M%S}.log"
    console.print(f"Prefect API {api_url} · details in {log}", highlight=False)
    with others_to_log(log) as out:
        # Prefect and the engines (seconds of import, and their warnings) load here, inside.
        from flows.batch import batch_flow
        from flows.deliver import deliver_flow

        database = shared_database(settings)
        if manifest is not None:
            intake = submit(database, manifest, batch_name=batch, input_roots=settings.input_roots,
                            default_preset=settings.default_preset, actor="cli:run")
            print_intake(intake, out)
            if intake.batch_id is None:
                raise typer.Exit(code=1)
            batch = intake.batch_name
        assert batch is not None
        with database.session() as session:
            found = get_batch(session, batch)
            batch_id, batch = found.id, found.name
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                state = batch_flow(batch=batch, return_state=True)
                result["message"] = state.name if state.is_completed() else f"{state.name}: {state.message}"
                result["flow_run_id"] = state.state_details.flow_run_id
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                result["error"] = exc

        # The thread runs in a copy of this context, so it sees the Prefect settings chosen here.
        worker = threading.Thread(target=contextvars.copy_context().run, args=(target,), name="batch-flow",
                                  daemon=True)
        worker.start()
        with _stage_display(out) as progress:
            bars = {stage: progress.add_task(stage, total=None, note="") for stage in STAGES}
            while worker.is_alive():
                _show_stages(progress, bars, database, batch_id)
                worker.join(timeout=1.0)
            _show_stages(progress, bars, database, batch_id)  # the last stages ended after the last look
        delivered: list[int] = []
        delivery_failed: dict[int, str] = {}
        if deliver and "error" not in result:
            with database.session() as session:
                approved = [a.asset_id for a in batch_outcomes(session, batch_id) if a.state == AssetState.APPROVED]
            if approved:
                report = deliver_flow(asset_ids=approved)
                delivered, delivery_failed = list(report.get("delivered", [])), dict(report.get("failed") or {})
        with database.session() as session:
            assets = batch_outcomes(session, batch_id)
    run_id = result.get("flow_run_id")
    return RunOutcome(batch, batch_id, result.get("message", ""),
                      f"{api_url.removesuffix('/api')}/runs/flow-run/{run_id}" if run_id else None,
                      delivered, delivery_failed, assets, log, result.get("error"))


_STATE_STYLE = {AssetState.FAILED: "red", AssetState.REJECTED: "red", AssetState.DELIVERED: "green",
                AssetState.APPROVED: "green", AssetState.REVIEW_PENDING: "yellow"}


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def print_outcome(outcome: RunOutcome, *, deliver: bool) -> None:
    """The closing table (every asset: state, why, video) and what to do next, as commands."""
    table = Table(title=f"batch {outcome.batch}: {len(outcome.assets)} asset(s)", title_justify="left")
    for column in ("asset", "external id", "state", "why / reason", "video"):
        table.add_column(column, overflow="fold")
    root = get_settings().data_root
    for asset in outcome.assets:
        video = asset.video.relative_to(root) if asset.video and asset.video.is_relative_to(root) else asset.video
        table.add_row(str(asset.asset_id), asset.external_id or "", asset.state, _short(asset.why),
                      str(video or ""), style=_STATE_STYLE.get(AssetState(asset.state)))
    console.print(table)
    console.print(f"videos are under {root}; `{avatarflow_cmd('status ASSET')}` shows an asset's whole story",
                  highlight=False)
    states = Counter(a.state for a in outcome.assets)
    console.print(", ".join(f"{n} {state}" for state, n in states.most_common()) + f" (flow run {outcome.message})",
                  highlight=False)
    if outcome.delivered:
        folder = get_settings().storage.deliveries
        console.print(f"delivered {len(outcome.delivered)} video(s) under {folder}", highlight=False)
    for asset_id, why in outcome.delivery_failed.items():
        console.print(f"[red]delivery of asset {asset_id} failed[/]: {why}", highlight=False)
    if states.get(AssetState.APPROVED) and not deliver:
        console.print(f"approved, not delivered yet: `{avatarflow_cmd('deliver')}` delivers them", highlight=False)
    if pending := states.get(AssetState.REVIEW_PENDING):
        console.print(f"{pending} waiting for a reviewer: `{avatarflow_cmd('review serve')}`, open "
                      f"{get_settings().review_url}/queue; approved videos are delivered by "
                      f"`{avatarflow_cmd('deliver')}`", highlight=False)
    failed = [a for a in outcome.assets if a.state == AssetState.FAILED]
    if any(a.retryable for a in failed):
        console.print(f"retryable failures run again with `{avatarflow_cmd(f'run --batch {outcome.batch}')}`",
                      highlight=False)
    if any(a.retryable is False for a in failed):
        console.print("a failure that a retry will not fix needs its input fixed and submitted again",
                      highlight=False)
    if outcome.flow_run_url:
        console.print(f"Prefect flow run  {outcome.flow_run_url}", highlight=False)
    console.print(f"log               {outcome.log}", highlight=False)


def _server(settings: Any) -> str:
    """The Prefect API to use, saying so when a local server has to be started first."""
    status = server_status(settings)
    if not status.healthy and status.source != "PREFECT_API_URL":
        console.print("starting a local Prefect server in the background (the first start takes a minute)…")
    api, started = ensure_local_server(settings)
    if started:
        console.print(f"Prefect server started at {api.removesuffix('/api')}; it keeps running for the UI — "
                      f"`{avatarflow_cmd('server stop')}` stops it", highlight=False)
    return api


def run_command(
    manifest: Annotated[Path | None, typer.Argument(help="A manifest to submit and run.")] = None,
    batch: Annotated[str | None, typer.Option(help="Batch name (or a batch already submitted).")] = None,
    deliver: Annotated[bool, typer.Option(help="Deliver the videos the run approved.")] = True,
) -> None:
    """Run a batch through the whole pipeline, deliver what it approved, and show every asset's end."""
    if manifest is None and batch is None:
        raise typer.BadParameter("give a manifest or --batch")
    settings = get_settings()
    api = _server(settings)
    with using_server(api):
        outcome = run_batch(manifest, batch, api_url=api, deliver=deliver)
    if outcome.error is not None:
        console.print(f"[red]the batch flow did not finish[/]; details in {outcome.log}", highlight=False)
        raise outcome.error
    print_outcome(outcome, deliver=deliver)


def deliver_command(
    asset: Annotated[list[int] | None, typer.Option("--asset", help="Only these asset ids (repeatable).")] = None,
) -> None:
    """Deliver approved assets now (the scheduled deliver flow does this too)."""
    settings = get_settings()
    api = _server(settings)
    log = settings.storage.logs / "runs" / f"deliver-{datetime.now():%Y%m%d-%H%M%S}.log"
    with using_server(api), others_to_log(log):
        from flows.deliver import deliver_flow  # Prefect: see the module docstring

        result = deliver_flow(asset_ids=asset or None)
    delivered, failed = result.get("delivered", []), result.get("failed") or {}
    if not delivered and not failed:
        console.print("nothing to deliver: no approved asset is waiting"
                      + (f" among {', '.join(map(str, asset))}" if asset else ""), highlight=False)
    if delivered:
        console.print(f"delivered {len(delivered)} asset(s) to {', '.join(map(str, result.get('folders', [])))}",
                      highlight=False)
    for asset_id, why in dict(failed).items():
        console.print(f"[red]asset {asset_id} not delivered[/]: {why}", highlight=False)
    for asset_id, why in dict(result.get("skipped") or {}).items():
        console.print(f"asset {asset_id} skipped: {why}", highlight=False)
    console.print(f"log {log}", highlight=False)
    if failed:
        raise typer.Exit(code=1)


@automations_app.command("failure-webhook")
def failure_webhook(url: Annotated[str, typer.Argument(help="The URL to POST to when a flow run fails.")]) -> None:
    """Create (or replace) the automation that calls URL when any flow run fails or crashes."""
    with using_server(_server(get_settings())):
        automation_id = create_failure_webhook(url)
    console.print(f"automation {AUTOMATION_NAME!r} ({automation_id}) calls {url} on failed or crashed flow runs")


def demo_command() -> None:
    """Make the bundled demo, run it through the whole pipeline, and say where everything is."""
    settings = get_settings()
    settings.storage.ensure()
    manifest = make_demo_inputs(settings.data_root / "demo")
    started = time.monotonic()
    api = _server(settings)
    with using_server(api):
        outcome = run_batch(manifest, "demo", api_url=api, deliver=True)
    if outcome.error is not None:
        console.print(f"[red]the demo's batch flow did not finish[/]; details in {outcome.log}", highlight=False)
        raise outcome.error
    print_outcome(outcome, deliver=True)
    console.print(f"\n[bold]demo finished in {time.monotonic() - started:.0f} s[/]")
    console.print(f"  delivered videos   {settings.storage.deliveries / 'demo'}", highlight=False)
    console.print(f"  status             `{avatarflow_cmd('status --batch demo')}`", highlight=False)
    console.print(f"  review queue       `{avatarflow_cmd('reviewer add NAME --role admin')}`, then "
                  f"`{avatarflow_cmd('review serve')}` and open {settings.review_url}/queue", highlight=False)
    console.print(f"  Prefect UI         {api.removesuffix('/api')} (the server keeps running; "
                  f"`{avatarflow_cmd('server stop')}` stops it)", highlight=False)
