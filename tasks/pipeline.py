"""Which stages an asset still needs, read from the database: the pipeline's plain-function core.

The batch flow asks this module what to run; every stage function also checks the asset's
state itself, so running a stage twice (after a crash, or two runs at once) does nothing twice.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Asset, Rendition
from db.states import AssetState

S = AssetState
STAGES = ("preprocess", "plan", "generate", "join", "qc", "transcode", "route")
# The stages that follow each state, in order. Segments (children of a split asset) stop at
# `generated`: their parent joins them and goes through QC as one video.
FROM_STATE: dict[str, tuple[str, ...]] = {
    S.SUBMITTED: ("preprocess", "plan", "generate", "qc", "transcode", "route"),
    S.PREPROCESSED: ("plan", "generate", "qc", "transcode", "route"),
    S.PLANNED: ("generate", "qc", "transcode", "route"),
    S.SPLIT: ("join", "qc", "transcode", "route"),
    S.GENERATED: ("qc", "transcode", "route"),
    S.QC_PASSED: ("transcode", "route"),
    S.QC_FAILED: ("route",),
    S.REVIEW_PENDING: ("transcode",),
}
SEGMENT_STAGES = {"preprocess", "plan", "generate"}


@dataclass(frozen=True)
class Work:
    asset_id: int
    state: str
    stages: tuple[str, ...]


def pending_work(session: Session, batch_id: int) -> list[Work]:
    """Every asset of the batch that the pipeline can move on now, most urgent first."""
    assets = session.scalars(
        select(Asset).where(Asset.batch_id == batch_id).order_by(Asset.priority.desc(), Asset.id)
    ).all()
    with_web = set(session.scalars(
        select(Rendition.asset_id).join(Asset).where(Asset.batch_id == batch_id, Rendition.kind == "web")))
    children: dict[int, list[Asset]] = {}
    for asset in assets:
        if asset.parent_id is not None:
            children.setdefault(asset.parent_id, []).append(asset)
    work = []
    for asset in assets:
        stages = FROM_STATE.get(asset.state, ())
        if asset.parent_id is not None:
            stages = tuple(s for s in stages if s in SEGMENT_STAGES)
        if asset.state == S.SPLIT:
            segments = children.get(asset.id, [])
            done = all(c.state == S.GENERATED for c in segments)
            broken = any(c.state == S.FAILED for c in segments)
            if not segments or not (done or broken):
                stages = ()  # the join waits until every segment is generated (or one failed)
        if asset.state in (S.REVIEW_PENDING, S.QC_PASSED) and asset.id in with_web:
            stages = tuple(s for s in stages if s != "transcode")
        if stages:
            work.append(Work(asset.id, asset.state, stages))
    return work


def batch_counts(session: Session, batch_id: int) -> Counter[str]:
    """States of the batch's top-level assets (segments are counted through their parent)."""
    rows = session.execute(select(Asset.state).where(Asset.batch_id == batch_id, Asset.parent_id.is_(None)))
    return Counter(state for (state,) in rows)


# Seconds spent inside each stage's own function in this process (the orchestration benchmark
# subtracts this "work itself" from the wall time).
WORK_SECONDS: Counter[str] = Counter()
_work_lock = threading.Lock()
_cpu_slots: threading.BoundedSemaphore | None = None
_cpu_lock = threading.Lock()


@contextmanager
def cpu_slot(workers: int) -> Iterator[None]:
    """Bound the CPU-heavy stages running at once in this process (the task runner has many threads)."""
    global _cpu_slots
    with _cpu_lock:
        if _cpu_slots is None:
            _cpu_slots = threading.BoundedSemaphore(max(1, workers))
    with _cpu_slots:
        yield


def fail_on_error(database, asset_id: int, stage: str, exc: BaseException, *, actor: str) -> str:  # type: ignore[no-untyped-def]
    """Record an unexpected error on the asset (errors are values); returns the asset's state.

    A bug or a broken installation must not leave the asset silently stuck, nor stop the batch:
    the asset moves to `failed` with the error, marked retryable, and the batch goes on.
    """
    from db.lifecycle import transition
    from db.models import Asset
    from db.states import allowed

    reason = f"{stage} stage crashed: {type(exc).__name__}: {exc}"[:2000]
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None:
            return "missing"
        if allowed(asset.state, AssetState.FAILED):
            transition(session, asset, AssetState.FAILED, actor=actor, reason=reason, failed_stage=stage,
                       retryable=True, data={"exception": type(exc).__name__})
        return asset.state


def run_stage(stage: str, asset_id: int, work: Callable[[], Any], *, actor: str) -> Any:
    """Run one stage for one asset; an unexpected exception fails that asset, not the batch."""
    import logging

    from db.session import shared_database
    from inference.stage import StageOutcome

    import time

    started = time.perf_counter()
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - errors are values, see fail_on_error
        logging.getLogger("avatarflow").exception("%s of asset %s crashed", stage, asset_id)
        state = fail_on_error(shared_database(), asset_id, stage, exc, actor=actor)
        return StageOutcome(asset_id, state, f"{type(exc).__name__}: {exc}")
    finally:
        with _work_lock:
            WORK_SECONDS[stage] += time.perf_counter() - started
