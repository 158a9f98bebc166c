"""The long-lived gang worker (inference/gang_worker.py) with the named fakes: fast tier.

Each test runs a real `GangWorker` in a thread against a SQLite database; the engine is a
`ScriptedEngine`. What crosses processes (two workers, SIGKILL, Prefect) is in
tests/flows/test_gang_workers.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from fakes.components import ScriptedEngine
from sqlalchemy import select
from stages.test_stage_functions import add_asset, inputs, with_parts

from avatarflow import records
from avatarflow.records import Plan
from db.models import Asset, Batch, GenerationAttempt, utcnow
from db.states import AssetState as S
from db.worker_models import GangWorkerRecord
from inference.engine import GpuGang
from inference.gang_worker import GangWorker, live_workers, request_drain, untaken_presets
from inference.gpus import parse_gangs, parse_gpu_spec
from inference.packing import check_packing, resident_gb
from inference.stage import plan_asset

GANG = GpuGang("gang0", (0,), host="host-a")


def planned(ctx, clip, name: str, *, batch: str = "b", priority: int = 0, preset: str = "standard") -> int:
    asset_id = add_asset(ctx, state=S.PREPROCESSED, details=inputs(clip), name=name, preset=preset)
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        asset.priority = priority
        if batch != "b":
            asset.batch = session.scalar(select(Batch).where(Batch.name == batch)) or Batch(name=batch, created_by="t")
    assert plan_asset(ctx, asset_id).state == S.PLANNED
    return asset_id


def run_until(worker: GangWorker, done, timeout: float = 30.0) -> threading.Thread:
    """Run `worker` in a thread; stop it once done() holds (or fail after `timeout`)."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert done(), "the worker did not get there in time"
    return thread


def states(ctx) -> dict[int, str]:
    with ctx.database.session() as session:
        return {a.id: a.state for a in session.scalars(select(Asset))}


def worker_row(ctx, worker: GangWorker) -> GangWorkerRecord:
    with ctx.database.session() as session:
        row = session.get(GangWorkerRecord, worker.record_id)
        session.expunge(row)
        return row


def test_one_worker_serves_every_batch_most_urgent_first_loading_once(ctx, clip):
    first = [planned(ctx, clip, f"a{i}") for i in range(3)]
    other = planned(ctx, clip, "b0", batch="other")
    urgent = planned(ctx, clip, "urgent", priority=10)
    engine = ScriptedEngine([clip["video"]], load_seconds=12.5)
    worker = GangWorker(with_parts(ctx, engine_for=lambda gang: engine), GANG, poll_s=0.05, lease_s=5)
    run_until(worker, lambda: all(s == S.GENERATED for s in states(ctx).values()))
    order = [r.asset_key for r in engine.requests]
    with ctx.database.session() as session:
        keys = {a.id: a.key for a in session.scalars(select(Asset))}
    assert order[0] == keys[urgent]  # the urgent asset first, then the oldest
    assert order[1:] == [keys[i] for i in (*first, other)]
    row = worker_row(ctx, worker)
    assert (row.jobs_done, row.jobs_failed, row.model_loads, row.load_seconds) == (5, 0, 1, 12.5)
    assert row.state == "stopped" and row.host == "host-a" and row.gang == "gang0" and row.busy_seconds > 0
    with ctx.database.session() as session:
        attempts = session.scalars(select(GenerationAttempt)).all()
        assert {a.gang for a in attempts} == {"gang0"} and all(a.outcome == "ok" for a in attempts)
        assert all(a.claimed_by is None for a in session.scalars(select(Asset)))  # claims released


def test_a_lapsed_claim_is_recovered_and_generated_once(ctx, clip):
    """A worker that died mid-job stops renewing; another recovers the asset when the claim lapses."""
    asset_id = planned(ctx, clip, "orphan")
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        from db.lifecycle import transition

        transition(session, asset, S.GENERATING, actor="gang0@host-b#1")
        asset.claimed_by, asset.claim_expires_at = "gang0@host-b#1", utcnow() - timedelta(seconds=1)
        session.add(GenerationAttempt(asset_id=asset_id, number=1, engine="scripted", gang="gang0",
                                      config={}, seed=1, started_at=utcnow()))
    engine = ScriptedEngine([clip["video"]])
    worker = GangWorker(with_parts(ctx, engine_for=lambda gang: engine), GANG, poll_s=0.05, lease_s=5)
    run_until(worker, lambda: states(ctx)[asset_id] == S.GENERATED)
    with ctx.database.session() as session:
        outcomes = [a.outcome for a in session.scalars(select(GenerationAttempt).order_by(GenerationAttempt.number))]
        assert outcomes == ["interrupted", "ok"]
        reasons = [e.reason for e in session.get(Asset, asset_id).events if e.to_state == S.PLANNED]
        assert any("lapsed" in (r or "") for r in reasons)


def test_a_live_claim_is_left_alone(ctx, clip):
    """An asset another (live) worker is generating is neither recovered nor taken."""
    busy = planned(ctx, clip, "busy")
    with ctx.database.session() as session:
        asset = session.get(Asset, busy)
        from db.lifecycle import transition

        transition(session, asset, S.GENERATING, actor="gang0@host-b#1")
        asset.claimed_by, asset.claim_expires_at = "gang0@host-b#1", utcnow() + timedelta(minutes=5)
    free = planned(ctx, clip, "free")
    engine = ScriptedEngine([clip["video"]])
    worker = GangWorker(with_parts(ctx, engine_for=lambda gang: engine), GANG, poll_s=0.05, lease_s=5)
    run_until(worker, lambda: states(ctx)[free] == S.GENERATED)
    assert states(ctx)[busy] == S.GENERATING and len(engine.requests) == 1


