"""The long-lived GPU gang workers: one row per worker process, written by the worker itself.

The row is how operators see a worker (`avatarflow gpus`, `avatarflow status`) and how they ask
it to drain; the asset rows and their claims stay the truth about who generates what. Created
by migration 0005_gang_workers.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, utcnow

# A worker's life: starting → idle ⇄ busy → (draining →) stopped. A worker whose heartbeat is
# older than its lease is presumed dead whatever its state says.
WORKER_STATES = ("starting", "idle", "busy", "draining", "stopped")


class GangWorkerRecord(Base):
    __tablename__ = "gang_workers"
    __table_args__ = (Index("ix_gang_workers_host_gang", "host", "gang"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300), unique=True)  # the actor in events: gang@host#pid
    host: Mapped[str] = mapped_column(String(200))
    gang: Mapped[str] = mapped_column(String(100))
    devices: Mapped[str] = mapped_column(String(100), default="")  # as configured, e.g. "1,2,3,4,5"
    engine: Mapped[str] = mapped_column(String(50))
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default="starting")
    drain_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(default=None)
    model_loads: Mapped[int] = mapped_column(Integer, default=0)
    load_seconds: Mapped[float | None] = mapped_column(Float, default=None)  # the model load, once
    current_asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id", ondelete="SET NULL"))
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    jobs_failed: Mapped[int] = mapped_column(Integer, default=0)
    busy_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # A worker of a packed GPU ("0x2"; migration 0006): the presets it can take at all (None: every
    # preset), and the GB it holds now by plan (its job's peak, or its weights when idle).
    presets: Mapped[str | None] = mapped_column(String(200), default=None)
    reserved_gb: Mapped[float | None] = mapped_column(Float, default=None)
