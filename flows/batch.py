"""The `batch` flow: every asset of a batch from submitted to approved, review_pending or rejected.

Each asset runs the stages below in order, one Prefect task run per stage, starting from the
stage its state calls for; its chain stops as soon as a stage leaves it where it was (failed,
waiting for its segments, sent back for regeneration, waiting for a person). Chains of
different assets overlap, so CPU stages of some run while a GPU gang generates for another.
The flow works in rounds: a round moves every asset as far as it goes; assets sent back for
regeneration, or whose retryable failure is retried, are picked up by the next round.
Everything an asset has done lives in the database, so a killed run started again carries on
where it stopped.
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from avatarflow.errors import ConfigurationError
from avatarflow.settings import get_settings
from avatarflow.storage import sweep_partials
from db.queries import batch_results, get_batch
from db.retry import retry_transient
from db.session import shared_database
from db.stage import StageContext, StageOutcome
from db.states import AssetState
from flows.stages import generate, join, plan, preprocess, qc, route, transcode
from inference.gang_worker import live_workers, untaken_presets
from inference.gangs import configured_gangs, ensure_gang_limits
from inference.stage import recover_interrupted
from tasks.intake import submit
from tasks.pipeline import DONE, Work, batch_counts, pending_work, retry_failed, waiting_for_gpus

S = AssetState
T = TypeVar("T")
# The pipeline, in order: the table of contents.
STAGES = (preprocess, plan, generate, join, qc, transcode, route)
# Where an asset in each state enters the pipeline.
ENTRY: dict[str, Any] = {
    S.SUBMITTED: preprocess,
    S.PREPROCESSED: plan,
    S.PLANNED: generate,
    S.SPLIT: join,
    S.GENERATED: qc,
    S.QC_PASSED: transcode,
    S.QC_FAILED: route,
    S.REVIEW_PENDING: transcode,  # its renditions, for the reviewers
}


class StageThreads(ThreadPoolTaskRunner):
    """The flow's thread pool, sized from `AVATARFLOW_PIPELINE_THREADS` when a run starts (the
    flow object is built at import time, so a size passed there would be frozen then)."""

    def __enter__(self) -> StageThreads:
        self._max_workers = get_settings().pipeline_threads
        return super().__enter__()


def next_stage(outcome: StageOutcome) -> Any | None:
    """The stage an asset goes on to, or None when it did not move on (its chain ends here)."""
    if not outcome.advanced or outcome.stage == "route" or outcome.state == S.SPLIT:
        return None  # a split parent waits for its segments: a later round joins them
    if outcome.stage == "transcode":
        return route if outcome.state == S.QC_PASSED else None
    return ENTRY.get(outcome.state)


def run_round(work: list[Work], gangs: list[Any], *, generate_here: bool = True) -> int:
    """Move every asset of `work` as far as its chain goes; returns how many stages moved an asset.

    `generate_here=False` (gang workers generate): a chain stops at `planned`, for a worker."""
    done: queue.Queue[tuple[PrefectFuture[StageOutcome], str]] = queue.Queue()
    moved = 0

    def submit_stage(stage: Any, asset_id: int, gang_name: str) -> None:
        kwargs = {"asset_id": asset_id, "gang_name": gang_name if stage is generate else None}
        future = stage.submit(**kwargs)
        future.add_done_callback(lambda f: done.put((f, gang_name)))

    pending = 0
    names = [g.name for g in gangs] or [""]
    for i, item in enumerate(work):
        submit_stage(ENTRY[item.state], item.asset_id, names[i % len(names)])
        pending += 1
    while pending:
        future, gang_name = done.get()
        pending -= 1
        outcome = future.result()
        moved += outcome.advanced
        following = next_stage(outcome)
        if following is not None and (generate_here or following is not generate):
            submit_stage(following, outcome.asset_id, gang_name)
            pending += 1
    return moved


@flow(name="batch", task_runner=StageThreads(), log_prints=True)
def batch_flow(manifest: str | None = None, batch: str | None = None) -> Any:
    """Run a batch (a manifest to submit, or the name of a batch already submitted) to the review queue."""
    logger = get_run_logger()
    settings = get_settings()
    database = shared_database(settings)
    ctx = StageContext(database, settings, actor="prefect:batch")
    swept = sweep_partials(settings.storage.assets, settings.partial_max_age_seconds)
    if swept:
        logger.warning("removed %d half-written file(s) left by killed processes", len(swept))
    if manifest:
        intake = _with_db(ctx, "submitting the manifest", lambda: submit(
            database, Path(manifest), batch_name=batch, input_roots=settings.input_roots,
            default_preset=settings.default_preset, actor=ctx.actor))
        for problem in intake.problems:
            logger.warning("manifest %s", problem)
        batch = intake.batch_name
    if not batch:
        raise ValueError("give a manifest or the name of a submitted batch")
    batch_id, batch_name = _with_db(ctx, "reading the batch", lambda: _batch_ref(database, batch))
    progress_id = _artifact(lambda: create_progress_artifact(
        progress=0.0, key=f"batch-{batch_id}-progress", description=f"batch {batch_name}: share of assets finished"))
    if settings.generation == "workers":
        run_beside_gang_workers(ctx, batch_id, progress_id)
    else:
        run_generating_here(ctx, batch_id, progress_id)
    _progress(progress_id, _with_db(ctx, "counting", lambda: _finished_share(ctx, batch_id)))
    return _with_db(ctx, "the batch summary", lambda: _report(ctx, batch_id, batch_name))


def _with_db(ctx: StageContext, what: str, fn: Callable[[], T]) -> T:
    """`fn()` through a database outage of up to AVATARFLOW_DB_RETRY_SECONDS (db.retry)."""
    return retry_transient(fn, what=what, within_s=ctx.settings.db_retry_seconds)


def _batch_ref(database: Any, batch: str) -> tuple[int, str]:
    with database.session() as session:
        found = get_batch(session, batch)
        return found.id, found.name


def _artifact(make: Callable[[], T]) -> T | None:
    """Artifacts are for people watching: a Prefect API hiccup must not stop the batch."""
    try:
        return make()
    except Exception:  # noqa: BLE001 - logged; the batch goes on
        get_run_logger().warning("could not write a Prefect artifact; going on without it", exc_info=True)
        return None


def _progress(progress_id: Any, share: float) -> None:
    if progress_id is not None:
        _artifact(lambda: update_progress_artifact(progress_id, share))


def run_generating_here(ctx: StageContext, batch_id: int, progress_id: Any) -> None:
    """`AVATARFLOW_GENERATION=flow`: this run generates on this host's gangs, in rounds."""
    logger, settings = get_run_logger(), ctx.settings
    gangs = configured_gangs(settings)
    if packed := [g.name for g in gangs if g.shares > 1]:
        raise ConfigurationError(
            f"AVATARFLOW_GANGS={settings.gangs!r} packs a GPU with several workers ({', '.join(packed)}): only "
            "gang workers respect a packed GPU's memory shares. Set AVATARFLOW_GENERATION=workers and start "
            "`avatarflow gang worker --gang NAME` per gang, or list each GPU once")
    ensure_gang_limits(gangs)
    if recovered := _with_db(ctx, "recovering", lambda: recover_interrupted(ctx, batch_id)):
        logger.warning("%d asset(s) were left generating by a run that died; queued again", len(recovered))
    for round_number in range(settings.max_generation_attempts + settings.stage_retry_limit + 3):
        work = _with_db(ctx, "reading the work", lambda: _next_work(ctx, batch_id))
        if not work:
            break
        logger.info("round %d: %d asset(s) to move on", round_number + 1, len(work))
        run_round(work, gangs)
        _progress(progress_id, _with_db(ctx, "counting", lambda: _finished_share(ctx, batch_id)))


