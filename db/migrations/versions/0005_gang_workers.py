"""long-lived GPU gang workers

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gang_workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("gang", sa.String(length=100), nullable=False),
        sa.Column("devices", sa.String(length=100), nullable=False),
        sa.Column("engine", sa.String(length=50), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("drain_requested", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model_loads", sa.Integer(), nullable=False),
        sa.Column("load_seconds", sa.Float(), nullable=True),
        sa.Column("current_asset_id", sa.Integer(), nullable=True),
        sa.Column("jobs_done", sa.Integer(), nullable=False),
        sa.Column("jobs_failed", sa.Integer(), nullable=False),
        sa.Column("busy_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["current_asset_id"], ["assets.id"], name="fk_gang_workers_current_asset_id_assets",
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_gang_workers"),
        sa.UniqueConstraint("name", name="uq_gang_workers_name"),
    )
    op.create_index("ix_gang_workers_host_gang", "gang_workers", ["host", "gang"])


def downgrade() -> None:
    op.drop_index("ix_gang_workers_host_gang", table_name="gang_workers")
    op.drop_table("gang_workers")
