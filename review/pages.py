"""What each page shows, read from the database into plain values for the templates."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from avatarflow import records
from avatarflow.records import Run
from db.models import Asset, Batch, Event, Rendition, Review, utcnow
from db.review_models import ReviewClaim
from db.states import AssetState
from review import qcview
from review.config import REJECT_REASONS, ReviewSettings
from review.media import media_file, video_duration
from review.queue import WHY_LABELS, Queue, as_text, latest_qc, why_in_review

AUDIT_PAGE = 100
_RUN_ID = re.compile(r"^[0-9a-fA-F-]{32,36}$")


def flow_run_url(asset: Asset, settings: ReviewSettings) -> str | None:
    """The asset's Prefect flow run, from what the pipeline recorded; only http(s) links are shown."""
    try:
        run = records.read(asset.details, Run)
    except records.RecordError:
        return None
    url, run_id = (run.flow_run_url, run.flow_run_id) if run else (None, None)
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
    if isinstance(run_id, str) and _RUN_ID.match(run_id):
        return f"{settings.prefect_ui_url.rstrip('/')}/runs/flow-run/{run_id}"
    return None


def _warnings(asset: Asset) -> list[str]:
    try:
        return records.warnings(asset.details)
    except records.RecordError:
        return []


def label(asset: Asset) -> str:
    return asset.external_id or asset.key[:12]


# Ids are 64-bit integers on PostgreSQL and SQLite alike: anything longer or not ASCII digits
# names nothing (str.isdigit() accepts "²", and SQLite cannot bind a 20-digit number).
MAX_ID = 2**63 - 1


def as_id(text: str | None) -> int | None:
    """The id `text` spells in ASCII digits, if it is one a database could hold; else None."""
    text = (text or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None


def batch_name(session: Session, ref: str | None) -> str | None:
    """Batch filters may name a batch or give its id (the pipeline's artifact links use the id)."""
    if (batch_id := as_id(ref)) is not None:
        found = session.get(Batch, batch_id)
        if found is not None:
            return found.name
    return ref


def claims_of(session: Session, reviewer_id: int) -> list[int]:
    return list(session.scalars(select(ReviewClaim.asset_id).where(ReviewClaim.reviewer_id == reviewer_id)))


def load_asset(session: Session, asset_id: int) -> Asset | None:
    return session.scalars(
        select(Asset).where(Asset.id == asset_id).options(
            selectinload(Asset.batch), selectinload(Asset.renditions), selectinload(Asset.attempts),
            selectinload(Asset.qc_results), selectinload(Asset.reviews).selectinload(Review.reviewer),
        )
    ).first()


def queue_context(session: Session, queue: Queue, settings: ReviewSettings) -> dict[str, Any]:
    ids = [item.asset.id for item in queue.items]
    thumbs = set(session.scalars(
        select(Rendition.asset_id).where(Rendition.asset_id.in_(ids), Rendition.kind == "thumb")
    )) if ids else set()
    rows = []
    for item in queue.items:
        asset, qc = item.asset, item.qc
        rows.append({
            "id": asset.id, "label": label(asset), "batch": asset.batch.name, "priority": asset.priority,
            "preset": asset.preset, "created_at": asset.created_at, "prompt": asset.prompt or "",
            "why": [(w, WHY_LABELS[w]) for w in item.why], "notes": item.notes,
            "score": qc.score if qc else None, "gate": qc.gate if qc else None,
            "holder": item.claim.reviewer.username if item.claim else None,
            "holder_until": item.claim.expires_at if item.claim else None,
            "flow_run_url": flow_run_url(asset, settings), "thumb": asset.id in thumbs,
        })
    return {"rows": rows, "total": queue.total, "by_why": queue.by_why,
            "batches": sorted(queue.by_batch.items()), "shown": len(rows)}


def asset_context(session: Session, asset: Asset, settings: ReviewSettings) -> dict[str, Any]:
    kinds = {r.kind for r in asset.renditions}
    video = media_file(session, settings.data_root, asset.id, "web")
    duration = video_duration(video) if video is not None else None
    qc = latest_qc(session, [asset.id]).get(asset.id)
    metrics = qc.metrics if qc and isinstance(qc.metrics, dict) else {}
    windows = qcview.sync_windows(metrics, duration)
    qc_by_attempt = {q.attempt_id: q for q in asset.qc_results if q.attempt_id is not None}
    attempts = [{"attempt": a, "qc": qc_by_attempt.get(a.id)} for a in asset.attempts]
    events = list(session.scalars(
        select(Event).where(Event.asset_id == asset.id).order_by(Event.id.desc()).limit(12)
    ))
    checks = qc.checks if qc and isinstance(qc.checks, list) else []
    return {
        "asset": asset, "label": label(asset), "batch_name": asset.batch.name,
        "has_video": video is not None, "has_poster": "poster" in kinds,
        "has_portrait": media_file(session, settings.data_root, asset.id, "portrait") is not None,
        "duration": duration, "qc": qc, "why_list": [(w, WHY_LABELS[w]) for w in why_in_review(qc, settings.qc_margin)],
        "qc_notes": [as_text(r) for r in (qc.reasons if qc else [])],
        "offset": qcview.offset_frames(metrics), "chart": qcview.chart(windows, duration, qc.gate if qc else None),
        "windows": windows, "checks": qcview.check_rows(qc.checks if qc else []),
        "timeline": qcview.timeline(checks, duration), "frames": qcview.worst_frames(checks),
        "qc_ranges": qcview.ranges_text(qcview.qc_ranges(checks, duration)),
        "metrics": qcview.scalar_metrics(metrics), "attempts": attempts,
        "reviews": [{"review": r, "reason": REJECT_REASONS.get(r.reason_code or "", r.reason_code)}
                    for r in asset.reviews],
        "events": events, "flow_run_url": flow_run_url(asset, settings),
        "decidable": asset.state == AssetState.REVIEW_PENDING.value,
        "warnings": _warnings(asset),
    }


def audit_context(session: Session, *, asset: str, actor: str, state: str, reason: str,
                  before: str) -> dict[str, Any]:
    query = select(Event).order_by(Event.id.desc()).limit(AUDIT_PAGE + 1)
    if (asset_id := as_id(asset)) is not None:
        query = query.where(Event.asset_id == asset_id)
    if actor.strip():
        query = query.where(Event.actor.contains(actor.strip(), autoescape=True))
    if state in {s.value for s in AssetState}:
        query = query.where(Event.to_state == state)
    if reason.strip():
        query = query.where(Event.reason.contains(reason.strip(), autoescape=True))
    if (before_id := as_id(before)) is not None:
        query = query.where(Event.id < before_id)
    events = list(session.scalars(query))
    more = len(events) > AUDIT_PAGE
    events = events[:AUDIT_PAGE]
    params = {"asset": asset, "actor": actor, "state": state, "reason": reason}
    return {"events": events, "filters": params, "states": [s.value for s in AssetState],
            "next_before": events[-1].id if more and events else None,
            "filter_query": urlencode({k: v for k, v in params.items() if v})}


# ---- template filters ---------------------------------------------------------------------------

def _dt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _ago(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = max(0, int((utcnow() - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


def _num(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def register_filters(env: Environment) -> None:
    env.filters.update({"dt": _dt, "ago": _ago, "num": _num})

