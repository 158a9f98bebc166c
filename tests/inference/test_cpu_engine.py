"""The CPU engine on a real portrait and real speech, checked from the outside.

One video is generated per module (an Obama crop and retalking_audio1.wav with 1.2 s of silence
spliced into the middle) and then examined as a viewer would: ffprobe says it is H.264 yuv420p
+ AAC at 25 fps and as long as the speech, and MediaPipe, run again on the decoded frames,
measures a mouth opening that moves with the speech and stays shut in the silence. A strip of
closed and open frames is written to test-artifacts/cpu_engine_frames.png for a person to look at.
QC's lip-sync scorer (landmark-v2) must believe the mouth on the demo's own inputs.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference.cpu_engine import (
    CLIP_FRAMES,
    MouthWarpAnimator,
    MouthWarpCpuEngine,
    face_geometry,
    motion_plan,
    mouth_openings,
)
from inference.engine import FailureKind, GenerationRequest, GpuGang, Progress
from inference.verify import probe_video
from tasks.audio import load_pcm, prepare_audio
from tasks.face import crop_face
from tasks.face_detectors import default_detector
from tasks.images import load_portrait

FPS = 25
SR = 16_000
SILENCE_S = 1.2
GANG = GpuGang("cpu")
# r(measured inner-lip gap, speech level) per frame. A mouth follows articulation, not loudness (a
# loud /m/ or /i/ keeps it nearly shut): real talking faces in ../shared/media/video measure
# 0.0-0.31 on this, so only a mouth that ignores the speech falls under it. Whether the mouth is
# in sync is the lip-sync gate's own test (test_the_lip_sync_gate_believes_the_demo).
MIN_CORRELATION = 0.2
MEASURE_EVERY = 2  # frames


def _write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SR)
        out.writeframes(pcm.tobytes())


def _request(
    tmp: Path, image: Path, audio: Path, seconds: float, seed: int = 7, preset: str = "standard"
) -> GenerationRequest:
    return GenerationRequest(
        asset_key="cpu-engine-test", image=image, audio=audio, prompt="A person talks.",
        preset=preset, seed=seed, output=tmp / "out" / "video.mp4",
        log_path=tmp / "out" / "log.txt", audio_seconds=seconds,
    )


def _leftovers(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


@pytest.fixture(scope="module")
def inputs(media: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 512² crop of a real portrait and real speech with a silent stretch in the middle."""
    tmp = tmp_path_factory.mktemp("cpu_inputs")
    crop = crop_face(media / "image" / "facerec_obama.jpg", tmp / "face.png")
    prepared = prepare_audio(media / "audio" / "retalking_audio1.wav", tmp / "speech.wav")
    speech = load_pcm(prepared.out_path, SR)
    # Cut at the quietest 40 ms frame between 2 and 3.5 s so no word is chopped audibly.
    frames = speech[: speech.size // 640 * 640].reshape(-1, 640)
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    lo, hi = 2 * FPS, int(3.5 * FPS)
    cut = (lo + int(np.argmin(energy[lo:hi]))) * 640
    silence = np.zeros(round(SILENCE_S * SR), np.float32)
    audio = np.concatenate([speech[:cut], silence, speech[cut:]])
    wav = tmp / "speech_with_pause.wav"
    _write_wav(wav, audio)
    return {"image": crop.out_path, "audio": wav, "seconds": audio.size / SR,
            "silence": (cut / SR, cut / SR + SILENCE_S)}


@pytest.fixture(scope="module")
def generated(inputs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("cpu_generated")
    request = _request(tmp, inputs["image"], inputs["audio"], inputs["seconds"])
    events: list[Progress] = []
    started = time.monotonic()
    result = MouthWarpCpuEngine().generate(request, GANG, progress=events.append)
    return {"request": request, "result": result, "events": events,
            "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def measured(generated: dict, inputs: dict) -> dict:
    """Decoded frames and the mouth opening MediaPipe measures on every second one (else NaN)."""
    path = generated["request"].output
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=120,
    ).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 512, 512, 3)
    detector = default_detector()

    def opening(rgb: np.ndarray) -> float:
        faces = detector.detect(rgb)
        if not faces or faces[0].landmark_source != "mesh":
            return float("nan")
        lm = {k: np.asarray(v) for k, v in faces[0].landmarks.items()}
        # Inner-lip gap over the face height (forehead to chin): independent of the face's size.
        return float(np.linalg.norm(lm["lower_lip"] - lm["upper_lip"])
                     / np.linalg.norm(lm["chin"] - lm["forehead"]))

    # Every second frame: half the detector time, and 75+ samples are plenty for a correlation.
    measured = np.full(len(frames), np.nan)
    measured[::MEASURE_EVERY] = [opening(f) for f in frames[::MEASURE_EVERY]]
    still, _ = load_portrait(inputs["image"])
    return {"frames": frames, "opening": measured, "still": opening(still)}


def _speech_db(audio: Path, n_frames: int) -> np.ndarray:
    """Level (dBFS) of the speech in each video frame's 40 ms, floored 50 dB under the loudest."""
    x = load_pcm(audio, SR).astype(np.float64)
    spf = SR // FPS
    x = np.pad(x, (0, max(0, n_frames * spf - x.size)))[: n_frames * spf].reshape(n_frames, spf)
    db = 10 * np.log10((x * x).mean(axis=1) + 1e-12)
    return np.maximum(db, db.max() - 50.0)


def test_video_plays_and_lasts_as_long_as_the_speech(generated: dict, inputs: dict) -> None:
    result = generated["result"]
    assert result.ok, result.failure
    path = generated["request"].output
    assert result.output == path and path.is_file()
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format",
         str(path)], capture_output=True, text=True, check=True, timeout=60,
    ).stdout)
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    audio = next(s for s in probe["streams"] if s["codec_type"] == "audio")
    assert video["codec_name"] == "h264" and video["pix_fmt"] == "yuv420p"
    assert video["avg_frame_rate"] == "25/1"
    assert (video["width"], video["height"]) == (512, 512)
    assert audio["codec_name"] == "aac"
    seconds = inputs["seconds"]
    assert int(video["nb_frames"]) == round(seconds * FPS)
    # Container, video and audio stream all last as long as the speech, within a frame.
    for duration in (probe["format"]["duration"], video["duration"], audio["duration"]):
        assert abs(float(duration) - seconds) <= 1 / FPS, (duration, seconds)
    assert _leftovers(path.parent) == []


