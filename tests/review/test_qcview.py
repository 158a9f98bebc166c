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
from qc.verdicts import CheckResult
from review.decisions import MAX_RANGES, parse_time_ranges
from review.qcview import (
    MAX_RANGES_SHOWN,
    Frame,
    Window,
    chart,
    check_rows,
    offset_frames,
    qc_ranges,
    ranges_text,
    scalar_metrics,
    sync_windows,
    timeline,
    worst_frames,
)

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
    assert shown["scorer"] == "landmark-v2" and float(shown["confidence"]) == pytest.approx(lip.confidence, abs=1e-3)


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
    uncalibrated = LandmarkSyncScorer(calibration=False, mouth_model=scorer.model())  # raw metrics only
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
    failed = VideoChecks("v.mp4", "landmark-v2", None, "v.mp4 has no audio stream", []).to_record().metrics
    assert sync_windows(failed, 4.0) == [] and scalar_metrics(failed) == [("lip-sync error", "v.mp4 has no audio stream")]
    rows = check_rows([{"name": "fps", "value": 25, "threshold": "25 fps", "verdict": "pass", "reason": "ok"},
                       {"check": "black", "status": "fail"}])
    assert (rows[0]["name"], rows[0]["ok"], rows[0]["verdict"]) == ("fps", True, "pass")
    assert rows[1]["verdict"] == "unreadable" and not rows[1]["ok"]
    assert chart([], 2.0, GATE) is None


# ---- where each check goes wrong: time ranges, the timeline, worst frames -----------------------

def stored_checks() -> list[dict]:
    """Checks as QC stores them now (ranges, worst_s), one stored before QC kept either, and one
    that is not a check at all; after a trip through JSON, as they come out of the database."""
    checks = [
        CheckResult("lipsync_windows", 0.41, "≥ 0.92", "fail", "2 windows below the gate",
                    ranges=[(12.0, 14.5), (3.0, 4.0)], worst_s=13.37),
        CheckResult("flicker", 0.2, "≤ 0.1", "warn", "brightness jumps", ranges=[(3.5, 5.25), (19.5, 22.0)],
                    worst_s=4.0),
        CheckResult("frame_rate", 25, "25 fps", "pass", "25 fps", ranges=[], worst_s=None),
        CheckResult("eye_blinks", 0, "≥ 1", "warn", "no blink seen"),  # warns, but says nowhere
    ]
    old = {"name": "black_frames", "value": 0.3, "threshold": "≤ 0.2 s", "verdict": "fail",
           "reason": "black for 0.3 s"}  # a row from before ranges existed
    return json.loads(json.dumps([c.to_dict() for c in checks] + [old, {"check": "x"}]))


def test_check_rows_show_ranges_and_old_rows_still_render():
    rows = {r["name"]: r for r in check_rows(stored_checks())}
    assert [r["name"] for r in check_rows(stored_checks())][:5] == [
        "lipsync_windows", "flicker", "frame_rate", "eye_blinks", "black_frames"]
    lip = rows["lipsync_windows"]
    assert (lip["verdict"], lip["ok"], lip["worst_s"], lip["worst_label"]) == ("fail", False, 13.37, "13.37")
    assert lip["ranges"] == [(12.0, 14.5, "12.0–14.5 s"), (3.0, 4.0, "3.0–4.0 s")]
    assert [text for _, _, text in rows["flicker"]["ranges"]] == ["3.5–5.25 s", "19.5–22.0 s"]
    assert rows["frame_rate"]["ok"] and rows["frame_rate"]["ranges"] == []
    old = rows["black_frames"]
    assert (old["verdict"], old["reason"], old["ranges"], old["worst_label"]) == ("fail", "black for 0.3 s", [], "")
    assert check_rows(stored_checks())[-1]["verdict"] == "unreadable"


def test_many_ranges_are_listed_up_to_a_limit():
    many = CheckResult("flicker", 1, "", "fail", "x", ranges=[(i, i + 0.5) for i in range(30)]).to_dict()
    row = check_rows([many])[0]
    assert len(row["ranges"]) == MAX_RANGES_SHOWN and row["more_ranges"] == 30 - MAX_RANGES_SHOWN


