"""The preprocessing stage against the database: crops, speech, splits, failures and reuse."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from avatarflow.settings import Settings
from db.models import Asset, Event
from db.session import Database
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
    outcomes = {i: preprocess_asset(database, i, settings) for i in submitted_ids(database)}
    assets = by_external_id(database)

    good = assets["good"]
    assert good.state == "preprocessed"
    face = good.details["face"]
    for key in ("face_box", "landmarks", "crop_box", "warnings", "quality"):
        assert key in face
    assert Path(good.details["crop_path"]).is_file() and Path(good.details["speech_path"]).is_file()
    assert "+" not in good.details["speech_path"]
    assert abs(good.details["audio"]["loudness_out_lufs"] + 23) < 1.0

    cat = assets["cat"]
    assert (cat.state, cat.failed_stage, cat.retryable) == ("failed", "preprocess", False)
    assert "face" in cat.failure_reason.lower() and "skimage_chelsea.png" in cat.failure_reason
    silent = assets["silent"]
    assert silent.state == "failed" and "silen" in silent.failure_reason.lower()

    two = assets["two"]
    assert two.state == "preprocessed"
    assert any("2 faces" in w for w in two.details["warnings"])
    with database.session() as session:
        warnings = session.scalars(select(Event.reason).where(Event.asset_id == two.id, Event.reason.like("warning:%"))).all()
        assert any("2 faces" in w for w in warnings)

    long = assets["long"]
    assert long.state == "split" and outcomes[long.id].segments >= 3
    with database.session() as session:
        children = session.scalars(select(Asset).where(Asset.parent_id == long.id).order_by(Asset.segment_index)).all()
        assert [c.segment_index for c in children] == list(range(len(children)))
        assert all(c.state == "preprocessed" and c.details["audio"]["duration_s"] <= 20.0 for c in children)
        starts = [c.details["audio"]["start_s"] for c in children]
        ends = [c.details["audio"]["end_s"] for c in children]
        assert starts[0] == 0 and all(abs(s - e) < 1e-6 for s, e in zip(starts[1:], ends[:-1]))
        assert abs(ends[-1] - long.details["audio"]["duration_s"]) < 0.01
        assert children[0].external_id == "long#0"


def test_rerun_redoes_nothing_and_same_inputs_reuse_the_cache(setup):
    settings, database = setup
    for asset_id in submitted_ids(database):
        preprocess_asset(database, asset_id, settings)
    with database.session() as session:
        events_before = session.query(Event).count()
        count_before = session.query(Asset).count()
    cache_files = sorted(p.name for p in settings.storage.cache.rglob("*"))
    assert submitted_ids(database) == []
    assets = by_external_id(database)
    again = preprocess_asset(database, assets["good"].id, settings)
    assert again.reason == "already preprocessed"
    with database.session() as session:
        assert session.query(Event).count() == events_before and session.query(Asset).count() == count_before
    # "good" and "long" share a portrait: one crop in the cache serves both
    assert assets["good"].details["crop_path"] == assets["long"].details["crop_path"]
    assert sorted(p.name for p in settings.storage.cache.rglob("*")) == cache_files
