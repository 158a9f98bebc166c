"""What happens after a decision is committed: delivery of approved assets, regeneration of others.

A decision is durable once its transaction commits (the asset is approved / planned / rejected);
these actions only make the next step start at once. When one fails, nothing is lost: the
scheduled deliver flow picks up approved assets and the batch flow picks up planned ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

log = logging.getLogger("avatarflow.review")


class DecisionActions(Protocol):
    def approved(self, asset_ids: Sequence[int]) -> None: ...

    def rejected(self, asset_id: int, regenerate: bool) -> None: ...


class NoActions:
    """Leave everything to the scheduled flows (a review app with no orchestration attached)."""

    def approved(self, asset_ids: Sequence[int]) -> None:
        log.info("approved %s; the scheduled deliver flow will deliver them", list(asset_ids))

    def rejected(self, asset_id: int, regenerate: bool) -> None:
        log.info("rejected %s (regenerate=%s)", asset_id, regenerate)


class DirectDecisionActions:
    """Call delivery (and regeneration) in this process: tests and single-machine setups."""

    def __init__(self, deliver: Callable[[Sequence[int]], Any],
                 regenerate: Callable[[int], Any] | None = None) -> None:
        self._deliver = deliver
        self._regenerate = regenerate

    def approved(self, asset_ids: Sequence[int]) -> None:
        self._deliver(list(asset_ids))

    def rejected(self, asset_id: int, regenerate: bool) -> None:
        if regenerate and self._regenerate is not None:
            self._regenerate(asset_id)


class PrefectDecisionActions:
    """Start the deliver deployment for approved assets (and optionally a regenerate deployment).

    `timeout=0` returns as soon as the run is created: the request that made the decision never
    waits for delivery. Without a reachable Prefect API or deployment the asset stays approved and
    the scheduled deliver flow delivers it later; that fallback is logged, never raised.
    """

    def __init__(self, deliver_deployment: str = "deliver/deliver",
                 regenerate_deployment: str | None = None) -> None:
        self.deliver_deployment = deliver_deployment
        self.regenerate_deployment = regenerate_deployment

    def approved(self, asset_ids: Sequence[int]) -> None:
        self._start(self.deliver_deployment, list(asset_ids), "deliver")

    def rejected(self, asset_id: int, regenerate: bool) -> None:
        if regenerate and self.regenerate_deployment:
            self._start(self.regenerate_deployment, [asset_id], "regenerate")

    def _start(self, deployment: str, asset_ids: list[int], what: str) -> bool:
        try:
            from prefect.deployments import run_deployment
            from prefect.settings import get_current_settings

            if not get_current_settings().api.url:
                # Without an API URL Prefect would start a throwaway in-process server that knows
                # no deployments; say so instead of paying 20 s to find out.
                raise RuntimeError("PREFECT_API_URL is not set")
            run = run_deployment(name=deployment, parameters={"asset_ids": asset_ids}, timeout=0)
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the schedule
            log.warning("could not start %s for assets %s (%s: %s); the scheduled flow will pick "
                        "them up", deployment, asset_ids, type(exc).__name__, exc)
            return False
        log.info("started %s run %s for %s assets %s", deployment, getattr(run, "id", "?"), what, asset_ids)
        return True


def run_actions(actions: DecisionActions, approved: Sequence[int], rejected: int | None,
                regenerate: bool) -> None:
    """Run after the decision commits (a background task); failures are logged, never raised."""
    try:
        if approved:
            actions.approved(approved)
        if rejected is not None:
            actions.rejected(rejected, regenerate)
    except Exception:
        log.exception("post-decision action failed for %s / %s", list(approved), rejected)
