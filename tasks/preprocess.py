"""The preprocessing stage: a submitted asset becomes a 512×512 face crop plus 16 kHz speech.

Face crops and prepared audio are cached by the content hash of their input and parameters,
so a re-run (or another asset with the same portrait) reuses them instead of redoing the work.
Long speech is split at pauses into child assets that are generated separately and joined back
in order later; the parent waits in the `split` state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from avatarflow.errors import AvatarflowError
from avatarflow.settings import Settings
from avatarflow.storage import Storage, atomic_write_bytes, sha256_file
from db.lifecycle import record, transition
from db.models import Asset, Event
from db.session import Database
from db.states import AssetState
from tasks.audio import AudioError, PreparedAudio, prepare_audio, split_at_pauses
from tasks.face import FaceAlignmentDetector, FaceDetector, FaceError, crop_face, default_detector

STAGE = "preprocess"
FACE_VERSION = 1  # bump when crop parameters or code change what a crop looks like
AUDIO_VERSION = 1
# Failure codes a retry can fix (a slow disk or a loaded machine), as opposed to bad input.
RETRYABLE_CODES = {"timeout"}


@dataclass(frozen=True)
class PreprocessOutcome:
    asset_id: int
    state: str
    reason: str | None = None
    segments: int = 0
    reused: bool = False


def _cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _cached(folder: Path, key: str, suffix: str) -> tuple[Path, Path]:
    return folder / f"{key}{suffix}", folder / f"{key}.json"


def detector_for(settings: Settings) -> FaceDetector:
    if settings.face_backend == "face-alignment":
        if settings.face_alignment_weights is None:
            raise FaceError("backend_unavailable", "AVATARFLOW_FACE_BACKEND=face-alignment needs "
                            "AVATARFLOW_FACE_ALIGNMENT_WEIGHTS, the folder holding its weight files")
        return FaceAlignmentDetector(settings.face_alignment_weights)
    return default_detector()


def face_crop(image: Path, image_sha256: str, storage: Storage, settings: Settings,
              detector: FaceDetector) -> tuple[Path, dict[str, Any], bool]:
    """The crop for this image (from the cache when done before) and its recorded details."""
    key = _cache_key("face", FACE_VERSION, image_sha256, settings.face_min_px, settings.face_pad_mode, detector.name)
    crop_path, meta_path = _cached(storage.cache / "faces", key, ".png")
    if crop_path.exists() and meta_path.exists():
        return crop_path, json.loads(meta_path.read_text()), True
    crop = crop_face(image, crop_path, min_face_px=settings.face_min_px, detector=detector,
                     pad_mode=settings.face_pad_mode)
    details = crop.to_dict()
    atomic_write_bytes(meta_path, json.dumps(details).encode())
    return crop_path, details, False


def speech(audio: Path, audio_sha256: str, storage: Storage, settings: Settings) -> tuple[Path, dict[str, Any], bool]:
    """The 16 kHz mono speech for this audio file (cached) and its recorded details."""
    key = _cache_key("audio", AUDIO_VERSION, audio_sha256, settings.audio_target_lufs, settings.audio_min_seconds)
    wav_path, meta_path = _cached(storage.cache / "audio", key, ".wav")
    if wav_path.exists() and meta_path.exists():
        return wav_path, json.loads(meta_path.read_text()), True
    prepared: PreparedAudio = prepare_audio(audio, wav_path, target_lufs=settings.audio_target_lufs,
                                            min_seconds=settings.audio_min_seconds)
    details = prepared.to_dict()
    atomic_write_bytes(meta_path, json.dumps(details).encode())
    return wav_path, details, False


def child_key(parent_key: str, index: int) -> str:
    return hashlib.sha256(f"{parent_key}:segment:{index}".encode()).hexdigest()


def preprocess_asset(
    database: Database,
    asset_id: int,
    settings: Settings,
    *,
    actor: str = "preprocess",
    detector: FaceDetector | None = None,
) -> PreprocessOutcome:
    """Crop the face, prepare the speech, split long speech; record everything on the asset.

    Bad input is an outcome, not an exception: the asset moves to `failed` with the reason.
    """
    storage = settings.storage
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None:
            raise AvatarflowError(f"asset {asset_id} does not exist")
        if asset.state != AssetState.SUBMITTED:
            return PreprocessOutcome(asset_id, asset.state, reason="already preprocessed")
        image, image_sha, audio, audio_sha, key = (Path(asset.image_path), asset.image_sha256,
                                                   Path(asset.audio_path), asset.audio_sha256, asset.key)
    try:
        crop_path, face, face_reused = face_crop(image, image_sha, storage, settings, detector or detector_for(settings))
        wav_path, prepared, audio_reused = speech(audio, audio_sha, storage, settings)
        segments = []
        if prepared["duration_s"] > settings.audio_max_segment_seconds:
            segments = split_at_pauses(wav_path, storage.asset_dir(key) / "segments",
                                       max_segment_s=settings.audio_max_segment_seconds)
    except (FaceError, AudioError) as exc:
        with database.session() as session:
            asset = session.get(Asset, asset_id)
            transition(session, asset, AssetState.FAILED, actor=actor, reason=str(exc),
                       failed_stage=STAGE, retryable=exc.code in RETRYABLE_CODES,
                       data={"code": exc.code})
        return PreprocessOutcome(asset_id, AssetState.FAILED.value, reason=str(exc))

    warnings = [f"face: {w}" for w in face.get("warnings", [])] + [f"audio: {w}" for w in prepared.get("warnings", [])]
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        asset.details = {**asset.details, "face": face, "audio": prepared, "crop_path": str(crop_path),
                         "speech_path": str(wav_path), "warnings": warnings}
        for warning in warnings:
            record(session, asset, actor=actor, reason=f"warning: {warning}")
        if len(segments) <= 1:
            transition(session, asset, AssetState.PREPROCESSED, actor=actor,
                       reason="face cropped to 512×512, speech at 16 kHz mono",
                       data={"reused": face_reused and audio_reused})
            return PreprocessOutcome(asset_id, AssetState.PREPROCESSED.value, reused=face_reused and audio_reused)
        transition(session, asset, AssetState.SPLIT, actor=actor,
                   reason=f"speech of {prepared['duration_s']:.1f} s split at pauses into {len(segments)} segments")
        existing = set(session.scalars(select(Asset.key).where(Asset.parent_id == asset.id)))
        for segment in segments:
            ckey = child_key(key, segment.index)
            if ckey in existing:
                continue
            child = Asset(
                key=ckey, batch_id=asset.batch_id, parent_id=asset.id, segment_index=segment.index,
                external_id=f"{asset.external_id}#{segment.index}" if asset.external_id else None,
                source_row=asset.source_row, image_path=asset.image_path, image_sha256=image_sha,
                audio_path=str(segment.path), audio_sha256=sha256_file(segment.path),
                prompt=asset.prompt, template=asset.template, template_vars=asset.template_vars,
                preset=asset.preset, priority=asset.priority, tags=asset.tags,
                state=AssetState.SUBMITTED.value,
                details={"face": face, "crop_path": str(crop_path), "speech_path": str(segment.path),
                         "audio": {"duration_s": segment.duration_s, "start_s": segment.start_s,
                                   "end_s": segment.end_s, "warnings": segment.warnings},
                         "warnings": warnings + [f"audio: {w}" for w in segment.warnings]},
            )
            session.add(child)
            session.add(Event(asset=child, actor=actor, from_state=None, to_state=AssetState.SUBMITTED.value,
                              reason=f"segment {segment.index} of asset {asset.id} "
                                     f"({segment.start_s:.2f}–{segment.end_s:.2f} s)"))
            session.flush()
            transition(session, child, AssetState.PREPROCESSED, actor=actor, reason="segment of split speech")
        return PreprocessOutcome(asset_id, AssetState.SPLIT.value, segments=len(segments))


def submitted_ids(database: Database, batch_id: int | None = None) -> list[int]:
    with database.session() as session:
        query = select(Asset.id).where(Asset.state == AssetState.SUBMITTED.value).order_by(
            Asset.priority.desc(), Asset.id)
        if batch_id is not None:
            query = query.where(Asset.batch_id == batch_id)
        return list(session.scalars(query))
