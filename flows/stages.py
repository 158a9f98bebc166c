"""The pipeline's stages as Prefect tasks: one task run per asset per stage.

Each is the same thin wrapper around a stage function `(StageContext, asset_id) -> StageOutcome`
(db/stage.py): it builds the context from settings, bounds the CPU-heavy stages per process, and
runs the stage through `run_stage`, so an unexpected exception fails that asset, not the batch.
No Prefect retries: a failed input fails the same way twice, and the retry policy for retryable
failures lives with the asset (tasks/pipeline.retry_failed) where it is recorded.
"""

from __future__ import annotations

import os
import socket
from contextlib import nullcontext
from typing import Any

from prefect import get_run_logger, runtime, task

from avatarflow.settings import get_settings
from db.session import shared_database
from db.stage import Stage, StageContext, StageOutcome, cpu_slot, run_stage
from flows.components import components_for
from inference.engine import Progress
from inference.gangs import gang_by_name
from inference.stage import generate_asset, plan_asset
from qc.stage import qc_asset, route_asset
from tasks.delivery import deliver_assets
from tasks.preprocess import preprocess_asset
from tasks.stages import join_asset, transcode_asset


def _context(stage: str, gang_name: str | None = None) -> StageContext:
    settings = get_settings()
    gang = gang_by_name(settings, gang_name) if gang_name else None
    actor = f"{socket.gethostname()}:{os.getpid()}:{gang.name}" if gang else f"prefect:{stage}"
    logger = get_run_logger()

    def progress(asset_id: int, update: Progress) -> None:
        logger.info("asset %s: clip %d of %d %s", asset_id, update.clips_done, update.clips_planned, update.message)

    return StageContext(shared_database(settings), settings, actor=actor,
                        components=components_for(settings, gang=gang, progress=progress),
                        flow_run_url=runtime.flow_run.ui_url)


def stage_task(name: str, fn: Stage, *, cpu: bool) -> Any:
    """The Prefect task for stage `fn`; `cpu`: it competes for the process's CPU slots."""

    @task(name=name, task_run_name=f"{name}-{{asset_id}}")
    def run(asset_id: int, gang_name: str | None = None) -> StageOutcome:
        ctx = _context(name, gang_name)
        with cpu_slot(ctx.settings.cpu_workers) if cpu else nullcontext():
            return run_stage(name, fn, ctx, asset_id)

    return run


preprocess = stage_task("preprocess", preprocess_asset, cpu=True)
plan = stage_task("plan", plan_asset, cpu=False)
generate = stage_task("generate", generate_asset, cpu=False)  # waits for its GPU gang instead
join = stage_task("join", join_asset, cpu=True)
qc = stage_task("qc", qc_asset, cpu=True)
transcode = stage_task("transcode", transcode_asset, cpu=True)
route = stage_task("route", route_asset, cpu=False)


# Delivery copies files to storage that may be briefly unavailable: retry it.
@task(name="deliver", retries=2, retry_delay_seconds=10)
def deliver(asset_ids: list[int] | None = None):  # type: ignore[no-untyped-def]
    settings = get_settings()
    return deliver_assets(shared_database(settings), settings, asset_ids, actor="prefect:deliver")
