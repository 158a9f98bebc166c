"""The `avatarflow` command line: every command, registered in the order an operator meets them."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from typer.core import TyperOption

from avatarflow.errors import AvatarflowError
from avatarflow.settings import Settings, get_settings
from avatarflow.storage import Storage
from db.models import Asset
from db.queries import batch_summaries, find_asset, get_batch, state_counts
from db.session import Database, open_database
from db.stage import StageContext
from flows.cli_gangs import gang_app, workers_table
from flows.cli_plan import gpus_command, plan_command
from flows.cli_qc import qc_app
from flows.cli_report import report_command
from flows.cli_review import review_app, reviewer_app
from flows.cli_run import automations_app, deliver_command, demo_command, print_intake, run_command
from flows.cli_server import server_app
from flows.hints import pasteable
from inference.gang_worker import live_workers
from tasks.intake import submit as submit_manifest
from tasks.prompts import TemplateLibrary

app = typer.Typer(
    name="avatarflow",
    help="Talking-avatar video production: intake, generation, QC, review and delivery.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
prompts_app = typer.Typer(help="Prompt templates.", no_args_is_help=True)

console = Console()
errors = Console(stderr=True)

# typer 0.2x labels every flag `<bool>` in --help, which reads as if it took a value; flags take
# none, so they show no type.
_display_type = TyperOption.display_type_rich
TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type(self, ctx)  # type: ignore[method-assign]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """avatarflow: talking-avatar videos from portraits, speech and prompts."""


def _database(settings: Settings) -> Database:
    Storage(settings.data_root).ensure()
    return open_database(settings)


def init() -> None:
    """Create the data folders and bring the database schema up to date."""
    settings = get_settings()
    Storage(settings.data_root).ensure()
    database = Database(settings.resolved_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    applied = database.migrate()
    console.print(f"data root  {settings.data_root}")
    console.print(f"database   {database.engine.url.render_as_string(hide_password=True)} "
                  f"({database.backend}, schema {database.current_revision()}"
                  f"{', migrated now' if applied else ', up to date'})")


def submit(
    manifest: Annotated[Path, typer.Argument(help="CSV, JSONL or YAML manifest, or a folder of name.jpg + name.wav pairs.")],
    batch: Annotated[str | None, typer.Option(help="Batch name (default: the manifest's name).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate only; register nothing.")] = False,
) -> None:
    """Validate a manifest and register its assets (idempotent: known assets are not added again)."""
    settings = get_settings()
    database = _database(settings)
    result = submit_manifest(
        database, manifest, batch_name=batch, input_roots=settings.input_roots,
        default_preset=settings.default_preset, dry_run=dry_run,
    )
    print_intake(result)
    if result.problems:
        raise typer.Exit(code=1)


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("assets", justify="right")
    for state, count in counts.items():
        table.add_row(state, str(count), style=None if count else "dim")
    table.add_row("total", str(sum(counts.values())), style="bold")
    return table


def status(
    asset: Annotated[str | None, typer.Argument(help="An asset id, key (prefix) or external id: show its full history.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only this batch (name or id).")] = None,
) -> None:
    """Assets per state (all batches, or one), or one asset's full history."""
    database = _database(get_settings())
    with database.session() as session:
        if asset:
            _show_asset(find_asset(session, asset))
            return
        if batch:
            found = get_batch(session, batch)
            console.print(_counts_table(f"batch {found.name}", state_counts(session, found.id)))
            return
        summaries = batch_summaries(session)
        if summaries:
            table = Table(title="batches")
            for column in ("id", "name", "assets", "submitted at", "by"):
                table.add_column(column)
            for item, count in summaries:
                table.add_row(str(item.id), item.name, str(count),
                              item.created_at.strftime("%Y-%m-%d %H:%M"), item.created_by)
            console.print(table)
        console.print(_counts_table("all assets", state_counts(session)))
    if workers := live_workers(StageContext(database, get_settings())):
        console.print(workers_table(workers, f"{len(workers)} gang worker(s) alive"))


