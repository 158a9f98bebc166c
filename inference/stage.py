"""The plan and generate stages: pick the configuration and seed, run the engine, record the attempt.

Every attempt is a row in `generation_attempts` written before the engine starts and completed
when it ends, so a crash leaves an attempt marked as interrupted rather than a gap.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from avatarflow.settings import Settings
from db.lifecycle import release, transition, try_claim
from db.models import Asset, GenerationAttempt, utcnow
from db.session import Database
from db.states import AssetState
from inference.engine import Engine, GenerationRequest, GpuGang, ProgressCallback, next_seed
from inference.output_rules import (
    image_size,
    output_size,
    planned_clips,
    samples_for,
    video_seconds,
    wav_samples,
)
from inference.presets import get_preset

PLAN_STAGE, GENERATE_STAGE = "plan", "generate"


@dataclass(frozen=True)
class StageOutcome:
    asset_id: int
    state: str
    note: str | None = None


def seed_for(asset_key: str, attempt: int) -> int:
    """Deterministic per attempt: a re-run reproduces a video; a regeneration gets a new seed."""
    return next_seed(asset_key, attempt)


def attempts_made(session, asset_id: int) -> int:  # type: ignore[no-untyped-def]
    return int(session.scalar(select(func.count(GenerationAttempt.id)).where(GenerationAttempt.asset_id == asset_id)) or 0)


def plan_asset(database: Database, settings: Settings, asset_id: int, *, engine_name: str,
               actor: str = "plan") -> StageOutcome:
    """preprocessed → planned: the preset's settings, the clip count and the next seed."""
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state != AssetState.PREPROCESSED:
            return StageOutcome(asset_id, asset.state if asset else "missing", "not ready to plan")
        preset = get_preset(asset.preset)
        seconds = float(asset.details["audio"]["duration_s"])
        samples = wav_samples(Path(asset.details["speech_path"])) or samples_for(seconds)
        clips = planned_clips(samples, preset.num_clip, preset.infer_frames)
        crop = image_size(Path(asset.details["crop_path"]))
        attempt = attempts_made(session, asset_id) + 1
        asset.details = {**asset.details, "plan": {
            "engine": engine_name, "preset": preset.name, "size": preset.size, "solver": preset.solver,
            "sample_steps": preset.sample_steps, "infer_frames": preset.infer_frames,
            "num_clip": clips, "online_decode": preset.online_decode,
            "seconds": seconds, "samples": samples,
            # What the video will last: a preview of long speech stops after num_clip clips.
            "video_seconds": round(video_seconds(samples, clips, preset.infer_frames), 3),
            "video_size": planned_video_size(engine_name, crop, preset.size),
            "attempt": attempt, "seed": seed_for(asset.key, attempt),
        }}
        transition(session, asset, AssetState.PLANNED, actor=actor,
                   reason=f"{preset.name}: {asset.details['plan']['num_clip']} clip(s), seed {asset.details['plan']['seed']}")
        return StageOutcome(asset_id, AssetState.PLANNED.value)


