"""Migration 0004: a database written before the typed records keeps its history and its data.

On both backends: a database at revision 0002 gets assets with details as the old code wrote
them (a preprocessed one, a split segment, a generated and routed one); upgrading turns them into
records that validate; downgrading gives the old keys back.
"""

from __future__ import annotations

import hashlib

from alembic import command
from sqlalchemy import insert, select

from avatarflow import records
from avatarflow.records import Crop, Generation, Plan, Run, Speech
from db.models import Asset, Batch, Event, utcnow
from db.session import Database, alembic_config

FACE = {"out_path": "/d/cache/faces/k.png", "source_size": [910, 1137], "face_box": [352.7, 145.5, 632.5, 425.3],
        "landmarks": {"nose_tip": [495.3, 284.3]}, "crop_box": [184.0, 5.0, 806.0, 627.0], "faces_found": 1,
        "warnings": ["2 faces"], "quality": {"blur": 706.9}, "backend": "mediapipe-0.10.21"}
AUDIO = {"out_path": "/d/cache/audio/k.wav", "duration_s": 5.0156, "source": {"codec": "pcm_s16le"},
         "loudness_in_lufs": -19.1, "loudness_out_lufs": -23.0, "peak_db": -4.2, "speech_ratio": 0.8,
         "trimmed_start_s": 0.0, "trimmed_end_s": 0.0, "warnings": []}
PLAN = {"engine": "cpu", "preset": "standard", "size": "688*368", "solver": "euler", "sample_steps": 4,
        "infer_frames": 48, "num_clip": 3, "online_decode": False, "seconds": 5.0156, "samples": 80249,
        "video_seconds": 5.016, "video_size": [512, 512], "attempt": 1, "seed": 1234}
OLD = {
    "preprocessed": {"face": FACE, "audio": AUDIO, "crop_path": "/d/cache/faces/k.png",
                     "speech_path": "/d/cache/audio/k.wav", "warnings": ["face: 2 faces"]},
    "segment": {"face": FACE, "crop_path": "/d/cache/faces/k.png", "speech_path": "/d/a/segments/0.wav",
                "audio": {"duration_s": 9.5, "start_s": 0.0, "end_s": 9.5, "warnings": []},
                "warnings": ["face: 2 faces"]},
    "routed": {"face": FACE, "audio": AUDIO, "crop_path": "/d/cache/faces/k.png", "speech_path": "/d/cache/audio/k.wav",
               "warnings": [], "plan": PLAN, "video_path": "/d/a/attempt-01/generated.mp4", "attempt": 1,
               "flow_run_url": "http://127.0.0.1:4200/runs/flow-run/abc"},
}


def insert_old_assets(database: Database, details: dict[str, dict], state: str = "submitted") -> None:
    """Assets as an old schema holds them: only the columns it had (Core, not the current ORM)."""
    assets, events = Asset.__table__, Event.__table__
    with database.engine.begin() as connection:
        batch_id = connection.execute(insert(Batch.__table__).values(name="old", created_by="test",
                                                                     created_at=utcnow())).inserted_primary_key[0]
        for name, value in details.items():
            asset_id = connection.execute(insert(assets).values(
                key=hashlib.sha256(name.encode()).hexdigest(), batch_id=batch_id, external_id=name,
                image_path="/in/x.jpg", image_sha256="0" * 64, audio_path="/in/x.wav", audio_sha256="1" * 64,
                prompt="p", template_vars={}, preset="standard", priority=0, tags=[], state=state,
                details=value, version=1, created_at=utcnow(), updated_at=utcnow())).inserted_primary_key[0]
            connection.execute(insert(events).values(asset_id=asset_id, at=utcnow(), actor="test",
                                                     from_state=None, to_state="submitted", data={}))


def test_old_details_become_typed_records_and_back(db_url):
    database = Database(db_url)
    config = alembic_config(db_url)
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    insert_old_assets(database, OLD)
    database.migrate()
    assert database.current_revision() == database.head_revision()

    with database.session() as session:
        new = {a.external_id: a.details for a in session.scalars(select(Asset))}
        events = session.query(Event).count()
    crop = records.need(new["preprocessed"], Crop, stage="test")
    assert crop.path == "/d/cache/faces/k.png" and crop.source_size == (910, 1137) and crop.warnings == ["2 faces"]
    speech = records.need(new["preprocessed"], Speech, stage="test")
    assert speech.duration_s == 5.0156 and speech.loudness_out_lufs == -23.0
    assert records.warnings(new["preprocessed"]) == ["face: 2 faces"]
    assert records.need(new["segment"], Speech, stage="test").segment == (0.0, 9.5)
    plan = records.need(new["routed"], Plan, stage="test")
    assert plan.num_clip == 3 and plan.video_size == (512, 512) and plan.seed == 1234
    assert records.need(new["routed"], Generation, stage="test").video_path.endswith("generated.mp4")
    assert records.need(new["routed"], Run, stage="test").flow_run_url.endswith("/abc")
    assert all(d["schema"] == records.SCHEMA for d in new.values())
    assert events == 3  # the history is untouched

    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    with database.engine.connect() as connection:  # the old schema: Core, not the current ORM
        assets = Asset.__table__
        back = dict(connection.execute(select(assets.c.external_id, assets.c.details)).all())
    assert back["routed"]["video_path"] == OLD["routed"]["video_path"] and back["routed"]["plan"]["seed"] == 1234
    assert back["preprocessed"]["crop_path"] == OLD["preprocessed"]["crop_path"]
    assert back["preprocessed"]["warnings"] == ["face: 2 faces"]
    assert back["segment"]["audio"]["start_s"] == 0.0 and back["segment"]["audio"]["end_s"] == 9.5
    database.dispose()


def test_migration_0006_gives_waiting_videos_their_gpu_work(db_url):
    """Videos planned before longest-first claiming keep their place in the queue."""
    database = Database(db_url)
    config = alembic_config(db_url)
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
    insert_old_assets(database, {"planned": {"plan": PLAN}, "unplanned": {}}, state="planned")
    database.migrate()
    with database.session() as session:
        work = {a.external_id: a.gpu_work for a in session.scalars(select(Asset))}
    assert work == {"planned": round(3 * 688 * 368 / 1e6, 4), "unplanned": None}
