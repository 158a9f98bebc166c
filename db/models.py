"""SQLAlchemy 2 typed ORM models: every asset, what happened to it, and what it produced."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from avatarflow.errors import AvatarflowError
from db.states import AssetState

# JSONB on PostgreSQL (indexable, compact), plain JSON text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: Json, list[Any]: Json, datetime: UTCDateTime()}


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str | None] = mapped_column(Text)
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    assets: Mapped[list[Asset]] = relationship(back_populates="batch")


class Asset(Base):
    __tablename__ = "assets"
    __table_args__ = (
        Index("ix_assets_state_priority", "state", "priority", "created_at"),
        Index("ix_assets_batch_state", "batch_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Content hash of everything that determines the video (image, audio, prompt, preset).
    key: Mapped[str] = mapped_column(String(64), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"))
    segment_index: Mapped[int | None] = mapped_column(Integer)
    external_id: Mapped[str | None] = mapped_column(String(200), index=True)
    source_row: Mapped[int | None] = mapped_column(Integer)

    image_path: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64))
    audio_path: Mapped[str] = mapped_column(Text)
    audio_sha256: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str | None] = mapped_column(Text)
    template: Mapped[str | None] = mapped_column(String(200))
    template_vars: Mapped[dict[str, Any]] = mapped_column(default=dict)
    preset: Mapped[str] = mapped_column(String(50))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Relative GPU time of the planned video (clips × megapixels per frame), set when planned:
    # gang workers take the longest job of a batch first, so no long job is left for the end.
    gpu_work: Mapped[float | None] = mapped_column(Float)
    tags: Mapped[list[Any]] = mapped_column(default=list)

    state: Mapped[str] = mapped_column(String(32), default=AssetState.SUBMITTED.value)
    failed_stage: Mapped[str | None] = mapped_column(String(32))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    retryable: Mapped[bool | None] = mapped_column(Boolean)
    # Stage outputs (crop box, landmarks, warnings, file paths) recorded as each stage finishes.
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claim_expires_at: Mapped[datetime | None] = mapped_column()
    # Optimistic concurrency: every write bumps it; a write based on a stale read fails.
    version: Mapped[int] = mapped_column(Integer, default=1)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}

    batch: Mapped[Batch] = relationship(back_populates="assets")
    parent: Mapped[Asset | None] = relationship(remote_side=[id], back_populates="segments")
    segments: Mapped[list[Asset]] = relationship(
        back_populates="parent", order_by="Asset.segment_index"
    )
    events: Mapped[list[Event]] = relationship(back_populates="asset", order_by="Event.id")
    attempts: Mapped[list[GenerationAttempt]] = relationship(
        back_populates="asset", order_by="GenerationAttempt.number"
    )
    qc_results: Mapped[list[QCResult]] = relationship(
        back_populates="asset", order_by="QCResult.id"
    )
    reviews: Mapped[list[Review]] = relationship(back_populates="asset", order_by="Review.id")
    renditions: Mapped[list[Rendition]] = relationship(back_populates="asset")


class Event(Base):
    """One line of the append-only log: a state transition or a notable fact about an asset."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    asset: Mapped[Asset] = relationship(back_populates="events")


class GenerationAttempt(Base):
    __tablename__ = "generation_attempts"
    __table_args__ = (UniqueConstraint("asset_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    engine: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(BigInteger)
    gang: Mapped[str | None] = mapped_column(String(50))
    gpus: Mapped[list[Any]] = mapped_column(default=list)
    host: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    load_seconds: Mapped[float | None] = mapped_column(Float)
    first_clip_seconds: Mapped[float | None] = mapped_column(Float)
    peak_memory_mb: Mapped[dict[str, Any]] = mapped_column(default=dict)
    mean_utilisation: Mapped[float | None] = mapped_column(Float)
    exit_status: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(32))
    failure_kind: Mapped[str | None] = mapped_column(String(50))
    failure_message: Mapped[str | None] = mapped_column(Text)
    retryable: Mapped[bool | None] = mapped_column(Boolean)
    log_path: Mapped[str | None] = mapped_column(Text)
    output_path: Mapped[str | None] = mapped_column(Text)

    asset: Mapped[Asset] = relationship(back_populates="attempts")


class QCResult(Base):
    __tablename__ = "qc_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("generation_attempts.id"))
    scorer: Mapped[str] = mapped_column(String(50))
    score: Mapped[float | None] = mapped_column(Float)
    gate: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(20))
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checks: Mapped[list[Any]] = mapped_column(default=list)
    calibration: Mapped[str | None] = mapped_column(String(200))
    sampled_for_review: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    asset: Mapped[Asset] = relationship(back_populates="qc_results")


class Reviewer(Base):
    __tablename__ = "reviewers"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(20), default="reviewer")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    reviews: Mapped[list[Review]] = relationship(back_populates="reviewer")


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"))
    decision: Mapped[str] = mapped_column(String(20))
    reason_code: Mapped[str | None] = mapped_column(String(50))
    notes: Mapped[str | None] = mapped_column(Text)
    time_ranges: Mapped[list[Any]] = mapped_column(default=list)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)

    asset: Mapped[Asset] = relationship(back_populates="reviews")
    reviewer: Mapped[Reviewer] = relationship(back_populates="reviews")


class Rendition(Base):
    __tablename__ = "renditions"
    __table_args__ = (UniqueConstraint("asset_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    path: Mapped[str] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    asset: Mapped[Asset] = relationship(back_populates="renditions")


class AppendOnlyViolation(AvatarflowError):
    """Somebody tried to edit or delete a line of the event log."""


@event.listens_for(Event, "before_update")
def _events_are_append_only(mapper: Any, connection: Any, target: Event) -> None:
    raise AppendOnlyViolation(f"event {target.id} is part of the append-only log and cannot change")


@event.listens_for(Event, "before_delete")
def _events_are_never_deleted(mapper: Any, connection: Any, target: Event) -> None:
    raise AppendOnlyViolation(f"event {target.id} is part of the append-only log and cannot go")
