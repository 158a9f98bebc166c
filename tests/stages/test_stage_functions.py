"""Every stage function, called directly with the named fakes (tests/fakes/components.py).

Fast tier: a SQLite database in a temporary folder, tiny media made with ffmpeg, no Prefect, no
GPU; the fakes stand in for the engine, the lip-sync scorer and the face detector. Each test
drives one stage (or the two that decide a regeneration) and checks the state, the typed record
it left and the events.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from fakes.components import CountingLock, FixedFaceDetector, FixedScorer, ScriptedEngine
from sqlalchemy import select

from avatarflow import records
from avatarflow.records import Crop, Generation, Plan, Speech
from db.lifecycle import transition
from db.models import Asset, Batch, Event, GenerationAttempt, Rendition
from db.stage import Components, StageContext, run_stage
from db.states import AssetState as S
from inference.engine import FailureKind, GpuGang
from inference.stage import generate_asset, plan_asset, recover_interrupted
from qc.stage import qc_asset, route_asset
from tasks.pipeline import pending_work, retry_failed
from tasks.preprocess import preprocess_asset
from tasks.stages import join_asset, transcode_asset

GANG = GpuGang("gang0", (0,))


def with_parts(ctx: StageContext, **parts) -> StageContext:
    return StageContext(ctx.database, ctx.settings, ctx.actor, Components(**parts))


def add_asset(ctx: StageContext, *, state: S = S.SUBMITTED, details: dict | None = None, name: str = "a",
              preset: str = "standard", image: Path | None = None, audio: Path | None = None,
              parent: int | None = None, segment: int | None = None) -> int:
    """An asset in `state`, walked there through the state machine (so its events are real)."""
    with ctx.database.session() as session:
        batch = session.scalar(select(Batch).where(Batch.name == "b")) or Batch(name="b", created_by="test")
        session.add(batch)
        asset = Asset(key=hashlib.sha256(name.encode()).hexdigest(), batch=batch, parent_id=parent,
                      segment_index=segment, image_path=str(image or "/in/x.png"), image_sha256="0" * 64,
                      audio_path=str(audio or "/in/x.wav"), audio_sha256=hashlib.sha256(name.encode()).hexdigest(),
                      prompt="A person talks.", preset=preset, details=details or {})
        session.add(asset)
        session.add(Event(asset=asset, actor="test", from_state=None, to_state="submitted"))
        session.flush()
        path = {S.SUBMITTED: [], S.PREPROCESSED: [S.PREPROCESSED], S.PLANNED: [S.PREPROCESSED, S.PLANNED],
                S.SPLIT: [S.SPLIT], S.GENERATED: [S.PREPROCESSED, S.PLANNED, S.GENERATING, S.GENERATED],
                S.GENERATING: [S.PREPROCESSED, S.PLANNED, S.GENERATING]}[state]
        for step in path:
            transition(session, asset, step, actor="test")
        return asset.id


def inputs(clip: dict[str, Path]) -> dict:
    crop = Crop(path=str(clip["crop"]), source_size=(512, 512), face_box=(150, 100, 360, 400),
                crop_box=(0, 0, 512, 512))
    speech = Speech(path=str(clip["speech"]), duration_s=3.0, samples=48000)
    return records.write({}, crop, speech)


def asset(ctx: StageContext, asset_id: int) -> Asset:
    """The asset as stored now, its events and attempts loaded (the session is closed after)."""
    with ctx.database.session() as session:
        found = session.get(Asset, asset_id)
        _ = found.events, found.attempts, found.renditions
        return found


# --------------------------------------------------------------------------------------------


def test_preprocess_writes_the_crop_and_speech_records(ctx, media):
    image, audio = media / "image/facerec_obama.jpg", media / "audio/retalking_audio1.wav"
    asset_id = add_asset(ctx, image=image, audio=audio)
    outcome = preprocess_asset(with_parts(ctx, detector=FixedFaceDetector()), asset_id)
    assert outcome.advanced and outcome.state == S.PREPROCESSED
    found = asset(ctx, asset_id)
    crop, speech = records.read(found.details, Crop), records.read(found.details, Speech)
    assert Path(crop.path).is_file() and crop.backend == "fixed-face" and found.details["schema"] == records.SCHEMA
    assert Path(speech.path).is_file() and abs(speech.samples - speech.duration_s * 16000) < 2  # exact count
    # A second run does nothing twice.
    again = preprocess_asset(with_parts(ctx, detector=FixedFaceDetector()), asset_id)
    assert not again.advanced and again.reason == "already preprocessed"


def test_bad_input_fails_the_asset_with_a_reason_not_retried(ctx, media):
    asset_id = add_asset(ctx, image=media / "image/skimage_chelsea.png", audio=media / "audio/retalking_audio1.wav")
    outcome = preprocess_asset(ctx, asset_id)  # the real detector: a cat has no human face
    assert outcome.state == S.FAILED and outcome.retryable is False and "face" in outcome.reason.lower()


def test_plan_records_the_clip_count_length_and_size(ctx, clip):
    asset_id = add_asset(ctx, state=S.PREPROCESSED, details=inputs(clip), preset="preview")
    outcome = plan_asset(ctx, asset_id)
    assert outcome.advanced and outcome.state == S.PLANNED
    plan = records.read(asset(ctx, asset_id).details, Plan)
    assert plan.num_clip == 2 and plan.video_seconds == 3.0 and plan.video_size == (512, 512)
    assert plan.attempt == 1 and plan.seed > 0


def test_generate_records_the_attempt_and_the_video(ctx, clip):
    asset_id = add_asset(ctx, state=S.PREPROCESSED, details=inputs(clip))
    plan_asset(ctx, asset_id)
    engine, lock = ScriptedEngine([clip["video"]]), CountingLock()
    outcome = generate_asset(with_parts(ctx, engine_for=lambda g: engine, gang=GANG, gang_lock=lock), asset_id)
    assert outcome.advanced and outcome.state == S.GENERATED and lock.taken == 1
    found = asset(ctx, asset_id)
    assert Path(records.read(found.details, Generation).video_path).is_file()
    (attempt,) = found.attempts
    assert attempt.outcome == "ok" and attempt.gang == "gang0" and engine.requests[0].audio_samples == 48000


def test_generate_checks_the_state_before_taking_the_gang(ctx, clip):
    asset_id = add_asset(ctx, state=S.PREPROCESSED, details=inputs(clip))
    lock = CountingLock()
    outcome = generate_asset(with_parts(ctx, engine_for=lambda g: ScriptedEngine([]), gang=GANG, gang_lock=lock),
                             asset_id)
    assert not outcome.advanced and outcome.reason == "not planned" and lock.taken == 0


def test_a_retryable_engine_failure_is_retried_with_the_next_seed(ctx, clip):
    asset_id = add_asset(ctx, state=S.PREPROCESSED, details=inputs(clip))
    plan_asset(ctx, asset_id)
    first_seed = records.read(asset(ctx, asset_id).details, Plan).seed
    engine = ScriptedEngine([FailureKind.OUT_OF_MEMORY, clip["video"]])
    parts = with_parts(ctx, engine_for=lambda g: engine, gang=GANG, gang_lock=CountingLock())
    outcome = generate_asset(parts, asset_id)
    assert outcome.state == S.PLANNED and outcome.retryable and not outcome.advanced
    plan = records.read(asset(ctx, asset_id).details, Plan)
    assert plan.attempt == 2 and plan.seed != first_seed
    assert generate_asset(parts, asset_id).state == S.GENERATED
    assert [r.seed for r in engine.requests] == [first_seed, plan.seed]


def test_a_non_retryable_engine_failure_stands(ctx, clip):
    asset_id = add_asset(ctx, state=S.PREPROCESSED, details=inputs(clip))
    plan_asset(ctx, asset_id)
    engine = ScriptedEngine([FailureKind.MISSING_WEIGHTS])
    outcome = generate_asset(with_parts(ctx, engine_for=lambda g: engine, gang=GANG, gang_lock=CountingLock()),
                             asset_id)
    assert outcome.state == S.FAILED and outcome.retryable is False
    found = asset(ctx, asset_id)
    assert found.failed_stage == "generate" and "missing_weights" in (found.attempts[0].failure_kind or "")
    with ctx.database.session() as session:  # the retry policy leaves it alone
        assert retry_failed(session, found.batch_id, limit=2, actor="test") == []


def test_an_interrupted_generation_is_recovered(ctx, clip):
    asset_id = add_asset(ctx, state=S.GENERATING, details=inputs(clip))
    with ctx.database.session() as session:
        session.add(GenerationAttempt(asset_id=asset_id, number=1, engine="x", config={}, seed=1, gang="gang0",
                                      gpus=[0], host="h", log_path="/x"))
    batch_id = asset(ctx, asset_id).batch_id
    assert recover_interrupted(ctx, batch_id) == [asset_id]
    found = asset(ctx, asset_id)
    assert found.state == S.PLANNED and found.attempts[0].outcome == "interrupted"


def test_qc_passes_a_good_video_and_route_approves_or_samples_it(ctx, clip):
    details = records.write(inputs(clip), Generation(video_path=str(clip["video"]), attempt=1))
    asset_id = add_asset(ctx, state=S.GENERATED, details=details)
    outcome = qc_asset(with_parts(ctx, scorer=FixedScorer(0.99)), asset_id)
    assert outcome.advanced and outcome.state == S.QC_PASSED, outcome.reason
    routed = route_asset(ctx, asset_id)
    assert routed.state in (S.APPROVED, S.REVIEW_PENDING) and routed.advanced


def test_a_qc_failure_regenerates_with_the_next_seed(ctx, clip):
    asset_id = add_asset(ctx, state=S.PREPROCESSED, details=inputs(clip))
    plan_asset(ctx, asset_id)
    engine = ScriptedEngine([clip["video"]])
    generate_asset(with_parts(ctx, engine_for=lambda g: engine, gang=GANG, gang_lock=CountingLock()), asset_id)
    outcome = qc_asset(with_parts(ctx, scorer=FixedScorer(0.05)), asset_id)
    assert outcome.state == S.QC_FAILED
    routed = route_asset(ctx, asset_id)
    assert routed.state == S.PLANNED and not routed.advanced  # the next round generates it again
    assert records.read(asset(ctx, asset_id).details, Plan).attempt == 2


def test_join_assembles_the_segments_and_their_plan(ctx, clip, tmp_path):
    parent = add_asset(ctx, state=S.SPLIT, details=inputs(clip), name="p")
    children = []
    for i in range(2):
        video = shutil.copyfile(clip["video"], tmp_path / f"segment{i}.mp4")
        plan = Plan(engine="cpu", preset="standard", size="688*368", solver="euler", sample_steps=4, infer_frames=48,
                    num_clip=2, online_decode=False, seconds=3.0, video_seconds=3.0, video_size=(512, 512))
        details = records.write(inputs(clip), plan, Generation(video_path=str(video), attempt=1))
        children.append(add_asset(ctx, state=S.GENERATED, details=details, name=f"c{i}", parent=parent, segment=i))
    outcome = join_asset(ctx, parent)
    assert outcome.advanced and outcome.state == S.GENERATED
    found = asset(ctx, parent)
    joined = records.read(found.details, Plan)
    assert joined.segments == 2 and joined.video_seconds == 6.0
    assert records.read(found.details, Generation).joined_segments == 2
    assert all(asset(ctx, c).state == S.JOINED for c in children)


def test_transcode_makes_renditions_once(ctx, clip):
    details = records.write(inputs(clip), Generation(video_path=str(clip["video"]), attempt=1))
    asset_id = add_asset(ctx, state=S.GENERATED, details=details)
    qc_asset(with_parts(ctx, scorer=FixedScorer(0.99)), asset_id)
    outcome = transcode_asset(ctx, asset_id)
    assert outcome.advanced and outcome.state == S.QC_PASSED
    with ctx.database.session() as session:
        kinds = sorted(session.scalars(select(Rendition.kind).where(Rendition.asset_id == asset_id)))
    assert "web" in kinds and "poster" in kinds
    assert transcode_asset(ctx, asset_id).reason == "renditions already made"


def test_a_crashing_stage_fails_its_asset_and_the_retry_policy_re_runs_it_up_to_the_limit(ctx, clip):
    details = records.write(inputs(clip), Generation(video_path=str(clip["video"]), attempt=1))
    asset_id = add_asset(ctx, state=S.GENERATED, details=details)

    def broken(_ctx, _asset_id):
        raise RuntimeError("disk full")

    outcome = run_stage("qc", broken, ctx, asset_id)
    assert outcome.state == S.FAILED and outcome.retryable
    batch_id = asset(ctx, asset_id).batch_id
    for attempt in (1, 2):
        with ctx.database.session() as session:
            assert retry_failed(session, batch_id, limit=2, actor="test") == [asset_id]
        assert asset(ctx, asset_id).state == S.GENERATED
        run_stage("qc", broken, ctx, asset_id)
    with ctx.database.session() as session:
        assert retry_failed(session, batch_id, limit=2, actor="test") == []  # the limit is reached
        assert [w.state for w in pending_work(session, batch_id)] == []
    reasons = [e.reason for e in asset(ctx, asset_id).events if e.reason and e.reason.startswith("retry")]
    assert [r.split(":")[0] for r in reasons] == ["retry 1 of 2", "retry 2 of 2"]


def test_records_are_validated_when_read(ctx, clip):
    bad = {"schema": 2, "plan": {"engine": "cpu"}}  # a plan missing its fields
    with pytest.raises(records.RecordError, match="plan record does not validate"):
        records.read(bad, Plan)
    with pytest.raises(records.RecordError, match="needs the asset's crop record"):
        records.need({}, Crop, stage="plan")
