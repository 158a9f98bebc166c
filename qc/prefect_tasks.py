"""Prefect tasks for the QC and route stages."""

from __future__ import annotations

from prefect import runtime, task

from avatarflow.settings import get_settings
from db.session import shared_database
from inference.stage import StageOutcome
from qc.stage import qc_asset, route_asset
from tasks.pipeline import cpu_slot, run_stage


@task(name="qc", task_run_name="qc-{asset_id}")
def qc_task(asset_id: int) -> StageOutcome:
    settings = get_settings()
    with cpu_slot(settings.cpu_workers):
        return run_stage("qc", asset_id, lambda: qc_asset(
            shared_database(settings), settings, asset_id, actor="prefect:qc"), actor="prefect:qc")


@task(name="route", task_run_name="route-{asset_id}")
def route_task(asset_id: int) -> StageOutcome:
    settings = get_settings()
    return run_stage("route", asset_id, lambda: route_asset(
        shared_database(settings), settings, asset_id, actor="prefect:route",
        flow_run_url=runtime.flow_run.ui_url), actor="prefect:route")
