"""The join and transcode stages against the database (plain functions; Prefect wraps them)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from avatarflow.errors import AvatarflowError
from avatarflow.settings import Settings
from db.lifecycle import transition
from db.models import Asset
from db.session import Database
from db.states import AssetState
from inference.stage import StageOutcome
from tasks.transcode import join_segments, record_renditions, rendition_stem, transcode

JOIN_STAGE, TRANSCODE_STAGE = "join", "transcode"


def join_asset(database: Database, settings: Settings, asset_id: int, *, actor: str = "join") -> StageOutcome:
    """split → generated: the segments' videos joined in order (or failed, if a segment failed)."""
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state != AssetState.SPLIT:
            return StageOutcome(asset_id, asset.state if asset else "missing", "not split")
        segments = session.scalars(select(Asset).where(Asset.parent_id == asset_id).order_by(Asset.segment_index)).all()
        broken = [s for s in segments if s.state == AssetState.FAILED]
        if broken:
            first = broken[0]
            reason = f"segment {first.segment_index} failed: {first.failure_reason}"
            transition(session, asset, AssetState.FAILED, actor=actor, reason=reason, failed_stage=JOIN_STAGE,
                       retryable=bool(first.retryable))
            return StageOutcome(asset_id, AssetState.FAILED.value, reason)
        if not segments or any(s.state != AssetState.GENERATED for s in segments):
            return StageOutcome(asset_id, asset.state, "segments not all generated")
        videos = [Path(s.details["video_path"]) for s in segments]
        plans = [s.details.get("plan") or {} for s in segments]
        out = settings.storage.asset_dir(asset.key) / "joined.mp4"
    try:
        join_segments(videos, out)
    except AvatarflowError as exc:
        with database.session() as session:
            asset = session.get(Asset, asset_id)
            transition(session, asset, AssetState.FAILED, actor=actor, reason=str(exc), failed_stage=JOIN_STAGE,
                       retryable=True)
        return StageOutcome(asset_id, AssetState.FAILED.value, str(exc))
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        # QC checks the joined video against what its segments were planned to last and look like.
        joined_plan = {"video_seconds": round(sum(float(p.get("video_seconds") or 0) for p in plans), 3)
                       if all(p.get("video_seconds") for p in plans) else None,
                       "video_size": plans[0].get("video_size"), "segments": len(plans)}
        asset.details = {**asset.details, "video_path": str(out),
                         "plan": {**(asset.details.get("plan") or {}), **joined_plan}}
        for segment in session.scalars(select(Asset).where(Asset.parent_id == asset_id)):
            transition(session, segment, AssetState.JOINED, actor=actor, reason=f"joined into asset {asset_id}")
        transition(session, asset, AssetState.GENERATED, actor=actor, reason=f"{len(videos)} segment videos joined in order")
    return StageOutcome(asset_id, AssetState.GENERATED.value)


def transcode_asset(database: Database, settings: Settings, asset_id: int, *, actor: str = "transcode") -> StageOutcome:
    """Web and small renditions, poster and thumbnail for a video that passed QC or awaits review."""
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state not in (AssetState.QC_PASSED, AssetState.REVIEW_PENDING):
            return StageOutcome(asset_id, asset.state if asset else "missing", "nothing to transcode")
        source = Path(asset.details["video_path"])
        out_dir = settings.storage.asset_dir(asset.key) / "renditions"
        name = rendition_stem(asset.batch.name, asset.key, asset.preset)
    try:
        files = transcode(source, out_dir, name=name, target_lufs=settings.audio_target_lufs,
                          small_height=settings.transcode_small_height, timeout_s=settings.transcode_timeout_s,
                          x264_preset=settings.transcode_x264_preset)
    except AvatarflowError as exc:
        with database.session() as session:
            asset = session.get(Asset, asset_id)
            transition(session, asset, AssetState.FAILED, actor=actor, reason=str(exc),
                       failed_stage=TRANSCODE_STAGE, retryable=getattr(exc, "retryable", True))
        return StageOutcome(asset_id, AssetState.FAILED.value, str(exc))
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        record_renditions(session, asset, files)
    return StageOutcome(asset_id, asset.state)