def run_beside_gang_workers(ctx: StageContext, batch_id: int, progress_id: Any) -> None:
    """`AVATARFLOW_GENERATION=workers`: every stage but generate, while gang workers generate.

    Preprocessing runs ahead of the GPUs, and QC and transcoding of a finished video run while its
    gang makes the next one: the flow moves whatever can move, then looks again every
    `AVATARFLOW_WORKER_POLL_SECONDS`, until nothing of the batch waits for a GPU.
    """
    logger, settings = get_run_logger(), ctx.settings
    deadline = time.monotonic() + settings.gpu_wait_seconds
    told = -math.inf
    while True:
        work = [w for w in _with_db(ctx, "reading the work", lambda: _next_work(ctx, batch_id)) if w.state != S.PLANNED]
        waiting = _with_db(ctx, "counting", lambda: _waiting(ctx, batch_id))
        if work and run_round(work, [], generate_here=False):
            _progress(progress_id, _with_db(ctx, "counting", lambda: _finished_share(ctx, batch_id)))
            continue  # something moved: more may move now
        if not waiting:
            return  # nothing moved and nothing is being generated: nothing more will happen
        if time.monotonic() > deadline:
            logger.error("%d video(s) still wait for a GPU after %.0f s (AVATARFLOW_GPU_WAIT_SECONDS); "
                         "run the batch again to carry on", waiting, settings.gpu_wait_seconds)
            return
        if time.monotonic() - told > 300:
            told = time.monotonic()
            workers = live_workers(ctx)
            if not workers:
                logger.warning("%d video(s) wait for a GPU and no gang worker is running: start one per gang "
                               "with `avatarflow gang worker --gang NAME`", waiting)
            elif untaken := untaken_presets(ctx, batch_id, workers):
                logger.warning("%s wait(s) for a GPU, but every live gang worker is on a packed GPU that takes "
                               "only smaller presets: start a worker on an unpacked gang (e.g. AVATARFLOW_GANGS=\"1\")",
                               ", ".join(f"{n} {preset} video(s)" for preset, n in untaken.items()))
        time.sleep(settings.worker_poll_seconds)


