"""Prefect tasks for the plan and generate stages."""

from __future__ import annotations

import os
import socket

from prefect import get_run_logger, task

from avatarflow.settings import get_settings
from db.session import shared_database
from inference.engine import Progress
from inference.factory import engine_for
from inference.gangs import gang_by_name, gang_slot
from inference.stage import StageOutcome, generate_asset, plan_asset
from tasks.pipeline import fail_on_error, run_stage


@task(name="plan", task_run_name="plan-{asset_id}")
def plan_task(asset_id: int) -> StageOutcome:
    settings = get_settings()
    return run_stage("plan", asset_id, lambda: plan_asset(
        shared_database(settings), settings, asset_id, engine_name=settings.engine, actor="prefect:plan"),
        actor="prefect:plan")


# No Prefect retries: the stage retries retryable engine failures itself (with a new seed, and
# recorded as attempts), and a Prefect retry would not kill a hung child process anyway.
@task(name="generate", task_run_name="generate-{asset_id}-{gang_name}")
def generate_task(asset_id: int, gang_name: str) -> StageOutcome:
    settings = get_settings()
    logger = get_run_logger()
    gang = gang_by_name(settings, gang_name)
    worker = f"{socket.gethostname()}:{os.getpid()}:{gang.name}"

    def progress(update: Progress) -> None:
        logger.info("asset %s: clip %d of %d %s", asset_id, update.clips_done, update.clips_planned, update.message)

    def work() -> StageOutcome:
        return generate_asset(shared_database(settings), settings, asset_id, engine_for(settings, gang), gang,
                              worker=worker, progress=progress)

    # Waiting for the gang's slot is not stage work (the orchestration benchmark counts only the
    # latter), but failing to get one still fails only this asset.
    try:
        with gang_slot(gang, lease_seconds=settings.gang_lease_seconds):
            return run_stage("generate", asset_id, work, actor=worker)
    except Exception as exc:  # noqa: BLE001 - errors are values
        state = fail_on_error(shared_database(settings), asset_id, "generate", exc, actor=worker)
        return StageOutcome(asset_id, state, f"no GPU gang slot: {type(exc).__name__}: {exc}")
