"""review sessions kept server-side (revocable)

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("password_fp", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_why", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["reviewer_id"], ["reviewers.id"], name="fk_review_sessions_reviewer_id_reviewers"),
        sa.PrimaryKeyConstraint("id", name="pk_review_sessions"),
    )
    op.create_index("ix_review_sessions_reviewer_id", "review_sessions", ["reviewer_id"])


def downgrade() -> None:
    op.drop_index("ix_review_sessions_reviewer_id", table_name="review_sessions")
    op.drop_table("review_sessions")
