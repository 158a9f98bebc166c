"""Thin Prefect task wrappers around the plain stage functions (one task run per asset per stage).

Each wrapper runs its stage through `run_stage`: an unexpected exception fails that asset with
the error as its reason, so the batch goes on. No Prefect retries here: input problems fail the
same way twice, and the stages record retryable failures on the asset for the next round.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task

from avatarflow.settings import get_settings
from db.session import shared_database
from inference.stage import StageOutcome
from tasks.pipeline import cpu_slot, run_stage
from tasks.preprocess import PreprocessOutcome, preprocess_asset
from tasks.stages import join_asset, transcode_asset


@task(name="preprocess", task_run_name="preprocess-{asset_id}")
def preprocess_task(asset_id: int) -> PreprocessOutcome | StageOutcome:
    settings = get_settings()
    with cpu_slot(settings.cpu_workers):
        return run_stage("preprocess", asset_id, lambda: preprocess_asset(
            shared_database(settings), asset_id, settings, actor="prefect:preprocess"), actor="prefect:preprocess")


@task(name="join", task_run_name="join-{asset_id}")
def join_task(asset_id: int) -> StageOutcome:
    settings = get_settings()
    with cpu_slot(settings.cpu_workers):
        return run_stage("join", asset_id, lambda: join_asset(
            shared_database(settings), settings, asset_id, actor="prefect:join"), actor="prefect:join")


@task(name="transcode", task_run_name="transcode-{asset_id}")
def transcode_task(asset_id: int) -> StageOutcome:
    settings = get_settings()
    with cpu_slot(settings.cpu_workers):
        return run_stage("transcode", asset_id, lambda: transcode_asset(
            shared_database(settings), settings, asset_id, actor="prefect:transcode"), actor="prefect:transcode")


# Delivery copies files to storage that may be briefly unavailable: retry it.
@task(name="deliver", retries=2, retry_delay_seconds=10)
def deliver_task(asset_ids: Sequence[int] | None = None):  # type: ignore[no-untyped-def]
    from tasks.delivery import deliver_assets

    settings = get_settings()
    return deliver_assets(shared_database(settings), settings, asset_ids, actor="prefect:deliver")
