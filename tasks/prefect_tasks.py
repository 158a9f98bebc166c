"""Thin Prefect task wrappers around the plain stage functions (one task run per asset per stage)."""

from __future__ import annotations

from prefect import task

from avatarflow.settings import get_settings
from db.session import open_database
from tasks.preprocess import PreprocessOutcome, preprocess_asset


# No retries: bad input fails the same way twice, and the function already turns every input
# problem into a failed asset. Timeouts inside (ffmpeg) are the function's own.
@task(name="preprocess", task_run_name="preprocess-{asset_id}", retries=0)
def preprocess_task(asset_id: int) -> PreprocessOutcome:
    settings = get_settings()
    database = open_database(settings)
    try:
        return preprocess_asset(database, asset_id, settings, actor="prefect:preprocess")
    finally:
        database.dispose()
