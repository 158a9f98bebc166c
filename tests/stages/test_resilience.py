"""Outages and kills at the stage level (fast tier): the GPU's work is never lost, a stage waits
out the database, leftovers of killed writers are swept. The whole batch through a real
PostgreSQL outage and a Prefect restart is tests/flows/test_outages.py."""

from __future__ import annotations

import os
import time
from dataclasses import replace

from fakes.components import ScriptedEngine
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from stages.test_stage_functions import add_asset, inputs, with_parts

from avatarflow.storage import sweep_partials
from db.models import Asset, GenerationAttempt
from db.retry import is_transient, retry_transient
from db.stage import run_stage
from db.states import AssetState as S
from inference import stage as inference_stage
from inference.engine import GpuGang
from inference.stage import RESULT_NOTE, generate_asset, plan_asset, requeue

GANG = GpuGang("gang0", (0,), host="h")


def outage() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, Exception("connection refused: the server is restarting"))


def planned(ctx, clip) -> int:
    asset_id = add_asset(ctx, state=S.PREPROCESSED, details=inputs(clip))
    assert plan_asset(ctx, asset_id).state == S.PLANNED
    return asset_id


def test_transient_errors_are_retried_and_others_are_not():
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise outage()
        return "done"

    assert retry_transient(flaky, what="test", first_delay_s=0.01) == "done" and len(calls) == 3
    assert is_transient(outage()) and not is_transient(ValueError("a bug"))
    started = time.monotonic()
    try:
        retry_transient(lambda: (_ for _ in ()).throw(outage()), what="test", within_s=0.2, first_delay_s=0.05)
    except sa_exc.OperationalError:
        pass
    assert time.monotonic() - started < 1.0  # bounded: then the error goes through


def test_a_finished_video_survives_the_database_going_away_while_it_is_recorded(ctx, clip, monkeypatch):
    asset_id = planned(ctx, clip)
    engine = ScriptedEngine([clip["video"]])
    real = inference_stage._record_result
    failures = []

    def record_once_the_database_is_back(*args, **kwargs):
        if len(failures) < 2:
            failures.append(1)
            raise outage()
        return real(*args, **kwargs)

    monkeypatch.setattr(inference_stage, "_record_result", record_once_the_database_is_back)
    parts = with_parts(ctx, engine_for=lambda gang: engine, gang=GANG)
    fast = replace(parts, settings=parts.settings.model_copy(update={"db_retry_seconds": 30.0}))
    outcome = run_stage("generate", generate_asset, fast, asset_id)
    assert outcome.state == S.GENERATED and len(engine.requests) == 1  # one GPU job, recorded late
    with ctx.database.session() as session:
        (attempt,) = session.scalars(select(GenerationAttempt)).all()
        assert attempt.outcome == "ok" and (os.path.exists(attempt.output_path))


def test_a_generator_killed_after_its_video_is_adopted_not_regenerated(ctx, clip):
    """The engine finished and wrote its note; the process died before the database heard of it."""
    asset_id = planned(ctx, clip)
    engine = ScriptedEngine([clip["video"]])
    parts = with_parts(ctx, engine_for=lambda gang: engine, gang=GANG)
    real = inference_stage._record_result
    inference_stage._record_result = lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed"))
    try:
        try:
            generate_asset(parts, asset_id)
        except SystemExit:
            pass
    finally:
        inference_stage._record_result = real
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        assert asset.state == S.GENERATING
        (attempt,) = asset.attempts
        assert (os.path.dirname(attempt.log_path) and
                os.path.exists(os.path.join(os.path.dirname(attempt.log_path), RESULT_NOTE)))
        requeue(session, asset, actor="recovery", reason="the run died")
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        assert asset.state == S.GENERATED and [a.outcome for a in asset.attempts] == ["ok"]
    assert len(engine.requests) == 1  # nothing generated twice


def test_leftover_partial_files_are_swept_only_when_nobody_writes_them(tmp_path):
    folder = tmp_path / "assets" / "ab" / "attempt-01"
    folder.mkdir(parents=True)
    old, fresh, kept = folder / ".generated.partial.mp4", folder / ".x.k3j2.partial.json", folder / "generated.mp4"
    for path in (old, fresh, kept):
        path.write_bytes(b"x")
    an_hour_ago = time.time() - 3700
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert sweep_partials(tmp_path / "assets", older_than_s=3600) == [old]
    assert fresh.exists() and kept.exists() and not old.exists()


def test_a_gang_worker_waits_out_the_database_and_carries_on(ctx, clip, monkeypatch):
    import threading

    from inference import gang_worker
    from inference.gang_worker import GangWorker

    asset_id = planned(ctx, clip)
    real = gang_worker.claim_next
    failures: list[int] = []

    def claim_after_an_outage(*args, **kwargs):
        if len(failures) < 2:
            failures.append(1)
            raise outage()
        return real(*args, **kwargs)

    monkeypatch.setattr(gang_worker, "claim_next", claim_after_an_outage)
    engine = ScriptedEngine([clip["video"]])
    worker = GangWorker(with_parts(ctx, engine_for=lambda gang: engine), GANG, poll_s=0.05, lease_s=5)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with ctx.database.session() as session:
            if session.get(Asset, asset_id).state == S.GENERATED:
                break
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)
    assert len(failures) == 2 and len(engine.requests) == 1
    with ctx.database.session() as session:
        assert session.get(Asset, asset_id).state == S.GENERATED
