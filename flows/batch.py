"""The `batch` flow: every asset of a batch from submitted to approved, review_pending or rejected.

    preprocess → plan → generate → (join segments) → QC → transcode → route

One task run per asset per stage. Each asset's stages are chained with futures, so CPU stages
of other assets run while a GPU gang generates. The flow works in rounds: a round submits every
asset's remaining stages; assets sent back for regeneration are picked up by the next round.
Everything an asset has done lives in the database, so a killed run started again carries on
where it stopped.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, wait
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner
from sqlalchemy import select

from avatarflow.settings import get_settings
from db.models import Asset, Batch, QCResult
from db.queries import get_batch
from db.session import shared_database
from db.states import TERMINAL, WAITING_FOR_PEOPLE, AssetState
from inference.gangs import configured_gangs, ensure_gang_limits
from inference.prefect_tasks import generate_task, plan_task
from inference.stage import recover_interrupted
from qc.prefect_tasks import qc_task, route_task
from tasks.intake import submit
from tasks.pipeline import Work, batch_counts, pending_work
from tasks.prefect_tasks import join_task, preprocess_task, transcode_task

TASKS = {"preprocess": preprocess_task, "plan": plan_task, "generate": generate_task, "join": join_task,
         "qc": qc_task, "transcode": transcode_task, "route": route_task}
DONE = {s.value for s in TERMINAL | WAITING_FOR_PEOPLE} | {AssetState.APPROVED.value, AssetState.FAILED.value}


def _submit_chain(work: Work, gang_name: str) -> PrefectFuture[Any]:
    future: PrefectFuture[Any] | None = None
    for stage in work.stages:
        task = TASKS[stage]
        kwargs: dict[str, Any] = {"asset_id": work.asset_id}
        if stage == "generate":
            kwargs["gang_name"] = gang_name
        future = task.submit(**kwargs, wait_for=[future] if future else None)
    assert future is not None
    return future


def _summary(batch_id: int) -> dict[str, Any]:
    database = shared_database()
    with database.session() as session:
        counts = batch_counts(session, batch_id)
    finished = sum(n for state, n in counts.items() if state in DONE)
    return {"counts": dict(counts), "total": sum(counts.values()), "finished": finished}


def _results_table(batch_id: int) -> list[dict[str, Any]]:
    settings = get_settings()
    database = shared_database()
    rows = []
    with database.session() as session:
        assets = session.scalars(select(Asset).where(Asset.batch_id == batch_id, Asset.parent_id.is_(None))
                                 .order_by(Asset.id)).all()
        for asset in assets:
            qc = session.scalars(select(QCResult).where(QCResult.asset_id == asset.id)
                                 .order_by(QCResult.id.desc())).first()
            rows.append({
                "asset": asset.id, "external id": asset.external_id or "", "state": asset.state,
                "lip-sync score": "" if qc is None or qc.score is None else f"{qc.score:.3f}",
                "verdict": qc.verdict if qc else "", "attempts": len(asset.attempts),
                "why": asset.failure_reason or (", ".join(qc.reasons[:2]) if qc else ""),
                "review": f"{settings.review_url}/assets/{asset.id}" if asset.state == AssetState.REVIEW_PENDING else "",
            })
    return rows


@flow(name="batch", task_runner=ThreadPoolTaskRunner(max_workers=get_settings().pipeline_threads),
      log_prints=True)
def batch_flow(manifest: str | None = None, batch: str | None = None) -> Any:
    """Run a batch (a manifest to submit, or the name of a batch already submitted) to the review queue."""
    logger = get_run_logger()
    settings = get_settings()
    database = shared_database(settings)
    if manifest:
        from pathlib import Path

        intake = submit(database, Path(manifest), batch_name=batch, input_roots=settings.input_roots,
                        default_preset=settings.default_preset, actor="prefect:batch")
        for problem in intake.problems:
            logger.warning("manifest %s", problem)
        batch = intake.batch_name
    if not batch:
        raise ValueError("give a manifest or the name of a submitted batch")
    with database.session() as session:
        found: Batch = get_batch(session, batch)
        batch_id, batch_name = found.id, found.name

    gangs = configured_gangs(settings)
    ensure_gang_limits(gangs)
    recovered = recover_interrupted(database, batch_id, actor="prefect:batch")
    if recovered:
        logger.warning("%d asset(s) were left generating by a run that died; queued again", len(recovered))

    progress_id = create_progress_artifact(progress=0.0, key=f"batch-{batch_id}-progress",
                                           description=f"batch {batch_name}: share of assets finished")
    for round_number in range(settings.max_generation_attempts + 3):
        with database.session() as session:
            work = pending_work(session, batch_id)
        if not work:
            break
        logger.info("round %d: %d asset(s) to move on", round_number + 1, len(work))
        finals = [_submit_chain(item, gangs[i % len(gangs)].name) for i, item in enumerate(work)]
        for done_count, _ in enumerate(_as_completed(finals), start=1):
            summary = _summary(batch_id)
            update_progress_artifact(progress_id, 100.0 * summary["finished"] / max(summary["total"], 1))
    summary = _summary(batch_id)
    update_progress_artifact(progress_id, 100.0 * summary["finished"] / max(summary["total"], 1))

    create_table_artifact(key=f"batch-{batch_id}-results", table=_results_table(batch_id),
                          description=f"batch {batch_name}: per-asset results")
    waiting = summary["counts"].get(AssetState.REVIEW_PENDING.value, 0)
    if waiting:
        create_link_artifact(key="review-queue", link=f"{settings.review_url}/queue?batch={batch_id}",
                             link_text=f"{waiting} video(s) of {batch_name} waiting for review",
                             description="The reviewers' queue")
    counts = summary["counts"]
    message = (f"batch {batch_name}: {summary['total']} asset(s): "
               f"{counts.get('approved', 0) + counts.get('delivered', 0)} approved, "
               f"{waiting} awaiting review, {counts.get('rejected', 0)} rejected, "
               f"{counts.get('failed', 0)} failed, {summary['total'] - summary['finished']} unfinished")
    logger.info(message)
    # The summary becomes the run's final state message, so the Prefect UI shows it at a glance.
    return Completed(message=message, data={"batch": batch_name, "batch_id": batch_id, "message": message,
                                            **summary})


def _as_completed(futures: list[PrefectFuture[Any]]):  # type: ignore[no-untyped-def]
    from prefect.futures import as_completed

    yield from as_completed(futures)
    wait(futures)
