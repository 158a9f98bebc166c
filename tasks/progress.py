"""Where a batch stands, stage by stage, and what happened to each of its assets.

Plain functions over the database, for `avatarflow run`'s display and its closing table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, selectinload

from db.models import Asset, Rendition
from db.states import AssetState

S = AssetState
# The stages an operator watches, in order (join belongs to generate; route decides approved,
# review or regenerate).
STAGES = ("preprocess", "plan", "generate", "qc", "transcode", "route")
_INDEX = {name: i for i, name in enumerate(STAGES)}
# How many of STAGES an asset in each state has finished.
_FINISHED = {
    S.SUBMITTED: 0, S.PREPROCESSED: 1, S.SPLIT: 1, S.PLANNED: 2, S.GENERATING: 2, S.GENERATED: 3,
    S.QC_FAILED: 5, S.QC_PASSED: 4, S.APPROVED: 6, S.REJECTED: 6, S.DELIVERED: 6,
}
_FAILED_AT = {"verify": "generate", "join": "generate", "deliver": "route"}


@dataclass(frozen=True)
class StageProgress:
    stage: str
    done: int  # assets that finished this stage
    total: int  # assets that will pass through it (those that failed earlier never will)
    here: int  # assets at this stage now
    failed: int  # assets that failed at this stage


def finished_stages(state: str, failed_stage: str | None, has_renditions: bool) -> tuple[int, int | None]:
    """(stages finished, index of the stage it failed at or None)."""
    if state == S.FAILED:
        stage = _FAILED_AT.get(failed_stage or "", failed_stage or "preprocess")
        at = _INDEX.get(stage, 0)
        return at, at
    if state == S.REVIEW_PENDING:  # sent to review by QC; transcoded for the reviewers next
        return (6 if has_renditions else 4), None
    return _FINISHED.get(AssetState(state), 0), None


def stage_progress(rows: list[tuple[str, str | None, bool]]) -> list[StageProgress]:
    """Per stage, from (state, failed stage, has renditions) of each top-level asset."""
    placed = [finished_stages(*row) for row in rows]
    progress = []
    for i, stage in enumerate(STAGES):
        failed_before = sum(1 for _, at in placed if at is not None and at < i)
        progress.append(StageProgress(
            stage=stage,
            done=sum(1 for done, _ in placed if done > i),  # a failed asset did the stages before
            total=len(placed) - failed_before,
            here=sum(1 for done, at in placed if at is None and done == i),
            failed=sum(1 for _, at in placed if at == i),
        ))
    return progress


def batch_stage_rows(session: Session, batch_id: int) -> list[tuple[str, str | None, bool]]:
    has_renditions = exists().where(Rendition.asset_id == Asset.id)
    query = (select(Asset.state, Asset.failed_stage, has_renditions)
             .where(Asset.batch_id == batch_id, Asset.parent_id.is_(None)).order_by(Asset.id))
    return [(state, stage, bool(has)) for state, stage, has in session.execute(query)]


@dataclass(frozen=True)
class AssetOutcome:
    """What a run did with one asset, as the operator's closing table shows it."""

    asset_id: int
    external_id: str | None
    state: str
    why: str  # the failure (stage and reason) or why it is where it is
    retryable: bool | None
    video: Path | None  # the delivered file, else the web rendition, else the generated video


def _video(asset: Asset) -> Path | None:
    if asset.state == S.DELIVERED:
        for event in reversed(asset.events):
            if event.to_state == S.DELIVERED and event.data.get("files"):
                files = event.data["files"]
                name = files.get("web") or next(iter(files.values()))
                return Path(event.data["folder"]) / name
    renditions = {r.kind: r.path for r in asset.renditions}
    if path := renditions.get("web") or next(iter(renditions.values()), None):
        return Path(path)
    for attempt in reversed(asset.attempts):
        if attempt.output_path and Path(attempt.output_path).exists():
            return Path(attempt.output_path)
    return None


def _why(asset: Asset) -> str:
    if asset.state == S.FAILED:
        return f"{asset.failed_stage}: {asset.failure_reason}"
    for event in reversed(asset.events):
        if event.to_state == asset.state:
            return event.reason or ""
    return ""


def batch_outcomes(session: Session, batch_id: int) -> list[AssetOutcome]:
    assets = session.scalars(
        select(Asset).where(Asset.batch_id == batch_id, Asset.parent_id.is_(None)).order_by(Asset.id)
        .options(selectinload(Asset.events), selectinload(Asset.renditions), selectinload(Asset.attempts))
    ).all()
    return [AssetOutcome(a.id, a.external_id, a.state, _why(a), a.retryable if a.state == S.FAILED else None,
                         _video(a)) for a in assets]
