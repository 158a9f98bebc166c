"""The visual checks' rules on tracks built by hand, where the corpus has no real defect of the
kind (blinks, jitter) or an edge needs pinning down (speech detection, empty tracks)."""

from __future__ import annotations

import numpy as np
import pytest

from qc.decode import FPS, HOP
from qc.facetrack import POS, ROWS, MouthTrack
from qc.visual import VisualThresholds, check_eye_blinks, check_jitter, check_mouth_motion, speech_frames

pytestmark = pytest.mark.unit


def _track(seconds: float, *, blinks_every_s: float | None = None, shake_px: float = 0.0) -> MouthTrack:
    """A still face 100 px between the eyes; eyelids closing for 3 frames every `blinks_every_s`;
    the whole face pushed `shake_px` left and right on alternate frames."""
    n = int(seconds * FPS)
    base = np.zeros((len(ROWS), 2), np.float32)
    points = {"right_eye": (200, 200), "left_eye": (300, 200), "right_eye_outer": (180, 200),
              "right_eye_inner": (220, 200), "left_eye_inner": (280, 200), "left_eye_outer": (320, 200),
              "right_upper_lid": (200, 192), "right_lower_lid": (200, 208), "left_upper_lid": (300, 192),
              "left_lower_lid": (300, 208), "upper_lip": (250, 300), "lower_lip": (250, 310),
              "upper_lip_top": (250, 295), "lower_lip_bottom": (250, 318), "mouth_right": (220, 305),
              "mouth_left": (280, 305)}  # fmt: skip
    for name, xy in points.items():
        base[POS[name]] = xy
    marks = np.repeat(base[None], n, axis=0)
    if blinks_every_s:
        for start in np.arange(blinks_every_s, seconds, blinks_every_s):
            i = int(start * FPS)
            for lid in ("right_upper_lid", "left_upper_lid"):
                marks[i : i + 3, POS[lid], 1] += 14  # the upper lid down onto the lower one
    marks[1::2, :, 0] += shake_px
    return MouthTrack(video="v.mp4", source=None, landmarks=marks, patches=np.zeros((n, 24, 32), np.uint8))


def test_eyes_that_never_blink_over_a_long_stretch_warn_with_the_stretch():
    check = check_eye_blinks(_track(30.0), VisualThresholds())
    assert check.verdict == "warn" and check.value == pytest.approx(30.0)
    assert check.ranges == [(0.0, 30.0)] and check.worst_s == pytest.approx(15.0)
    blinking = check_eye_blinks(_track(30.0, blinks_every_s=4.0), VisualThresholds())
    assert blinking.verdict == "pass" and blinking.details["blinks"] == 7 and blinking.value < 5.0
    assert check_eye_blinks(_track(12.0), VisualThresholds()).verdict == "pass"  # too short to judge


def test_a_face_jumping_in_place_fails_jitter_a_still_one_passes():
    assert check_jitter(_track(4.0), VisualThresholds(), 4.0).verdict == "pass"
    # Mesh frames are every 2nd frame (0, 2, 4, ...): shift those alternately.
    track = _track(4.0)
    track.landmarks[0::4, :, 0] += 40  # 0.4 eye distances on every other mesh frame
    check = check_jitter(track, VisualThresholds(), 4.0)
    assert check.verdict == "fail" and check.ranges == [(0.0, 4.0)] and check.worst_s is not None


def test_speech_frames_follow_the_energy_and_bridge_short_stops():
    rate = HOP * FPS
    t = np.arange(4 * rate) / rate
    pcm = np.where((t > 1.0) & (t < 3.0), 0.3 * np.sin(2 * np.pi * 200 * t), 0.0).astype(np.float32)
    pcm[int(2.0 * rate) : int(2.1 * rate)] = 0.0  # a 0.1 s stop inside the speech
    speaking = speech_frames(pcm, 4 * FPS)
    assert speaking[int(1.1 * FPS) : int(2.9 * FPS)].all()  # the stop is bridged
    assert not speaking[: int(0.9 * FPS)].any() and not speaking[int(3.1 * FPS) :].any()
    assert not speech_frames(None, 10).any()


def test_mouth_motion_on_a_still_mouth_while_speaking_and_when_silent():
    track = _track(4.0)  # lips never move
    rate = HOP * FPS
    t = np.arange(4 * rate) / rate
    speech = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    check = check_mouth_motion(track, speech, VisualThresholds())
    assert check.verdict == "fail" and check.value >= 3.5 and check.ranges
    silent = check_mouth_motion(track, np.zeros_like(speech), VisualThresholds())
    assert silent.verdict == "pass" and "no speech" in silent.reason
