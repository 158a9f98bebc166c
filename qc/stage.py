"""The QC and route stages.

    qc:    generated → qc_passed / qc_failed / review_pending (borderline), with a QCResult row
           holding the calibrated score, the raw lip-sync metrics and every technical check
    route: qc_passed → approved, or review_pending when sampled; qc_failed → planned (new seed)
           or rejected
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from avatarflow import records
from avatarflow.records import Crop, Generation, Plan, Run, Speech
from db.lifecycle import transition
from db.models import Asset, GenerationAttempt, QCResult
from db.stage import StageContext, StageOutcome
from db.states import AssetState
from inference.stage import replan
from qc.checks import check_video
from qc.gate import APPROVE, REGENERATE, REJECT, REVIEW, GateDecision, decide, route
from qc.lipsync import thread_scorer
from qc.sampling import decide_streaming

QC_STAGE, ROUTE_STAGE = "qc", "route"


def expected_video(details: dict[str, Any] | None) -> tuple[float, tuple[int, int] | None]:
    """How long and how large the generated video should be, as the plan stage worked it out.

    A preview of long speech stops after its clips; Live Avatar picks the size from the crop's
    aspect ratio and the preset's area (inference.output_rules).
    """
    plan = records.read(details, Plan)
    speech = records.need(details, Speech, stage=QC_STAGE)
    if plan is None or plan.video_seconds is None:
        return speech.duration_s, plan.video_size if plan else None
    return plan.video_seconds, plan.video_size


def qc_asset(ctx: StageContext, asset_id: int) -> StageOutcome:
    """Score lip-sync, run the technical checks, apply the gate; record all of it."""
    settings, actor = ctx.settings, ctx.actor
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state != AssetState.GENERATED or asset.parent_id is not None:
            return StageOutcome.stay(asset_id, QC_STAGE, asset, "nothing to check")
        video = Path(records.need(asset.details, Generation, stage=QC_STAGE).video_path)
        crop = Path(records.need(asset.details, Crop, stage=QC_STAGE).path)
        seconds, expected_size = expected_video(asset.details)
        is_split = session.scalar(select(func.count(Asset.id)).where(Asset.parent_id == asset_id)) > 0
        attempt_id = session.scalar(select(GenerationAttempt.id).where(GenerationAttempt.asset_id == asset_id)
                                    .order_by(GenerationAttempt.number.desc()))

    # One pass over the video for the lip-sync score and every technical check.
    found = check_video(video, expected_seconds=seconds, expected_size=expected_size, reference_image=crop,
                        scorer=ctx.components.scorer or thread_scorer(settings))  # fmt: skip
    decision = decide(found.score, found.checks, gate=settings.qc_gate, margin=settings.qc_margin,
                      lipsync_metrics=found.gate_metrics())  # fmt: skip
    reasons = list(decision.reasons)
    if found.lipsync_error:
        reasons.append(f"lip-sync scorer failed: {found.lipsync_error}")
    record = found.to_record()

    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        session.add(QCResult(
            asset_id=asset_id, attempt_id=attempt_id, scorer=found.scorer or "none",
            score=found.score, gate=settings.qc_gate, verdict=decision.verdict,
            reasons=reasons, metrics=record.metrics, checks=record.checks, calibration=found.calibration,
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
                   data={"score": found.score, "verdict": decision.verdict})
        return StageOutcome(asset_id, QC_STAGE, target.value, True, summary)


def _latest_qc(session, asset_id: int) -> QCResult | None:  # type: ignore[no-untyped-def]
    return session.scalars(select(QCResult).where(QCResult.asset_id == asset_id).order_by(QCResult.id.desc())).first()


def route_asset(ctx: StageContext, asset_id: int) -> StageOutcome:
    """qc_passed → approved or (sampled) review_pending; qc_failed → regenerate or rejected."""
    settings, actor = ctx.settings, ctx.actor
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state not in (AssetState.QC_PASSED, AssetState.QC_FAILED):
            return StageOutcome.stay(asset_id, ROUTE_STAGE, asset, "nothing to route")
        if ctx.flow_run_url:
            asset.details = records.write(asset.details, Run(flow_run_url=ctx.flow_run_url))
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
        # Regeneration sends the asset back to `planned`: the chain ends here, the next round
        # generates it again.
        return StageOutcome(asset_id, ROUTE_STAGE, asset.state, where.action != REGENERATE, where.reason)


def _as_decision(qc: QCResult):  # type: ignore[no-untyped-def]
    return GateDecision(verdict=qc.verdict, reasons=list(qc.reasons), lipsync_score=qc.score, gate=qc.gate,
                        margin=0.0)
