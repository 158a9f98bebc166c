"""The report's charts, drawn with matplotlib and returned as base64 PNG data URIs."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tasks.report.figures import STAGES, TREND_DAYS, DailyReport, TrendRow
from tasks.report.formatting import fmt_duration

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _new_figure(width: float, height: float) -> Figure:
    # The object API, not pyplot: no global state, no GUI backend, safe in worker threads.
    # Imported here, not at the top: matplotlib takes a while to import, and only drawing needs
    # it (`avatarflow --help` and the figures' tests do not).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.set_layout_engine("constrained")
    return fig


def _no_data(ax: Any, text: str = "no data for this day") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#8a93a3", fontsize=12,
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.spines[:].set_visible(False)


def trend_label_positions(days: int, most: int = TREND_DAYS) -> list[int]:
    """Which of `days` trend days get a date under them (0 is the oldest, days-1 the report's day).

    Every day while at most `most` fit; beyond that every k-th day counted back from the report's
    day, so the report's own day is always labelled, and the first day too (the label next to
    it is dropped when the two would crowd each other).
    """
    if days <= most:
        return list(range(days))
    step = math.ceil((days - 1) / (most - 1))
    positions = list(range(days - 1, -1, -step))[::-1]
    if positions[0] != 0:
        if positions[0] * 2 <= step and len(positions) > 2:  # too close to the first day
            positions = positions[1:]
        positions.insert(0, 0)
    return positions


def trend_figure(trend: Sequence[TrendRow]) -> Figure:
    """The trend charts (assets, minutes delivered, GPU-hours per day) of these days, oldest first."""
    fig = _new_figure(10.5, 2.9)
    axes = fig.subplots(1, 3)
    labels = [t.date.strftime("%m-%d") for t in trend]
    x = list(range(len(labels)))
    ax = axes[0]
    ax.bar([i - 0.2 for i in x], [t.submitted for t in trend], width=0.4, label="submitted",
           color="#9db4d6")
    ax.bar([i + 0.2 for i in x], [t.delivered for t in trend], width=0.4, label="delivered",
           color="#2f6db5")
    ax.set_title("assets per day", fontsize=11)
    ax.legend(fontsize=8, frameon=False)
    ax.yaxis.get_major_locator().set_params(integer=True)
    axes[1].plot(x, [t.minutes_delivered for t in trend], marker="o", color="#2a9d6f")
    axes[1].set_title("minutes delivered", fontsize=11)
    axes[2].plot(x, [t.gpu_hours for t in trend], marker="o", color="#c0603a")
    axes[2].set_title("GPU-hours", fontsize=11)
    tops = [max([max(t.submitted, t.delivered) for t in trend] + [0]),
            max([t.minutes_delivered for t in trend] + [0]),
            max([t.gpu_hours for t in trend] + [0])]
    labelled = trend_label_positions(len(trend))
    for ax, top in zip(axes, tops):
        # A tick on every day, a date on those that fit (always the report's own day, the last).
        ax.set_xticks(x, [labels[i] if i in labelled else "" for i in x], rotation=45, fontsize=8)
        if labelled:
            ax.get_xticklabels()[-1].set_fontweight("bold")
        ax.tick_params(axis="y", labelsize=8)
        ax.set_ylim(0, max(top, 1) * 1.15)  # an all-zero fortnight still gets a sane axis
        ax.grid(axis="y", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def chart_trend(report: DailyReport) -> str:
    return _png(trend_figure(report.trend))


def chart_lip_sync(report: DailyReport) -> str:
    ls = report.lip_sync
    fig = _new_figure(5.2, 2.9)
    ax = fig.subplots()
    if not ls.scored:
        _no_data(ax, "no lip-sync scores this day")
        return _png(fig)
    width = ls.edges[1] - ls.edges[0]
    # Bins wholly at or above the gate pass, wholly below fail; the bin holding the gate is mixed.
    gate = ls.gate if ls.gate is not None else 2.0
    colours = ["#2a9d6f" if left >= gate else "#c9553a" if left + width <= gate else "#e0a43a"
               for left in ls.edges[:-1]]
    ax.bar(ls.edges[:-1], ls.counts, width=width, align="edge", color=colours, edgecolor="white")
    top = max(ls.counts)
    if ls.gate is not None:
        ax.axvline(ls.gate, color="#1d2330", linestyle="--", linewidth=1.2)
        ax.text(ls.gate - 0.01, top * 1.22, f"gate {ls.gate:.2f}", fontsize=9, va="top", ha="right",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    # Zoom on where the scores are (they crowd near 1), but never hide the gate.
    first = next(i for i, c in enumerate(ls.counts) if c)
    left = min(0.5, ls.edges[first], ls.gate if ls.gate is not None else 1.0)
    ax.set_xlim(left, 1)
    ax.set_ylim(0, top * 1.3)
    ax.set_xlabel("lip-sync score (calibrated probability in sync)", fontsize=9)
    ax.set_ylabel("videos", fontsize=9)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def chart_backlog(report: DailyReport) -> str:
    rows = [b for b in report.backlog if b.count]
    fig = _new_figure(5.2, max(1.8, 0.42 * len(rows) + 0.9))
    ax = fig.subplots()
    if not rows:
        _no_data(ax, "no backlog at the end of the day")
        return _png(fig)
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [b.count for b in rows], color="#2f6db5")
    ax.set_yticks(y, [b.state for b in rows], fontsize=9)
    top = max(b.count for b in rows)
    for yi, b in zip(y, rows):
        ax.text(b.count + top * 0.02, yi, f"{b.count} · oldest {fmt_duration(b.oldest_age_s)}",
                va="center", fontsize=8)
    ax.set_xlim(0, top * 1.9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("assets", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def chart_stages(report: DailyReport) -> str:
    rows = [(STAGES[name][0], s) for name, s in report.stage_durations.items() if s.count]
    if report.submission_to_delivery.count:
        rows.append(("submission → delivery", report.submission_to_delivery))
    fig = _new_figure(5.2, max(1.8, 0.45 * len(rows) + 1.2))
    ax = fig.subplots()
    if not rows:
        _no_data(ax, "no stage finished this day")
        return _png(fig)
    # Log scale in minutes: QC takes minutes and a GPU queue can take days; on a linear axis the
    # short stages vanish. Bars start at `low` because a log axis has no zero.
    medians = [(s.median_s or 0) / 60 for _, s in rows]
    p95s = [(s.p95_s or 0) / 60 for _, s in rows]
    low = min([1.0] + [v / 2 for v in medians + p95s if v > 0])
    high = max(p95s + [low * 10]) * 6
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [max(v, low) - low for v in p95s], left=low, color="#c8d6ea", label="95th percentile",
            height=0.7)
    ax.barh(y, [max(v, low) - low for v in medians], left=low, color="#2f6db5", label="median",
            height=0.4)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ticks = [(t, label) for t, label in ((1, "1 min"), (10, "10 min"), (60, "1 h"), (360, "6 h"),
                                         (1440, "1 d"), (10080, "1 wk")) if low <= t <= high]
    ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_yticks(y, [label for label, _ in rows], fontsize=9)
    for yi, (_, s), p95 in zip(y, rows, p95s):
        ax.text(max(p95, low) * 1.15, yi, f"{fmt_duration(s.median_s)} / {fmt_duration(s.p95_s)}",
                va="center", fontsize=8)
    ax.set_xlabel("median / 95th percentile (log scale)", fontsize=9)
    fig.legend(fontsize=8, frameon=False, loc="outside upper center", ncols=2)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def chart_gangs(report: DailyReport) -> str:
    fig = _new_figure(5.2, max(1.8, 0.45 * len(report.gangs) + 1.0))
    ax = fig.subplots()
    if not report.gangs:
        _no_data(ax, "no GPU work this day")
        return _png(fig)
    y = list(range(len(report.gangs)))[::-1]
    ax.barh(y, [100.0] * len(y), color="#eceef2", height=0.6)
    ax.barh(y, [g.utilisation * 100 for g in report.gangs], color="#c0603a", height=0.6)
    ax.set_yticks(y, [f"{g.gang} ({g.gpus} GPU{'s' if g.gpus != 1 else ''})" for g in report.gangs],
                  fontsize=9)
    for yi, g in zip(y, report.gangs):
        ax.text(101, yi, f"{g.utilisation * 100:.1f}% · {g.busy_hours:.1f} h busy", va="center",
                fontsize=8)
    ax.set_xlim(0, 150)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel("busy share of the day (%)", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)

