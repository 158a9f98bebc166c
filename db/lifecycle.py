"""Moving assets through the state machine, and claiming them so two workers never share one."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from avatarflow.errors import ClaimConflict, IllegalTransition
from db.models import Asset, Event, utcnow
from db.states import RETRY_ENTRY, AssetState, next_states


def transition(
    session: Session,
    asset: Asset,
    to: AssetState | str,
    *,
    actor: str,
    reason: str | None = None,
    data: dict[str, Any] | None = None,
    failed_stage: str | None = None,
    retryable: bool | None = None,
    claimed_by: str | None = None,
) -> Event:
    """Move `asset` to state `to` and append the event that says who, when, from, to and why.

    Raises IllegalTransition when the state machine does not allow the move, and ClaimConflict
    when another writer changed the asset since it was read (or `claimed_by` no longer holds it).
    """
    current = AssetState(asset.state)
    target = AssetState(to)
    label = asset.key[:12]  # read now: after a failed flush the object can no longer load
    if target not in next_states(current):
        allowed = ", ".join(sorted(next_states(current))) or "nothing (terminal state)"
        raise IllegalTransition(
            f"asset {asset.key[:12]} cannot go from {current} to {target}; from {current} it "
            f"can go to {allowed}"
        )
    if claimed_by is not None and asset.claimed_by != claimed_by:
        raise ClaimConflict(
            f"asset {asset.key[:12]} is claimed by {asset.claimed_by or 'nobody'}, not {claimed_by}"
        )
    if target is AssetState.FAILED:
        if not failed_stage or not reason:
            raise ValueError("a move to failed needs the failed stage and a reason")
        asset.failed_stage = failed_stage
        asset.failure_reason = reason
        asset.retryable = bool(retryable)
    elif current is AssetState.FAILED:
        entry = RETRY_ENTRY.get(asset.failed_stage or "")
        if entry is not None and entry is not target:
            raise IllegalTransition(
                f"asset {asset.key[:12]} failed in {asset.failed_stage}; a re-run restarts it "
                f"from {entry}, not {target}"
            )
        asset.failed_stage = asset.failure_reason = asset.retryable = None
    asset.state = target.value
    event = Event(
        asset=asset,
        actor=actor,
        from_state=current.value,
        to_state=target.value,
        reason=reason,
        data=dict(data or {}, **({"retryable": bool(retryable)} if target is AssetState.FAILED else {})),
    )
    session.add(event)
    try:
        session.flush()
    except StaleDataError as exc:
        raise ClaimConflict(
            f"asset {label} was changed by another worker while moving to {target}; "
            "reload it and try again"
        ) from exc
    return event


def record(session: Session, asset: Asset, *, actor: str, reason: str, data: dict[str, Any] | None = None) -> Event:
    """Append a fact about an asset that is not a state change (a warning, a claim, a note)."""
    event = Event(asset=asset, actor=actor, from_state=asset.state, to_state=asset.state,
                  reason=reason, data=data or {})
    session.add(event)
    return event


def _claimable(now: datetime, worker: str | None = None) -> Any:
    """Unclaimed, or the claim has expired (its worker died), or `worker` holds it (a renewal)."""
    free = or_(Asset.claimed_by.is_(None), Asset.claim_expires_at < now)
    return free if worker is None else or_(free, Asset.claimed_by == worker)


def try_claim(session: Session, asset_id: int, worker: str, lease_seconds: float) -> bool:
    """Claim one asset for `worker` unless someone else holds an unexpired claim.

    One conditional UPDATE does it, so the database decides the race: on PostgreSQL the second
    writer waits for the first and then sees the claim; on SQLite writers are serialised.
    """
    now = utcnow()
    result = session.execute(
        update(Asset)
        .where(Asset.id == asset_id, _claimable(now, worker))
        .values(
            claimed_by=worker,
            claim_expires_at=now + timedelta(seconds=lease_seconds),
            version=Asset.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def claim_next(
    session: Session,
    worker: str,
    states: Iterable[AssetState | str],
    *,
    lease_seconds: float = 900,
    batch_id: int | None = None,
    presets: Collection[str] | None = None,
    candidates: int = 16,
) -> Asset | None:
    """Claim the most urgent unclaimed asset in one of `states`, of `presets` if given.

    Order: highest priority; then the oldest batch; within a batch the most GPU work first
    (`Asset.gpu_work`: longest-processing-time first, so a batch does not end with one gang
    making its longest video while the others have nothing left); then the oldest asset.
    """
    now = utcnow()
    query = (
        select(Asset.id)
        .where(Asset.state.in_([AssetState(s).value for s in states]), _claimable(now))
        .order_by(Asset.priority.desc(), Asset.batch_id, Asset.gpu_work.desc().nulls_last(),
                  Asset.created_at, Asset.id)
        .limit(candidates)
    )
    if batch_id is not None:
        query = query.where(Asset.batch_id == batch_id)
    if presets is not None:
        query = query.where(Asset.preset.in_(list(presets)))
    if session.get_bind().dialect.name == "postgresql":
        # Skip rows another worker is claiming right now instead of queueing behind its lock.
        query = query.with_for_update(skip_locked=True)
    while True:
        candidate_ids = session.scalars(query).all()
        if not candidate_ids:
            return None
        for asset_id in candidate_ids:
            if try_claim(session, asset_id, worker, lease_seconds):
                asset = session.get(Asset, asset_id, populate_existing=True)
                assert asset is not None
                record(session, asset, actor=worker, reason="claimed", data={"lease_s": lease_seconds})
                session.flush()
                return asset
        # Every candidate went to other workers between the read and the claim: look again.


def release(session: Session, asset: Asset, worker: str) -> None:
    """Give up a claim held by `worker` (a no-op when it holds none)."""
    result = session.execute(
        update(Asset)
        .where(Asset.id == asset.id, Asset.claimed_by == worker)
        .values(claimed_by=None, claim_expires_at=None, version=Asset.version + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:
        session.refresh(asset)
