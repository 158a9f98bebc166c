"""The day's report with its trend: the main figures of the TREND_DAYS days ending with it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from tasks.report.day import compute_day
from tasks.report.figures import TREND_DAYS, DailyReport


def build_report(session: Session, day: dt.date, *, now: dt.datetime | None = None,
                 trend_days: int = TREND_DAYS) -> DailyReport:
    """The day's report with its trend, oldest day first.

    Each trend day is computed exactly as a report of its own, so a trend row always equals the
    figures of that day's report.
    """
    report = compute_day(session, day, now=now)
    for back in range(trend_days - 1, 0, -1):
        report.trend.append(compute_day(session, day - dt.timedelta(days=back), now=now).trend_row())
    report.trend.append(report.trend_row())
    return report
