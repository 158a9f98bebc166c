"""packed GPUs (the presets a worker takes) and longest-first claiming (an asset's GPU work)

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("assets", sa.Column("gpu_work", sa.Float(), nullable=True))
    op.add_column("gang_workers", sa.Column("presets", sa.String(length=200), nullable=True))
    op.add_column("gang_workers", sa.Column("reserved_gb", sa.Float(), nullable=True))
    # Videos already waiting for a GPU keep their place: their GPU work from the plan they carry
    # (the formula of inference.stage.gpu_work, copied: a migration must not change with the code).
    assets = sa.table("assets", sa.column("id", sa.Integer), sa.column("state", sa.String),
                      sa.column("details", sa.JSON), sa.column("gpu_work", sa.Float))
    connection = op.get_bind()
    waiting = connection.execute(sa.select(assets.c.id, assets.c.details).where(
        assets.c.state.in_(["planned", "generating"]))).all()
    for asset_id, details in waiting:
        plan = (details or {}).get("plan") or {}
        try:
            width, height = (int(side) for side in str(plan["size"]).split("*"))
            work = round(int(plan["num_clip"]) * width * height / 1e6, 4)
        except (KeyError, TypeError, ValueError):
            continue  # no usable plan: such an asset waits behind those that have one
        connection.execute(sa.update(assets).where(assets.c.id == asset_id).values(gpu_work=work))


def downgrade() -> None:
    # SQLite (≥ 3.35) drops a plain column in place; alembic's batch mode would copy the table,
    # which the events' foreign keys to `assets` forbid.
    for table, column in (("gang_workers", "reserved_gb"), ("gang_workers", "presets"), ("assets", "gpu_work")):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        else:
            op.drop_column(table, column)
