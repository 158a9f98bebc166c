"""What each stage leaves on an asset: typed, versioned records, the contract between stages.

An asset's `details` column holds one record per stage that produced something, under the
record's key, plus the schema version:

    {"schema": 2, "crop": {...}, "speech": {...}, "plan": {...}, "generation": {...}, "run": {...}}

| record | written by | read by |
|---|---|---|
| `Crop` | preprocess | plan, generate, QC (reference portrait), review (portrait, warnings) |
| `Speech` | preprocess (a segment's by its parent's split) | plan, generate, report |
| `Plan` | plan (again for each regeneration; join for a joined parent) | generate, QC, report |
| `Generation` | generate, join | QC, transcode, review |
| `Run` | route | review (link to the flow run) |

Records are validated when written (`write`) and when read (`read`, `need`): a stage never
reads another package's raw keys, and a malformed record is an error at the place it is read,
not a KeyError three stages later. Databases written before schema 2 are migrated by Alembic
(db/migrations/versions/0004_typed_details.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avatarflow.errors import AvatarflowError

SCHEMA = 2


class RecordError(AvatarflowError):
    """An asset lacks a record a stage needs, or holds one that does not validate."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: ClassVar[str]


class Crop(Record):
    """The 512×512 face crop the engines animate, and what cropping noticed."""

    key: ClassVar[str] = "crop"
    path: str
    source_size: tuple[int, int]  # width, height of the portrait after EXIF orientation
    face_box: tuple[float, float, float, float]  # x0, y0, x1, y1 in source pixels
    crop_box: tuple[float, float, float, float]  # may extend past the image (padded)
    landmarks: dict[str, tuple[float, float]] = Field(default_factory=dict)
    faces_found: int = 1
    quality: dict[str, Any] = Field(default_factory=dict)
    backend: str = ""
    warnings: list[str] = Field(default_factory=list)
    reused: bool = False  # taken from the content-hash cache


class Speech(Record):
    """The 16 kHz mono speech the engines are driven by (a segment of it for split speech)."""

    key: ClassVar[str] = "speech"
    path: str
    duration_s: float
    samples: int | None = None  # at 16 kHz; sets Live Avatar's clip count
    loudness_in_lufs: float | None = None
    loudness_out_lufs: float | None = None
    peak_db: float | None = None
    speech_ratio: float | None = None
    trimmed_start_s: float | None = None
    trimmed_end_s: float | None = None
    source: dict[str, Any] = Field(default_factory=dict)  # the sent file's codec, rate, channels
    segment: tuple[float, float] | None = None  # start, end within the parent's speech
    warnings: list[str] = Field(default_factory=list)
    reused: bool = False


class Plan(Record):
    """What the next generation will run and make."""

    key: ClassVar[str] = "plan"
    engine: str
    preset: str
    size: str
    solver: str
    sample_steps: int
    infer_frames: int
    num_clip: int
    online_decode: bool
    seconds: float  # the speech
    samples: int | None = None
    video_seconds: float | None = None  # what the video will last (a preview stops early)
    video_size: tuple[int, int] | None = None  # width, height
    attempt: int = 1
    seed: int = 0
    segments: int | None = None  # for a parent joined from its segments


class Generation(Record):
    """The verified video of the latest successful generation (or of the joined segments)."""

    key: ClassVar[str] = "generation"
    video_path: str
    attempt: int | None = None
    joined_segments: int | None = None


class Run(Record):
    """The flow run that routed the asset last (the review page links to it)."""

    key: ClassVar[str] = "run"
    flow_run_url: str | None = None
    flow_run_id: str | None = None


R = TypeVar("R", bound=Record)
RECORDS: tuple[type[Record], ...] = (Crop, Speech, Plan, Generation, Run)


def read(details: Mapping[str, Any] | None, record: type[R]) -> R | None:
    """The asset's `record`, validated; None when the stage that writes it has not run."""
    raw = (details or {}).get(record.key)
    if raw is None:
        return None
    try:
        return record.model_validate(raw)
    except ValidationError as exc:
        raise RecordError(f"the asset's {record.key} record does not validate: {exc}") from exc


def need(details: Mapping[str, Any] | None, record: type[R], *, stage: str) -> R:
    """Like `read`, for a stage that cannot run without it."""
    found = read(details, record)
    if found is None:
        raise RecordError(f"{stage} needs the asset's {record.key} record, which is missing; "
                          f"the stage that writes it has not run")
    return found


def write(details: Mapping[str, Any] | None, *records: Record, drop: tuple[type[Record], ...] = ()) -> dict[str, Any]:
    """A new details dict with `records` set (validated) and the `drop` ones removed."""
    out = {k: v for k, v in (details or {}).items() if k not in {r.key for r in drop}}
    out["schema"] = SCHEMA
    for item in records:
        out[item.key] = type(item).model_validate(item.model_dump()).model_dump(mode="json")
    return out


def warnings(details: Mapping[str, Any] | None) -> list[str]:
    """Everything preprocessing warned about, for the review page and the report."""
    crop, speech = read(details, Crop), read(details, Speech)
    return [f"face: {w}" for w in (crop.warnings if crop else [])] + \
        [f"audio: {w}" for w in (speech.warnings if speech else [])]
