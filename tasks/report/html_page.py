"""The report as one self-contained HTML page: inline CSS, charts as data URIs, no script."""

from __future__ import annotations

import html

from tasks.report.charts import (
    chart_backlog,
    chart_gangs,
    chart_lip_sync,
    chart_stages,
    chart_trend,
)
from tasks.report.figures import DailyReport
from tasks.report.formatting import fmt_num, fmt_pct
from tasks.report.tables import (
    Table,
    backlog_table,
    checks_table,
    counts_table,
    failures_table,
    gangs_table,
    reviewers_table,
    stages_table,
    trend_table,
)

DEFINITIONS: list[tuple[str, str]] = [
    ("Day", "A UTC calendar day, 00:00 to 24:00 (to now for today)."),
    ("Submitted … rejected",
     ("Distinct assets that entered the state that day; re-runs out of failed do not count "
      "again. Segments of split speech are assets of their own.")),
    ("Minutes delivered",
     ("Speech length recorded by preprocessing (the video is cut to it) of the assets delivered "
      "that day, else the generator's verified duration.")),
    ("Backlog",
     ("Assets whose last transition before the end of the day left them in a non-terminal state "
      "(failed included); age = time since they entered that state.")),
    ("QC pass rate",
     ("QC decisions that passed ÷ all QC decisions (pass, fail, borderline) that day; each QC "
      "run counts.")),
    ("QC checks",
     ("For each check in the QC results recorded that day (one per video judged): the videos it "
      "was run on, failed and warned, and the reason it gave most often when it did not pass; "
      "and the videos with at least one failing check that names the time ranges where it fails.")),
    ("Lip-sync share at gate",
     ("QC results of the day with a score at or above their own gate ÷ all scored results of "
      "the day.")),
    ("Failures",
     ("Moves into failed that day, by stage and kind; failed generation attempts are listed "
      "separately (some were retried without the asset failing).")),
    ("Regenerations", "Generation attempts − 1 for each video delivered that day."),
    ("Stage durations",
     ("Time between an asset's transition into a stage and its next transition, for intervals "
      "that ended that day; median and nearest-rank 95th percentile.")),
    ("GPU-hours", "Σ attempt hours inside the day × GPUs in the attempt."),
    ("GPU utilisation", "Union of a gang's attempt intervals inside the day ÷ hours covered (24)."),
    ("busy while up", "A gang's busy hours ÷ the hours its long-lived gang worker was up that day (the "
                      "share of the time a loaded model was generating)."),
]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
 background:#f4f5f7;color:#1d2330;line-height:1.4}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 12px;border-bottom:2px solid #d8dce3;
 padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px;color:#3b4456}
