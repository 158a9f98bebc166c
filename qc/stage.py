"""The QC and route stages against the database.

QC: generated → qc_passed / qc_failed / review_pending (borderline), with a QCResult row holding
the calibrated score, the raw lip-sync metrics and every technical check. Route: qc_passed →
approved, or review_pending when sampled; qc_failed → planned (new seed) or rejected.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from avatarflow.errors import AvatarflowError
from avatarflow.settings import Settings
from db.lifecycle import transition
from db.models import Asset, GenerationAttempt, QCResult
from db.session import Database
from db.states import AssetState
from inference.stage import StageOutcome, replan
from qc.gate import APPROVE, REGENERATE, REJECT, REVIEW, decide, route
from qc.lipsync import LipSyncResult, LipSyncScorer, default_scorer
from qc.sampling import decide_streaming
from qc.technical import run_checks

QC_STAGE = "qc"
_scorers: dict[int, LipSyncScorer] = {}
_scorer_lock = threading.Lock()


def thread_scorer() -> LipSyncScorer:
    """One scorer per thread: its face tracker keeps per-video state."""
    key = threading.get_ident()
    with _scorer_lock:
        if key not in _scorers:
            _scorers[key] = default_scorer()
        return _scorers[key]


def _expected(plan: dict[str, Any], audio_seconds: float) -> tuple[float, tuple[int, int] | None]:
    """How long and how large the generated video should be, as the plan stage worked it out.

    A preview of long speech stops after its clips; Live Avatar picks the size from the crop's
    aspect ratio and the preset's area (inference.output_rules). Plans made before these were
    recorded fall back to the speech's length and no size check.
    """
    seconds = float(plan.get("video_seconds") or audio_seconds)
    size = plan.get("video_size")
    return seconds, (int(size[0]), int(size[1])) if size else None


def qc_asset(database: Database, settings: Settings, asset_id: int, *, scorer: LipSyncScorer | None = None,
             actor: str = "qc") -> StageOutcome:
    """Score lip-sync, run the technical checks, apply the gate; record all of it."""
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state != AssetState.GENERATED or asset.parent_id is not None:
            return StageOutcome(asset_id, asset.state if asset else "missing", "nothing to check")
        video = Path(asset.details["video_path"])
        crop = Path(asset.details["crop_path"])
        seconds, expected_size = _expected(asset.details.get("plan") or {},
                                           float(asset.details["audio"]["duration_s"]))
        is_split = session.scalar(select(func.count(Asset.id)).where(Asset.parent_id == asset_id)) > 0
        attempt_id = session.scalar(select(GenerationAttempt.id).where(GenerationAttempt.asset_id == asset_id)
                                    .order_by(GenerationAttempt.number.desc()))

    scorer = scorer or thread_scorer()
    lipsync: LipSyncResult | None = None
    lipsync_error = None
    try:
        lipsync = scorer.score(video)
    except AvatarflowError as exc:
        lipsync_error = str(exc)
    checks = run_checks(video, expected_seconds=seconds, expected_size=expected_size,
                        reference_image=crop)
    metrics: dict[str, Any] = lipsync.to_dict() if lipsync else {"error": lipsync_error}
    decision = decide(
        lipsync.score if lipsync else None, checks, gate=settings.qc_gate, margin=settings.qc_margin,
        lipsync_metrics={"offset_frames": lipsync.offset_frames if lipsync else None,
                         "face_tracked_fraction": lipsync.face_fraction if lipsync else None},
    )
    reasons = list(decision.reasons) + ([f"lip-sync scorer failed: {lipsync_error}"] if lipsync_error else [])

    with database.session() as session:
        asset = session.get(Asset, asset_id)
        session.add(QCResult(
            asset_id=asset_id, attempt_id=attempt_id, scorer=scorer.name,
            score=lipsync.score if lipsync else None, gate=settings.qc_gate, verdict=decision.verdict,
            reasons=reasons, metrics=metrics, checks=[c.to_dict() for c in checks],
            calibration=lipsync.calibration if lipsync else None,
        ))
        summary = reasons[0] if reasons else decision.verdict
        if decision.verdict == "pass":
            target = AssetState.QC_PASSED
        elif decision.verdict == "borderline":
            target = AssetState.REVIEW_PENDING
        elif is_split:
            # A joined video is not regenerated automatically (that would redo every segment):
            # a person decides what to do with it.
            target = AssetState.REVIEW_PENDING
            summary = "failed QC; joined from segments, so a reviewer decides: " + summary
        else:
            target = AssetState.QC_FAILED
        transition(session, asset, target, actor=actor, reason=summary,
                   data={"score": lipsync.score if lipsync else None, "verdict": decision.verdict})
        return StageOutcome(asset_id, target.value, summary)


def _latest_qc(session, asset_id: int) -> QCResult | None:  # type: ignore[no-untyped-def]
    return session.scalars(select(QCResult).where(QCResult.asset_id == asset_id).order_by(QCResult.id.desc())).first()


def route_asset(database: Database, settings: Settings, asset_id: int, *, actor: str = "route",
                flow_run_url: str | None = None) -> StageOutcome:
    """qc_passed → approved or (sampled) review_pending; qc_failed → regenerate or rejected."""
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state not in (AssetState.QC_PASSED, AssetState.QC_FAILED):
            return StageOutcome(asset_id, asset.state if asset else "missing", "nothing to route")
        if flow_run_url:
            asset.details = {**asset.details, "flow_run_url": flow_run_url}
        qc = _latest_qc(session, asset_id)
        assert qc is not None, "a checked asset has a QC result"
        sampled = False
        if asset.state == AssetState.QC_PASSED:
            # Counts of this batch's passed videos decided so far keep the sample within ±1 of
            # the exact rate, whatever order the videos arrive in.
            decided = select(func.count(QCResult.id)).join(Asset).where(
                Asset.batch_id == asset.batch_id, QCResult.verdict == "pass", QCResult.id != qc.id,
                Asset.state.not_in([AssetState.QC_PASSED.value, AssetState.GENERATED.value]))
            arrived = int(session.scalar(decided) or 0)
            chosen = int(session.scalar(decided.where(QCResult.sampled_for_review.is_(True))) or 0)
            sampled = decide_streaming(asset.key, arrived, min(chosen, arrived), settings.review_sample_rate,
                                       salt=str(asset.batch_id))
            qc.sampled_for_review = sampled
        attempts = max(1, len(asset.attempts))
        decision = _as_decision(qc)
        where = route(decision, attempts, settings.max_generation_attempts, sampled, asset_key=asset.key)
        if where.action == APPROVE:
            transition(session, asset, AssetState.APPROVED, actor=actor, reason=where.reason)
        elif where.action == REVIEW:
            transition(session, asset, AssetState.REVIEW_PENDING, actor=actor, reason=where.reason,
                       data={"sampled": sampled})
        elif where.action == REGENERATE:
            replan(session, asset, actor=actor, reason=where.reason)
        elif where.action == REJECT:
            transition(session, asset, AssetState.REJECTED, actor=actor, reason=where.reason)
        return StageOutcome(asset_id, asset.state, where.reason)


def _as_decision(qc: QCResult):  # type: ignore[no-untyped-def]
    from qc.gate import GateDecision

    return GateDecision(verdict=qc.verdict, reasons=list(qc.reasons), lipsync_score=qc.score, gate=qc.gate,
                        margin=0.0)
