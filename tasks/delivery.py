"""Delivery: approved assets go to a folder per batch with a manifest, then are marked delivered.

    <data_root>/deliveries/<safe batch name>/
        <rendition files, named by tasks.transcode.rendition_name>
        manifest.json   {"batch", "updated_at", "assets": [one entry per delivered asset]}
        manifest.csv    the same entries, one row each, files flattened into columns

The order of the steps is what makes a crash harmless: copy (atomic, checksum verified), then
rewrite the manifest (merged by asset key, atomic), and only then move the asset from approved
to delivered. A run killed anywhere leaves the asset approved, so the next run does it again:
files already in place with the right checksum are not copied twice and a manifest entry is
replaced, never added twice. Delivered assets are never touched again.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from avatarflow.errors import AvatarflowError, ClaimConflict, IllegalTransition
from avatarflow.settings import Settings
from avatarflow.storage import Storage, atomic_path, safe_name, sha256_file
from db.lifecycle import transition
from db.models import Asset, Event, QCResult, Review, Reviewer, utcnow
from db.session import Database
from db.states import AssetState
from tasks.transcode import KINDS, TranscodeError, probe_media, readable, rendition_name

STAGE = "deliver"
MANIFEST_JSON = "manifest.json"
MANIFEST_CSV = "manifest.csv"
# Review decisions that count as an approval (the review application records one of these).
APPROVING_DECISIONS = ("approve", "approved", "accept", "accepted")
ENTRY_FIELDS = [
    "asset_key",
    "asset_id",
    "external_id",
    "batch",
    "preset",
    "duration_s",
    "qc_score",
    "approved_by",
    "approved_at",
    "delivered_at",
]
FILE_FIELDS = ["file", "sha256", "bytes", "width", "height"]
# The CSV flattens each entry's files into {kind}_{field} columns (web_file, web_sha256, ...).
CSV_FIELDS = ENTRY_FIELDS + [f"{kind}_{part}" for kind in KINDS for part in FILE_FIELDS]


class DeliveryError(AvatarflowError):
    """One asset cannot be delivered; the message says what to fix."""


@dataclass
class DeliveryReport:
    delivered: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # asset id -> why it was left alone
    failed: dict[int, str] = field(default_factory=dict)  # asset id -> why it moved to failed
    folders: list[Path] = field(default_factory=list)  # delivery folders written in this run

    def to_dict(self) -> dict[str, Any]:
        return {
            "delivered": list(self.delivered),
            "skipped": dict(self.skipped),
            "failed": dict(self.failed),
            "folders": [str(f) for f in self.folders],
        }


@dataclass(frozen=True)
class SourceFile:
    kind: str
    path: Path
    sha256: str
    bytes: int
    width: int | None
    height: int | None


@dataclass(frozen=True)
class DeliveryPlan:
    """What one approved asset needs delivered, read from the database in one short session."""

    asset_id: int
    key: str
    external_id: str | None
    batch: str
    preset: str
    renditions: dict[str, SourceFile]
    qc_score: float | None
    approved_by: str | None
    approved_at: datetime | None


def delivery_folder(storage: Storage, batch_name: str) -> Path:
    return storage.deliveries / safe_name(batch_name)


# --------------------------------------------------------------------------- reading


def _approval(session: Any, asset: Asset) -> tuple[str | None, datetime | None]:
    """Who approved the asset and when: the latest approving review, else the approving event."""
    review = session.execute(
        select(Review, Reviewer.username)
        .join(Reviewer, Review.reviewer_id == Reviewer.id)
        .where(Review.asset_id == asset.id, Review.decision.in_(list(APPROVING_DECISIONS)))
        .order_by(Review.id.desc())
        .limit(1)
    ).first()
    if review is not None:
        return review[1], review[0].decided_at
    events = session.scalars(
        select(Event)
        .where(Event.asset_id == asset.id, Event.to_state == AssetState.APPROVED.value)
        .order_by(Event.id.desc())
    ).all()
    # A retried delivery re-enters approved from failed; the approval itself is the move before.
    event = next(
        (e for e in events if e.from_state != AssetState.FAILED.value),
        events[0] if events else None,
    )
    return (event.actor, event.at) if event is not None else (None, None)


def _plan(session: Any, asset: Asset) -> DeliveryPlan:
    qc_score = session.scalar(
        select(QCResult.score)
        .where(QCResult.asset_id == asset.id)
        .order_by(QCResult.id.desc())
        .limit(1)
    )
    approved_by, approved_at = _approval(session, asset)
    renditions = {
        r.kind: SourceFile(
            kind=r.kind,
            path=Path(r.path),
            sha256=r.sha256,
            bytes=r.bytes,
            width=r.width,
            height=r.height,
        )
        for r in asset.renditions
        if r.kind in KINDS
    }
    return DeliveryPlan(
        asset_id=asset.id,
        key=asset.key,
        external_id=asset.external_id,
        batch=asset.batch.name,
        preset=asset.preset,
        renditions=renditions,
        qc_score=qc_score,
        approved_by=approved_by,
        approved_at=approved_at,
    )


def read_plans(
    database: Database, asset_ids: Sequence[int] | None, skipped: dict[int, str] | None = None
) -> list[DeliveryPlan]:
    """Plans for the approved assets among `asset_ids` (all approved ones when None).

    Ids that are not approved are recorded in `skipped` with the reason.
    """
    skipped = {} if skipped is None else skipped
    with database.session() as session:
        if asset_ids is None:
            assets = list(
                session.scalars(
                    select(Asset)
                    .where(Asset.state == AssetState.APPROVED.value)
                    .order_by(Asset.batch_id, Asset.id)
                )
            )
        else:
            assets = []
            for asset_id in dict.fromkeys(asset_ids):  # keep the caller's order, drop repeats
                asset = session.get(Asset, asset_id)
                if asset is None:
                    skipped[asset_id] = "no such asset"
                elif asset.state == AssetState.DELIVERED.value:
                    skipped[asset_id] = "already delivered"
                elif asset.state != AssetState.APPROVED.value:
                    skipped[asset_id] = f"in state {asset.state}, not approved"
                else:
                    assets.append(asset)
        return [_plan(session, asset) for asset in assets]


# --------------------------------------------------------------------------- copying


@dataclass(frozen=True)
class DeliveredFile:
    kind: str
    path: Path
    sha256: str
    bytes: int
    width: int | None
    height: int | None
    copied: bool  # False when a verified copy was already in place (a re-run)


def _copy_renditions(plan: DeliveryPlan, folder: Path) -> list[DeliveredFile]:
    """Copy the asset's renditions into `folder` under their delivery names, checksum verified.

    A file already there with the recorded checksum is kept as it is (a re-run after a crash).
    Raises DeliveryError when a source is missing or a copy does not match its checksum.
    """
    if "web" not in plan.renditions:
        raise DeliveryError(
            f"asset {plan.key[:12]} has no web rendition to deliver; re-run "
            "transcoding for it, then retry delivery"
        )
    sources = [plan.renditions[kind] for kind in KINDS if kind in plan.renditions]
    # Check every source before copying any, so a missing one leaves nothing half delivered.
    for source in sources:
        if not source.path.is_file():
            raise DeliveryError(
                f"asset {plan.key[:12]}: its {source.kind} rendition {source.path} "
                "is missing; re-run transcoding for it, then retry delivery"
            )
    delivered: list[DeliveredFile] = []
    try:
        for source in sources:
            dest = folder / rendition_name(plan.batch, plan.key, plan.preset, source.kind)
            in_place = (
                dest.is_file()
                and dest.stat().st_size == source.bytes
                and sha256_file(dest) == source.sha256
            )
            if not in_place:
                with atomic_path(dest) as tmp:
                    shutil.copyfile(source.path, tmp)
                    if sha256_file(tmp) != source.sha256:
                        raise DeliveryError(
                            f"asset {plan.key[:12]}: the copy of its {source.kind} rendition "
                            f"{source.path} does not match the checksum recorded at transcoding "
                            "(the file changed or the disk is failing); re-run transcoding for it, "
                            "then retry delivery"
                        )
                    readable(tmp)
            delivered.append(
                DeliveredFile(
                    kind=source.kind,
                    path=dest,
                    sha256=source.sha256,
                    bytes=source.bytes,
                    width=source.width,
                    height=source.height,
                    copied=not in_place,
                )
            )
    except BaseException:
        # Files this call put there are in no manifest yet: take them back out.
        for file in delivered:
            if file.copied:
                file.path.unlink(missing_ok=True)
        raise
    return delivered


# --------------------------------------------------------------------------- manifest


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _entry(
    plan: DeliveryPlan, files: list[DeliveredFile], duration_s: float | None, delivered_at: datetime
) -> dict[str, Any]:
    return {
        "asset_key": plan.key,
        "asset_id": plan.asset_id,
        "external_id": plan.external_id,
        "batch": plan.batch,
        "preset": plan.preset,
        "duration_s": round(duration_s, 3) if duration_s is not None else None,
        "qc_score": plan.qc_score,
        "approved_by": plan.approved_by,
        "approved_at": _iso(plan.approved_at),
        "delivered_at": _iso(delivered_at),
        "files": {
            f.kind: {
                "file": f.path.name,
                "sha256": f.sha256,
                "bytes": f.bytes,
                "width": f.width,
                "height": f.height,
            }
            for f in files
        },
    }


def read_manifest(folder: Path) -> list[dict[str, Any]]:
    """The entries of a batch's manifest.json (empty when there is none yet)."""
    path = folder / MANIFEST_JSON
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text())["assets"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DeliveryError(
            f"{path} cannot be read ({exc}); it is only ever written atomically, "
            "so someone edited it: restore it from the CSV or a backup"
        ) from None


@contextmanager
def _manifest_lock(folder: Path) -> Iterator[None]:
    # Two delivery runs (a review decision and the scheduled safety net) may merge into the same
    # manifest at once; the lock keeps one from overwriting the other's entries.
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".manifest.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _csv_row(entry: dict[str, Any]) -> dict[str, Any]:
    row = {name: entry.get(name) for name in ENTRY_FIELDS}
    for kind, file in (entry.get("files") or {}).items():
        for part in FILE_FIELDS:
            row[f"{kind}_{part}"] = file.get(part)
    return {name: "" if row.get(name) is None else row[name] for name in CSV_FIELDS}


def _update_manifest(
    folder: Path, batch: str, entries: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Merge `entries` into the batch's manifest (one entry per asset key); rewrite both files.

    Returns the merged manifest's entries by asset key.
    """
    with _manifest_lock(folder):
        merged = {entry["asset_key"]: entry for entry in read_manifest(folder)}
        for entry in entries:
            old = merged.get(entry["asset_key"])
            if old is not None and old.get("files") == entry["files"]:
                # The same files were handed over by an earlier, interrupted run: that was when.
                entry = {**entry, "delivered_at": old.get("delivered_at") or entry["delivered_at"]}
            merged[entry["asset_key"]] = entry
        assets = list(merged.values())
        document = {"batch": batch, "updated_at": _iso(utcnow()), "assets": assets}
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_csv_row(entry) for entry in assets)
        for name, data in (
            (MANIFEST_JSON, json.dumps(document, indent=2) + "\n"),
            (MANIFEST_CSV, text.getvalue()),
        ):
            with atomic_path(folder / name) as tmp:
                tmp.write_text(data, encoding="utf-8")
                readable(tmp)
    return merged


# --------------------------------------------------------------------------- state changes


def _mark(
    database: Database,
    asset_id: int,
    to: AssetState,
    *,
    actor: str,
    reason: str,
    data: dict[str, Any],
) -> str | None:
    """Move the asset from approved to `to`; the reason it was left alone, or None when moved."""
    try:
        with database.session() as session:
            asset = session.get(Asset, asset_id)
            if asset is None or asset.state != AssetState.APPROVED.value:
                state = asset.state if asset is not None else "gone"
                return f"moved to {state} by someone else during delivery"
            if to is AssetState.FAILED:
                transition(
                    session,
                    asset,
                    to,
                    actor=actor,
                    reason=reason,
                    data=data,
                    failed_stage=STAGE,
                    retryable=True,
                )
            else:
                transition(session, asset, to, actor=actor, reason=reason, data=data)
    except (ClaimConflict, IllegalTransition) as exc:
        return f"changed by another worker during delivery: {exc}"
    return None


# --------------------------------------------------------------------------- the stage


def deliver_assets(
    database: Database,
    settings: Settings,
    asset_ids: Sequence[int] | None = None,
    *,
    actor: str,
) -> DeliveryReport:
    """Deliver approved assets (all of them when `asset_ids` is None) and mark them delivered.

    Ids that are not approved are skipped with a reason. An asset whose renditions are missing
    or damaged moves to failed (stage deliver, retryable) and the others go on. Idempotent and
    safe to re-run after a crash (see the module docstring).
    """
    report = DeliveryReport()
    plans = read_plans(database, asset_ids, report.skipped)
    storage = settings.storage
    delivered_at = utcnow()
    batches: dict[str, list[tuple[DeliveryPlan, dict[str, Any]]]] = {}
    failures: dict[int, str] = {}

    for plan in plans:
        folder = delivery_folder(storage, plan.batch)
        try:
            files = _copy_renditions(plan, folder)
            web = next(f for f in files if f.kind == "web")
            duration = probe_media(web.path).duration_s
        except (DeliveryError, TranscodeError) as exc:
            failures[plan.asset_id] = str(exc)
            continue
        batches.setdefault(plan.batch, []).append(
            (plan, _entry(plan, files, duration, delivered_at))
        )

    for batch, items in batches.items():
        folder = delivery_folder(storage, batch)
        try:
            manifest = _update_manifest(folder, batch, [entry for _, entry in items])
        except DeliveryError as exc:
            for plan, _ in items:
                failures[plan.asset_id] = str(exc)
            continue
        report.folders.append(folder)
        # The manifest names them now: only from here on may the database say "delivered".
        for plan, _ in items:
            entry = manifest[plan.key]
            files = {kind: file["file"] for kind, file in entry["files"].items()}
            left = _mark(
                database,
                plan.asset_id,
                AssetState.DELIVERED,
                actor=actor,
                reason=f"delivered to {folder}",
                data={"folder": str(folder), "files": files, "delivered_at": entry["delivered_at"]},
            )
            if left is None:
                report.delivered.append(plan.asset_id)
            else:
                report.skipped[plan.asset_id] = left

    for asset_id, reason in failures.items():
        left = _mark(database, asset_id, AssetState.FAILED, actor=actor, reason=reason, data={})
        if left is None:
            report.failed[asset_id] = reason
        else:
            report.skipped[asset_id] = left
    return report