def _next_work(ctx: StageContext, batch_id: int) -> list[Work]:
    """What can move on now; retryable failures are queued again first."""
    with ctx.database.session() as session:
        if retried := retry_failed(session, batch_id, limit=ctx.settings.stage_retry_limit, actor=ctx.actor):
            get_run_logger().warning("retrying %d asset(s) whose failure was retryable", len(retried))
        return pending_work(session, batch_id)


def _waiting(ctx: StageContext, batch_id: int) -> int:
    with ctx.database.session() as session:
        return waiting_for_gpus(session, batch_id)


def _finished_share(ctx: StageContext, batch_id: int) -> float:
    with ctx.database.session() as session:
        counts = batch_counts(session, batch_id)
    return 100.0 * sum(n for state, n in counts.items() if state in DONE) / max(sum(counts.values()), 1)


def _report(ctx: StageContext, batch_id: int, batch_name: str) -> Any:
    """The run's artifacts (results table, review link) and its final state's message."""
    settings = ctx.settings
    with ctx.database.session() as session:
        counts = batch_counts(session, batch_id)
        rows = batch_results(session, batch_id, review_url=settings.review_url)
    total = sum(counts.values())
    finished = sum(n for state, n in counts.items() if state in DONE)
    _artifact(lambda: create_table_artifact(key=f"batch-{batch_id}-results", table=rows,
                                            description=f"batch {batch_name}: per-asset results"))
    waiting = counts.get(S.REVIEW_PENDING.value, 0)
    if waiting:
        _artifact(lambda: create_link_artifact(
            key="review-queue", link=f"{settings.review_url}/queue?batch={batch_id}",
            link_text=f"{waiting} video(s) of {batch_name} waiting for review", description="The reviewers' queue"))
    message = (f"batch {batch_name}: {total} asset(s): "
               f"{counts.get('approved', 0) + counts.get('delivered', 0)} approved, "
               f"{waiting} awaiting review, {counts.get('rejected', 0)} rejected, "
               f"{counts.get('failed', 0)} failed, {total - finished} unfinished")
    get_run_logger().info(message)
    # The summary becomes the run's final state message, so the Prefect UI shows it at a glance.
    return Completed(message=message, data={"batch": batch_name, "batch_id": batch_id, "message": message,
                                            "counts": dict(counts), "total": total, "finished": finished})