def test_progress_metrics_and_log(generated: dict) -> None:
    result, events = generated["result"], generated["events"]
    frames = result.config["frames"]
    planned = -(-frames // CLIP_FRAMES)
    assert [e.clips_done for e in events] == list(range(planned + 1))
    assert all(e.clips_planned == planned for e in events)
    m = result.metrics
    assert (m.exit_status, m.clips_done, m.clips_planned) == (0, planned, planned)
    assert 0 < m.first_clip_seconds <= m.total_seconds <= generated["seconds"] + 0.1
    assert result.config["engine"] == "cpu-mouthwarp" and result.config["landmarks"] == "mesh"
    log = generated["request"].log_path.read_text()
    assert "ffmpeg" in log and "wrote" in log
    print(f"\ngenerated {frames} frames in {m.total_seconds:.1f} s "
          f"({frames / m.total_seconds:.0f} fps end to end)")


def test_mouth_opening_follows_the_speech(measured: dict, inputs: dict, artifacts: Path) -> None:
    opening = measured["opening"]
    sampled = opening[::MEASURE_EVERY]
    assert np.isnan(sampled).mean() < 0.05, "the face must stay detectable in the output"
    db = _speech_db(inputs["audio"], len(opening))
    ok = ~np.isnan(opening)
    r = float(np.corrcoef(opening[ok], db[ok])[0, 1])
    print(f"\nPearson r(measured mouth opening, speech level per frame) = {r:.3f}")
    assert r >= MIN_CORRELATION

    # In the silence (after the mouth has had 0.2 s to close) it is as closed as in the portrait,
    # while during speech it opens well beyond that.
    start, stop = inputs["silence"]
    silent = opening[round((start + 0.2) * FPS): int(stop * FPS)]
    speaking = opening[ok & (db > np.percentile(db, 60))]
    still = measured["still"]
    assert np.count_nonzero(~np.isnan(silent)) >= 10
    print(f"opening: still {still:.3f}, silence max {np.nanmax(silent):.3f}, "
          f"speech p90 {np.percentile(speaking, 90):.3f}")
    assert np.nanmax(silent) <= still + 0.01
    assert np.percentile(speaking, 90) >= still + 0.03

    _save_strip(measured["frames"], opening, artifacts / "cpu_engine_frames.png", r)


def _save_strip(frames: np.ndarray, opening: np.ndarray, out: Path, r: float) -> None:
    """Three of the most closed and three of the most open frames, the face cropped, captioned."""
    measured = np.flatnonzero(~np.isnan(opening))
    order = measured[np.argsort(opening[measured])]
    picks = sorted(order[:3].tolist()) + sorted(order[-3:].tolist())
    tiles = []
    for i in picks:
        tile = Image.fromarray(frames[i][96:416, 96:416])
        ImageDraw.Draw(tile).text((6, 4), f"frame {i}  open {opening[i]:.3f}", fill=(255, 255, 0))
        tiles.append(tile)
    strip = Image.new("RGB", (320 * len(tiles), 340), (255, 255, 255))
    for k, tile in enumerate(tiles):
        strip.paste(tile, (320 * k, 0))
    ImageDraw.Draw(strip).text((6, 324), f"cpu-mouthwarp: 3 closed, 3 open frames; r = {r:.2f}",
                               fill=(0, 0, 0))
    strip.save(out)


def test_frames_are_deterministic_for_a_seed(inputs: dict) -> None:
    rgb, _ = load_portrait(inputs["image"])
    face = default_detector().detect(rgb)[0]
    geometry = face_geometry(face.landmarks, face.landmark_source)
    openings = np.linspace(0, 1, 8).astype(np.float32)
    a = MouthWarpAnimator(rgb, geometry, openings, seed=3)
    b = MouthWarpAnimator(rgb, geometry, openings, seed=3)
    assert all(np.array_equal(a.frame(i), b.frame(i)) for i in (0, 4, 7))
    assert not np.array_equal(a.frame(0), rgb), "the head sways even with the mouth closed"
    one = motion_plan(1, np.zeros(500, np.float32), geometry.iod)
    two = motion_plan(2, np.zeros(500, np.float32), geometry.iod)
    assert not np.array_equal(one.rotation_deg, two.rotation_deg)
    # Blinks every 3–5 s: 500 frames (20 s) hold four or five.
    assert 4 <= int((one.blink == 1.0).sum()) <= 6


def test_geometry_from_keypoints_only_is_estimated_and_renders(inputs: dict) -> None:
    """A backend with no dense landmarks still animates (approximately) and says so."""
    rgb, _ = load_portrait(inputs["image"])
    mesh = default_detector().detect(rgb)[0].landmarks
    keypoints = {k: mesh[k] for k in ("right_eye", "left_eye", "nose_tip", "mouth_center")}
    geometry = face_geometry(keypoints, "detector")
    assert geometry.source == "detector+estimated"
    animator = MouthWarpAnimator(rgb, geometry, np.array([0.0, 1.0], np.float32), seed=0)
    closed, opened = animator.frame(0), animator.frame(1)
    assert opened.shape == rgb.shape and not np.array_equal(closed, opened)


def test_mouth_openings_close_in_silence_and_open_for_speech(inputs: dict) -> None:
    x = load_pcm(inputs["audio"], SR)
    n = round(x.size / SR * FPS)
    openings = mouth_openings(x, SR, n)
    assert openings.shape == (n,) and openings.min() >= 0 and openings.max() <= 1
    start, stop = inputs["silence"]
    assert openings[round((start + 0.2) * FPS): int(stop * FPS)].max() < 0.05
    assert openings.max() > 0.9
    assert not mouth_openings(np.zeros(SR * 2, np.float32), SR, 50).any()


def test_no_face_is_a_clear_failure(media: Path, inputs: dict, tmp_path: Path) -> None:
    cat = tmp_path / "cat.png"
    Image.open(media / "image" / "skimage_chelsea.png").convert("RGB").resize((512, 512)).save(cat)
    request = _request(tmp_path, cat, inputs["audio"], inputs["seconds"])
    result = MouthWarpCpuEngine().generate(request, GANG)
    assert not result.ok and result.output is None
    assert result.failure.kind is FailureKind.CONFIG_REJECTED and not result.failure.retryable
    assert "No face found in cat.png" in result.failure.message
    assert not request.output.exists() and _leftovers(request.output.parent) == []
    assert "config_rejected" in request.log_path.read_text()


def _fake_ffmpeg(folder: Path, body: str) -> Path:
    """A stand-in for ffmpeg that misbehaves: hangs without reading its input, or crashes."""
    script = folder / "fake-ffmpeg"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_hung_ffmpeg_is_killed_on_timeout(inputs: dict, tmp_path: Path) -> None:
    pid_file = tmp_path / "ffmpeg.pid"
    fake = _fake_ffmpeg(tmp_path, f"echo $$ > {pid_file}\nexec sleep 60")
    request = _request(tmp_path, inputs["image"], inputs["audio"], inputs["seconds"])
    started = time.monotonic()
    result = MouthWarpCpuEngine(ffmpeg=str(fake), timeout_s=3.0).generate(request, GANG)
    assert time.monotonic() - started < 15
    assert result.failure is not None and result.failure.kind is FailureKind.TIMEOUT
    assert result.failure.retryable
    assert not request.output.exists() and _leftovers(request.output.parent) == []
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left behind
        os.kill(int(pid_file.read_text()), 0)


def test_deadline_before_encoding_is_a_timeout(inputs: dict, tmp_path: Path) -> None:
    request = _request(tmp_path, inputs["image"], inputs["audio"], inputs["seconds"])
    result = MouthWarpCpuEngine(timeout_s=0.0).generate(request, GANG)
    assert result.failure is not None and result.failure.kind is FailureKind.TIMEOUT
    assert not request.output.exists() and _leftovers(request.output.parent) == []


def test_ffmpeg_crash_is_classified(inputs: dict, tmp_path: Path) -> None:
    fake = _fake_ffmpeg(tmp_path, "echo 'Unknown encoder libx264' >&2\nexit 1")
    request = _request(tmp_path, inputs["image"], inputs["audio"], inputs["seconds"])
    result = MouthWarpCpuEngine(ffmpeg=str(fake)).generate(request, GANG)
    assert result.failure is not None and result.failure.kind is FailureKind.CRASHED
    assert "Unknown encoder libx264" in result.failure.message
    assert not request.output.exists() and _leftovers(request.output.parent) == []


def test_a_preview_of_long_speech_stops_where_live_avatars_would(media: Path, inputs: dict, tmp_path: Path) -> None:
    """Both engines agree on what a preview is: 10 clips of 48 frames (less 3), speech cut there."""
    long_speech = tmp_path / "speech25s.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media / "audio/musetalk_eng.wav"), "-t", "25",
                    "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(long_speech)], check=True)
    request = _request(tmp_path, inputs["image"], long_speech, 25.0, preset="preview")
    result = MouthWarpCpuEngine().generate(request, GpuGang("cpu"))
    assert result.ok, result.failure
    info = probe_video(request.output)
    assert info.frames == 477 and info.video_duration_s == pytest.approx(19.08, abs=0.05)
    assert info.audio_duration_s == pytest.approx(19.08, abs=0.1)


def test_the_lip_sync_gate_believes_the_demo(tmp_path: Path) -> None:
    """The demo's astronaut speaking one of its espeak lines passes landmark-v2, in sync at offset 0.

    The scorer is QC's own (the gate's default) with its stored calibration: the engine's mouth
    must follow the speech the way the real mouths it was fitted on do, and without a lag.
    """
    from avatarflow.demo import make_demo_inputs
    from qc.landmark import LandmarkSyncScorer

    # No skip without espeak-ng: scripts/setup.sh installs it, and make_demo_inputs says so when not.
    demo = tmp_path / "demo"
    make_demo_inputs(demo)
    crop = crop_face(demo / "astronaut.png", tmp_path / "face.png")
    prepared = prepare_audio(demo / "status.wav", tmp_path / "speech.wav")
    request = _request(tmp_path, crop.out_path, prepared.out_path, prepared.duration_s, preset="preview")
    result = MouthWarpCpuEngine().generate(request, GANG)
    assert result.ok, result.failure
    scorer = LandmarkSyncScorer()
    try:
        lip = scorer.score(request.output)
    finally:
        scorer.close()
    print(f"\nlandmark-v2 on the demo (astronaut, status): P = {lip.score}, offset {lip.offset_frames}, "
          f"peak {lip.correlation:.3f}")
    assert lip.score is not None, lip.score_reason
    assert lip.score > 0.92
    assert lip.offset_frames is not None and abs(lip.offset_frames) <= 1
