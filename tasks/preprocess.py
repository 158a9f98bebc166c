"""The preprocessing stage: a submitted asset becomes a 512×512 face crop plus 16 kHz speech.

Face crops and prepared audio are cached by the content hash of their input and parameters,
so a re-run (or another asset with the same portrait) reuses them instead of redoing the work.
Long speech is split at pauses into child assets that are generated separately and joined back
in order later; the parent waits in the `split` state.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from avatarflow import records
from avatarflow.media import wav_samples
from avatarflow.records import Crop, Speech
from avatarflow.settings import Settings
from avatarflow.storage import Storage, atomic_write_bytes, sha256_file
from db.lifecycle import record, transition
from db.models import Asset, Event
from db.session import Database
from db.stage import StageContext, StageOutcome
from db.states import AssetState
from tasks.audio import AudioError, PreparedAudio, prepare_audio, split_at_pauses
from tasks.face import crop_face
from tasks.face_detectors import FaceAlignmentDetector, default_detector
from tasks.face_types import FaceDetector, FaceError

STAGE = "preprocess"
FACE_VERSION = 2  # bump when crop parameters or code change what a crop looks like
AUDIO_VERSION = 1
# Failure codes a retry can fix (a slow disk or a loaded machine), as opposed to bad input.
RETRYABLE_CODES = {"timeout"}


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
    key = _cache_key("face", FACE_VERSION, image_sha256, settings.face_min_px, settings.face_pad_mode, detector.name,
                     settings.face_max_padded)
    crop_path, meta_path = _cached(storage.cache / "faces", key, ".png")
    if crop_path.exists() and meta_path.exists():
        return crop_path, json.loads(meta_path.read_text()), True
    crop = crop_face(image, crop_path, min_face_px=settings.face_min_px, detector=detector,
                     max_pixels=settings.image_max_pixels, max_padded=settings.face_max_padded,
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
                                            min_seconds=settings.audio_min_seconds,
                                            max_seconds=settings.audio_max_seconds,
                                            max_bytes=settings.audio_max_bytes)
    details = prepared.to_dict()
    atomic_write_bytes(meta_path, json.dumps(details).encode())
    return wav_path, details, False


def child_key(parent_key: str, index: int) -> str:
    return hashlib.sha256(f"{parent_key}:segment:{index}".encode()).hexdigest()


def _crop_record(path: Path, face: dict[str, Any], reused: bool) -> Crop:
    return Crop(path=str(path), source_size=tuple(face["source_size"]), face_box=tuple(face["face_box"]),
                crop_box=tuple(face["crop_box"]), landmarks={k: tuple(v) for k, v in face.get("landmarks", {}).items()},
                faces_found=int(face.get("faces_found", 1)), quality=face.get("quality", {}),
                backend=face.get("backend", ""), warnings=list(face.get("warnings", [])), reused=reused)


def _speech_record(path: Path, prepared: dict[str, Any], reused: bool) -> Speech:
    return Speech(path=str(path), duration_s=float(prepared["duration_s"]), samples=wav_samples(path),
                  loudness_in_lufs=prepared.get("loudness_in_lufs"), loudness_out_lufs=prepared.get("loudness_out_lufs"),
                  peak_db=prepared.get("peak_db"), speech_ratio=prepared.get("speech_ratio"),
                  trimmed_start_s=prepared.get("trimmed_start_s"), trimmed_end_s=prepared.get("trimmed_end_s"),
                  source=prepared.get("source", {}), warnings=list(prepared.get("warnings", [])), reused=reused)


def preprocess_asset(ctx: StageContext, asset_id: int) -> StageOutcome:
    """Crop the face, prepare the speech, split long speech; record everything on the asset.

    Bad input is an outcome, not an exception: the asset moves to `failed` with the reason.
    """
    settings, actor = ctx.settings, ctx.actor
    storage = settings.storage
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state != AssetState.SUBMITTED:
            return StageOutcome.stay(asset_id, STAGE, asset, "already preprocessed")
        image, image_sha, audio, audio_sha, key = (Path(asset.image_path), asset.image_sha256,
                                                   Path(asset.audio_path), asset.audio_sha256, asset.key)
    try:
        detector = ctx.components.detector or detector_for(settings)
        crop_path, face, face_reused = face_crop(image, image_sha, storage, settings, detector)
        wav_path, prepared, audio_reused = speech(audio, audio_sha, storage, settings)
        segments = []
        if prepared["duration_s"] > settings.audio_max_segment_seconds:
            segments = split_at_pauses(wav_path, storage.asset_dir(key) / "segments",
                                       max_segment_s=settings.audio_max_segment_seconds)
    except (FaceError, AudioError) as exc:
        retryable = exc.code in RETRYABLE_CODES
        with ctx.database.session() as session:
            asset = session.get(Asset, asset_id)
            transition(session, asset, AssetState.FAILED, actor=actor, reason=str(exc),
                       failed_stage=STAGE, retryable=retryable, data={"code": exc.code})
        return StageOutcome(asset_id, STAGE, AssetState.FAILED.value, False, str(exc), retryable)

    crop = _crop_record(crop_path, face, face_reused)
    spoken = _speech_record(wav_path, prepared, audio_reused)
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        asset.details = records.write(asset.details, crop, spoken)
        for warning in records.warnings(asset.details):
            record(session, asset, actor=actor, reason=f"warning: {warning}")
        reused = face_reused and audio_reused
        if len(segments) <= 1:
            transition(session, asset, AssetState.PREPROCESSED, actor=actor,
                       reason="face cropped to 512×512, speech at 16 kHz mono", data={"reused": reused})
            return StageOutcome(asset_id, STAGE, AssetState.PREPROCESSED.value, True, detail={"reused": reused})
        transition(session, asset, AssetState.SPLIT, actor=actor,
                   reason=f"speech of {spoken.duration_s:.1f} s split at pauses into {len(segments)} segments")
        existing = set(session.scalars(select(Asset.key).where(Asset.parent_id == asset.id)))
        for segment in segments:
            ckey = child_key(key, segment.index)
            if ckey in existing:
                continue
            part = Speech(path=str(segment.path), duration_s=segment.duration_s, samples=wav_samples(segment.path),
                          segment=(segment.start_s, segment.end_s), warnings=list(segment.warnings))
            child = Asset(
                key=ckey, batch_id=asset.batch_id, parent_id=asset.id, segment_index=segment.index,
                external_id=f"{asset.external_id}#{segment.index}" if asset.external_id else None,
                source_row=asset.source_row, image_path=asset.image_path, image_sha256=image_sha,
                audio_path=str(segment.path), audio_sha256=sha256_file(segment.path),
                prompt=asset.prompt, template=asset.template, template_vars=asset.template_vars,
                preset=asset.preset, priority=asset.priority, tags=asset.tags,
                state=AssetState.SUBMITTED.value, details=records.write({}, crop, part),
            )
            session.add(child)
            session.add(Event(asset=child, actor=actor, from_state=None, to_state=AssetState.SUBMITTED.value,
                              reason=f"segment {segment.index} of asset {asset.id} "
                                     f"({segment.start_s:.2f}–{segment.end_s:.2f} s)"))
            session.flush()
            transition(session, child, AssetState.PREPROCESSED, actor=actor, reason="segment of split speech")
        return StageOutcome(asset_id, STAGE, AssetState.SPLIT.value, True, detail={"segments": len(segments)})


def submitted_ids(database: Database, batch_id: int | None = None) -> list[int]:
    with database.session() as session:
        query = select(Asset.id).where(Asset.state == AssetState.SUBMITTED.value).order_by(
            Asset.priority.desc(), Asset.id)
        if batch_id is not None:
            query = query.where(Asset.batch_id == batch_id)
        return list(session.scalars(query))
