"""The `deliver` flow: publish approved assets (started by a review decision, and on a schedule)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.stages import deliver


@flow(name="deliver", log_prints=True)
def deliver_flow(asset_ids: list[int] | None = None) -> dict[str, Any]:
    """Deliver the given approved assets, or every approved asset when none are given."""
    report = deliver(asset_ids)
    logger = get_run_logger()
    data = report.to_dict() if hasattr(report, "to_dict") else dict(vars(report))
    delivered = data.get("delivered", [])
    logger.info("delivered %d asset(s)", len(delivered))
    if delivered or data.get("failed"):
        rows = [{"asset": a, "outcome": "delivered"} for a in delivered]
        rows += [{"asset": a, "outcome": f"failed: {why}"} for a, why in dict(data.get("failed") or {}).items()]
        create_table_artifact(key="delivery", table=rows, description="assets delivered by this run")
    return data
