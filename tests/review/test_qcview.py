"""Reading QC metrics for the asset page: the shapes QC may store, and the chart geometry."""

from __future__ import annotations

from review.qcview import Window, chart, check_rows, offset_frames, scalar_metrics, sync_windows


def test_windows_as_numbers_spread_over_the_duration_or_the_window_length():
    assert sync_windows({"windows": [0.9, 0.8]}, 4.0) == [Window(0, 2, 0.9), Window(2, 4, 0.8)]
    assert sync_windows({"per_window": [0.9, 0.8], "window_seconds": 0.5}, None)[1] == Window(0.5, 1.0, 0.8)


def test_windows_as_objects_with_any_value_key():
    metrics = {"windows": [{"start": 0, "end": 1, "score": 0.9}, {"t": 1, "end": 2, "confidence": 6.5},
                           {"start": 2, "value": "broken"}, "junk"]}
    assert sync_windows(metrics, 3.0) == [Window(0, 1, 0.9), Window(1, 2, 6.5)]
    assert sync_windows({}, 3.0) == [] and sync_windows({"windows": "nope"}, 3.0) == []


def test_offset_and_other_metrics():
    metrics = {"av_offset_frames": -3, "confidence": 6.123456, "scorer_note": "ok", "windows": [1, 2],
               "nested": {"a": 1}, "flag": True}
    assert offset_frames(metrics) == -3.0 and offset_frames({"offset": 2}) == 2.0
    assert offset_frames({"offset": True}) is None
    assert scalar_metrics(metrics) == [("confidence", "6.123"), ("scorer_note", "ok")]


def test_checks_accept_verdict_status_or_passed():
    rows = check_rows([{"name": "fps", "value": 25, "threshold": 25, "verdict": "pass"},
                       {"check": "black", "status": "fail", "message": "black for 1 s"},
                       {"name": "face", "passed": False}, "free text"])
    assert [(r["name"], r["ok"]) for r in rows] == [("fps", True), ("black", False), ("face", False),
                                                   ("free text", True)]
    assert rows[1]["reason"] == "black for 1 s"


def test_chart_marks_windows_below_the_gate_and_skips_the_line_for_raw_metrics():
    geometry = chart([Window(0, 1, 0.95), Window(1, 2, 0.7)], 2.0, 0.92)
    assert [p[4] for p in geometry.points] == [False, True] and geometry.gate_y is not None
    raw = chart([Window(0, 1, 5.5), Window(1, 2, 7.5)], 2.0, 0.92)
    assert raw.gate_y is None and not any(p[4] for p in raw.points)
    assert chart([], 2.0, 0.92) is None
