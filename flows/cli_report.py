"""`avatarflow report`: build the daily production report from the command line.

The command builds the same figures and files as the `daily-report` flow from the same plain
library (tasks/report), without Prefect: an operator can run it with no Prefect server. The
Prefect artifact is published by the flow only.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from avatarflow.settings import get_settings
from db.session import open_database
from tasks.report.day import parse_day
from tasks.report.files import make_report
from tasks.report.formatting import fmt_duration, fmt_num, fmt_pct

console = Console()


def report_command(
    date: Annotated[str | None, typer.Option(
        "--date", help="The UTC day to report on, YYYY-MM-DD (default: yesterday).")] = None,
) -> None:
    """Build the daily production report (markdown, HTML with charts, CSV) and print a summary."""
    day = parse_day(date)
    settings = get_settings()
    settings.storage.ensure()
    database = open_database(settings)
    try:
        made = make_report(database, settings.storage, day)
    finally:
        database.dispose()
    report = made.report

    summary = Table(title=f"daily report {day.isoformat()} (UTC)", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    rows = [
        ("submitted", str(report.submitted)), ("generated", str(report.generated)),
        ("approved", str(report.approved)), ("delivered", str(report.delivered)),
        ("rejected", str(report.rejected)),
        ("minutes delivered", fmt_num(report.minutes_delivered, 1)),
        ("backlog at end of day", str(report.backlog_total)),
        ("QC pass rate", fmt_pct(report.qc_pass_rate)),
        ("lip-sync at or above gate", fmt_pct(report.lip_sync.share_at_or_above_gate)),
        ("submission → delivery (median)", fmt_duration(report.submission_to_delivery.median_s)),
        ("GPU-hours", fmt_num(report.gpu_hours, 1)),
        ("GPU-hours per delivered minute", fmt_num(report.gpu_hours_per_delivered_minute)),
    ]
    for name, value in rows:
        summary.add_row(name, value)
    console.print(summary)
    for item in made.written:
        console.print(f"{item.kind:<9} {item.path}", soft_wrap=True, highlight=False)
