"""Writing the report's files under `<data_root>/reports/<date>/` and listing them in `reports`.

Files are written atomically; a re-run for the same day replaces them and updates their rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from avatarflow.storage import Storage, atomic_write_bytes
from db.models import utcnow
from db.report_models import Report
from db.session import Database
from tasks.report.csv_rows import render_csv
from tasks.report.figures import DailyReport
from tasks.report.html_page import render_html
from tasks.report.markdown_page import render_markdown
from tasks.report.trend import build_report


@dataclass(frozen=True)
class WrittenReport:
    """One file written: its kind (markdown, html or csv), where, and its SHA-256."""

    kind: str
    path: Path
    sha256: str


def report_folder(storage: Storage, day: dt.date) -> Path:
    """Where one day's files go: `<data_root>/reports/<date>/`."""
    return storage.reports / day.isoformat()


def write_report(database: Database, report: DailyReport, storage: Storage,
                 *, markdown: str | None = None) -> list[WrittenReport]:
    """Write the markdown, HTML and CSV atomically and list them in the `reports` table.

    Running it again for the same day replaces the files and updates the rows (one row per
    date and kind), so a re-run never leaves duplicates.
    """
    folder = report_folder(storage, report.date)
    stem = f"daily-report-{report.date.isoformat()}"
    contents = {
        "markdown": (folder / f"{stem}.md", (markdown or render_markdown(report)).encode()),
        "html": (folder / f"{stem}.html", render_html(report).encode()),
        "csv": (folder / f"{stem}.csv", render_csv(report).encode()),
    }
    written = []
    for kind, (path, data) in contents.items():
        atomic_write_bytes(path, data)
        written.append(WrittenReport(kind, path, hashlib.sha256(data).hexdigest()))
    with database.session() as session:
        for item in written:
            changed = session.execute(
                update(Report).where(Report.date == report.date, Report.kind == item.kind)
                .values(path=str(item.path), sha256=item.sha256, created_at=utcnow())
                .execution_options(synchronize_session=False))
            if not changed.rowcount:
                session.add(Report(date=report.date, kind=item.kind, path=str(item.path),
                                   sha256=item.sha256))
    return written


def list_reports(session: Session, day: dt.date | None = None) -> list[Report]:
    """Generated reports, newest day first."""
    query = select(Report).order_by(Report.date.desc(), Report.kind)
    if day is not None:
        query = query.where(Report.date == day)
    return list(session.scalars(query))


@dataclass(frozen=True)
class MadeReport:
    """One day's report, its markdown (the flow publishes it as the artifact), the files written."""

    report: DailyReport
    markdown: str
    written: list[WrittenReport]


def make_report(database: Database, storage: Storage, day: dt.date,
                *, now: dt.datetime | None = None) -> MadeReport:
    """Compute, render and write one day's report."""
    with database.session() as session:
        report = build_report(session, day, now=now)
    markdown = render_markdown(report)
    return MadeReport(report, markdown, write_report(database, report, storage, markdown=markdown))
