"""Live Avatar's output rules (clips, frames, seconds, size), checked by hand and at clip boundaries.

The expected values are worked out by hand from Live Avatar @ 9c2c38d (audio_encoder.py
get_audio_embed_bucket_fps, causal_s2v_pipeline.py generate / get_size_less_than_area), not by
running the code under test another way.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import pytest

from avatarflow.media import wav_samples
from inference.output_rules import (
    blocks_per_clip,
    output_size,
    planned_clips,
    samples_for,
    speech_clips,
    video_frames,
    video_seconds,
    wav2vec_frames,
)


@pytest.mark.parametrize(("samples", "frames"), [(399, 0), (400, 1), (719, 1), (720, 2), (16000, 49),
                                                 (96000, 299)])
def test_wav2vec_frames_follow_the_feature_encoder(samples, frames):
    assert wav2vec_frames(samples) == frames


@pytest.mark.parametrize(
    ("seconds", "clips"),
    [
        # 1 s: T = 49 → int(49/50·30) = 29 feature frames → int(29 / 57.6) + 1 = 1
        (1.0, 1),
        # 1.92 s is exactly 48 video frames, but T = 95 → 57 features → still 1 clip (the naive
        # floor(s·25/48) + 1 says 2)
        (1.92, 1),
        # 1.95 s: T = 97 → int(58.2) = 58 → int(58/57.6) + 1 = 2
        (1.95, 2),
        # 6 s: T = 299 → 179 → 3 + 1 = 4
        (6.0, 4),
        # 19.2 s: T = 959 → 575 → 9 + 1 = 10 (naive: 11)
        (19.2, 10),
        # 25 s: T = 1249 → 749 → 13 + 1 = 14
        (25.0, 14),
    ],
)
def test_clips_come_from_the_wav2vec_frame_count(seconds, clips):
    assert speech_clips(samples_for(seconds)) == clips


def test_the_naive_seconds_rule_is_wrong_at_774_lengths_and_480_would_fail_verification():
    """The issue's figures: over 1-60 s at 1 ms steps."""
    fewer = failing = 0
    for ms in range(1000, 60001):
        seconds = ms / 1000
        samples = samples_for(seconds)
        clips = speech_clips(samples)
        fewer += clips < math.floor(seconds * 25 / 48) + 1
        failing += abs(video_seconds(samples, clips) - seconds) > 2 / 25 + 0.05
    assert (fewer, failing) == (774, 480)


def test_a_capped_preview_lasts_its_clips_not_the_speech():
    samples = samples_for(25.0)
    clips = planned_clips(samples, 10)
    assert clips == 10
    assert video_frames(clips) == 477
    assert video_seconds(samples, clips) == pytest.approx(477 / 25)
    # Uncapped, the video covers the speech up to the last 0.164 s (silence, after preprocessing).
    assert video_seconds(samples, planned_clips(samples, None)) == pytest.approx(25.0)


def test_blocks_per_clip():
    assert blocks_per_clip(48) == 4
    assert blocks_per_clip(96) == 8


@pytest.mark.parametrize(
    ("image", "size", "expected"),
    [
        ((512, 512), "720*400", (512, 512)),  # the crop fits: padding only
        ((512, 512), "704*384", (512, 512)),
        ((512, 512), "688*368", (448, 448)),  # 512² > 688·368: scaled down to a multiple of 64
        ((512, 512), "384*256", (256, 256)),
        ((1280, 720), "688*368", (640, 384)),  # DESIGN.md: 16:9 at 688*368 gives 640×384
        ((1280, 720), "704*384", (704, 384)),
        ((720, 1280), "704*384", (384, 704)),
        ((256, 256), "704*384", (256, 256)),  # small images are padded, never enlarged
    ],
)
def test_output_size_follows_the_portrait(image, size, expected):
    assert output_size(*image, size) == expected


def test_wav_samples_reads_the_header(tmp_path: Path):
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 12345)
    assert wav_samples(path) == 12345
    other = tmp_path / "b.wav"
    with wave.open(str(other), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(44100)
        out.writeframes(b"\0\0" * 10)
    assert wav_samples(other) is None  # not what preprocessing writes: fall back to seconds
    assert wav_samples(tmp_path / "missing.wav") is None
