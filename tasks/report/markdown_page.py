"""The report as markdown: the Prefect artifact and the .md file."""

from __future__ import annotations

from tasks.report.figures import DailyReport
from tasks.report.formatting import bin_label, fmt_num, fmt_pct
from tasks.report.tables import (
    Table,
    backlog_table,
    checks_table,
    failures_table,
    gangs_table,
    reviewers_table,
    stages_table,
    trend_table,
)


def md_table(table: Table) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(table.headers) + " |", "|" + "|".join("---" for _ in table.headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_markdown(report: DailyReport) -> str:
    r = report
    ls = r.lip_sync
    parts = [
        f"# Daily production report — {r.date.isoformat()} (UTC)",
        (f"Covered {r.window_start:%Y-%m-%d %H:%M} → {r.window_end:%Y-%m-%d %H:%M} UTC · "
         f"built {r.generated_at:%Y-%m-%d %H:%M} UTC"),
        "## Output",
        md_table(Table(["submitted", "generated", "approved", "delivered", "rejected", "minutes delivered"],
                       [[r.submitted, r.generated, r.approved, r.delivered, r.rejected,
                         fmt_num(r.minutes_delivered, 1)]])),
        f"**Backlog at end of day: {r.backlog_total} asset(s)**"
        + (f" ({r.delivered_without_duration} delivered video(s) had no recorded duration)"
           if r.delivered_without_duration else ""),
        md_table(backlog_table(r)) if r.backlog_total else "_No backlog._",
        "## Quality",
        (f"QC pass rate **{fmt_pct(r.qc_pass_rate)}**: {r.qc_passed} passed, {r.qc_failed} "
         f"failed, {r.qc_borderline} borderline of {r.qc_decisions} QC decision(s)."),
        (f"Lip-sync: {ls.scored} scored video(s), median {fmt_num(ls.median_score)}, "
         f"**{fmt_pct(ls.share_at_or_above_gate)}** at or above the gate {fmt_num(ls.gate)}."),
    ]
    if ls.scored:
        parts.append(md_table(Table(["score", "videos"], [[bin_label(ls.edges, i), c]
                                                          for i, c in enumerate(ls.counts) if c])))
    qc = r.qc_checks
    parts.append(f"**QC checks** ({qc.results} QC result(s); {qc.with_failing_ranges} video(s) with at "
                 f"least one failing time range"
                 + (f"; {qc.unreadable} stored check(s) unreadable" if qc.unreadable else "") + ")")
    parts.append(md_table(checks_table(r)) if qc.checks else "_No QC checks recorded._")
    parts.append("**Failures** (assets moved to failed)")
    parts.append(md_table(failures_table(r)) if r.failures else "_None._")
    if r.attempt_failures:
        parts.append("Failed generation attempts: " + ", ".join(
            f"{kind} × {count}" for kind, count in r.attempt_failures.items()))
    rg = r.regenerations
    parts.append(f"Regenerations per delivered video: mean {fmt_num(rg.mean)}, max "
                 f"{rg.max if rg.max is not None else '–'}, total {rg.total}.")
    parts.append("**Reviews**: " + (", ".join(f"{d} {n}" for d, n in r.review_decisions.items())
                                    or "none") + (" · rejection reasons: " + ", ".join(
        f"{reason} {n}" for reason, n in r.rejection_reasons.items()) if r.rejection_reasons else ""))
    if r.reviewers:
        parts.append(md_table(reviewers_table(r)))
    parts.append("## Time and cost")
    parts.append(md_table(stages_table(r)))
    parts.append(f"GPU-hours used **{fmt_num(r.gpu_hours)}** · per delivered minute "
                 f"**{fmt_num(r.gpu_hours_per_delivered_minute)}**")
    if r.gangs:
        parts.append(md_table(gangs_table(r)))
    parts.append(f"## Trend (last {len(r.trend)} days)")
    parts.append(md_table(trend_table(r)))
    parts.append("_Figures are defined in the docstring of `tasks.report.figures.DailyReport` and at "
                 "the end of the HTML report._")
    return "\n\n".join(parts) + "\n"
