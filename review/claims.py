"""Review claims: an asset is held by the one reviewer whose page has it open, until it expires.

The database decides every race. Renewing or taking over an expired claim is one conditional
UPDATE; taking a free asset is an INSERT that the primary key on asset_id lets only one writer win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from db.lifecycle import record
from db.models import Asset, Reviewer, utcnow
from db.review_models import ReviewClaim
from db.states import AssetState


@dataclass(frozen=True)
class ClaimOutcome:
    held: bool  # True: the asking reviewer now holds the asset
    holder: str | None = None  # who holds it when `held` is False
    expires_at: datetime | None = None


def claim(session: Session, asset: Asset, reviewer: Reviewer, minutes: float) -> ClaimOutcome:
    """Claim (or renew the claim on) `asset` for `reviewer`; say who holds it when someone else does.

    A reviewer holds one asset at a time: claiming a new one releases the others, so browsing the
    queue does not lock assets away from colleagues.
    """
    if asset.state != AssetState.REVIEW_PENDING.value:
        return ClaimOutcome(held=False)
    now = utcnow()
    expires = now + timedelta(minutes=minutes)
    renewed = session.execute(
        update(ReviewClaim)
        .where(
            ReviewClaim.asset_id == asset.id,
            or_(ReviewClaim.reviewer_id == reviewer.id, ReviewClaim.expires_at < now),
        )
        .values(reviewer_id=reviewer.id, expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    fresh = False
    if renewed.rowcount != 1:
        try:
            with session.begin_nested():
                session.add(ReviewClaim(asset_id=asset.id, reviewer_id=reviewer.id, claimed_at=now,
                                        expires_at=expires))
            fresh = True
        except IntegrityError:
            holder = session.get(ReviewClaim, asset.id, populate_existing=True)
            if holder is None:  # released between our INSERT and this read: let the caller retry
                return ClaimOutcome(held=False)
            return ClaimOutcome(held=False, holder=holder.reviewer.username, expires_at=holder.expires_at)
    session.execute(
        delete(ReviewClaim)
        .where(ReviewClaim.reviewer_id == reviewer.id, ReviewClaim.asset_id != asset.id)
        .execution_options(synchronize_session=False)
    )
    if fresh:
        record(session, asset, actor=actor_name(reviewer), reason="review claimed",
               data={"expires_at": expires.isoformat()})
    return ClaimOutcome(held=True, holder=reviewer.username, expires_at=expires)


def release(session: Session, asset_id: int, reviewer: Reviewer) -> bool:
    result = session.execute(
        delete(ReviewClaim)
        .where(ReviewClaim.asset_id == asset_id, ReviewClaim.reviewer_id == reviewer.id)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def active_claims(session: Session) -> dict[int, ReviewClaim]:
    """Unexpired claims by asset id."""
    rows = session.scalars(
        select(ReviewClaim)
        .where(ReviewClaim.expires_at >= utcnow())
        .options(selectinload(ReviewClaim.reviewer))
    )
    return {row.asset_id: row for row in rows}


def actor_name(reviewer: Reviewer) -> str:
    """How a reviewer appears in the event log."""
    return f"reviewer:{reviewer.username}"
