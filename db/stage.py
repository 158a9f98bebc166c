"""One stage layer: every pipeline stage is `stage(ctx, asset_id) -> StageOutcome`.

A stage moves one asset from the state it expects to the next one (or to `failed`, with the
reason and whether a retry can help), records what it made as a typed record
(`avatarflow.records`) and every move as an event, and never raises for bad input: errors are
values. `run_stage` turns an unexpected exception into a failed asset, so one broken asset never
stops a batch. The swappable parts a stage uses — the engine, the lip-sync scorer, the GPU gang
lock, the face detector — come in `ctx.components`, chosen from typed settings by the flows
(`flows/components.py`) or given as fakes by tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from avatarflow.settings import Settings
from db.lifecycle import transition
from db.models import Asset
from db.retry import DEFAULT_WITHIN_S, is_transient, retry_transient
from db.session import Database
from db.states import AssetState, allowed

log = logging.getLogger("avatarflow")


@dataclass(frozen=True)
class StageOutcome:
    """Where a stage left an asset. `advanced`: the asset moved on, so the next stage may run."""

    asset_id: int
    stage: str
    state: str
    advanced: bool
    reason: str | None = None
    retryable: bool | None = None  # for a failure: may a retry help
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def stay(cls, asset_id: int, stage: str, asset: Asset | None, reason: str) -> StageOutcome:
        """Nothing to do: the asset is not (or no longer) in the state this stage starts from."""
        return cls(asset_id, stage, asset.state if asset is not None else "missing", False, reason)


class GangLock(Protocol):
    """Holds a GPU gang for one generation, across processes (Prefect's global concurrency
    limits in production, a process-local lock for tests and single-process runs)."""

    def __call__(self, gang: Any, *, lease_seconds: float) -> AbstractContextManager[Any]: ...


@dataclass(frozen=True)
class Components:
    """The swappable parts stages use. None: the stage builds its default from settings."""

    engine_for: Callable[[Any], Any] | None = None  # GpuGang -> inference.engine.Engine
    gang: Any | None = None  # the inference.engine.GpuGang a generation runs on
    gang_lock: GangLock | None = None
    scorer: Any | None = None  # qc's lip-sync scorer
    detector: Any | None = None  # tasks.face's face detector
    progress: Callable[[int, Any], None] | None = None  # (asset id, inference.engine.Progress)


@dataclass(frozen=True)
class StageContext:
    """What every stage runs with."""

    database: Database
    settings: Settings
    actor: str = "pipeline"
    components: Components = field(default_factory=Components)
    flow_run_url: str | None = None  # the orchestrator's run moving the asset (for the review page)

    def as_actor(self, actor: str) -> StageContext:
        return replace(self, actor=actor)


Stage = Callable[[StageContext, int], StageOutcome]

# Seconds spent inside each stage's own function in this process (the orchestration benchmark
# subtracts this "work itself" from the wall time).
WORK_SECONDS: Counter[str] = Counter()
_work_lock = threading.Lock()
_cpu_slots: threading.BoundedSemaphore | None = None
_cpu_lock = threading.Lock()


@contextmanager
def cpu_slot(workers: int) -> Iterator[None]:
    """Bound the CPU-heavy stages running at once in this process (the task runner has many threads)."""
    global _cpu_slots
    with _cpu_lock:
        if _cpu_slots is None:
            _cpu_slots = threading.BoundedSemaphore(max(1, workers))
    with _cpu_slots:
        yield


def fail_on_error(database: Database, asset_id: int, stage: str, exc: BaseException, *, actor: str) -> str:
    """Record an unexpected error on the asset (errors are values); returns the asset's state.

    A bug or a broken installation must not leave the asset silently stuck, nor stop the batch:
    the asset moves to `failed` with the error, marked retryable, and the batch goes on.
    """
    reason = f"{stage} stage crashed: {type(exc).__name__}: {exc}"[:2000]
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None:
            return "missing"
        if allowed(asset.state, AssetState.FAILED):
            transition(session, asset, AssetState.FAILED, actor=actor, reason=reason, failed_stage=stage,
                       retryable=True, data={"exception": type(exc).__name__})
        return asset.state


def run_stage(stage: str, fn: Stage, ctx: StageContext, asset_id: int) -> StageOutcome:
    """Run one stage for one asset; an unexpected exception fails that asset, not the batch.

    A database outage is waited out (the stage runs again: every stage first checks the asset's
    state, so a repeat does nothing twice); one that outlasts `db_retry_seconds` leaves the asset
    where it is, for the next round or run, rather than failing it."""
    started = time.perf_counter()
    try:
        return retry_transient(lambda: fn(ctx, asset_id), what=f"{stage} of asset {asset_id}",
                               within_s=getattr(ctx.settings, "db_retry_seconds", DEFAULT_WITHIN_S))
    except Exception as exc:
        if is_transient(exc):
            log.error("%s of asset %s: the database stayed unavailable; the asset is left as it was", stage, asset_id)
            return StageOutcome(asset_id, stage, "unknown", False, f"database unavailable: {type(exc).__name__}", True)
        log.exception("%s of asset %s crashed", stage, asset_id)
        state = fail_on_error(ctx.database, asset_id, stage, exc, actor=ctx.actor)
        return StageOutcome(asset_id, stage, state, False, f"{type(exc).__name__}: {exc}", True)
    finally:
        with _work_lock:
            WORK_SECONDS[stage] += time.perf_counter() - started


_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


@contextmanager
def process_gang_lock(gang: Any, *, lease_seconds: float) -> Iterator[None]:
    """A gang held by a lock of this process (settings.gang_lock = "process"): for one-process
    runs and tests; it does nothing across processes or hosts (production uses Prefect's)."""
    with _process_locks_guard:
        lock = _process_locks.setdefault(str(getattr(gang, "name", gang)), threading.Lock())
    with lock:
        yield
