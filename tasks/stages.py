"""The join and transcode stages (plain functions; the flows wrap them in Prefect tasks).

    join:      split → generated     (the segments' videos in order; writes Generation and Plan)
    transcode: qc_passed / review_pending → same state, with web and small renditions, poster
               and thumbnail recorded
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from avatarflow import records
from avatarflow.errors import AvatarflowError
from avatarflow.records import Generation, Plan, Speech
from db.lifecycle import transition
from db.models import Asset
from db.stage import StageContext, StageOutcome
from db.states import AssetState
from tasks.transcode import join_segments, record_renditions, rendition_stem, transcode

JOIN_STAGE, TRANSCODE_STAGE = "join", "transcode"


def joined_plan(parent: Asset, segments: list[Asset]) -> Plan:
    """The plan QC checks a joined video against: its segments' lengths added up, their size."""
    plans = [records.need(s.details, Plan, stage=JOIN_STAGE) for s in segments]
    speech = records.read(parent.details, Speech)
    lengths = [p.video_seconds for p in plans]
    return plans[0].model_copy(update={
        "seconds": speech.duration_s if speech else sum(p.seconds for p in plans),
        "samples": None, "num_clip": sum(p.num_clip for p in plans),
        "video_seconds": round(sum(lengths), 3) if all(v is not None for v in lengths) else None,
        "segments": len(plans),
    })


def join_asset(ctx: StageContext, asset_id: int) -> StageOutcome:
    """split → generated: the segments' videos joined in order (or failed, if a segment failed)."""
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state != AssetState.SPLIT:
            return StageOutcome.stay(asset_id, JOIN_STAGE, asset, "not split")
        segments = list(session.scalars(select(Asset).where(Asset.parent_id == asset_id)
                                        .order_by(Asset.segment_index)))
        broken = [s for s in segments if s.state == AssetState.FAILED]
        if broken:
            first = broken[0]
            reason = f"segment {first.segment_index} failed: {first.failure_reason}"
            transition(session, asset, AssetState.FAILED, actor=ctx.actor, reason=reason,
                       failed_stage=JOIN_STAGE, retryable=bool(first.retryable))
            return StageOutcome(asset_id, JOIN_STAGE, AssetState.FAILED.value, False, reason, bool(first.retryable))
        if not segments or any(s.state != AssetState.GENERATED for s in segments):
            return StageOutcome.stay(asset_id, JOIN_STAGE, asset, "segments not all generated")
        videos = [Path(records.need(s.details, Generation, stage=JOIN_STAGE).video_path) for s in segments]
        plan = joined_plan(asset, segments)
        out = ctx.settings.storage.asset_dir(asset.key) / "joined.mp4"
    try:
        join_segments(videos, out)
    except AvatarflowError as exc:
        with ctx.database.session() as session:
            asset = session.get(Asset, asset_id)
            transition(session, asset, AssetState.FAILED, actor=ctx.actor, reason=str(exc),
                       failed_stage=JOIN_STAGE, retryable=True)
        return StageOutcome(asset_id, JOIN_STAGE, AssetState.FAILED.value, False, str(exc), True)
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        # QC checks the joined video against what its segments were planned to last and look like.
        asset.details = records.write(asset.details, plan,
                                      Generation(video_path=str(out), joined_segments=len(videos)))
        for segment in session.scalars(select(Asset).where(Asset.parent_id == asset_id)):
            transition(session, segment, AssetState.JOINED, actor=ctx.actor, reason=f"joined into asset {asset_id}")
        transition(session, asset, AssetState.GENERATED, actor=ctx.actor,
                   reason=f"{len(videos)} segment videos joined in order")
    return StageOutcome(asset_id, JOIN_STAGE, AssetState.GENERATED.value, True)


def transcode_asset(ctx: StageContext, asset_id: int) -> StageOutcome:
    """Web and small renditions, poster and thumbnail for a video that passed QC or awaits review."""
    settings = ctx.settings
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state not in (AssetState.QC_PASSED, AssetState.REVIEW_PENDING):
            return StageOutcome.stay(asset_id, TRANSCODE_STAGE, asset, "nothing to transcode")
        if any(r.kind == "web" for r in asset.renditions):  # a re-run after the renditions were made
            return StageOutcome(asset_id, TRANSCODE_STAGE, asset.state, True, "renditions already made")
        source = Path(records.need(asset.details, Generation, stage=TRANSCODE_STAGE).video_path)
        out_dir = settings.storage.asset_dir(asset.key) / "renditions"
        name = rendition_stem(asset.batch.name, asset.key, asset.preset)
    try:
        files = transcode(source, out_dir, name=name, target_lufs=settings.audio_target_lufs,
                          small_height=settings.transcode_small_height, timeout_s=settings.transcode_timeout_s,
                          x264_preset=settings.transcode_x264_preset)
    except AvatarflowError as exc:
        retryable = getattr(exc, "retryable", True)
        with ctx.database.session() as session:
            asset = session.get(Asset, asset_id)
            transition(session, asset, AssetState.FAILED, actor=ctx.actor, reason=str(exc),
                       failed_stage=TRANSCODE_STAGE, retryable=retryable)
        return StageOutcome(asset_id, TRANSCODE_STAGE, AssetState.FAILED.value, False, str(exc), retryable)
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        record_renditions(session, asset, files)
        return StageOutcome(asset_id, TRANSCODE_STAGE, asset.state, True)