def test_drain_finishes_the_current_job_and_stops(ctx, clip):
    ids = [planned(ctx, clip, f"d{i}") for i in range(3)]
    engine = ScriptedEngine([clip["video"]], seconds=0.6)
    worker = GangWorker(with_parts(ctx, engine_for=lambda gang: engine), GANG, poll_s=0.05, lease_s=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not any(s == S.GENERATING for s in states(ctx).values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [w.name for w in live_workers(ctx)] == [worker.name]
    assert request_drain(ctx, "gang0", "host-a") == 1
    thread.join(timeout=20)
    assert not thread.is_alive(), "a drained worker exits"
    done = [s for s in states(ctx).values() if s == S.GENERATED]
    assert len(done) == 1 and sorted(states(ctx)) == sorted(ids)  # it finished its job, took no other
    assert worker_row(ctx, worker).state == "stopped" and live_workers(ctx) == []


@pytest.mark.parametrize("kind", ["timeout"])
def test_a_retryable_failure_goes_back_to_the_queue_with_the_next_seed(ctx, clip, kind):
    from inference.engine import FailureKind

    asset_id = planned(ctx, clip, "flaky")
    engine = ScriptedEngine([FailureKind(kind), clip["video"]])
    worker = GangWorker(with_parts(ctx, engine_for=lambda gang: engine), GANG, poll_s=0.05, lease_s=5)
    run_until(worker, lambda: states(ctx)[asset_id] == S.GENERATED)
    assert [r.seed for r in engine.requests][0] != engine.requests[1].seed
    with ctx.database.session() as session:
        plan = records.read(session.get(Asset, asset_id).details, Plan)
        assert plan.attempt == 2
    row = worker_row(ctx, worker)
    assert (row.jobs_done, row.jobs_failed) == (1, 1)


def keys_of(ctx) -> dict[int, str]:
    with ctx.database.session() as session:
        return {a.id: a.key for a in session.scalars(select(Asset))}


def test_within_a_batch_the_longest_job_goes_first_and_the_older_batch_before_a_newer_one(ctx, clip):
    # 3 s of speech: a preview and a standard video have the same clips, the standard's frames
    # are 2.6 times the area: more GPU work, so it goes first although it was submitted last.
    short = planned(ctx, clip, "preview", preset="preview")
    long = planned(ctx, clip, "standard", preset="standard")
    newer = planned(ctx, clip, "newer-standard", batch="newer")
    with ctx.database.session() as session:
        work = {a.id: a.gpu_work for a in session.scalars(select(Asset))}
    assert work[long] > work[short] > 0
    engine = ScriptedEngine([clip["video"]])
    worker = GangWorker(with_parts(ctx, engine_for=lambda gang: engine), GANG, poll_s=0.05, lease_s=5)
    run_until(worker, lambda: all(s == S.GENERATED for s in states(ctx).values()))
    keys = keys_of(ctx)
    assert [r.asset_key for r in engine.requests] == [keys[long], keys[short], keys[newer]]


def test_two_workers_of_a_packed_gpu_never_run_two_jobs_that_do_not_fit_together(ctx, clip):
    """An H200 packed with two bf16 workers: two standards (69.5 GB each) never run at once; a
    preview (48 GB) runs beside a standard. Both workers poll the same queue at the same time."""
    standards = [planned(ctx, clip, f"standard{i}", preset="standard") for i in range(3)]
    previews = [planned(ctx, clip, f"preview{i}", preset="preview") for i in range(2)]
    running: dict[str, str] = {}
    overlaps: list[tuple[str, ...]] = []
    lock = threading.Lock()

    class Recording(ScriptedEngine):
        def generate(self, request, gang, progress=None):
            with lock:
                running[gang.name] = request.preset
                overlaps.append(tuple(sorted(running.values())))
            try:
                return super().generate(request, gang, progress)
            finally:
                with lock:
                    running.pop(gang.name)

    gangs = parse_gangs("0x2")
    workers = []
    for packed_gang in gangs:
        engine = Recording([clip["video"]], seconds=0.3)
        packed = check_packing(replace(packed_gang, host="host-a"), parse_gpu_spec("1xH200"), "bf16")
        workers.append(GangWorker(with_parts(ctx, engine_for=lambda g, e=engine: e), packed.gang, poll_s=0.02,
                                  lease_s=5, packed=packed))
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(s == S.GENERATED for s in states(ctx).values()):
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert all(states(ctx)[i] == S.GENERATED for i in (*standards, *previews))
    assert ("standard", "standard") not in overlaps
    assert ("preview", "standard") in overlaps  # the GPU was shared when it could be
    rows = [worker_row(ctx, w) for w in workers]
    assert [r.gang for r in rows] == ["gang0.1", "gang0.2"] and all(r.presets == "preview,standard,long" for r in rows)
    assert [r.reserved_gb for r in rows] == [pytest.approx(resident_gb("bf16"))] * 2  # idle again: the weights


def test_the_flow_can_tell_which_presets_no_live_worker_takes(ctx, clip):
    standard = planned(ctx, clip, "standard", preset="standard")
    with ctx.database.session() as session:
        batch_id = session.get(Asset, standard).batch_id
    previews_only = GangWorkerRecord(name="w", host="h", gang="gang0.1", engine="x", pid=1, presets="preview")
    assert untaken_presets(ctx, batch_id, [previews_only]) == {"standard": 1}
    anything = GangWorkerRecord(name="v", host="h", gang="gang1", engine="x", pid=1, presets=None)
    assert untaken_presets(ctx, batch_id, [previews_only, anything]) == {}
