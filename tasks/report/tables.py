"""The tables the markdown and the HTML both show: headers and formatted cells, format-neutral."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.report.figures import STAGES, DailyReport
from tasks.report.formatting import fmt_duration, fmt_num, fmt_pct


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[Any]]


def counts_table(headers: list[str], counts: dict[str, int]) -> Table:
    """A (name, count) table from a dict of counts, in the dict's order."""
    return Table(headers, [[name, count] for name, count in counts.items()])


def backlog_table(r: DailyReport) -> Table:
    """States that hold assets at the end of the day (empty states left out)."""
    return Table(["state", "assets", "oldest", "median age"],
                 [[b.state, b.count, fmt_duration(b.oldest_age_s), fmt_duration(b.median_age_s)]
                  for b in r.backlog if b.count])


def failures_table(r: DailyReport) -> Table:
    return Table(["stage", "kind", "assets"], [[f.stage, f.kind, f.count] for f in r.failures])


def checks_table(r: DailyReport) -> Table:
    """QC checks of the day's results: how often each failed and warned, and its commonest reason."""
    return Table(["check", "videos checked", "failed", "warned", "commonest reason"],
                 [[c.check, c.checked, c.failed, c.warned,
                   f"{c.commonest_reason} (×{c.reason_count})" if c.commonest_reason else "–"]
                  for c in r.qc_checks.checks])


def reviewers_table(r: DailyReport) -> Table:
    return Table(["reviewer", "decisions", "approved", "rejected"],
                 [[x.reviewer, x.decisions, x.approved, x.rejected] for x in r.reviewers])


def stages_table(r: DailyReport) -> Table:
    """Every stage (empty ones too), then submission → delivery."""
    sd = r.submission_to_delivery
    return Table(["stage", "intervals", "median", "p95"],
                 [[STAGES[name][0], s.count, fmt_duration(s.median_s), fmt_duration(s.p95_s)]
                  for name, s in r.stage_durations.items()]
                 + [["submission → delivery", sd.count, fmt_duration(sd.median_s), fmt_duration(sd.p95_s)]])


def gangs_table(r: DailyReport) -> Table:
    return Table(["gang", "GPUs", "jobs", "busy h", "GPU-hours", "utilisation", "worker up h", "busy while up"],
                 [[g.gang, g.gpus, g.attempts, fmt_num(g.busy_hours), fmt_num(g.gpu_hours),
                   fmt_pct(g.utilisation), fmt_num(g.worker_hours) if g.worker_hours is not None else "",
                   fmt_pct(g.busy_share) if g.busy_share is not None else ""] for g in r.gangs])


def trend_table(r: DailyReport) -> Table:
    return Table(["date", "submitted", "generated", "approved", "delivered", "rejected", "minutes",
                  "QC pass", "GPU-h", "backlog"],
                 [[t.date.isoformat(), t.submitted, t.generated, t.approved, t.delivered, t.rejected,
                   fmt_num(t.minutes_delivered, 1), fmt_pct(t.qc_pass_rate), fmt_num(t.gpu_hours, 1),
                   t.backlog] for t in r.trend])
