"""The review queue: assets waiting for a person, most urgent first, and why each one is there."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from db.models import Asset, QCResult
from db.review_models import ReviewClaim
from db.states import AssetState
from review.claims import active_claims

# Why an asset waits for review, in the order the queue shows the labels.
WHY_LABELS: dict[str, str] = {
    "borderline": "Borderline score",
    "technical": "Technical warning",
    "sampled": "Sampled",
    "flagged": "Flagged by QC",
    "unscored": "No QC result",
}
# A score this close to the gate counts as borderline even when a technical warning was the
# reason QC gave (both are worth saying). The app passes the shared setting qc_margin.
BORDERLINE_MARGIN = 0.03
_PASSING = {"pass", "passed", "ok", "true"}


@dataclass
class QueueItem:
    asset: Asset
    qc: QCResult | None
    why: list[str]
    notes: list[str]  # QC's own reasons, as text
    claim: ReviewClaim | None = None


@dataclass
class Queue:
    items: list[QueueItem]
    total: int
    by_why: Counter[str] = field(default_factory=Counter)
    by_batch: Counter[str] = field(default_factory=Counter)


def as_text(value: Any) -> str:
    """QC reasons and check fields may be strings or small dicts; show either readably."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("message", "reason", "text", "detail"):
            if isinstance(value.get(key), str):
                return value[key]
    return json.dumps(value, default=str)


def failing_checks(qc: QCResult) -> list[dict[str, Any]]:
    """Technical checks whose verdict is anything but a pass."""
    found = []
    for check in qc.checks or []:
        if not isinstance(check, dict):
            continue
        verdict = check.get("verdict", check.get("status", check.get("passed", "pass")))
        if str(verdict).lower() not in _PASSING:
            found.append(check)
    return found


def why_in_review(qc: QCResult | None, margin: float = BORDERLINE_MARGIN) -> list[str]:
    if qc is None:
        return ["unscored"]
    why = []
    technical = bool(failing_checks(qc))
    near_gate = qc.score is not None and abs(qc.score - qc.gate) <= margin + 1e-9
    mentions_score = any(w in as_text(r).lower() for r in qc.reasons or [] for w in ("score", "sync"))
    if qc.verdict == "borderline" and (not technical or near_gate or mentions_score):
        why.append("borderline")
    if technical:
        why.append("technical")
    if qc.sampled_for_review:
        why.append("sampled")
    return why or ["flagged"]


def latest_qc(session: Session, asset_ids: list[int]) -> dict[int, QCResult]:
    if not asset_ids:
        return {}
    newest = (
        select(func.max(QCResult.id)).where(QCResult.asset_id.in_(asset_ids)).group_by(QCResult.asset_id)
    )
    rows = session.scalars(select(QCResult).where(QCResult.id.in_(newest)))
    return {qc.asset_id: qc for qc in rows}


def load_queue(session: Session, *, batch: str | None = None, why: str | None = None,
               margin: float = BORDERLINE_MARGIN) -> Queue:
    """Every asset in review_pending: highest priority first, then oldest; filters on top."""
    assets = list(
        session.scalars(
            select(Asset)
            .where(Asset.state == AssetState.REVIEW_PENDING.value)
            .order_by(Asset.priority.desc(), Asset.created_at, Asset.id)
            .options(selectinload(Asset.batch))
        )
    )
    qcs = latest_qc(session, [a.id for a in assets])
    claims = active_claims(session)
    queue = Queue(items=[], total=len(assets))
    for asset in assets:
        qc = qcs.get(asset.id)
        item = QueueItem(asset, qc, why_in_review(qc, margin), [as_text(r) for r in (qc.reasons if qc else [])],
                         claims.get(asset.id))
        queue.by_why.update(item.why)
        queue.by_batch[asset.batch.name] += 1
        # By name, or by id (the pipeline's Prefect artifact links to /queue?batch=<id>).
        if batch and batch not in (asset.batch.name, str(asset.batch_id)):
            continue
        if why and why not in item.why:
            continue
        queue.items.append(item)
    return queue


def next_for(session: Session, reviewer_id: int, *, batch: str | None = None, why: str | None = None,
             skip: frozenset[int] = frozenset(), margin: float = BORDERLINE_MARGIN) -> int | None:
    """The first asset in the (filtered) queue that nobody else holds and the reviewer did not skip."""
    for item in load_queue(session, batch=batch, why=why, margin=margin).items:
        if item.asset.id in skip:
            continue
        if item.claim is None or item.claim.reviewer_id == reviewer_id:
            return item.asset.id
    return None