def test_timeline_draws_each_flagged_range_where_it_is():
    line = timeline(stored_checks(), 20.0)
    # Lanes: failing and warning checks that say where (not the pass, not eye_blinks without
    # ranges, not the old row without ranges).
    assert [(lane.name, lane.verdict) for lane in line.lanes] == [("lipsync_windows", "fail"), ("flicker", "warn")]
    assert line.duration == 20.0 and (line.left, line.plot_width) == (120, 430)
    lip, flicker = line.lanes
    # x = 120 + 430 · t / 20: 12 s → 378.0, 14.5 s → 431.75 → 431.8 (rounded to 0.1).
    assert [(s.x, s.width, s.start, s.verdict) for s in lip.segments] == [
        (378.0, pytest.approx(53.8), 12.0, "fail"), (184.5, 21.5, 3.0, "fail")]
    assert lip.segments[0].title == "lipsync_windows: 12.0–14.5 s (fail)"
    # The 19.5–22 s warning runs past the 20 s video: clipped at its end (x 550 = 120 + 430).
    assert [(s.x, s.width) for s in flicker.segments] == [(195.2, pytest.approx(37.7)), (539.2, pytest.approx(10.8))]
    assert flicker.y > lip.y
    # Unknown duration: the timeline spans to the last range's end (22 s).
    assert timeline(stored_checks(), None).duration == 22.0


def test_nothing_says_where_so_no_timeline_frames_or_ranges():
    only_old = stored_checks()[4:]
    assert timeline(only_old, 20.0) is None and worst_frames(only_old) == [] and qc_ranges(only_old, 20.0) == []
    assert timeline([], 20.0) is None


def test_worst_frames_are_those_of_flagged_checks():
    assert worst_frames(stored_checks()) == [Frame("lipsync_windows", "fail", 13.37, "13.37"),
                                             Frame("flicker", "warn", 4.0, "4.0")]


def test_qc_ranges_fill_the_reviewers_field_in_a_form_it_accepts():
    ranges = qc_ranges(stored_checks(), 20.0)
    # 3-4 and 3.5-5.25 overlap: joined; 19.5-22 is cut at the end of the 20 s video.
    assert ranges == [(3.0, 5.25), (12.0, 14.5), (19.5, 20.0)]
    text = ranges_text(ranges)
    assert text == "3-5.25, 12-14.5, 19.5-20"
    assert parse_time_ranges(text, 20.0) == [{"start": 3.0, "end": 5.25}, {"start": 12.0, "end": 14.5},
                                             {"start": 19.5, "end": 20.0}]
    # More stretches than a decision takes: the closest neighbours are joined until they fit.
    scattered = [CheckResult("flicker", 1, "", "fail", "x",
                             ranges=[(i * 2.0, i * 2.0 + 0.5) for i in range(30)]).to_dict()]
    joined = qc_ranges(scattered, 100.0)
    assert len(joined) == MAX_RANGES and joined[0][0] == 0.0 and joined[-1][1] == 58.5
    assert len(parse_time_ranges(ranges_text(joined), 100.0)) == MAX_RANGES


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """A real 24 s H.264/AAC MP4 (test pattern and a tone): long enough for every range above."""
    out = tmp_path_factory.mktemp("long") / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=24", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=24", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest", str(out))
    return out


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # JSON reads alike; the app test uses PostgreSQL
def test_asset_page_shows_qc_checks_timeline_and_worst_frames(signed_in, database, review_settings, long_video, kit):
    def put(name: str, checks: list) -> int:
        spec = kit.PendingSpec(name=name, video=long_video, verdict="borderline", sampled=False, checks=checks)
        return kit.put_in_review(database, review_settings.data_root, spec)

    asset_id = put("ranges", stored_checks())
    alice = signed_in("alice")
    html = kit.claimed(alice, asset_id).text
    assert "<h2>QC checks</h2>" in html and "Technical checks" not in html
    assert html.count('<rect class="seg fail"') == 2 and html.count('<rect class="seg warn"') == 2
    assert "<title>lipsync_windows: 12.0–14.5 s (fail)</title>" in html
    # The ranges seek the player; without a script the link opens the video at that time.
    assert f'<a class="seek" href="/media/{asset_id}/web#t=12.0,14.5" data-seek="12.0"' in html
    assert f'<a class="seek worst" href="/media/{asset_id}/web#t=13.37" data-seek="13.37">13.37 s</a>' in html
    assert f'src="/media/{asset_id}/frame?t=13.37" width="240" alt="lipsync_windows: worst frame at 13.37 s"' in html
    assert html.count("/frame?t=") == 2
    assert 'id="use-qc-ranges" data-ranges="3-5.25, 12-14.5, 19.5-22"' in html
    assert "QC flags: <span" in html  # readable without a script too
    # A record from before ranges: the table still shows it, with no timeline and no thumbnails.
    old = put("old", stored_checks()[4:5])
    html = kit.claimed(alice, old).text
    assert "black for 0.3 s" in html and 'id="qc-timeline"' not in html and "/frame?t=" not in html
    assert 'id="use-qc-ranges"' not in html and 'id="time-ranges"' in html
