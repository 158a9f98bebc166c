"""Finding the file behind /media/{asset_id}/{kind}: by database lookup only, never from the URL.

The URL carries an integer id and a kind from a fixed list; the path comes from the database and
must still resolve inside the data root, so neither a crafted URL nor a stray row can make the app
serve any other file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from avatarflow import media, records
from avatarflow.errors import AvatarflowError
from avatarflow.records import Crop
from db.models import Asset, Rendition, Review, Reviewer
from db.states import AssetState

RENDITION_KINDS = ("web", "small", "poster", "thumb")
MEDIA_KINDS = (*RENDITION_KINDS, "portrait")
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


def may_see(session: Session, asset_id: int, reviewer: Reviewer) -> bool:
    """Admins see every asset's media; a reviewer only what waits for review or what they decided."""
    if reviewer.role == "admin":
        return True
    asset = session.get(Asset, asset_id)
    if asset is None:
        return False
    if asset.state == AssetState.REVIEW_PENDING.value:
        return True
    return session.scalar(select(Review.id).where(Review.asset_id == asset_id, Review.reviewer_id == reviewer.id)
                          .limit(1)) is not None


def media_file(session: Session, data_root: Path, asset_id: int, kind: str) -> Path | None:
    """The file to serve, or None (the caller answers 404 without saying which check failed)."""
    if kind not in MEDIA_KINDS:
        return None
    if kind == "portrait":
        asset = session.get(Asset, asset_id)
        try:
            crop = records.read(asset.details, Crop) if asset is not None else None
        except records.RecordError:
            crop = None
        raw = crop.path if crop else None
    else:
        raw = session.scalar(
            select(Rendition.path).where(Rendition.asset_id == asset_id, Rendition.kind == kind)
        )
    if not isinstance(raw, str) or not raw:
        return None
    return contained(Path(raw), data_root)


def contained(path: Path, root: Path) -> Path | None:
    """`path` with links resolved, if it is a regular file under `root` of a type we serve."""
    root = root.resolve()
    candidate = (path if path.is_absolute() else root / path).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    if candidate.suffix.lower() not in CONTENT_TYPES:
        return None
    return candidate


def content_type(path: Path) -> str:
    return CONTENT_TYPES[path.suffix.lower()]


def video_duration(path: Path) -> float | None:
    """Duration in seconds from ffprobe (cached per file version), or None when unknown."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _probe_duration(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=512)
def _probe_duration(path: str, _mtime_ns: int, _size: int) -> float | None:
    try:
        return media.probe(Path(path), timeout_s=20).duration_s
    except (media.MediaError, AvatarflowError):
        return None
