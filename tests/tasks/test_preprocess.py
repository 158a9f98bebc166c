"""The preprocessing stage against the database: crops, speech, splits, failures and reuse."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from avatarflow import records
from avatarflow.records import Crop, Speech
from avatarflow.settings import Settings
from db.models import Asset, Event
from db.session import Database
from db.stage import StageContext
from tasks.intake import submit
from tasks.preprocess import preprocess_asset, submitted_ids

PROMPT = "A person is speaking calmly to the camera in a quiet room."


@pytest.fixture
def setup(tmp_path, media):
    settings = Settings(data_root=tmp_path / "var", audio_max_segment_seconds=20.0)
    settings.storage.ensure()
    database = Database(settings.resolved_database_url)
    database.migrate()
    silent = tmp_path / "silent.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "4",
                    str(silent)], check=True, timeout=60)
    img, aud = media / "image", media / "audio"
    rows = [
        {"image": str(img / "facerec_obama.jpg"), "audio": str(aud / "whisper_jfk.flac"), "external_id": "good"},
        {"image": str(img / "skimage_chelsea.png"), "audio": str(aud / "retalking_audio1.wav"), "external_id": "cat"},
        {"image": str(img / "liveavatar_boy.jpg"), "audio": str(silent), "external_id": "silent"},
        {"image": str(img / "facerec_obama.jpg"), "audio": str(aud / "musetalk_eng.wav"), "external_id": "long"},
        {"image": str(img / "facerec_two_people.jpg"), "audio": str(aud / "retalking_audio2.wav"), "external_id": "two"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(dict(r, prompt=PROMPT)) + "\n" for r in rows))
    result = submit(database, manifest, input_roots=[tmp_path, media])
    assert len(result.created) == 5
    yield settings, database
    database.dispose()


def by_external_id(database: Database) -> dict[str, Asset]:
    with database.session() as session:
        return {a.external_id: a for a in session.scalars(select(Asset))}


def test_every_asset_is_preprocessed_or_failed_with_its_reason(setup):
    settings, database = setup
    ctx = StageContext(database, settings)
    outcomes = {i: preprocess_asset(ctx, i) for i in submitted_ids(database)}
    assets = by_external_id(database)

    good = assets["good"]
    assert good.state == "preprocessed"
    crop, speech = records.need(good.details, Crop, stage="test"), records.need(good.details, Speech, stage="test")
    assert crop.landmarks and crop.quality and crop.face_box and crop.crop_box
    assert Path(crop.path).is_file() and Path(speech.path).is_file()
    assert "+" not in speech.path
    assert abs(speech.loudness_out_lufs + 23) < 1.0

    cat = assets["cat"]
    assert (cat.state, cat.failed_stage, cat.retryable) == ("failed", "preprocess", False)
    assert "face" in cat.failure_reason.lower() and "skimage_chelsea.png" in cat.failure_reason
    silent = assets["silent"]
    assert silent.state == "failed" and "silen" in silent.failure_reason.lower()

    two = assets["two"]
    assert two.state == "preprocessed"
    assert any("2 faces" in w for w in records.warnings(two.details))
    with database.session() as session:
        warnings = session.scalars(select(Event.reason).where(Event.asset_id == two.id, Event.reason.like("warning:%"))).all()
        assert any("2 faces" in w for w in warnings)

    long = assets["long"]
    assert long.state == "split" and outcomes[long.id].detail["segments"] >= 3
    with database.session() as session:
        children = session.scalars(select(Asset).where(Asset.parent_id == long.id).order_by(Asset.segment_index)).all()
        assert [c.segment_index for c in children] == list(range(len(children)))
        parts = [records.need(c.details, Speech, stage="test") for c in children]
        assert all(c.state == "preprocessed" for c in children) and all(p.duration_s <= 20.0 for p in parts)
        starts, ends = [p.segment[0] for p in parts], [p.segment[1] for p in parts]
        assert starts[0] == 0 and all(abs(s - e) < 1e-6 for s, e in zip(starts[1:], ends[:-1]))
        assert abs(ends[-1] - records.need(long.details, Speech, stage="test").duration_s) < 0.01
        assert children[0].external_id == "long#0"


def test_rerun_redoes_nothing_and_same_inputs_reuse_the_cache(setup):
    settings, database = setup
    ctx = StageContext(database, settings)
    for asset_id in submitted_ids(database):
        preprocess_asset(ctx, asset_id)
    with database.session() as session:
        events_before = session.query(Event).count()
        count_before = session.query(Asset).count()
    cache_files = sorted(p.name for p in settings.storage.cache.rglob("*"))
    assert submitted_ids(database) == []
    assets = by_external_id(database)
    again = preprocess_asset(ctx, assets["good"].id)
    assert again.reason == "already preprocessed"
    with database.session() as session:
        assert session.query(Event).count() == events_before and session.query(Asset).count() == count_before
    # "good" and "long" share a portrait: one crop in the cache serves both
    assert records.need(assets["good"].details, Crop, stage="test").path == \
        records.need(assets["long"].details, Crop, stage="test").path
    assert sorted(p.name for p in settings.storage.cache.rglob("*")) == cache_files
