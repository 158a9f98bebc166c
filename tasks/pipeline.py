"""Which assets of a batch can move on now, and the retry policy: plain functions the flow asks.

The flow (`flows/batch.py`) holds the stage order; this module only reads the database: the
assets that are in a state some stage starts from, most urgent first, and the retryable
failures that may run their stage again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.lifecycle import transition
from db.models import Asset, Event, Rendition
from db.states import RETRY_ENTRY, TERMINAL, WAITING_FOR_PEOPLE, AssetState

S = AssetState
# States the pipeline moves on by itself (review_pending only for its renditions).
MOVABLE = frozenset({S.SUBMITTED, S.PREPROCESSED, S.PLANNED, S.SPLIT, S.GENERATED, S.QC_PASSED, S.QC_FAILED,
                     S.REVIEW_PENDING})
# Segments (children of a split asset) stop at `generated`: their parent joins them.
SEGMENT_STATES = frozenset({S.SUBMITTED, S.PREPROCESSED, S.PLANNED})
DONE = frozenset({s.value for s in TERMINAL | WAITING_FOR_PEOPLE} | {S.APPROVED.value, S.FAILED.value})
RETRY_PREFIX = "retry"


@dataclass(frozen=True)
class Work:
    asset_id: int
    state: str


def pending_work(session: Session, batch_id: int) -> list[Work]:
    """Every asset of the batch that some stage can move on now, most urgent first."""
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
        state = S(asset.state)
        if state not in MOVABLE or (asset.parent_id is not None and state not in SEGMENT_STATES):
            continue
        if state == S.SPLIT:
            segments = children.get(asset.id, [])
            if not segments or not (all(c.state == S.GENERATED for c in segments)
                                    or any(c.state == S.FAILED for c in segments)):
                continue  # the join waits until every segment is generated (or one failed)
        if state == S.REVIEW_PENDING and asset.id in with_web:
            continue  # a video waiting for a person, with its renditions made: nothing to do
        work.append(Work(asset.id, asset.state))
    return work


def batch_counts(session: Session, batch_id: int) -> Counter[str]:
    """States of the batch's top-level assets (segments are counted through their parent)."""
    rows = session.execute(select(Asset.state).where(Asset.batch_id == batch_id, Asset.parent_id.is_(None)))
    return Counter(state for (state,) in rows)


def retries_made(session: Session, asset_id: int, stage: str) -> int:
    """How often the pipeline has re-run `stage` for the asset after a retryable failure."""
    query = select(func.count(Event.id)).where(
        Event.asset_id == asset_id, Event.from_state == S.FAILED.value,
        Event.reason.like(f"{RETRY_PREFIX} % of %: {stage} %"))
    return int(session.scalar(query) or 0)


def retry_failed(session: Session, batch_id: int, *, limit: int, actor: str) -> list[int]:
    """The policy for retryable failures: each stage is re-run at most `limit` times per asset.

    A retryable failure (a timeout, a crash, a storage hiccup) goes back to the state its stage
    starts from (`RETRY_ENTRY`); a failure of the input or the configuration is never retried.
    Generation is left out: it retries itself, with new seeds, up to max_generation_attempts.
    """
    retried = []
    failed = session.scalars(select(Asset).where(Asset.batch_id == batch_id, Asset.state == S.FAILED.value,
                                                 Asset.retryable.is_(True))).all()
    for asset in failed:
        stage = asset.failed_stage or ""
        entry = RETRY_ENTRY.get(stage)
        if entry is None or stage == "generate":
            continue
        made = retries_made(session, asset.id, stage)
        if made >= limit:
            continue
        transition(session, asset, entry, actor=actor,
                   reason=f"{RETRY_PREFIX} {made + 1} of {limit}: {stage} failed with a retryable error: "
                          f"{(asset.failure_reason or '')[:300]}")
        retried.append(asset.id)
    return retried


def waiting_for_gpus(session: Session, batch_id: int) -> int:
    """How many videos of the batch are planned or being generated (gang workers' work)."""
    return int(session.scalar(select(func.count(Asset.id)).where(
        Asset.batch_id == batch_id, Asset.state.in_([S.PLANNED.value, S.GENERATING.value]))) or 0)
