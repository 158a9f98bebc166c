"""A long-lived GPU gang worker: loads the model once, then generates the next ready video, forever.

One worker per gang, started by the platform engineer on the GPU host (`avatarflow gang worker
--gang gang0`, one command per gang, systemd-style). It outlives flow runs and batches: every
few seconds it claims the most urgent `planned` asset of *any* batch from the database
(`db.lifecycle.claim_next`, `SKIP LOCKED` on PostgreSQL), runs the
generate stage on it with its own engine — kept warm for its whole life — and takes the next.
The batch flows do everything else (preprocessing ahead of the GPUs, QC and transcoding while
the gang makes the next video).

The asset's claim is the truth about who generates what. The worker renews it (and its own
heartbeat row, `db.worker_models.GangWorkerRecord`) while a job runs; a worker that dies stops
renewing, its claim lapses after `AVATARFLOW_WORKER_LEASE_SECONDS`, and any other worker puts the
asset back to `planned` (the attempt marked interrupted) and generates it. Nothing is lost and
nothing runs twice at once. The most urgent asset is the one of highest priority, then of the
oldest batch, then the longest job of that batch (`db.lifecycle.claim_next`). A worker of a
packed GPU ("0x2") takes only the presets that fit its share of the GPU (`inference.packing`).
Draining (`avatarflow gang drain`, or SIGTERM) finishes the current job, takes no new one,
closes the engine (the GPUs are free) and exits.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import func, select, update

from db.lifecycle import claim_next, try_claim
from db.models import Asset, GenerationAttempt, utcnow
from db.retry import retry_transient
from db.stage import StageContext, StageOutcome
from db.states import AssetState
from db.worker_models import GangWorkerRecord
from inference.engine import Engine, GpuGang
from inference.packing import PackedGpu, gpu_lock
from inference.stage import GENERATE_STAGE, generate_claimed, requeue

log = logging.getLogger("avatarflow.gang_worker")
T = TypeVar("T")
_numbers = itertools.count(1)  # several workers in one process (benchmarks, tests) get distinct names


def worker_name(gang: GpuGang) -> str:
    number = next(_numbers)
    return f"{gang.name}@{gang.host}#{os.getpid()}" + (f".{number}" if number > 1 else "")


def recover_lapsed(ctx: StageContext) -> list[int]:
    """Assets left `generating` by a worker whose claim lapsed go back to `planned`."""
    recovered = []
    now = utcnow()
    with ctx.database.session() as session:
        stuck = session.scalars(select(Asset).where(
            Asset.state == AssetState.GENERATING.value,
            (Asset.claim_expires_at < now) | Asset.claimed_by.is_(None))).all()
        for asset in stuck:
            requeue(session, asset, actor=ctx.actor,
                    reason=f"the claim of {asset.claimed_by or 'a worker'} lapsed mid-generation; queued again")
            recovered.append(asset.id)
    return recovered


class GangWorker:
    """Generates for one gang until stopped or drained (see the module docstring)."""

    def __init__(self, ctx: StageContext, gang: GpuGang, *, poll_s: float | None = None,
                 lease_s: float | None = None, packed: PackedGpu | None = None) -> None:  # fmt: skip
        self.gang = gang
        self.name = worker_name(gang)
        # A worker of a packed GPU starts a job only when it fits beside its siblings' (inference.packing).
        if gang.shares > 1 and packed is None:
            raise ValueError(f"{gang.name} shares its GPU with {gang.shares - 1} other worker(s): "
                             "pass packed=inference.packing.check_packing(...)")
        self.packed = packed
        self.presets = packed.presets if packed is not None else None
        self.poll_s = poll_s if poll_s is not None else ctx.settings.worker_poll_seconds
        self.lease_s = lease_s if lease_s is not None else ctx.settings.worker_lease_seconds
        # The worker is the only user of its gang: no gang lock, the claim is the guard.
        self.ctx = replace(ctx, actor=self.name, components=replace(ctx.components, gang=gang, gang_lock=None))
        self.record_id: int | None = None
        self._current: int | None = None
        self._jobs_seen = 0
        self._drain = threading.Event()

    # --- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Claim, generate, repeat; returns once `stop` is set or a drain was asked for."""
        stop = stop or threading.Event()
        self._db(self._register, "registering")
        assert self.ctx.components.engine_for is not None, "a gang worker needs ctx.components.engine_for"
        engine: Engine = self.ctx.components.engine_for(self.gang)
        beating = threading.Event()
        heart = threading.Thread(target=self._heartbeat, args=(beating,), name=f"{self.name}-heartbeat", daemon=True)
        heart.start()
        log.info("%s: serving gang %s (GPUs %s) with %s", self.name, self.gang.name,
                 self.gang.cuda_visible_devices or "none", engine.name)  # fmt: skip
        try:
            while not (stop.is_set() or self._drain.is_set()):
                try:
                    asset_id = self._db(self._claim, "claiming the next video")
                except Exception:  # noqa: BLE001 - the database stayed away: the loop tries again
                    log.exception("%s: could not claim a video; trying again", self.name)
                    stop.wait(self.poll_s)
                    continue
                if asset_id is None:
                    self._db(lambda: self._set(state="idle"), "marking itself idle")
                    stop.wait(self.poll_s)
                    continue
                self._job(engine, asset_id)
        finally:
            beating.set()
            heart.join(timeout=5)
            self._best_effort(lambda: self._set(state="draining"), "draining")
            engine.close()  # the warm worker process goes: its GPUs are free
            self._best_effort(lambda: self._db(lambda: self._set(state="stopped", stopped_at=utcnow(),
                                                                 current_asset_id=None), "stopping"), "stopped")
            log.info("%s: stopped", self.name)

    def _best_effort(self, fn: Callable[[], object], state: str) -> None:
        """Recording its own state at shutdown; if the database is away its heartbeat goes stale."""
        try:
            fn()
        except Exception:  # noqa: BLE001 - then it is presumed dead, which it is about to be
            log.exception("%s: could not record that it is %s", self.name, state)

    def _db(self, fn: Callable[[], T], what: str) -> T:
        """`fn()` through a database outage of up to AVATARFLOW_DB_RETRY_SECONDS (db.retry)."""
        return retry_transient(fn, what=f"{self.name}: {what}", within_s=self.ctx.settings.db_retry_seconds)

    def drain(self) -> None:
        """Finish the current job, take no new one (what SIGTERM does)."""
        self._drain.set()

    def _claim(self) -> int | None:
        recover_lapsed(self.ctx)
        if self.packed is not None:
            with gpu_lock(self.gang):  # the GPU's workers decide one at a time
                return self._claim_beside_siblings(self.packed)
        with self.ctx.database.session() as session:
            asset = claim_next(session, self.name, [AssetState.PLANNED], lease_seconds=self.lease_s)
            return asset.id if asset is not None else None

    def _claim_beside_siblings(self, packed: PackedGpu) -> int | None:
        """Claim the most urgent job whose planned peak fits beside what the siblings hold now."""
        fresh = utcnow() - timedelta(seconds=self.lease_s)
        with self.ctx.database.session() as session:
            siblings = session.scalars(select(GangWorkerRecord).where(
                GangWorkerRecord.host == self.gang.host, GangWorkerRecord.devices == self._devices,
                GangWorkerRecord.id != self.record_id, GangWorkerRecord.state != "stopped",
                GangWorkerRecord.heartbeat_at >= fresh)).all()
            held = [r.reserved_gb if r.reserved_gb is not None else packed.idle_gb for r in siblings]
            presets = packed.admissible(held)
            if not presets:
                return None
            asset = claim_next(session, self.name, [AssetState.PLANNED], lease_seconds=self.lease_s, presets=presets)
            if asset is None:
                return None
            session.execute(update(GangWorkerRecord).where(GangWorkerRecord.id == self.record_id)
                            .values(reserved_gb=packed.peaks_gb[asset.preset]))
            return asset.id

    def _job(self, engine: Engine, asset_id: int) -> None:
        self._current = asset_id
        self._db(lambda: self._set(state="busy", current_asset_id=asset_id), "marking itself busy")
        started = time.monotonic()
        try:
            outcome = generate_claimed(self.ctx, asset_id, engine, self.gang, self.lease_s)
        except Exception as exc:  # noqa: BLE001 - a broken job must not end the worker
            log.exception("%s: generating asset %s raised", self.name, asset_id)
            outcome = StageOutcome(asset_id, GENERATE_STAGE, "unknown", False, f"{type(exc).__name__}: {exc}")
        busy = time.monotonic() - started
        self._current = None
        try:
            self._db(lambda: self._account(engine, asset_id, outcome, busy), "recording its own figures")
        except Exception:  # noqa: BLE001 - the worker's own figures are not worth stopping for
            log.exception("%s: could not record its figures for asset %s", self.name, asset_id)
        log.info("%s: asset %s → %s in %.1f s", self.name, asset_id, outcome.state, busy)

    def _account(self, engine: Engine, asset_id: int, outcome: StageOutcome, busy: float) -> None:
        """The worker row's busy time, jobs and loads after a job."""
        loaded = self._loaded_in(asset_id, engine)
        with self.ctx.database.session() as session:
            row = session.get(GangWorkerRecord, self.record_id)
            row.busy_seconds += busy
            row.current_asset_id = None
            row.reserved_gb = self.packed.idle_gb if self.packed is not None else None
            if outcome.state == AssetState.GENERATED.value:
                row.jobs_done += 1
            else:
                row.jobs_failed += 1
            if loaded is not None:
                row.model_loads += 1
                if row.load_seconds is None and loaded == loaded:  # the first measured load (NaN: unknown)
                    row.load_seconds = loaded

    def _loaded_in(self, asset_id: int, engine: Engine) -> float | None:
        """How long this job spent loading the model (None: it did not load one).

        A warm engine reports its load on the job that paid it (the first, or the first after
        its worker process died); an engine with nothing to load (the CPU engine) counts one
        load of 0 s on its first job; a per-job engine loads on every job without saying for how
        long (NaN)."""
        with self.ctx.database.session() as session:
            attempt = session.scalars(select(GenerationAttempt).where(GenerationAttempt.asset_id == asset_id)
                                      .order_by(GenerationAttempt.number.desc())).first()
            seconds = attempt.load_seconds if attempt is not None else None
        first = not self._jobs_seen
        self._jobs_seen += 1
        if seconds is not None:
            return seconds
        if getattr(engine, "loads_per_job", False):
            return float("nan")
        return 0.0 if first else None

    # --- the worker's row and the claim's lease ----------------------------------------------

    def _register(self) -> None:
        settings = self.ctx.settings
        with self.ctx.database.session() as session:
            row = GangWorkerRecord(name=self.name, host=self.gang.host, gang=self.gang.name,
                                   devices=self._devices, engine=settings.engine,
                                   pid=os.getpid(), state="starting",
                                   presets=",".join(self.presets) if self.presets is not None else None)  # fmt: skip
            session.add(row)
            session.flush()
            self.record_id = row.id

    @property
    def _devices(self) -> str:
        return ",".join(str(d) for d in self.gang.devices)

    def _set(self, **values: object) -> None:
        with self.ctx.database.session() as session:
            session.execute(update(GangWorkerRecord).where(GangWorkerRecord.id == self.record_id)
                            .values(heartbeat_at=utcnow(), **values))

    def _heartbeat(self, stop: threading.Event) -> None:
        """Renew the current asset's claim and the worker's row; notice a drain asked for."""
        every = max(0.2, self.lease_s / 4)
        while not stop.wait(every):
            try:
                with self.ctx.database.session() as session:
                    if (current := self._current) is not None:
                        try_claim(session, current, self.name, self.lease_s)
                    row = session.get(GangWorkerRecord, self.record_id)
                    row.heartbeat_at = utcnow()
                    if row.drain_requested:
                        self._drain.set()
            except Exception:  # noqa: BLE001 - a database hiccup: try again next beat
                log.warning("%s: heartbeat failed; retrying", self.name, exc_info=True)


