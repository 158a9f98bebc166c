"""The asset page's QC view reads what QC really stores: real QC runs on real clips, and their
stored records go through the review page's readers and chart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from qc.checks import check_video
from qc.lipsync import LandmarkSyncScorer
from qc.record import VideoChecks
from review.qcview import Window, chart, check_rows, offset_frames, scalar_metrics, sync_windows

GATE = 0.92


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def scorer() -> LandmarkSyncScorer:
    s = LandmarkSyncScorer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def clip(media: Path, tmp_path_factory) -> tuple[Path, Path]:
    """retalking_face2 (5 s, in sync) and its first frame as the reference portrait."""
    video = media / "video" / "retalking_face2.mp4"
    ref = tmp_path_factory.mktemp("qcview") / "ref.png"
    ffmpeg("-i", str(video), "-frames:v", "1", str(ref))
    return video, ref


def stored(result: VideoChecks) -> tuple[dict, list]:
    """What the QC stage writes to QCResult.metrics / .checks, after a trip through JSON."""
    record = result.to_record()
    return json.loads(json.dumps(record.metrics)), json.loads(json.dumps(record.checks))


def test_real_qc_record_charts_calibrated_windows_against_the_gate(scorer, clip):
    video, ref = clip
    result = check_video(video, expected_seconds=5.02, expected_size=None, reference_image=ref, scorer=scorer)
    metrics, checks = stored(result)
    lip = result.lipsync
    assert lip is not None and lip.score is not None and lip.score > GATE
    # The raw per-window correlations QC also stores are nowhere near the gate's scale ...
    assert lip.window_values and max(v for v in lip.window_values if v is not None) < GATE
    # ... so the chart plots the calibrated P(in sync) of each 5 s window instead.
    windows = sync_windows(metrics, 5.0)
    assert windows == [Window(w.start_s, w.end_s, pytest.approx(w.score, abs=1e-4)) for w in lip.sync_windows]
    assert all(w.calibrated and 0.0 <= w.value <= 1.0 for w in windows)
    geometry = chart(windows, 5.0, GATE)
    assert geometry.gate == GATE and geometry.gate_y is not None and "P(in sync)" in geometry.caption
    assert [p[4] for p in geometry.points] == [w.value < GATE for w in windows] == [False]
    assert offset_frames(metrics) == lip.offset_frames
    rows = check_rows(checks)
    assert [r["name"] for r in rows] == [c.name for c in result.checks] and all(r["ok"] for r in rows)
    shown = dict(scalar_metrics(metrics))
    assert shown["scorer"] == "landmark-v1" and float(shown["confidence"]) == pytest.approx(lip.confidence, abs=1e-3)


def test_real_out_of_sync_video_is_marked_below_the_gate(scorer, clip, tmp_path):
    video, ref = clip
    late = tmp_path / "late.mp4"
    ffmpeg("-i", str(video), "-itsoffset", "0.48", "-i", str(video), "-map", "0:v", "-map", "1:a",
           "-c", "copy", "-shortest", str(late))  # the soundtrack 480 ms late
    result = check_video(late, expected_seconds=5.02, expected_size=None, reference_image=ref, scorer=scorer)
    metrics, _ = stored(result)
    assert result.score is not None and result.score < GATE
    geometry = chart(sync_windows(metrics, 5.0), 5.0, GATE)
    assert geometry.gate_y is not None and all(p[4] for p in geometry.points)


def test_record_without_calibrated_windows_charts_raw_values_without_a_gate(scorer, clip):
    """An uncalibrated result, and a row stored before QC scored windows (LipSyncResult.to_dict()
    as the metrics): the raw values are drawn for their shape, with no gate and nothing marked."""
    video, _ = clip
    uncalibrated = LandmarkSyncScorer(calibration=False)
    track = scorer.prepare(video, soundtrack=True)
    raw = uncalibrated.apply_calibration(uncalibrated.measure(track, track.soundtrack, video=str(video)))
    assert raw.score is None and raw.sync_windows and raw.window_values
    legacy = scorer.apply_calibration(scorer.measure(track, track.soundtrack, video=str(video))).to_dict()
    legacy.pop("sync_windows")
    for metrics in (VideoChecks(str(video), raw.scorer, raw, None, []).to_record().metrics, legacy):
        windows = sync_windows(json.loads(json.dumps(metrics)), 5.0)
        assert windows and not any(w.calibrated for w in windows)
        assert [w.value for w in windows] == [pytest.approx(v, abs=1e-4) for v in raw.window_values]
        geometry = chart(windows, 5.0, GATE)
        assert geometry.gate_y is None and geometry.gate is None and not any(p[4] for p in geometry.points)
        assert "uncalibrated" in geometry.caption


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the page reads JSON alike on PostgreSQL
def test_asset_page_draws_the_stored_windows_of_a_real_qc_run(scorer, media, tmp_path, signed_in, pending):
    """A 15 s real clip through real QC, stored as the QC stage stores it, shown on the page: one
    point per 5 s window, red exactly where that window's P(in sync) is below the gate."""
    video = media / "video" / "infinitetalk_ref_video.mp4"
    ref = tmp_path / "ref.png"
    ffmpeg("-i", str(video), "-frames:v", "1", str(ref))
    result = check_video(video, expected_seconds=15.0, expected_size=None, reference_image=ref, scorer=scorer)
    metrics, checks = stored(result)
    windows = result.lipsync.sync_windows
    assert len(windows) >= 5 and result.score is not None
    asset_id = pending("real-qc", score=result.score, gate=GATE, verdict="borderline", sampled=False,
                       metrics=metrics, checks=checks)  # fmt: skip
    html = signed_in("alice").get(f"/assets/{asset_id}").text
    assert 'id="sync-chart"' in html and "P(in sync) per 5 s window" in html and "dashed line: gate 0.92" in html
    assert html.count('class="pt') == len(windows)
    assert html.count('class="pt low"') == sum(w.score < GATE for w in windows)
    assert f"offset {result.lipsync.offset_frames:.1f} frames" in html
    assert all(c.name in html for c in result.checks)


def test_records_qc_never_wrote_show_nothing_rather_than_a_guess():
    made_up = {"windows": [0.95, 0.5], "offset": 2, "confidence": 6.1}
    assert sync_windows(made_up, 4.0) == [] and offset_frames(made_up) is None
    assert scalar_metrics(made_up) == [("QC record", "stored in a format this page cannot read")]
    assert sync_windows({}, 4.0) == [] and scalar_metrics({}) == []
    failed = VideoChecks("v.mp4", "landmark-v1", None, "v.mp4 has no audio stream", []).to_record().metrics
    assert sync_windows(failed, 4.0) == [] and scalar_metrics(failed) == [("lip-sync error", "v.mp4 has no audio stream")]
    rows = check_rows([{"name": "fps", "value": 25, "threshold": "25 fps", "verdict": "pass", "reason": "ok"},
                       {"check": "black", "status": "fail"}])
    assert (rows[0]["name"], rows[0]["ok"], rows[0]["verdict"]) == ("fps", True, "pass")
    assert rows[1]["verdict"] == "unreadable" and not rows[1]["ok"]
    assert chart([], 2.0, GATE) is None
