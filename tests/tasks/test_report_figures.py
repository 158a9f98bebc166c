"""The daily report's trend charts: which days get a date under them (matplotlib, no database)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from tasks.report.charts import trend_figure, trend_label_positions
from tasks.report.figures import TREND_DAYS, TrendRow

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 3, 10)  # the report's day


def trend(days: int) -> list[TrendRow]:
    """`days` trend rows ending with the report's day, oldest first, as build_report makes them."""
    return [TrendRow(DAY - dt.timedelta(days=days - 1 - i), i % 5, i % 3, 0, i % 4, 0, float(i), None,
                     0.5 * i, 0) for i in range(days)]


def tick_labels(days: int) -> list[list[str]]:
    fig = trend_figure(trend(days))
    fig.canvas.draw()  # the labels as drawn
    return [[label.get_text() for label in ax.get_xticklabels()] for ax in fig.axes]


def test_the_fortnight_trend_labels_every_day_and_the_report_day_last():
    """The 14-day trend once labelled every other day from the first: 03-10 itself was left bare."""
    labels = tick_labels(TREND_DAYS)
    expected = [(DAY - dt.timedelta(days=TREND_DAYS - 1 - i)).strftime("%m-%d") for i in range(TREND_DAYS)]
    assert len(labels) == 3  # assets per day, minutes delivered, GPU-hours
    assert all(chart == expected for chart in labels), labels
    assert expected[-1] == "03-10"


@pytest.mark.parametrize("days", [15, 16, 20, 29, 30, 60, 365])
def test_a_longer_trend_is_thinned_but_keeps_the_first_and_the_report_day(days):
    labels = tick_labels(days)[0]
    assert len(labels) == days  # a tick on every day; only some carry a date
    shown = [i for i, text in enumerate(labels) if text]
    assert shown[0] == 0 and shown[-1] == days - 1 and labels[-1] == "03-10"
    assert len(shown) <= TREND_DAYS
    gaps = [b - a for a, b in itertools.pairwise(shown)]
    assert min(gaps) >= 2 and max(gaps) - min(gaps) <= 2, gaps  # thinned evenly, no crowding


def test_label_positions_for_short_trends():
    assert trend_label_positions(0) == []
    assert trend_label_positions(1) == [0]
    assert trend_label_positions(7) == list(range(7))
    assert trend_label_positions(TREND_DAYS) == list(range(TREND_DAYS))
