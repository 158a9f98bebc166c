"""The preprocessing stage as a real Prefect task run inside a flow (flows/stages.py)."""

from __future__ import annotations

import json

from prefect import flow
from sqlalchemy import select

from avatarflow.settings import get_settings
from db.models import Asset
from db.session import open_database
from flows.stages import preprocess as preprocess_task
from tasks.intake import submit


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


def test_the_batch_flows_thread_pool_is_sized_when_a_run_starts(monkeypatch):
    """AVATARFLOW_PIPELINE_THREADS is read when the runner starts, not when flows.batch is imported."""
    from flows.batch import StageThreads, batch_flow

    for threads in ("3", "5"):
        monkeypatch.setenv("AVATARFLOW_PIPELINE_THREADS", threads)
        get_settings.cache_clear()
        with batch_flow.task_runner.duplicate() as runner:
            assert isinstance(runner, StageThreads) and runner._executor._max_workers == int(threads)
    get_settings.cache_clear()
