"""The plan and generate stages: pick the configuration and seed, run the engine, record the attempt.

    plan:     preprocessed → planned    (writes the Plan record)
    generate: planned → generating → generated | planned (retry) | failed   (writes Generation)

Every attempt is a row in `generation_attempts` written before the engine starts and completed
when it ends, so a crash leaves an attempt marked as interrupted rather than a gap. The asset's
state is checked before the GPU gang is taken: an asset that is not ready never queues for it.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from avatarflow import records
from avatarflow.media import wav_samples
from avatarflow.records import Crop, Generation, Plan, Speech
from avatarflow.storage import atomic_write_bytes
from db.lifecycle import release, transition, try_claim
from db.models import Asset, GenerationAttempt, utcnow
from db.retry import retry_transient
from db.stage import StageContext, StageOutcome
from db.states import AssetState
from inference.engine import Engine, GenerationRequest, GenerationResult, GpuGang, next_seed
from inference.output_rules import (
    image_size,
    output_size,
    planned_clips,
    samples_for,
    video_seconds,
)
from inference.presets import get_preset

PLAN_STAGE, GENERATE_STAGE = "plan", "generate"
# Written beside a verified video before the database hears of it (see generate_claimed).
RESULT_NOTE = "result.json"


def seed_for(asset_key: str, attempt: int) -> int:
    """Deterministic per attempt: a re-run reproduces a video; a regeneration gets a new seed."""
    return next_seed(asset_key, attempt)


def attempts_made(session, asset_id: int) -> int:  # type: ignore[no-untyped-def]
    return int(session.scalar(select(func.count(GenerationAttempt.id)).where(GenerationAttempt.asset_id == asset_id)) or 0)


def planned_video_size(engine_name: str, crop: tuple[int, int] | None, size: str) -> tuple[int, int] | None:
    """(width, height) of the video: the crop as it is for the CPU engines, Live Avatar's rule otherwise."""
    if crop is None:
        return None
    if engine_name in ("cpu", "instant"):
        return crop[0] // 2 * 2, crop[1] // 2 * 2  # yuv420p needs even sides
    return output_size(crop[0], crop[1], size)


def make_plan(asset: Asset, engine_name: str, attempt: int) -> Plan:
    """The preset's settings for this asset's speech and crop, and the seed of `attempt`."""
    preset = get_preset(asset.preset)
    speech = records.need(asset.details, Speech, stage=PLAN_STAGE)
    crop = records.need(asset.details, Crop, stage=PLAN_STAGE)
    samples = speech.samples or wav_samples(Path(speech.path)) or samples_for(speech.duration_s)
    clips = planned_clips(samples, preset.num_clip, preset.infer_frames)
    return Plan(
        engine=engine_name, preset=preset.name, size=preset.size, solver=preset.solver,
        sample_steps=preset.sample_steps, infer_frames=preset.infer_frames, num_clip=clips,
        online_decode=preset.online_decode, seconds=speech.duration_s, samples=samples,
        # What the video will last: a preview of long speech stops after num_clip clips.
        video_seconds=round(video_seconds(samples, clips, preset.infer_frames), 3),
        video_size=planned_video_size(engine_name, image_size(Path(crop.path)), preset.size),
        attempt=attempt, seed=seed_for(asset.key, attempt),
    )


def gpu_work(plan: Plan) -> float:
    """Relative GPU time of the planned video: clips × megapixels per frame (the preset's area)."""
    width, height = (int(side) for side in plan.size.split("*"))
    return round(plan.num_clip * width * height / 1e6, 4)


def plan_asset(ctx: StageContext, asset_id: int) -> StageOutcome:
    """preprocessed → planned: the preset's settings, the clip count and the next seed."""
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state != AssetState.PREPROCESSED:
            return StageOutcome.stay(asset_id, PLAN_STAGE, asset, "not ready to plan")
        plan = make_plan(asset, ctx.settings.engine, attempts_made(session, asset_id) + 1)
        asset.details = records.write(asset.details, plan)
        asset.gpu_work = gpu_work(plan)
        transition(session, asset, AssetState.PLANNED, actor=ctx.actor,
                   reason=f"{plan.preset}: {plan.num_clip} clip(s), seed {plan.seed}")
        return StageOutcome(asset_id, PLAN_STAGE, AssetState.PLANNED.value, True)


