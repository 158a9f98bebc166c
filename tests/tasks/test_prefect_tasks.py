"""The preprocessing stage as a real Prefect task run inside a flow."""

from __future__ import annotations

import json

from prefect import flow
from sqlalchemy import select

from avatarflow.settings import get_settings
from db.models import Asset
from db.session import open_database
from tasks.intake import submit
from tasks.prefect_tasks import preprocess_task


def test_preprocess_task_runs_per_asset_and_records_failures_as_values(prefect_harness, settings_env, media, tmp_path):
    settings = get_settings()
    database = open_database(settings)
    manifest = tmp_path / "m.jsonl"
    rows = [{"image": str(media / "image/skimage_astronaut.png"), "audio": str(media / "audio/retalking_audio1.wav")},
            {"image": str(media / "image/skimage_chelsea.png"), "audio": str(media / "audio/retalking_audio2.wav")}]
    manifest.write_text("".join(json.dumps(dict(r, template="default")) + "\n" for r in rows))
    submit(database, manifest, input_roots=[media, tmp_path])
    with database.session() as session:
        ids = list(session.scalars(select(Asset.id).order_by(Asset.id)))

    @flow
    def preprocess_all(asset_ids: list[int]) -> list[str]:
        futures = preprocess_task.map(asset_ids)
        return [f.result().state for f in futures]

    assert preprocess_all(ids) == ["preprocessed", "failed"]
    with database.session() as session:
        cat = session.get(Asset, ids[1])
        assert cat.failed_stage == "preprocess" and "no" in cat.failure_reason.lower()
    database.dispose()
