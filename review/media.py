"""Finding the file behind /media/{asset_id}/{kind}: by database lookup only, never from the URL.

The URL carries an integer id and a kind from a fixed list; the path comes from the database and
must still resolve inside the data root, so neither a crafted URL nor a stray row can make the app
serve any other file.

/media/{asset_id}/frame?t=… is one frame of the video the player plays (the web rendition), as
a small JPEG: cut once by ffmpeg into `<data root>/cache/frames/<asset id>/<ms>.jpg`, named only
by the integer id and the time rounded to a 25 fps frame, and reused until the video changes.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from avatarflow import media, records
from avatarflow.errors import AvatarflowError
from avatarflow.records import Crop
from avatarflow.storage import Storage, atomic_path
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

log = logging.getLogger("avatarflow.review")

FRAME_MS = 40  # one frame at 25 fps: the cache key's step, so nearby requests share a file
MAX_FRAME_S = 86_400.0  # no video is longer than a day
FRAME_WIDTH = 240
FRAME_TIMEOUT_S = 20.0
JPEG_MAGIC = b"\xff\xd8\xff"


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
    return _times(path)[0]


def picture_end(path: Path) -> float | None:
    """Where the picture track ends, in seconds (the soundtrack may run a little longer)."""
    duration, picture = _times(path)
    return picture if picture is not None else duration


def _times(path: Path) -> tuple[float | None, float | None]:
    try:
        stat = path.stat()
    except OSError:
        return None, None
    return _probe_times(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=512)
def _probe_times(path: str, _mtime_ns: int, _size: int) -> tuple[float | None, float | None]:
    """(the container's duration, the end of its picture track), each None when ffprobe cannot say."""
    try:
        info = media.probe(Path(path), timeout_s=20)
    except (media.MediaError, AvatarflowError):
        return None, None
    video = info.video
    end = video.duration_s + (video.start_s or 0.0) if video is not None and video.duration_s else None
    return info.duration_s, end


def frame_ms(text: str | None) -> int | None:
    """`t` from the URL as milliseconds on the 25 fps frame grid; None unless a finite number of
    seconds in [0, 24 h]."""
    try:
        seconds = float(text or "")
    except ValueError:
        return None
    if not math.isfinite(seconds) or not 0.0 <= seconds <= MAX_FRAME_S:
        return None
    return round(seconds * 1000 / FRAME_MS) * FRAME_MS


def frame_cache(data_root: Path, asset_id: int, ms: int) -> Path:
    """Where the frame at `ms` of an asset's video is kept (both parts integers: no name from the URL)."""
    return Storage(data_root).cache / "frames" / str(int(asset_id)) / f"{int(ms)}.jpg"


def video_frame(video: Path, data_root: Path, asset_id: int, ms: int) -> Path | None:
    """The cached JPEG of `video` at `ms`, cut first when missing or older than the video; None
    when the video has no frame there or ffmpeg cannot give one."""
    out = frame_cache(data_root, asset_id, ms)
    if _fresh(out, video):
        return out
    seek = ms / 1000
    duration, end = video_duration(video), picture_end(video)
    if duration is not None and seek > max(duration, end or 0.0) + FRAME_MS / 1000:
        return None  # past the end: refused, so a stream of made-up times cannot fill the cache
    if end is not None:
        seek = min(seek, max(0.0, end - FRAME_MS / 1000))  # the last frame starts before the end
    try:
        with atomic_path(out) as tmp:
            _cut_frame(video, seek, tmp)
    except (AvatarflowError, OSError) as exc:
        log.warning("no frame of asset %s at %.3f s: %s", asset_id, seek, exc)
        return None
    return out


def _fresh(cached: Path, video: Path) -> bool:
    try:
        return cached.stat().st_mtime_ns >= video.stat().st_mtime_ns
    except OSError:
        return False


def _cut_frame(video: Path, seek: float, dest: Path) -> None:
    """One ffmpeg call: the frame at `seek`, FRAME_WIDTH wide, as a JPEG in `dest`."""
    done = media.run_tool(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{seek:.3f}",
                           "-i", media.ff_input(video), "-frames:v", "1", "-vf", f"scale={FRAME_WIDTH}:-2",
                           "-an", "-f", "image2", "-c:v", "mjpeg", "-q:v", "3", "-update", "1",
                           media.ff_input(dest)], timeout_s=FRAME_TIMEOUT_S)  # fmt: skip
    if done.timed_out:
        raise AvatarflowError(f"ffmpeg took longer than {FRAME_TIMEOUT_S:g} s (killed)")
    if done.returncode != 0:
        raise AvatarflowError(f"ffmpeg exit {done.returncode}: {media.stderr_tail(done.err)}")
    with open(dest, "rb") as handle:
        if handle.read(len(JPEG_MAGIC)) != JPEG_MAGIC:  # ffmpeg writes nothing when it found no frame
            raise AvatarflowError("ffmpeg wrote no picture")