def replan(session, asset: Asset, *, actor: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    """Send an asset back to `planned` with the next attempt's seed (regeneration)."""
    attempt = attempts_made(session, asset.id) + 1
    plan = records.need(asset.details, Plan, stage="replan")
    plan = plan.model_copy(update={"attempt": attempt, "seed": seed_for(asset.key, attempt)})
    asset.details = records.write(asset.details, plan)
    transition(session, asset, AssetState.PLANNED, actor=actor, reason=f"{reason}; next seed {plan.seed}")


def _engine_and_gang(ctx: StageContext) -> tuple[Engine, GpuGang]:
    gang = ctx.components.gang
    if gang is None:
        raise ValueError("the generate stage needs a GPU gang in ctx.components.gang")
    if ctx.components.engine_for is None:
        raise ValueError("the generate stage needs ctx.components.engine_for")
    return ctx.components.engine_for(gang), gang


def generate_asset(ctx: StageContext, asset_id: int) -> StageOutcome:
    """planned → generating → generated (or back to planned / failed), recording the attempt."""
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state != AssetState.PLANNED:
            return StageOutcome.stay(asset_id, GENERATE_STAGE, asset, "not planned")
    engine, gang = _engine_and_gang(ctx)
    lock = ctx.components.gang_lock
    with lock(gang, lease_seconds=ctx.settings.gang_lease_seconds) if lock else nullcontext():
        return generate_claimed(ctx, asset_id, engine, gang)


def generate_claimed(ctx: StageContext, asset_id: int, engine: Engine, gang: GpuGang,
                     lease_seconds: float | None = None) -> StageOutcome:  # fmt: skip
    """The generation itself, once the gang is ours (the flow's gang slot, or a gang worker, which
    renews its shorter claim `lease_seconds` while the job runs)."""
    settings, worker = ctx.settings, ctx.actor
    lease = lease_seconds if lease_seconds is not None else settings.claim_lease_seconds
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state != AssetState.PLANNED:  # taken while we waited for the gang
            return StageOutcome.stay(asset_id, GENERATE_STAGE, asset, "not planned")
        if not try_claim(session, asset_id, worker, lease):
            return StageOutcome.stay(asset_id, GENERATE_STAGE, asset, "claimed by another worker")
        session.refresh(asset)
        plan = records.need(asset.details, Plan, stage=GENERATE_STAGE)
        crop = records.need(asset.details, Crop, stage=GENERATE_STAGE)
        speech = records.need(asset.details, Speech, stage=GENERATE_STAGE)
        number = attempts_made(session, asset_id) + 1
        folder = settings.storage.asset_dir(asset.key) / f"attempt-{number:02d}"
        request = GenerationRequest(
            asset_key=asset.key, image=Path(crop.path), audio=Path(speech.path), prompt=asset.prompt or "",
            preset=asset.preset, seed=plan.seed, output=folder / "generated.mp4", log_path=folder / "engine.log",
            audio_seconds=plan.seconds, audio_samples=plan.samples,
        )
        attempt = GenerationAttempt(
            asset_id=asset_id, number=number, engine=engine.name, config=plan.model_dump(mode="json"),
            seed=request.seed, gang=gang.name, gpus=list(gang.devices), host=gang.host,
            log_path=str(request.log_path),
        )
        session.add(attempt)
        transition(session, asset, AssetState.GENERATING, actor=worker, claimed_by=worker,
                   reason=f"attempt {number} on {gang.name} with {engine.name}")
        attempt_id = attempt.id
    folder.mkdir(parents=True, exist_ok=True)

    report = ctx.components.progress
    result = engine.generate(request, gang, (lambda update: report(asset_id, update)) if report else None)
    if result.ok:
        # On disk first: a database outage (or a kill) from here on cannot lose the GPU's work;
        # recovery adopts the video from this note (`adopt_finished`) instead of making it again.
        atomic_write_bytes(folder / RESULT_NOTE, json.dumps({"ok": True, "output": str(result.output),
                                                             "attempt": number}).encode())
    return retry_transient(lambda: _record_result(ctx, asset_id, attempt_id, number, result, worker),
                           what=f"recording attempt {number} of asset {asset_id}", within_s=settings.db_retry_seconds)


def _record_result(ctx: StageContext, asset_id: int, attempt_id: int, number: int, result: GenerationResult,
                   worker: str) -> StageOutcome:
    """Write the engine's result on the attempt and move the asset on; idempotent (it may be retried)."""
    settings = ctx.settings
    with ctx.database.session() as session:
        asset = session.get(Asset, asset_id)
        attempt = session.get(GenerationAttempt, attempt_id)
        if attempt.ended_at is not None:  # an earlier try committed before its connection dropped
            return StageOutcome(asset_id, GENERATE_STAGE, asset.state, asset.state == AssetState.GENERATED.value)
        metrics = result.metrics
        attempt.ended_at = utcnow()
        attempt.config = {**attempt.config, **result.config}
        attempt.load_seconds = metrics.load_seconds
        attempt.first_clip_seconds = metrics.first_clip_seconds
        attempt.peak_memory_mb = dict(metrics.peak_memory_mb)
        attempt.mean_utilisation = metrics.mean_utilisation
        attempt.exit_status = metrics.exit_status
        if result.ok:
            attempt.outcome = "ok"
            attempt.output_path = str(result.output)
            asset.details = records.write(asset.details, Generation(video_path=str(result.output), attempt=number))
            transition(session, asset, AssetState.GENERATED, actor=worker,
                       reason=f"attempt {number} verified ({metrics.total_seconds or 0:.1f} s)")
            outcome = StageOutcome(asset_id, GENERATE_STAGE, AssetState.GENERATED.value, True)
        else:
            failure = result.failure
            assert failure is not None
            attempt.outcome = "failed"
            attempt.failure_kind = failure.kind.value
            attempt.failure_message = failure.message
            attempt.retryable = failure.retryable
            if failure.retryable and number < settings.max_generation_attempts:
                # Back in the queue with a fresh seed; the next round retries it.
                transition(session, asset, AssetState.FAILED, actor=worker, reason=failure.message,
                           failed_stage=GENERATE_STAGE, retryable=True, data={"kind": failure.kind.value})
                plan = records.need(asset.details, Plan, stage=GENERATE_STAGE)
                asset.details = records.write(asset.details, plan.model_copy(
                    update={"attempt": number + 1, "seed": seed_for(asset.key, number + 1)}))
                transition(session, asset, AssetState.PLANNED, actor=worker, reason=f"retry after {failure.kind.value}")
                outcome = StageOutcome(asset_id, GENERATE_STAGE, AssetState.PLANNED.value, False,
                                       failure.message, True)
            else:
                why = failure.message if not failure.retryable else (
                    f"{failure.message} (attempt {number} of {settings.max_generation_attempts})")
                transition(session, asset, AssetState.FAILED, actor=worker, reason=why,
                           failed_stage=GENERATE_STAGE, retryable=failure.retryable, data={"kind": failure.kind.value})
                outcome = StageOutcome(asset_id, GENERATE_STAGE, AssetState.FAILED.value, False, why,
                                       failure.retryable)
        release(session, asset, worker)
        return outcome


def recover_interrupted(ctx: StageContext, batch_id: int) -> list[int]:
    """Assets left `generating` by a run that died go back to `planned`; their attempt is marked."""
    recovered = []
    with ctx.database.session() as session:
        stuck = session.scalars(select(Asset).where(Asset.batch_id == batch_id,
                                                    Asset.state == AssetState.GENERATING.value)).all()
        for asset in stuck:
            requeue(session, asset, actor=ctx.actor,
                    reason="generation was interrupted (the previous run died); queued again")
            recovered.append(asset.id)
    return recovered


def adopt_finished(session: Session, asset: Asset, *, actor: str) -> bool:
    """A `generating` asset whose open attempt left a verified video and its note (the generator
    died, or the database was away, after the GPU finished): record it instead of generating again."""
    for attempt in asset.attempts:
        if attempt.ended_at is not None or not attempt.log_path:
            continue
        note_path = Path(attempt.log_path).parent / RESULT_NOTE
        try:
            note = json.loads(note_path.read_text())
        except (OSError, ValueError):
            continue
        output = Path(str(note.get("output", "")))
        if not note.get("ok") or not output.is_file() or output.stat().st_size == 0:
            continue
        attempt.ended_at, attempt.outcome, attempt.output_path = utcnow(), "ok", str(output)
        asset.details = records.write(asset.details, Generation(video_path=str(output), attempt=attempt.number))
        transition(session, asset, AssetState.GENERATED, actor=actor,
                   reason=f"attempt {attempt.number} finished before its generator died; its video is kept")
        asset.claimed_by = asset.claim_expires_at = None
        return True
    return False


def requeue(session: Session, asset: Asset, *, actor: str, reason: str) -> None:
    """A `generating` asset whose generator died goes back to `planned` (its open attempt marked),
    unless that attempt had finished its video, which is then kept (`adopt_finished`)."""
    if adopt_finished(session, asset, actor=actor):
        return
    for attempt in asset.attempts:
        if attempt.ended_at is None:
            attempt.ended_at = utcnow()
            attempt.outcome = "interrupted"
            attempt.failure_kind = "worker_died"
            attempt.retryable = True
    asset.claimed_by = None
    asset.claim_expires_at = None
    transition(session, asset, AssetState.PLANNED, actor=actor, reason=reason)
