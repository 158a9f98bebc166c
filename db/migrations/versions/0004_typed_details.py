"""assets.details: one typed record per stage (schema 2)

Before: loose keys written by five modules — crop_path, face, speech_path, audio, warnings, plan,
video_path, attempt, flow_run_url. After: {"schema": 2, "crop": ..., "speech": ..., "plan": ...,
"generation": ..., "run": ...}, as avatarflow/records.py defines them. Nothing is dropped: keys
this migration does not know stay where they are, and the downgrade writes the old keys back.
The conversion is written out here (not imported) so that it stays what it was when it ran.

Revision ID: 0004
Revises: 0002
"""
from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_KEYS = ("crop_path", "face", "speech_path", "audio", "warnings", "plan", "video_path", "attempt",
            "flow_run_url", "flow_run_id")
CROP_FIELDS = ("source_size", "face_box", "crop_box", "landmarks", "faces_found", "quality", "backend", "warnings")
SPEECH_FIELDS = ("duration_s", "loudness_in_lufs", "loudness_out_lufs", "peak_db", "speech_ratio",
                 "trimmed_start_s", "trimmed_end_s", "source", "warnings")
PLAN_FIELDS = ("engine", "preset", "size", "solver", "sample_steps", "infer_frames", "num_clip", "online_decode",
               "seconds", "samples", "video_seconds", "video_size", "attempt", "seed", "segments")


def to_schema_2(details: dict[str, Any]) -> dict[str, Any]:
    if details.get("schema") == 2:
        return details
    out = {k: v for k, v in details.items() if k not in OLD_KEYS}
    out["schema"] = 2
    face = details.get("face") or {}
    if details.get("crop_path"):
        crop = {k: face[k] for k in CROP_FIELDS if k in face}
        crop.setdefault("source_size", [512, 512])
        crop.setdefault("face_box", [0.0, 0.0, 0.0, 0.0])
        crop.setdefault("crop_box", [0.0, 0.0, 0.0, 0.0])
        out["crop"] = {"path": details["crop_path"], **crop}
    audio = details.get("audio") or {}
    if details.get("speech_path"):
        speech = {k: audio[k] for k in SPEECH_FIELDS if k in audio}
        speech.setdefault("duration_s", 0.0)
        if "start_s" in audio and "end_s" in audio:  # a segment of split speech
            speech["segment"] = [audio["start_s"], audio["end_s"]]
        out["speech"] = {"path": details["speech_path"], **speech}
    if isinstance(details.get("plan"), dict) and "engine" in details["plan"]:
        out["plan"] = {k: details["plan"][k] for k in PLAN_FIELDS if k in details["plan"]}
    elif isinstance(details.get("plan"), dict):  # a joined parent's partial plan: keep it aside
        out["legacy_plan"] = details["plan"]
    if details.get("video_path"):
        out["generation"] = {"video_path": details["video_path"], "attempt": details.get("attempt")}
    if details.get("flow_run_url") or details.get("flow_run_id"):
        out["run"] = {"flow_run_url": details.get("flow_run_url"), "flow_run_id": details.get("flow_run_id")}
    return out


def to_schema_1(details: dict[str, Any]) -> dict[str, Any]:
    if details.get("schema") != 2:
        return details
    out = {k: v for k, v in details.items() if k not in ("schema", "crop", "speech", "plan", "generation", "run",
                                                         "legacy_plan")}
    warnings: list[str] = []
    if crop := details.get("crop"):
        out["crop_path"] = crop["path"]
        out["face"] = {"out_path": crop["path"], **{k: v for k, v in crop.items() if k != "path"}}
        warnings += [f"face: {w}" for w in crop.get("warnings", [])]
    if speech := details.get("speech"):
        out["speech_path"] = speech["path"]
        audio = {"out_path": speech["path"], **{k: v for k, v in speech.items() if k not in ("path", "segment")}}
        if speech.get("segment"):
            audio["start_s"], audio["end_s"] = speech["segment"]
        out["audio"] = audio
        warnings += [f"audio: {w}" for w in speech.get("warnings", [])]
    if warnings:
        out["warnings"] = warnings
    if plan := details.get("plan") or details.get("legacy_plan"):
        out["plan"] = plan
    if generation := details.get("generation"):
        out["video_path"] = generation["video_path"]
        if generation.get("attempt") is not None:
            out["attempt"] = generation["attempt"]
    if run := details.get("run"):
        out.update({k: v for k, v in run.items() if v})
    return out


def _convert(convert) -> None:  # type: ignore[no-untyped-def]
    connection = op.get_bind()
    update = sa.text("UPDATE assets SET details = :details WHERE id = :id").bindparams(
        sa.bindparam("details", type_=sa.JSON))  # typed, so PostgreSQL gets json, not text
    for asset_id, raw in connection.execute(sa.text("SELECT id, details FROM assets")).all():
        details = raw if isinstance(raw, dict) else json.loads(raw or "{}")
        converted = convert(details)
        if converted != details:
            connection.execute(update, {"details": converted, "id": asset_id})


def upgrade() -> None:
    _convert(to_schema_2)


def downgrade() -> None:
    _convert(to_schema_1)
