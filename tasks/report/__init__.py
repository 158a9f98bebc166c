"""The daily production report: figures computed from the database, published three ways.

Plain functions and typed records, no Prefect: flows/report.py wraps them in the `daily-report`
flow and `avatarflow report` calls them directly, so both build the same report.

A report covers one UTC calendar day, `[date 00:00, date+1 00:00)`; for today the covered window
ends now. Conventions every figure follows (figures.DailyReport defines each figure):

- A *transition* is an event whose `to_state` differs from its `from_state` (`from_state` is None
  for the event that registers an asset). Events with `from_state == to_state` are notes (claims,
  warnings) and never count.
- An asset *entered* a state on a day when a transition into that state happened that day.
  Re-entries from `failed` (an operator re-running a failed stage) are not new output: a
  delivery retried after a failed copy does not make a second approval.
- Output figures count distinct assets. Split speech makes child assets (segments); they are
  assets of their own, so they count too.
- Durations are in seconds. Medians are the usual median (mean of the two middle values for an
  even count); the 95th percentile is the nearest-rank one (stats.percentile).
- Empty days give zero counts and None for rates, medians and ratios; nothing divides by zero.

Modules, in the order the data flows:

| module | does |
|---|---|
| figures | the records (DailyReport and its parts) and the rules that name stages and states |
| stats | median, nearest-rank percentile, safe ratio, the union of time intervals |
| queries | reading the database, and the one place each raw stage record is read |
| transitions | figures from the assets' transition histories (entries, failures, stage times) |
| day | one day's figures (compute_day) and parsing the day asked for |
| trend | the day's report with its 14-day trend (build_report) |
| formatting | how a number, a share and a duration are written |
| tables | the tables shared by the markdown and the HTML |
| markdown_page, csv_rows, charts, html_page | the three formats (charts: matplotlib PNGs) |
| files | writing the files, listing them in the `reports` table, make_report |
"""
