"""One day's figures, put together from the queries and the transition histories."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from sqlalchemy.orm import Session

from avatarflow.errors import AvatarflowError
from db.models import utcnow
from tasks.report import queries, transitions
from tasks.report.figures import UTC, DailyReport, Regenerations, S, Spread, Window
from tasks.report.stats import ratio


def parse_day(text: str | None, *, now: dt.datetime | None = None) -> dt.date:
    """`YYYY-MM-DD`, or yesterday (UTC) when not given."""
    if not text:
        return ((now or utcnow()).astimezone(UTC) - dt.timedelta(days=1)).date()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise AvatarflowError(f"a report date is YYYY-MM-DD (a UTC day), not {text!r}") from None


def compute_day(session: Session, day: dt.date, *, now: dt.datetime | None = None) -> DailyReport:
    """All of one day's figures (DailyReport documents each), without the trend."""
    window = Window.for_day(day, now)
    history = queries.load_history(session, window)
    attempts = queries.attempts_by_asset(session, history.events.keys())
    entered = transitions.entries(history, window)
    delivered = entered.get(S.DELIVERED, {})

    durations = {asset_id: queries.delivered_duration_s(history.assets[asset_id], attempts.get(asset_id, []))
                 for asset_id in delivered}
    minutes_delivered = sum(d for d in durations.values() if d is not None) / 60
    qc_moves = transitions.qc_decisions(history, window)
    qc_by_outcome = Counter(e.to_state for e in qc_moves)
    regens = [max(len(attempts.get(asset_id, [])) - 1, 0) for asset_id in delivered]
    submitted_at = transitions.registration_times(history, delivered)
    backlog = queries.backlog(session, window)
    reviews = queries.reviews(session, window)
    gpu = queries.gpu_use(session, window)
    return DailyReport(
        date=day, window_start=window.start, window_end=window.until, generated_at=utcnow(),
        submitted=len(entered.get(S.SUBMITTED, {})), generated=len(entered.get(S.GENERATED, {})),
        approved=len(entered.get(S.APPROVED, {})), delivered=len(delivered),
        rejected=len(entered.get(S.REJECTED, {})),
        minutes_delivered=minutes_delivered,
        delivered_without_duration=sum(d is None for d in durations.values()),
        backlog=backlog, backlog_total=sum(b.count for b in backlog),
        qc_decisions=len(qc_moves), qc_passed=qc_by_outcome[S.QC_PASSED],
        qc_failed=qc_by_outcome[S.QC_FAILED], qc_borderline=qc_by_outcome[S.REVIEW_PENDING],
        qc_pass_rate=ratio(qc_by_outcome[S.QC_PASSED], len(qc_moves)),
        lip_sync=queries.lip_sync(session, window), qc_checks=queries.qc_checks(session, window),
        failures=transitions.failures(history, window, attempts),
        attempt_failures=gpu.attempt_failures,
        regenerations=Regenerations(sum(regens), ratio(sum(regens), len(regens)),
                                    max(regens) if regens else None,
                                    dict(sorted(Counter(regens).items()))),
        review_decisions=reviews.decisions, rejection_reasons=reviews.reasons,
        reviewers=reviews.reviewers,
        stage_durations=transitions.stage_durations(history, window),
        submission_to_delivery=Spread.of([(event.at - submitted_at[asset_id]).total_seconds()
                                          for asset_id, event in delivered.items()]),
        gpu_hours=gpu.gpu_hours,
        gpu_hours_per_delivered_minute=ratio(gpu.gpu_hours, minutes_delivered),
        gangs=gpu.gangs,
    )