def live_workers(ctx: StageContext, lease_s: float | None = None) -> list[GangWorkerRecord]:
    """Workers whose heartbeat is fresh (not stopped, not presumed dead)."""
    lease = lease_s if lease_s is not None else ctx.settings.worker_lease_seconds
    fresh = utcnow() - timedelta(seconds=lease)
    with ctx.database.session() as session:
        rows = session.scalars(select(GangWorkerRecord).where(
            GangWorkerRecord.state != "stopped", GangWorkerRecord.heartbeat_at >= fresh)
            .order_by(GangWorkerRecord.host, GangWorkerRecord.gang)).all()
        session.expunge_all()
        return list(rows)


def untaken_presets(ctx: StageContext, batch_id: int, workers: Sequence[GangWorkerRecord]) -> dict[str, int]:
    """Planned videos of the batch, per preset, that none of `workers` takes (packed GPUs only)."""
    takes_all = any(w.presets is None for w in workers)
    taken = {p for w in workers if w.presets is not None for p in w.presets.split(",")}
    if takes_all:
        return {}
    with ctx.database.session() as session:
        rows = session.execute(select(Asset.preset, func.count(Asset.id)).where(
            Asset.batch_id == batch_id, Asset.state == AssetState.PLANNED.value).group_by(Asset.preset)).all()
    return {preset: int(n) for preset, n in rows if preset not in taken}


def request_drain(ctx: StageContext, gang: str, host: str | None = None) -> int:
    """Ask the live workers of `gang` (on `host`, or any) to drain; returns how many were asked."""
    with ctx.database.session() as session:
        query = update(GangWorkerRecord).where(GangWorkerRecord.gang == gang, GangWorkerRecord.state != "stopped")
        if host:
            query = query.where(GangWorkerRecord.host == host)
        return session.execute(query.values(drain_requested=True)).rowcount
