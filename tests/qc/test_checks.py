"""QC's single entry point: one probe and one decode for every check, the same answers as the
lip-sync scorer and the technical checks run apart, and a record that reads back typed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from avatarflow import media
from qc.checks import check_video
from qc.record import RECORD_FORMAT, RecordError, VideoChecks
from qc.result import LipSyncResult
from qc.technical import run_checks


@pytest.fixture(scope="module")
def clip(media: Path, portrait_of) -> tuple[Path, Path]:
    video = media / "video" / "retalking_face5.mp4"
    return video, portrait_of(video)


def test_one_probe_one_decode_and_the_same_answers(scorer, clip, monkeypatch):
    video, ref = clip
    speech, size = 4.87, media.probe(video).video.display_size
    started: list[str] = []
    real_popen = subprocess.Popen

    def counting(cmd, *args, **kwargs):
        if Path(cmd[0]).name in ("ffmpeg", "ffprobe"):  # (imports may run ldconfig and the like)
            started.append(Path(cmd[0]).name)
        return real_popen(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", counting)
    together = check_video(video, expected_seconds=speech, expected_size=size, reference_image=ref,
                           scorer=scorer)  # fmt: skip
    assert started == ["ffprobe", "ffmpeg"]  # picture and both soundtracks from one ffmpeg run
    monkeypatch.setattr(subprocess, "Popen", real_popen)

    apart = scorer.score(video)
    checks = run_checks(video, expected_seconds=speech, expected_size=size, reference_image=ref,
                        tracker=scorer.tracker(), stride=scorer.mesh_stride)  # fmt: skip
    assert together.lipsync is not None and together.lipsync_error is None
    assert together.score == pytest.approx(apart.score, abs=1e-9)
    assert together.lipsync.offset_frames == apart.offset_frames
    # The one pass adds the sync-over-time check, which needs the score; the rest are the same.
    assert together.checks[-1].name == "lipsync_windows"
    assert [(c.name, c.verdict) for c in together.checks[:-1]] == [(c.name, c.verdict) for c in checks]
    assert [c.value for c in together.checks[:-1]] == [c.value for c in checks]
    assert together.worst_check() == "pass" and together.score > 0.5
    assert {"probe", "pass", "lipsync", "total"} <= set(together.timings_s)


def test_record_round_trips_through_json(scorer, clip):
    video, ref = clip
    result = check_video(video, expected_seconds=4.87, expected_size=None, reference_image=ref, scorer=scorer)
    record = result.to_record()
    assert record.metrics["format"] == RECORD_FORMAT
    metrics, checks = json.loads(json.dumps(record.metrics)), json.loads(json.dumps(record.checks))
    back = VideoChecks.from_record(metrics, checks)
    assert back.to_record() == record
    assert back.score == pytest.approx(result.score, abs=1e-4)
    assert [w.score for w in back.lipsync.sync_windows] == [pytest.approx(w.score, abs=1e-4)
                                                           for w in result.lipsync.sync_windows]  # fmt: skip
    assert back.gate_metrics()["offset_frames"] == result.lipsync.offset_frames
    assert [c.name for c in back.checks] == [c.name for c in result.checks]


def test_records_written_before_the_typed_record_still_read():
    legacy = LipSyncResult(scorer="landmark-v1", video="a.mp4", audio=None, frames=125, duration_s=5.0,
                           face_fraction=1.0, confidence=0.3, correlation=0.7, distance=None,
                           offset_frames=1, score=0.97).to_dict()  # fmt: skip
    legacy.pop("sync_windows")
    old = VideoChecks.from_record(legacy, [{"name": "duration", "value": 5.0, "threshold": "", "verdict": "pass"}])
    assert old.score == 0.97 and old.lipsync.sync_windows == [] and old.checks[0].name == "duration"
    failed = VideoChecks.from_record({"error": "no audio stream"}, [])
    assert failed.lipsync is None and failed.lipsync_error == "no audio stream"
    assert "no audio stream" in failed.score_reason
    with pytest.raises(RecordError, match="no known format"):
        VideoChecks.from_record({"windows": [0.9]}, [])
    with pytest.raises(RecordError, match="unknown QC record format"):
        VideoChecks.from_record({"format": "avatarflow.qc/99"}, [])
    with pytest.raises(RecordError, match="not a QC check"):
        VideoChecks.from_record({}, [{"check": "black", "status": "fail"}])


def test_unreadable_file_gives_the_failed_check_and_no_score(tmp_path, scorer):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 100)
    result = check_video(garbage, expected_seconds=4.0, expected_size=None, reference_image=None, scorer=scorer)
    assert [(c.name, c.verdict) for c in result.checks] == [("decodable", "fail")]
    assert result.lipsync is None and result.lipsync_error and result.score is None


def test_a_scorer_that_cannot_share_the_pass_decodes_on_its_own(clip):
    """SyncNet-like scorers (no `score_scan`) run next to the technical checks."""
    video, _ = clip
    calls: list[Path] = []

    class OwnDecodeScorer:
        name = "own-decode"

        def score(self, video: Path, audio: Path | None = None) -> LipSyncResult:
            calls.append(video)
            return LipSyncResult(scorer=self.name, video=str(video), audio=None, frames=0, duration_s=0.0,
                                 face_fraction=0.0, confidence=None, correlation=None, distance=None,
                                 offset_frames=None, score_reason="not measured")  # fmt: skip

    result = check_video(video, expected_seconds=4.87, expected_size=None, reference_image=None,
                         scorer=OwnDecodeScorer())  # fmt: skip
    assert calls == [video] and result.scorer == "own-decode" and result.score is None
    assert result.checks[0].name == "decodable" and result.worst_check() == "pass"


def test_sync_over_time_marks_the_out_of_sync_stretch_as_a_range():
    from qc.checks import sync_over_time
    from qc.result import SyncWindow
    from qc.verdicts import CheckResult

    def lip(*scores):
        windows = [SyncWindow(2.5 * i, 2.5 * i + 5, score=s, reason=None if s is not None else "no face")
                   for i, s in enumerate(scores)]  # fmt: skip
        return LipSyncResult(scorer="landmark-v2", video="v.mp4", audio=None, frames=400, duration_s=16.0,
                             face_fraction=1.0, confidence=0.3, correlation=0.5, distance=None,
                             offset_frames=0, sync_windows=windows, score=0.95)  # fmt: skip

    check = sync_over_time(lip(0.95, 0.1, 0.15, 0.9, None))
    assert check.verdict == "warn" and check.ranges == [(2.5, 10.0)]  # two windows, one stretch
    assert check.worst_s == 5.0 and "2.5-10.0 s" in check.reason and check.value == 0.1
    assert CheckResult.from_dict(check.to_dict()) == check  # stored and read back whole
    clean = sync_over_time(lip(0.95, 0.6, 0.9))
    assert clean.verdict == "pass" and clean.ranges == [] and clean.worst_s is None
    unmeasured = sync_over_time(lip(None))
    assert unmeasured.verdict == "pass" and unmeasured.value is None and "not measured" in unmeasured.reason