def planned_video_size(engine_name: str, crop: tuple[int, int] | None, size: str) -> list[int] | None:
    """(width, height) of the video: the crop as it is for the CPU engines, Live Avatar's rule otherwise."""
    if crop is None:
        return None
    if engine_name in ("cpu", "instant"):
        return [crop[0] // 2 * 2, crop[1] // 2 * 2]  # yuv420p needs even sides
    return list(output_size(crop[0], crop[1], size))


def replan(session, asset: Asset, *, actor: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    """Send an asset back to `planned` with the next attempt's seed (regeneration)."""
    attempt = attempts_made(session, asset.id) + 1
    plan = dict(asset.details.get("plan", {}), attempt=attempt, seed=seed_for(asset.key, attempt))
    asset.details = {**asset.details, "plan": plan}
    transition(session, asset, AssetState.PLANNED, actor=actor, reason=f"{reason}; next seed {plan['seed']}")


def generate_asset(
    database: Database,
    settings: Settings,
    asset_id: int,
    engine: Engine,
    gang: GpuGang,
    *,
    worker: str,
    progress: ProgressCallback | None = None,
) -> StageOutcome:
    """planned → generating → generated (or back to planned / failed), recording the attempt."""
    storage = settings.storage
    with database.session() as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.state != AssetState.PLANNED:
            return StageOutcome(asset_id, asset.state if asset else "missing", "not planned")
        if not try_claim(session, asset_id, worker, settings.claim_lease_seconds):
            return StageOutcome(asset_id, asset.state, "claimed by another worker")
        session.refresh(asset)
        plan = asset.details["plan"]
        number = attempts_made(session, asset_id) + 1
        folder = storage.asset_dir(asset.key) / f"attempt-{number:02d}"
        request = GenerationRequest(
            asset_key=asset.key, image=Path(asset.details["crop_path"]), audio=Path(asset.details["speech_path"]),
            prompt=asset.prompt or "", preset=asset.preset, seed=int(plan["seed"]),
            output=folder / "generated.mp4", log_path=folder / "engine.log",
            audio_seconds=float(plan["seconds"]), audio_samples=plan.get("samples"),
        )
        attempt = GenerationAttempt(
            asset_id=asset_id, number=number, engine=engine.name, config=dict(plan), seed=request.seed,
            gang=gang.name, gpus=list(gang.devices), host=socket.gethostname(), log_path=str(request.log_path),
        )
        session.add(attempt)
        transition(session, asset, AssetState.GENERATING, actor=worker, claimed_by=worker,
                   reason=f"attempt {number} on {gang.name} with {engine.name}")
        attempt_id = attempt.id
    folder.mkdir(parents=True, exist_ok=True)

    result = engine.generate(request, gang, progress)

    with database.session() as session:
        asset = session.get(Asset, asset_id)
        attempt = session.get(GenerationAttempt, attempt_id)
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
            asset.details = {**asset.details, "video_path": str(result.output), "attempt": number}
            transition(session, asset, AssetState.GENERATED, actor=worker,
                       reason=f"attempt {number} verified ({metrics.total_seconds or 0:.1f} s)")
            outcome = StageOutcome(asset_id, AssetState.GENERATED.value)
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
                transition(session, asset, AssetState.PLANNED, actor=worker, reason=f"retry after {failure.kind.value}")
                replan_seed = seed_for(asset.key, number + 1)
                asset.details = {**asset.details, "plan": {**asset.details["plan"], "attempt": number + 1, "seed": replan_seed}}
                outcome = StageOutcome(asset_id, AssetState.PLANNED.value, failure.message)
            else:
                why = failure.message if not failure.retryable else f"{failure.message} (attempt {number} of {settings.max_generation_attempts})"
                transition(session, asset, AssetState.FAILED, actor=worker, reason=why,
                           failed_stage=GENERATE_STAGE, retryable=failure.retryable, data={"kind": failure.kind.value})
                outcome = StageOutcome(asset_id, AssetState.FAILED.value, why)
        release(session, asset, worker)
        return outcome


def recover_interrupted(database: Database, batch_id: int, *, actor: str) -> list[int]:
    """Assets left `generating` by a run that died go back to `planned`; their attempt is marked."""
    recovered = []
    with database.session() as session:
        stuck = session.scalars(select(Asset).where(Asset.batch_id == batch_id,
                                                    Asset.state == AssetState.GENERATING.value)).all()
        for asset in stuck:
            for attempt in asset.attempts:
                if attempt.ended_at is None:
                    attempt.ended_at = utcnow()
                    attempt.outcome = "interrupted"
                    attempt.failure_kind = "worker_died"
                    attempt.retryable = True
            asset.claimed_by = None
            asset.claim_expires_at = None
            transition(session, asset, AssetState.PLANNED, actor=actor,
                       reason="generation was interrupted (the previous run died); queued again")
            recovered.append(asset.id)
    return recovered
