"""The `daily-report` flow: build yesterday's production report and publish it.

The report itself (figures, markdown, HTML with charts, CSV, the `reports` table) is the plain
library tasks/report; `avatarflow report` calls the same library without Prefect. Only this
flow publishes the Prefect markdown artifact.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from avatarflow.settings import get_settings
from db.session import open_database
from tasks.report.day import parse_day
from tasks.report.files import make_report

ARTIFACT_KEY = "daily-report"


@flow(name="daily-report", log_prints=True)
def daily_report(date: str | None = None) -> dict[str, str]:
    """Build the production report for `date` (YYYY-MM-DD, UTC; yesterday by default).

    Publishes the markdown artifact `daily-report` (one version per run, so the UI keeps every
    day) and returns the paths of the files written.
    """
    day = parse_day(date)
    settings = get_settings()
    settings.storage.ensure()
    database = open_database(settings)
    try:
        made = make_report(database, settings.storage, day)
    finally:
        database.dispose()
    create_markdown_artifact(
        markdown=made.markdown, key=ARTIFACT_KEY,
        description=f"Daily production report for {day.isoformat()} (UTC): {made.report.delivered} "
                    f"delivered, backlog {made.report.backlog_total}",
    )
    for item in made.written:
        print(f"{item.kind}: {item.path}")
    return {item.kind: str(item.path) for item in made.written}
