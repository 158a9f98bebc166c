"""The batch flow end to end under a real Prefect server, with the CPU engine and real media."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from avatarflow import records
from avatarflow.records import Crop, Generation, Speech
from avatarflow.settings import get_settings
from db.models import Asset, Event, GenerationAttempt, QCResult, Rendition
from db.session import open_database

pytestmark = pytest.mark.slow


@pytest.fixture
def pipeline_env(settings_env, monkeypatch, media, tmp_path):
    monkeypatch.setenv("AVATARFLOW_INPUT_ROOTS", json.dumps([str(media), str(tmp_path)]))
    monkeypatch.setenv("AVATARFLOW_AUDIO_MAX_SEGMENT_SECONDS", "6")
    monkeypatch.setenv("AVATARFLOW_GANG_LEASE_SECONDS", "60")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def ffprobe_streams(path: Path) -> set[str]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "json", str(path)],
                          capture_output=True, text=True, timeout=60, check=True)
    return {s["codec_type"] for s in json.loads(done.stdout)["streams"]}


def make_manifest(media: Path, tmp_path: Path) -> Path:
    silent = tmp_path / "silent.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "4", str(silent)],
                   check=True, timeout=60)
    rows = [
        {"image": str(media / "image/skimage_astronaut.png"), "audio": str(media / "audio/retalking_audio1.wav"),
         "external_id": "astronaut"},
        {"image": str(media / "image/facerec_obama.jpg"), "audio": str(media / "audio/latentsync_demo1_audio.wav"),
         "external_id": "long"},  # 9.6 s > 6 s: split into segments and joined back
        {"image": str(media / "image/skimage_chelsea.png"), "audio": str(media / "audio/retalking_audio2.wav"),
         "external_id": "cat"},
        {"image": str(media / "image/liveavatar_boy.jpg"), "audio": str(silent), "external_id": "silent"},
    ]
    manifest = tmp_path / "batch.jsonl"
    manifest.write_text("".join(json.dumps(dict(r, template="default")) + "\n" for r in rows))
    return manifest


def test_batch_runs_every_stage_and_fails_bad_assets_with_reasons(prefect_harness, pipeline_env, media, tmp_path):
    from flows.batch import batch_flow

    state = batch_flow(manifest=str(make_manifest(media, tmp_path)), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["total"] == 4 and summary["finished"] == 4, summary
    assert "4 asset(s)" in state.message and "2 failed" in state.message

    database = open_database(pipeline_env)
    with database.session() as session:
        assets = {a.external_id: a for a in session.scalars(select(Asset).where(Asset.parent_id.is_(None)))}
        assert assets["cat"].state == "failed" and "face" in assets["cat"].failure_reason.lower()
        assert assets["silent"].state == "failed" and "silen" in assets["silent"].failure_reason.lower()
        # Both good assets get through: approved, or sampled/flagged for review (the CPU engine's
        # mouth follows the speech, so landmark-v2 believes it; see tests/inference/test_cpu_engine.py).
        for key in ("astronaut", "long"):
            asset = assets[key]
            assert asset.state in ("approved", "review_pending"), (key, asset.state)
            renditions = {r.kind: r for r in asset.renditions}
            assert set(renditions) == {"web", "small", "poster", "thumb"}
            assert ffprobe_streams(Path(renditions["web"].path)) == {"video", "audio"}
            qc = session.scalars(select(QCResult).where(QCResult.asset_id == asset.id)).all()
            assert qc and qc[-1].checks and qc[-1].metrics
        segments = session.scalars(select(Asset).where(Asset.parent_id == assets["long"].id)).all()
        assert len(segments) == 2 and {s.state for s in segments} == {"joined"}
        assert abs(records.need(assets["long"].details, Speech, stage="test").duration_s - 9.6) < 0.6
    database.dispose()


KILL_POINTS = ["preprocessed", "generating", "generated"]


def run_flow_subprocess(env: dict[str, str], batch: str) -> subprocess.Popen[bytes]:
    code = f"from flows.batch import batch_flow; batch_flow(batch={batch!r})"
    import sys
    return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_killed_runs_resume_without_redoing_or_duplicating_work(prefect_server, pipeline_env, media, tmp_path):
    import os
    import signal
    import time

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.intake import submit

    database = open_database(pipeline_env)
    submit(database, make_manifest(media, tmp_path), batch_name="resume", input_roots=pipeline_env.input_roots)
    env = dict(os.environ, PREFECT_API_URL=prefect_server)

    def events_to(state: str) -> int:
        with database.session() as session:
            return int(session.scalar(select(func.count(Event.id)).where(Event.to_state == state)) or 0)

    for point in KILL_POINTS:
        before = events_to(point)
        process = run_flow_subprocess(env, "resume")
        deadline = time.monotonic() + 300
        while events_to(point) == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)  # no chance to clean up: the hardest kind of crash
        process.wait(timeout=30)

    from flows.batch import batch_flow

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        state = batch_flow(batch="resume", return_state=True)
    assert state.is_completed(), state.message
    with database.session() as session:
        top = {a.external_id: a for a in session.scalars(select(Asset).where(Asset.parent_id.is_(None)))}
        assert top["long"].state in ("approved", "review_pending"), (top["long"].state, top["long"].failure_reason)
        assert top["astronaut"].state in ("approved", "review_pending"), top["astronaut"].state
        assert top["cat"].state == "failed" and top["silent"].state == "failed"
        every = session.scalars(select(Asset)).all()
        for asset in every:
            moves = [(e.from_state, e.to_state) for e in asset.events if e.from_state != e.to_state]
            # preprocessing happened once per asset, whatever the kills
            assert moves.count(("submitted", "preprocessed")) <= 1, (asset.external_id, moves)
            ok_attempts = [a for a in asset.attempts if a.outcome == "ok"]
            assert len(ok_attempts) == sum(1 for m in moves if m == ("generating", "generated"))
            for attempt in asset.attempts:
                assert attempt.outcome in ("ok", "failed", "interrupted"), attempt.outcome
        kinds = session.execute(select(Rendition.asset_id, Rendition.kind, func.count()).group_by(
            Rendition.asset_id, Rendition.kind)).all()
        assert all(n == 1 for *_, n in kinds)
        for rendition in session.scalars(select(Rendition)):
            from avatarflow.storage import sha256_file
            assert sha256_file(Path(rendition.path)) == rendition.sha256
        segments = session.scalars(select(Asset).where(Asset.parent_id == top["long"].id)).all()
        assert len(segments) == 2  # a re-run never splits twice
        assert session.scalar(select(func.count(GenerationAttempt.id))) >= 3
        # a kill can leave a temporary file behind, but nothing recorded as done points at one
        for asset in every:
            for kind in (Crop, Speech, Generation):
                if found := records.read(asset.details, kind):
                    path = Path(found.video_path if kind is Generation else found.path)
                    assert ".partial" not in path.name and path.is_file(), (asset.id, kind.key, path)
    database.dispose()
