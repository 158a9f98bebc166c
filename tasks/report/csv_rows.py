"""The report as CSV: one row per figure, (date, section, figure, key, value, unit)."""

from __future__ import annotations

import csv
import io
from typing import Any

from tasks.report.figures import DailyReport
from tasks.report.formatting import bin_label


def report_rows(report: DailyReport) -> list[tuple[str, str, str, Any, str]]:
    """Every figure as (section, figure, key, value, unit); None values stay None."""
    rows: list[tuple[str, str, str, Any, str]] = []
    add = rows.append
    for name in ("submitted", "generated", "approved", "delivered", "rejected"):
        add(("output", name, "", getattr(report, name), "assets"))
    add(("output", "minutes_delivered", "", report.minutes_delivered, "min"))
    add(("output", "delivered_without_duration", "", report.delivered_without_duration, "assets"))
    add(("backlog", "total", "", report.backlog_total, "assets"))
    for b in report.backlog:
        add(("backlog", "assets", b.state, b.count, "assets"))
        add(("backlog", "oldest_age", b.state, b.oldest_age_s, "s"))
        add(("backlog", "median_age", b.state, b.median_age_s, "s"))
    for name in ("qc_decisions", "qc_passed", "qc_failed", "qc_borderline"):
        add(("quality", name, "", getattr(report, name), "videos"))
    add(("quality", "qc_pass_rate", "", report.qc_pass_rate, "ratio"))
    ls = report.lip_sync
    add(("lip_sync", "scored", "", ls.scored, "videos"))
    add(("lip_sync", "gate", "", ls.gate, "score"))
    add(("lip_sync", "median_score", "", ls.median_score, "score"))
    add(("lip_sync", "at_or_above_gate", "", ls.at_or_above_gate, "videos"))
    add(("lip_sync", "share_at_or_above_gate", "", ls.share_at_or_above_gate, "ratio"))
    for i, count in enumerate(ls.counts):
        add(("lip_sync", "histogram", bin_label(ls.edges, i), count, "videos"))
    qc = report.qc_checks
    add(("qc_checks", "results", "", qc.results, "videos"))
    add(("qc_checks", "with_failing_ranges", "", qc.with_failing_ranges, "videos"))
    add(("qc_checks", "unreadable", "", qc.unreadable, "checks"))
    for c in qc.checks:
        add(("qc_checks", "checked", c.check, c.checked, "videos"))
        add(("qc_checks", "failed", c.check, c.failed, "videos"))
        add(("qc_checks", "warned", c.check, c.warned, "videos"))
        add(("qc_checks", "commonest_reason", c.check, c.commonest_reason, "text"))
        add(("qc_checks", "commonest_reason_count", c.check, c.reason_count, "videos"))
    for f in report.failures:
        add(("failures", "assets_failed", f"{f.stage}/{f.kind}", f.count, "assets"))
    for kind, count in report.attempt_failures.items():
        add(("failures", "attempts_failed", kind, count, "attempts"))
    rg = report.regenerations
    add(("regenerations", "total", "", rg.total, "attempts"))
    add(("regenerations", "mean_per_delivered", "", rg.mean, "attempts"))
    add(("regenerations", "max", "", rg.max, "attempts"))
    for n, count in rg.by_count.items():
        add(("regenerations", "delivered_videos", str(n), count, "videos"))
    for decision, count in report.review_decisions.items():
        add(("reviews", "decisions", decision, count, "reviews"))
    for reason, count in report.rejection_reasons.items():
        add(("reviews", "rejection_reasons", reason, count, "reviews"))
    for r in report.reviewers:
        add(("reviewers", "decisions", r.reviewer, r.decisions, "reviews"))
        add(("reviewers", "approved", r.reviewer, r.approved, "reviews"))
        add(("reviewers", "rejected", r.reviewer, r.rejected, "reviews"))
    for name, spread in report.stage_durations.items():
        add(("stages", "count", name, spread.count, "intervals"))
        add(("stages", "median", name, spread.median_s, "s"))
        add(("stages", "p95", name, spread.p95_s, "s"))
    sd = report.submission_to_delivery
    add(("time", "submission_to_delivery_count", "", sd.count, "videos"))
    add(("time", "submission_to_delivery_median", "", sd.median_s, "s"))
    add(("time", "submission_to_delivery_p95", "", sd.p95_s, "s"))
    add(("cost", "gpu_hours", "", report.gpu_hours, "GPU-h"))
    add(("cost", "gpu_hours_per_delivered_minute", "", report.gpu_hours_per_delivered_minute, "GPU-h/min"))
    for g in report.gangs:
        add(("gangs", "gpus", g.gang, g.gpus, "GPUs"))
        add(("gangs", "attempts", g.gang, g.attempts, "attempts"))
        add(("gangs", "busy_hours", g.gang, g.busy_hours, "h"))
        add(("gangs", "gpu_hours", g.gang, g.gpu_hours, "GPU-h"))
        add(("gangs", "utilisation", g.gang, g.utilisation, "ratio"))
        add(("gangs", "worker_hours", g.gang, g.worker_hours, "h"))
        add(("gangs", "busy_share_while_up", g.gang, g.busy_share, "ratio"))
    for t in report.trend:
        for name in ("submitted", "generated", "approved", "delivered", "rejected",
                     "minutes_delivered", "qc_pass_rate", "gpu_hours", "backlog"):
            add(("trend", name, t.date.isoformat(), getattr(t, name), ""))
    return rows


def render_csv(report: DailyReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "section", "figure", "key", "value", "unit"])
    for section, figure, key, value, unit in report_rows(report):
        writer.writerow([report.date.isoformat(), section, figure, key, "" if value is None else value, unit])
    return out.getvalue()
