"""Read-side queries shared by the CLI, the flows and the review app."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from avatarflow.errors import NotFound
from db.models import Asset, Batch, QCResult
from db.states import AssetState


def state_counts(session: Session, batch_id: int | None = None) -> dict[str, int]:
    """Assets per state, in pipeline order, states with no assets included as 0."""
    query = select(Asset.state, func.count()).group_by(Asset.state)
    if batch_id is not None:
        query = query.where(Asset.batch_id == batch_id)
    found = dict(session.execute(query).tuples().all())
    counts = {state.value: found.pop(state.value, 0) for state in AssetState}
    counts.update(found)  # states written by a newer version of the code still show
    return counts


def get_batch(session: Session, ref: str) -> Batch:
    query = select(Batch).where(Batch.name == ref)
    if ref.isdigit():
        query = select(Batch).where(or_(Batch.name == ref, Batch.id == int(ref)))
    batch = session.scalars(query).first()
    if batch is None:
        raise NotFound(f"no batch named {ref!r}; `avatarflow status` lists the batches")
    return batch


def batch_summaries(session: Session) -> list[tuple[Batch, int]]:
    rows = session.execute(
        select(Batch, func.count(Asset.id)).outerjoin(Asset).group_by(Batch.id).order_by(Batch.id)
    ).tuples()
    return list(rows.all())


def find_asset(session: Session, ref: str) -> Asset:
    """An asset by numeric id, key (or a unique key prefix of 6+ characters) or external id."""
    options = (selectinload(Asset.events), selectinload(Asset.attempts), selectinload(Asset.batch))
    conditions = [Asset.external_id == ref, Asset.key == ref]
    if ref.isdigit():
        conditions.append(Asset.id == int(ref))
    if len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref.lower()):
        conditions.append(Asset.key.startswith(ref.lower()))
    matches = session.scalars(select(Asset).where(or_(*conditions)).options(*options).limit(3)).all()
    if not matches:
        raise NotFound(f"no asset with id, key or external id {ref!r}")
    if len(matches) > 1:
        raise NotFound(f"{ref!r} matches several assets ({', '.join(a.key[:12] for a in matches)}); give more of the key")
    return matches[0]


def batch_results(session: Session, batch_id: int, *, review_url: str) -> list[dict[str, Any]]:
    """One row per top-level asset of the batch: state, score, verdict, attempts, why, review link."""
    rows = []
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
            "review": f"{review_url}/assets/{asset.id}" if asset.state == AssetState.REVIEW_PENDING else "",
        })
    return rows