.sub{color:#5b6475;font-size:13px}
.kpis{display:grid;grid-template-columns:repeat(5,1fr);gap:10px;margin-top:18px}
.kpi{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.kpi .v{font-size:24px;font-weight:650}.kpi .l{font-size:12px;color:#5b6475;text-transform:uppercase;
 letter-spacing:.03em}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:18px;align-items:start}
.card{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{padding:4px 8px;border-bottom:1px solid #e6e8ec;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#eef0f4;font-weight:600}
img{max-width:100%;display:block;margin:4px auto}
.muted{color:#8a93a3}dl{font-size:13px;display:grid;grid-template-columns:220px 1fr;gap:4px 14px}
dt{font-weight:600}dd{margin:0}
.card>h3:first-child{margin-top:2px}
"""


def html_table(table: Table, empty: str = "none") -> str:
    """The table, or a muted line saying `empty` when it has no rows."""
    if not table.rows:
        return f'<p class="muted">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: DailyReport) -> str:
    """One self-contained page: inline CSS, charts as data URIs, no script, no external resource."""
    r = report
    ls = r.lip_sync
    qc = r.qc_checks
    rg = r.regenerations
    kpis = [
        ("submitted", r.submitted), ("generated", r.generated), ("approved", r.approved),
        ("delivered", r.delivered), ("rejected", r.rejected),
        ("minutes delivered", fmt_num(r.minutes_delivered, 1)), ("QC pass rate", fmt_pct(r.qc_pass_rate)),
        ("GPU-hours", fmt_num(r.gpu_hours, 1)),
        ("GPU-h per delivered min", fmt_num(r.gpu_hours_per_delivered_minute)),
        ("backlog", r.backlog_total),
    ]
    kpi_html = "".join(f'<div class="kpi"><div class="v">{html.escape(str(v))}</div>'
                       f'<div class="l">{html.escape(label)}</div></div>' for label, v in kpis)
    img = '<img alt="{alt}" src="{src}">'
    sections = f"""
<h2>Output</h2>
<div class="grid">
 <div class="card"><h3>Backlog at the end of the day: {r.backlog_total} asset(s)</h3>
  {html_table(backlog_table(r), "no backlog")}
  {f'<p class="muted">{r.delivered_without_duration} delivered video(s) had no recorded duration.</p>'
   if r.delivered_without_duration else ''}
 </div>
 <div class="card">{img.format(alt="backlog by state", src=chart_backlog(r))}</div>
</div>
<h2>Quality</h2>
<div class="grid">
 <div class="card"><h3>QC pass rate: {fmt_pct(r.qc_pass_rate)}</h3>
  {html_table(Table(["QC decisions", "passed", "failed", "borderline"],
                     [[r.qc_decisions, r.qc_passed, r.qc_failed, r.qc_borderline]]))}
  <h3>Lip-sync: {fmt_pct(ls.share_at_or_above_gate)} at or above the gate {fmt_num(ls.gate)}</h3>
  <p class="sub">{ls.scored} scored video(s), median score {fmt_num(ls.median_score)}.</p>
  <h3>Regenerations per delivered video</h3>
  {html_table(Table(["mean", "max", "total"],
                     [[fmt_num(rg.mean), rg.max if rg.max is not None else "–", rg.total]]))}
 </div>
 <div class="card">{img.format(alt="lip-sync score distribution", src=chart_lip_sync(r))}</div>
 <div class="card"><h3>QC checks: {qc.results} QC result(s)</h3>
  {html_table(checks_table(r), "no QC checks recorded")}
  <p class="sub">{qc.with_failing_ranges} video(s) with at least one failing time range.
  {f"{qc.unreadable} stored check(s) could not be read." if qc.unreadable else ""}</p>
 </div>
 <div class="card"><h3>Failures (assets moved to failed)</h3>
  {html_table(failures_table(r))}
  <h3>Failed generation attempts</h3>
  {html_table(counts_table(["kind", "attempts"], r.attempt_failures))}
 </div>
 <div class="card"><h3>Reviews</h3>
  {html_table(counts_table(["decision", "reviews"], r.review_decisions), "no review decisions")}
  <h3>Rejection reasons</h3>
  {html_table(counts_table(["reason", "reviews"], r.rejection_reasons))}
  <h3>Reviewers</h3>
  {html_table(reviewers_table(r))}
 </div>
</div>
<h2>Time and cost</h2>
<div class="grid">
 <div class="card"><h3>Stage durations (intervals that ended this day)</h3>
  {html_table(stages_table(r))}</div>
 <div class="card">{img.format(alt="stage durations", src=chart_stages(r))}</div>
 <div class="card"><h3>GPU: {fmt_num(r.gpu_hours)} GPU-hours,
  {fmt_num(r.gpu_hours_per_delivered_minute)} per delivered minute</h3>
  {html_table(gangs_table(r), "no GPU work")}</div>
 <div class="card">{img.format(alt="GPU utilisation per gang", src=chart_gangs(r))}</div>
</div>
<h2>Trend: last {len(r.trend)} days</h2>
<div class="card">{img.format(alt="trend", src=chart_trend(r))}
 {html_table(trend_table(r))}
</div>
<h2>Definitions</h2>
<dl>{"".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in DEFINITIONS)}</dl>
"""
    title = f"Daily production report — {r.date.isoformat()}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{html.escape(title)} (UTC)</h1>
<div class="sub">covers {r.window_start:%Y-%m-%d %H:%M} → {r.window_end:%Y-%m-%d %H:%M} UTC ·
built {r.generated_at:%Y-%m-%d %H:%M} UTC by avatarflow</div>
<div class="kpis">{kpi_html}</div>
{sections}
</main></body></html>
"""