def _show_asset(asset: Asset) -> None:
    table = Table(show_header=False, title=f"asset {asset.id}")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("key", asset.key), ("batch", asset.batch.name), ("external id", asset.external_id or "-"),
        ("state", asset.state), ("preset", asset.preset), ("priority", str(asset.priority)),
        ("tags", ", ".join(asset.tags) or "-"), ("image", asset.image_path), ("audio", asset.audio_path),
        ("prompt", asset.prompt or "-"),
    ]
    if asset.failure_reason:
        rows.append(("failure", f"{asset.failed_stage}: {asset.failure_reason} "
                                f"({'retry may help' if asset.retryable else 'retry will not help'})"))
    if asset.claimed_by:
        rows.append(("claimed by", f"{asset.claimed_by} until {asset.claim_expires_at:%H:%M:%S}"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    history = Table(title="history")
    for column in ("when (UTC)", "who", "from", "to", "why"):
        history.add_column(column, overflow="fold")
    for event in asset.events:
        history.add_row(event.at.strftime("%Y-%m-%d %H:%M:%S"), event.actor, event.from_state or "-",
                        event.to_state or "-", event.reason or "")
    console.print(history)


@prompts_app.command("list")
def prompts_list() -> None:
    """The prompt templates and the variables each one takes."""
    library = TemplateLibrary(get_settings().templates_dir)
    table = Table()
    for column in ("template", "description", "variables (default)"):
        table.add_column(column, overflow="fold")
    for name in library.names():
        template = library.get(name)
        variables = ", ".join(
            f"{k}" + ("" if k in template.required else f" ({v})") for k, v in template.variables.items()
        )
        table.add_row(name, template.description, variables)
    console.print(table)


@prompts_app.command("render")
def prompts_render(
    template: Annotated[str, typer.Argument(help="Template name, e.g. default.")],
    var: Annotated[list[str] | None, typer.Option("--var", help="A variable as name=value; repeat for more.")] = None,
) -> None:
    """Preview the prompt a template writes."""
    values: dict[str, str] = {}
    for item in var or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--var takes name=value, got {item!r}")
        values[name.strip()] = value
    console.print(TemplateLibrary(get_settings().templates_dir).render(template, values), soft_wrap=True)


def preprocess(
    batch: Annotated[str | None, typer.Option(help="Only this batch (name or id).")] = None,
) -> None:
    """Crop faces and prepare speech for every submitted asset (no Prefect needed)."""
    # Here, not at the top: preprocessing loads the face and audio libraries (seconds), which
    # `avatarflow --help` and the other commands should not pay for.
    from tasks.preprocess import preprocess_asset, submitted_ids

    settings = get_settings()
    database = _database(settings)
    batch_id = None
    if batch:
        with database.session() as session:
            batch_id = get_batch(session, batch).id
    ids = submitted_ids(database, batch_id)
    ctx = StageContext(database, settings, actor="cli:preprocess")
    outcomes = []
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("preprocessing", total=len(ids))
        for asset_id in ids:
            outcomes.append(preprocess_asset(ctx, asset_id))
            progress.advance(bar)
    table = Table(title=f"preprocessed {len(ids)} asset(s)")
    for column in ("asset", "state", "note"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        segments = outcome.detail.get("segments")
        note = outcome.reason or (f"{segments} segments" if segments else "")
        table.add_row(str(outcome.asset_id), outcome.state, note,
                      style="red" if outcome.state == "failed" else None)
    console.print(table)


# The commands in the order an operator meets them (typer lists them as registered).
for command in (init, demo_command, submit, run_command, status, deliver_command, preprocess, plan_command,
                gpus_command, report_command):
    app.command(command.__name__.removesuffix("_command"))(command)
for group, group_name in ((server_app, "server"), (review_app, "review"), (reviewer_app, "reviewer"),
                          (qc_app, "qc"), (gang_app, "gang"), (prompts_app, "prompts"),
                          (automations_app, "automations")):
    app.add_typer(group, name=group_name)


def main(argv: list[str] | None = None) -> None:
    """Entry point: AvatarflowError becomes one readable line; --debug shows the traceback."""
    # MediaPipe's C++ side logs setup chatter on stderr; operators only need real warnings.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = app(args=args, prog_name="avatarflow", standalone_mode=False)
        # Without standalone mode click hands back typer.Exit's code instead of exiting.
        if isinstance(result, int):
            sys.exit(result)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        errors.print("aborted")
        sys.exit(130)
    except AvatarflowError as exc:
        if debug:
            traceback.print_exc()
        # Messages from every layer name commands as `avatarflow …`; spell them as they can be pasted.
        errors.print(f"[red]error:[/] {pasteable(str(exc))}", highlight=False)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for operators
        if debug:
            traceback.print_exc()
        else:
            errors.print(f"[red]error:[/] {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                         highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
